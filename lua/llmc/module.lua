--[[
llmc.module — the module tree: Module (one node, Hugging Face naming) and
the class helper every layer kind is built with (lua/llmc/nn.lua).

A module has:
  module.name        full Hugging Face name ("model.layers.0.self_attn.q_proj"; "" for the root)
  module.attr        its attribute name in the parent ("q_proj", "0")
  module.kind        "Linear", "Embedding", "RMSNorm", "Attention", "MLP", "SparseMoeBlock",
                     "DecoderLayer", "Model", "CausalLM", "ModuleList", "SiLU", "RotaryEmbedding"
  module.class_name  the transformers class ("LlamaDecoderLayer", "Linear", ...)
  module.children    array of child modules in registration (named_modules) order
  module.<attr>      each child by attribute name (layer.self_attn.q_proj)
  module.weight / .bias   parameters (Tensors); read lazily (mapped from the checkpoint,
                     converted to the model dtype on first use); assigning replaces them and
                     the forward pass uses the new tensor
and the methods below.  Patterns (modules, matches):
  nil                       every module
  "Linear", "LlamaDecoderLayer"   a kind or a transformers class name
  "lm_head"                 an exact name
  "re:.*(q|k|v)_proj$"      a PCRE2 regex that must match the whole name (Python re.fullmatch)
  {"Linear", "re:..."}      any of a list

  for name, m in model:modules("re:.*mlp\\.down_proj$") do print(name, m.out_features) end
  local h = model:get("model.layers.0.mlp"):register_forward_hook(function(m, x, y) ... end)
  h:remove()
]]
local regex = require "llmc._regex"

local M = {}

local Module = {}
M.Module = Module

-- Tensors that reached user code (hooks, returned hidden states): the
-- forward pass releases its temporaries eagerly, except these.
local escaped = setmetatable({}, {__mode = "k"})
M.escaped = escaped

--- Mark a tensor as kept by someone outside the forward pass.
function M.keep(t)
  if t ~= nil then escaped[t] = true end
  return t
end

--- Release a temporary of the forward pass now (its bytes, not just the box),
--- unless it escaped to a hook or the caller.
function M.free(t)
  if t ~= nil and not escaped[t] then t:release() end
end

---------------------------------------------------------------------------
-- classes
---------------------------------------------------------------------------

-- Lookup of a module field: lazily loaded parameters, then the tied weight
-- (lm_head of a tied model reads embed_tokens.weight), then the class chain.
local function make_index(cls)
  return function(self, k)
    local lz = rawget(self, "_lazy")
    if lz then
      local f = lz[k]
      if f then return f(self, k) end
    end
    if k == "weight" then
      local tied = rawget(self, "_tied")
      if tied then return tied.weight end
    end
    return cls[k]
  end
end

-- Assigning a parameter that is still lazy (or tied) replaces it for good.
local function newindex(self, k, v)
  local lz = rawget(self, "_lazy")
  if lz and lz[k] then lz[k] = nil end
  if k == "weight" and rawget(self, "_tied") then rawset(self, "_tied", nil) end
  rawset(self, k, v)
end

--- A new class deriving from `parent` (default Module).
function M.class(parent)
  parent = parent or Module
  local cls = setmetatable({}, {__index = parent})
  cls.__index = make_index(cls)
  cls.__newindex = newindex
  cls.__call = function(self, ...) return self:forward(...) end
  cls.__tostring = function(self) return self:summary() end
  cls.__name = "llmc.Module"
  return cls
end

--- A new module object of class `cls`.
function M.new(cls, name, kind, class_name)
  local m = {name = name, kind = kind, class_name = class_name or kind, children = {}, _pnames = {}}
  return setmetatable(m, cls)
end

local Base = M.class(Module)   -- plain container modules (ModuleList, ...)
M.Base = Base

---------------------------------------------------------------------------
-- structure
---------------------------------------------------------------------------

--- Register `child` under attribute `attr` (children keep registration order).
function Module:add(attr, child)
  child.attr = attr
  rawset(self, attr, child)
  self.children[#self.children + 1] = child
  return child
end

--- Declare a parameter: `value` is a Tensor, or a function(module, name)
--- returning one (a lazy parameter; it may cache itself with rawset).
function Module:param(pname, value)
  local names = self._pnames
  local seen = false
  for _, n in ipairs(names) do if n == pname then seen = true end end
  if not seen then names[#names + 1] = pname end
  if type(value) == "function" then
    local lz = rawget(self, "_lazy")
    if not lz then lz = {}; rawset(self, "_lazy", lz) end
    lz[pname] = value
    rawset(self, pname, nil)
  else
    local lz = rawget(self, "_lazy")
    if lz then lz[pname] = nil end
    rawset(self, pname, value)
  end
end

--- Is parameter `pname` present (declared and not tied away)?
function Module:has_param(pname)
  for _, n in ipairs(self._pnames) do if n == pname then return true end end
  return false
end

--- Pre-order walk: (full name, module) for this module and every descendant.
function Module:named_modules()
  local stack, out = {self}, {}
  while #stack > 0 do
    local m = table.remove(stack)
    out[#out + 1] = m
    for i = #m.children, 1, -1 do stack[#stack + 1] = m.children[i] end
  end
  local i = 0
  return function()
    i = i + 1
    local m = out[i]
    if m then return m.name, m end
  end
end

local function match_one(pat, m)
  if pat:sub(1, 3) == "re:" then return regex.fullmatch(pat:sub(4), m.name) end
  return m.kind == pat or m.class_name == pat or m.name == pat
end

--- Does module `m` match `pattern` (string or list of strings; see the header)?
function M.matches(pattern, m)
  if pattern == nil then return true end
  if type(pattern) == "table" then
    for _, p in ipairs(pattern) do if match_one(p, m) then return true end end
    return false
  end
  if type(pattern) ~= "string" then error("module pattern must be a string or a list of strings", 3) end
  return match_one(pattern, m)
end

--- Iterate (name, module) over the modules matching `pattern`, in Hugging
--- Face's named_modules order.
function Module:modules(pattern)
  local it = self:named_modules()
  return function()
    while true do
      local name, m = it()
      if not name then return nil end
      if M.matches(pattern, m) then return name, m end
    end
  end
end

--- The module with this full name (or nil, and a message).
function Module:get(name)
  local idx = rawget(self, "_by_name")
  if not idx or idx[name] == nil then
    idx = {}
    for n, m in self:named_modules() do idx[n] = m end
    rawset(self, "_by_name", idx)
  end
  local m = idx[name]
  if m then return m end
  return nil, "no module named '" .. tostring(name) .. "'"
end

--- Iterate (full name, module, parameter name) over the parameters of this
--- module and its descendants, Hugging Face names, shared (tied) parameters
--- once, without reading any: for callers that must not load or decompress
--- the parameters they skip (llmc.save and a compacted quantized weight).
function Module:parameter_slots()
  local out = {}
  local prefix_len = #self.name > 0 and #self.name + 2 or 1
  for name, m in self:named_modules() do
    for _, p in ipairs(m._pnames) do
      if not (p == "weight" and rawget(m, "_tied")) then
        local full = name == "" and p or (name .. "." .. p)
        out[#out + 1] = {full:sub(prefix_len), m, p}
      end
    end
  end
  local i = 0
  return function()
    i = i + 1
    local e = out[i]
    if e then return e[1], e[2], e[3] end
  end
end

--- Iterate (full_name, tensor, module) over the same parameters, reading
--- each one.
function Module:named_parameters()
  local slots = self:parameter_slots()
  return function()
    local full, m, p = slots()
    if full then return full, m[p], m end
  end
end

--- Number of parameters (tied ones once).
function Module:num_parameters()
  local n = 0
  for _, m in self:named_modules() do
    for _, p in ipairs(m._pnames) do
      if not (p == "weight" and rawget(m, "_tied")) then
        local info = m:param_info(p)
        local c = 1
        for _, d in ipairs(info.shape) do c = c * d end
        n = n + c
      end
    end
  end
  return n
end

--- Shape / dtype / placement of a parameter without loading it.
function Module:param_info(p)
  local meta = rawget(self, "_pmeta")
  if meta and meta[p] and rawget(self, p) == nil then return meta[p] end
  local t = self[p]
  return {shape = t:shape(), dtype = t:dtype(), device = self.device or "cpu"}
end

---------------------------------------------------------------------------
-- hooks and forward
---------------------------------------------------------------------------

local Handle = {}
Handle.__index = Handle
function Handle:remove()
  local list = self.list
  for i, h in ipairs(list) do
    if h == self then table.remove(list, i) return true end
  end
  return false
end

local function add_hook(self, field, fn)
  if type(fn) ~= "function" then error("hook must be a function", 3) end
  local list = rawget(self, field)
  if not list then list = {}; rawset(self, field, list) end
  local h = setmetatable({fn = fn, list = list}, Handle)
  list[#list + 1] = h
  return h
end

--- fn(module, input, ...) -> nil or a replacement input; runs before forward.
function Module:register_forward_pre_hook(fn) return add_hook(self, "_pre_hooks", fn) end
--- fn(module, input, output, ...) -> nil or a replacement output; runs after forward.
function Module:register_forward_hook(fn) return add_hook(self, "_post_hooks", fn) end

--- Has this module any hook?
function Module:hooked()
  local a, b = rawget(self, "_pre_hooks"), rawget(self, "_post_hooks")
  return (a ~= nil and #a > 0) or (b ~= nil and #b > 0)
end

--- Run the module: pre-hooks, the kind's _forward, hooks.  The first
--- argument is the "input" the hooks see; the rest (a context) passes through.
function Module:forward(x, ...)
  local pre = rawget(self, "_pre_hooks")
  if pre and #pre > 0 then
    for _, h in ipairs({table.unpack(pre)}) do
      M.keep(x)
      local r = h.fn(self, x, ...)
      if r ~= nil then x = r end
    end
  end
  local onload = rawget(self, "_onload")
  if onload then onload(self) end
  local y = self:_forward(x, ...)
  local off = rawget(self, "_offload")
  if off then off(self) end
  local post = rawget(self, "_post_hooks")
  if post and #post > 0 then
    for _, h in ipairs({table.unpack(post)}) do
      M.keep(x)
      M.keep(y)
      local r = h.fn(self, x, y, ...)
      if r ~= nil then y = r end
    end
  end
  return y
end

function Module:_forward()
  error(self.kind .. " '" .. self.name .. "' has no forward pass", 2)
end

---------------------------------------------------------------------------
-- printing
---------------------------------------------------------------------------

local function shape_str(s) return "[" .. table.concat(s, ", ") .. "]" end

--- One line: kind, name, and the parameters' shapes and dtypes.
function Module:summary()
  local parts = {}
  for _, p in ipairs(self._pnames) do
    if p == "weight" and rawget(self, "_tied") then
      parts[#parts + 1] = "weight tied to " .. rawget(self, "_tied").name
    else
      local info = self:param_info(p)
      parts[#parts + 1] = string.format("%s%s %s", p, shape_str(info.shape), info.dtype)
    end
  end
  local dev = self.device and self.device ~= "cpu" and (" (" .. self.device .. ")") or ""
  return string.format("%s%s%s%s", self.class_name, self.name ~= "" and (" " .. self.name) or "",
    #parts > 0 and (" " .. table.concat(parts, ", ")) or "", dev)
end

--- The tree as text, PyTorch-style: "(attr): Class(params)" indented.
function Module:tree()
  local lines = {}
  local function walk(m, depth, label)
    local parts = {}
    for _, p in ipairs(m._pnames) do
      if p == "weight" and rawget(m, "_tied") then
        parts[#parts + 1] = "weight=" .. rawget(m, "_tied").name .. ".weight"
      else
        local info = m:param_info(p)
        parts[#parts + 1] = string.format("%s=%s %s", p, shape_str(info.shape), info.dtype)
      end
    end
    if m.device and m.device ~= "cpu" then parts[#parts + 1] = "device=" .. m.device end
    local extra = m.extra_repr and m:extra_repr() or nil
    if extra then table.insert(parts, 1, extra) end
    lines[#lines + 1] = string.rep("  ", depth) .. (label and ("(" .. label .. "): ") or "") .. m.class_name ..
      "(" .. table.concat(parts, ", ") .. ")"
    for _, c in ipairs(m.children) do walk(c, depth + 1, c.attr) end
  end
  walk(self, 0, nil)
  return table.concat(lines, "\n")
end

return M
