--[[
llmc.modifiers.base — the Modifier class every modifier is built on, its
lifecycle (llm-compressor's Modifier, algorithms.md §3), and the
targets / ignore matching rules of compressed-tensors (format §6.1).

A modifier class is a table of lifecycle methods plus an ordered list of
fields; an instance is created from a table of arguments (unknown keys are
an error naming the key and the recipe line):

  local base = require "llmc.modifiers.base"
  local Prune = base.class("MagnitudeLoggerModifier", {
    fields = {{"targets", {"Linear"}, base.check.targets}, {"threshold", 0.1, base.check.number}},
    on_initialize = function(self, state) ... return true end,
    on_finalize = function(self, state) return true end,
  })
  local m = Prune{targets = "re:.*mlp.*", threshold = 0.2}

Lifecycle (called by llmc.oneshot and the pipelines):
  m:initialize(state)                      -> on_initialize(state)
  m:update_event(state, event)             -> on_event, then per event.type:
      "calibration_start"    on_calibration_start(state, event)
      "sequential_epoch_end" on_sequential_epoch_end(state, event, event.modules)
      "calibration_end"      on_calibration_end(state, event)
  m:finalize(state)                        -> on_finalize(state)
`state` = {model =, data = (calibration batches or nil), summary = {...}}.
Every hook is optional except on_initialize / on_finalize (defaults return
true).  The common fields of llm-compressor's Modifier (index, group, start,
end, update, requires_calibration_data) are appended to every class.
]]
local util = require "llmc.util"
local json = util.json

local base = {}

---------------------------------------------------------------------------
-- field checks: function(value, where) -> normalised value (or error)
---------------------------------------------------------------------------

local function fail(where, msg)
  local prefix = type(where) == "function" and where(nil) or where
  error((prefix and (prefix .. ": ") or "") .. msg, 0)
end

local check = {}
base.check = check

function check.any(v) return v end

function check.boolean(v, where)
  if type(v) == "boolean" then return v end
  if type(v) == "string" then
    local l = v:lower()
    if l == "true" or l == "yes" or l == "on" then return true end
    if l == "false" or l == "no" or l == "off" then return false end
  end
  fail(where, "expected true or false, got " .. tostring(v))
end

function check.number(v, where)
  -- numeric strings are accepted, as pydantic's lax mode does (PyYAML
  -- reads 1e-5 as a string)
  if type(v) == "string" then
    local n = tonumber(v)
    if n then return n end
  end
  if type(v) ~= "number" then fail(where, "expected a number, got " .. tostring(v)) end
  return v
end

function check.integer(v, where)
  local n = check.number(v, where)
  local i = math.tointeger(n)
  if not i then fail(where, "expected an integer, got " .. tostring(v)) end
  return i
end

function check.string(v, where)
  if type(v) ~= "string" then fail(where, "expected a string, got " .. tostring(v)) end
  return v
end

--- a string or a list of strings -> a fresh list
function check.targets(v, where)
  if type(v) == "string" then return json.array({v}) end
  if type(v) ~= "table" or util.is_omap(v) then fail(where, "expected a string or a list of strings") end
  local out = json.array({})
  for i, x in ipairs(v) do
    if type(x) ~= "string" then fail(where, "entry " .. i .. " is not a string (" .. tostring(x) .. ")") end
    out[i] = x
  end
  return out
end

--- a list of strings (a single string is not accepted)
function check.string_list(v, where)
  if type(v) ~= "table" or util.is_omap(v) then fail(where, "expected a list of strings") end
  return check.targets(v, where)
end

---------------------------------------------------------------------------
-- matching (compressed-tensors utils/match.py)
---------------------------------------------------------------------------

local regex_ok, regex = pcall(require, "llmc._regex")
local anchored = {}

--- Python re.match (anchored at the start only) of `pattern` on `s`.
function base.re_match(pattern, s)
  if not regex_ok then error("the llmc._regex module is not available", 2) end
  local c = anchored[pattern]
  if not c then
    local ok, r = pcall(regex.compile, "\\A(?:" .. pattern .. ")")
    if not ok then error("invalid regex 're:" .. pattern .. "': " .. tostring(r), 0) end
    c = r
    anchored[pattern] = c
  end
  return c:search(s) ~= nil
end

--- Does target/ignore entry `entry` match the module (name, module)?
--- "re:<regex>": Python re.match on the full name (anchored at the start
--- only: add $ to stop "re:.*q_proj" matching "q_proj_x"); otherwise the
--- exact full name, or a class name: the module's kind ("Linear") or its
--- transformers class name.  `m` may be nil (name-only matching, as
--- model_free_ptq does).
function base.matches(entry, name, m)
  if entry:sub(1, 3) == "re:" then return base.re_match(entry:sub(4), name) end
  if entry == name then return true end
  if m then
    return m.kind == entry or m.class_name == entry
  end
  return false
end

--- How a target matched: 1 exact name, 2 regex, 3 class (precedence when
--- several config groups target a module, format §6.1); nil when not.
function base.match_kind(entry, name, m)
  if entry:sub(1, 3) == "re:" then
    return base.re_match(entry:sub(4), name) and 2 or nil
  end
  if entry == name then return 1 end
  if m and (m.kind == entry or m.class_name == entry) then return 3 end
  return nil
end

function base.any_match(list, name, m)
  for _, e in ipairs(list or {}) do
    if base.matches(e, name, m) then return e end
  end
  return nil
end

---------------------------------------------------------------------------
-- the Modifier class
---------------------------------------------------------------------------

--- Fields llm-compressor's Modifier adds after a class's own fields.
base.COMMON_FIELDS = {
  {"requires_calibration_data", false, check.boolean},
  {"index", nil, check.integer},
  {"group", nil, check.string},
  {"start", nil, check.number},
  {"end", nil, check.number},
  {"update", nil, check.number},
}

local Modifier = {}
Modifier.__index = Modifier
base.Modifier = Modifier

--- Define a modifier class.  def.fields: ordered {name, default, check}
--- triples (declaration order = recipe.yaml order); def.validate(self,
--- where) runs after the fields are set; lifecycle methods as in the header.
--- Returns the class; calling it creates an instance: Class{...}.
function base.class(name, def)
  def = def or {}
  local cls = {}
  for k, v in pairs(def) do cls[k] = v end
  cls.name = name
  local fields, seen = {}, {}
  for _, f in ipairs(def.fields or {}) do
    fields[#fields + 1] = f
    seen[f[1]] = true
  end
  for _, f in ipairs(base.COMMON_FIELDS) do
    if not seen[f[1]] then fields[#fields + 1] = f end
  end
  cls.fields = fields
  cls.__index = function(self, k)
    local v = cls[k]
    if v ~= nil then return v end
    return Modifier[k]
  end
  cls.__name = "llmc." .. name
  cls.__modifier = true
  cls.__tostring = function(self) return self:describe() end
  return setmetatable(cls, {
    __call = function(c, args, where) return base.new(c, args, where) end,
    __index = Modifier,
    __tostring = function() return "modifier class " .. name end,
  })
end

local function field_where(where, cls, field)
  if type(where) == "function" then return function() return where(field) end end
  local prefix = where and (where .. ": ") or ""
  return prefix .. cls.name .. "." .. field
end

--- Create an instance of `cls` from `args` (table or omap).  `where` is a
--- string ("recipe.lua:12") or a function(field) -> location text; by
--- default the caller's position in the user's script.
function base.new(cls, args, where)
  where = where or util.caller_where()
  args = args or {}
  if type(args) ~= "table" then
    error((type(where) == "string" and (where .. ": ") or "") .. cls.name ..
          ": arguments must be a table, got " .. type(args), 0)
  end
  local self = setmetatable({_set = {}}, cls)
  local known = {}
  for _, f in ipairs(cls.fields) do known[f[1]] = f end
  local keys = util.is_omap(args) and args:keys() or {}
  if not util.is_omap(args) then
    for k in pairs(args) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  end
  for _, k in ipairs(keys) do
    if type(k) ~= "string" or not known[k] then
      local names = {}
      for _, f in ipairs(cls.fields) do names[#names + 1] = f[1] end
      local loc = type(where) == "function" and where(tostring(k)) or
                  ((where and (where .. ": ") or "") .. cls.name .. "." .. tostring(k))
      error(loc .. ": unknown argument (" .. cls.name .. " takes: " .. table.concat(names, ", ") .. ")", 0)
    end
  end
  for _, f in ipairs(cls.fields) do
    local k, default, chk = f[1], f[2], f[3]
    local v
    if util.is_omap(args) then v = args:get(k) else v = args[k] end
    if v == json.null then v = nil end
    if v ~= nil then
      self._set[k] = true
      self[k] = (chk or check.any)(v, field_where(where, cls, k))
    else
      self[k] = util.deepcopy(default)
    end
  end
  self._where = where
  self.initialized_, self.finalized_, self.started_, self.ended_ = false, false, false, false
  if cls.validate then cls.validate(self, where) end
  return self
end

function Modifier:location(field)
  local w = self._where
  if type(w) == "function" then return w(field) end
  return (w and (w .. ": ") or "") .. self.name .. (field and ("." .. field) or "")
end

--- Report one line of progress (a module solved, a mapping skipped):
--- kept in self._log when the modifier keeps one, printed on stderr (above
--- the progress bar, if one is drawn) unless state.quiet.
function Modifier:log(state, line)
  local kept = rawget(self, "_log")
  if kept then kept[#kept + 1] = line end
  if state.quiet then return end
  if state.progress then state.progress:log(line) else io.stderr:write(line, "\n") end
end

--- Raise an error prefixed with the modifier's recipe location.
function Modifier:error(msg, field)
  error(self:location(field) .. ": " .. msg, 0)
end

--- The arguments as llm-compressor's recipe.yaml lists them: fields in
--- declaration order, nil values, `group` and names ending in "_" left out.
function Modifier:dump()
  local o = util.omap()
  for _, f in ipairs(self.fields) do
    local k = f[1]
    local v = self[k]
    if self.dump_field then v = self:dump_field(k, v) end
    if v ~= nil and v ~= json.null and k ~= "group" and k:sub(-1) ~= "_" then
      o:set(k, require("llmc.recipe").to_yaml_value(v))
    end
  end
  return o
end

function Modifier:describe()
  local parts = {}
  for _, f in ipairs(self.fields) do
    local k = f[1]
    if self._set[k] then
      local v = self[k]
      local s
      if type(v) == "table" then
        local ok, e = pcall(json.encode, require("llmc.recipe").to_yaml_value(v))
        s = ok and e or "{...}"
      else s = tostring(v) end
      parts[#parts + 1] = k .. "=" .. s
    end
  end
  return self.name .. "(" .. table.concat(parts, ", ") .. ")"
end

-- lifecycle -------------------------------------------------------------------

function Modifier:initialize(state)
  if self.initialized_ then error(self.name .. ": cannot initialize a modifier twice", 0) end
  if self.finalized_ then error(self.name .. ": cannot initialize a finalized modifier", 0) end
  local r = true
  if self.on_initialize then r = self:on_initialize(state) end
  self.initialized_ = r ~= false
  -- llm-compressor's fake BATCH_START at step 0 (oneshot modifiers have no start)
  if self.start ~= nil and self.start <= 0 and (self["end"] == nil or self["end"] > 0) then
    if self.on_start then self:on_start(state, {type = "batch_start", index = 0}) end
    self.started_ = true
  end
end

function Modifier:update_event(state, event)
  if not self.initialized_ then error(self.name .. ": update before initialize", 0) end
  if self.finalized_ then error(self.name .. ": update after finalize", 0) end
  if self.on_event then self:on_event(state, event) end
  local t = event.type
  if t == "calibration_start" then
    if self.on_calibration_start then self:on_calibration_start(state, event) end
    self.started_ = true
  elseif t == "sequential_epoch_end" then
    if self.on_sequential_epoch_end then self:on_sequential_epoch_end(state, event, event.modules) end
  elseif t == "calibration_end" then
    if self.on_calibration_end then self:on_calibration_end(state, event) end
    self.ended_ = true
  elseif self.started_ and not self.ended_ and self.on_update then
    self:on_update(state, event)
  end
end

function Modifier:finalize(state)
  if self.finalized_ then error(self.name .. ": cannot finalize a modifier twice", 0) end
  if not self.initialized_ then error(self.name .. ": cannot finalize an uninitialized modifier", 0) end
  local r = true
  if self.on_finalize then r = self:on_finalize(state) end
  self.finalized_ = r ~= false
end

return base
