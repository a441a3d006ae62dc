--[==[
llmc.recipe — recipes: Lua modifier lists and llm-compressor YAML recipes
in, an ordered modifier list out; and back to llm-compressor's recipe.yaml
(algorithms.md §11).

  local recipe = require "llmc.recipe"
  local r = recipe.load([[
  quant_stage:
    quant_modifiers:
      QuantizationModifier:
        targets: [Linear]
        scheme: FP8_BLOCK
        ignore: [lm_head]
  ]])                                   -- or a file path, a Modifier, a list of Modifiers
  for _, m in ipairs(r.modifiers) do print(m.name, m.group) end
  print(recipe.yaml(r))                 -- what recipe.yaml holds

Accepted recipes (recipe.load):
  * a Modifier (llmc.modifiers.QuantizationModifier{...}) or a list of them;
  * a path to a .yaml/.yml/.json/.md file, or YAML / JSON text;
  * a Lua table in the stage form {quant_stage = {quant_modifiers =
    {QuantizationModifier = {...}}}} when every level has one key (Lua
    tables have no order; use a list of modifiers or YAML for several).
Structure (as llm-compressor): top-level keys ending in "_stage" hold keys
ending in "_modifiers", which hold ModifierName: {args}.  Other keys are
ignored (args: is kept as r.args).  All stages run as one modifier list.

YAML subset (what llm-compressor recipes use): block mappings and
sequences (including "- key: v" items and indentless sequences), flow
lists and maps (may span lines), plain / single- / double-quoted scalars,
comments, "---".  Scalars resolve as PyYAML's safe_load does (YAML 1.1:
yes/no/on/off are booleans, 1e-5 without a dot stays a string).  Anchors,
aliases, tags, block scalars (| >) and multi-line plain scalars are refused
with an error giving the line.  Every error reads "<source>:<line>: ...".

The writer emits what PyYAML's yaml.dump(sort_keys=False,
default_flow_style=None, width=88) emits for the same data: collections of
scalars in flow style, indentless block sequences, PyYAML's quoting rules.
]==]
local util = require "llmc.util"
local json = util.json

local recipe = {}

---------------------------------------------------------------------------
-- YAML reader
---------------------------------------------------------------------------

local Y = {}   -- parser internals

local function yerr(src, line, msg)
  error(string.format("%s:%d: %s", src, line or 0, msg), 0)
end

-- PyYAML (YAML 1.1) implicit resolution of a plain scalar
local BOOL_TRUE = {yes = 1, Yes = 1, YES = 1, ["true"] = 1, True = 1, TRUE = 1, on = 1, On = 1, ON = 1}
local BOOL_FALSE = {no = 1, No = 1, NO = 1, ["false"] = 1, False = 1, FALSE = 1, off = 1, Off = 1, OFF = 1}
local NULLS = {["~"] = 1, null = 1, Null = 1, NULL = 1, [""] = 1}

local function match_int(s)
  -- [-+]?(0|[1-9][0-9_]*) | 0x.. | 0b.. | 0[0-7_]+ (octal)
  local sign, body = s:match("^([-+]?)(.+)$")
  local neg = sign == "-"
  local v
  if body == "0" then v = 0
  elseif body:match("^[1-9][0-9_]*$") then v = math.tointeger(tonumber((body:gsub("_", ""))))
  elseif body:match("^0x[0-9a-fA-F_]+$") then v = math.tointeger(tonumber((body:sub(3):gsub("_", "")), 16))
  elseif body:match("^0b[01_]+$") then v = math.tointeger(tonumber((body:sub(3):gsub("_", "")), 2))
  elseif body:match("^0[0-7_]+$") then v = math.tointeger(tonumber((body:sub(2):gsub("_", "")), 8))
  else return nil end
  if v == nil then return nil end
  return neg and -v or v
end

local function match_float(s)
  -- PyYAML: [-+]?[0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)? | \.[0-9][0-9_]*(...)? | [-+]?\.inf | \.nan
  local sign, rest = s:match("^([-+]?)(.*)$")
  if rest == ".inf" or rest == ".Inf" or rest == ".INF" then
    return sign == "-" and -math.huge or math.huge
  end
  if s == ".nan" or s == ".NaN" or s == ".NAN" then return 0 / 0 end
  local ip, fp, ex = rest:match("^([0-9][0-9_]*)%.([0-9_]*)([eE][-+][0-9]+)$")
  if not ip then
    ip, fp = rest:match("^([0-9][0-9_]*)%.([0-9_]*)$")
    ex = ""
  end
  if not ip and sign == "" then
    fp, ex = rest:match("^%.([0-9][0-9_]*)([eE][-+][0-9]+)$")
    if not fp then
      fp = rest:match("^%.([0-9][0-9_]*)$")
      ex = ""
    end
    if fp then ip = "0" end
  end
  if not ip then return nil end
  local v = tonumber(sign .. ip:gsub("_", "") .. "." .. fp:gsub("_", "") .. "0" .. ex)
  if not v then return nil end
  return v + 0.0
end

local function resolve_plain(s)
  if NULLS[s] then return json.null end
  if BOOL_TRUE[s] then return true end
  if BOOL_FALSE[s] then return false end
  local i = match_int(s)
  if i ~= nil then return i end
  local f = match_float(s)
  if f ~= nil then return f end
  return s
end
recipe._resolve_plain = resolve_plain

-- double-quoted escapes (YAML 1.1)
local DQ_ESC = {["0"] = "\0", a = "\a", b = "\b", t = "\t", ["\t"] = "\t", n = "\n", v = "\v",
                f = "\f", r = "\r", e = "\27", [" "] = " ", ['"'] = '"', ["/"] = "/",
                ["\\"] = "\\", N = "\u{85}", _ = "\u{a0}", L = "\u{2028}", P = "\u{2029}"}

-- Scanner over the whole text: position -> line numbers are computed from
-- a precomputed table of line starts.
local Scanner = {}
Scanner.__index = Scanner

local function new_scanner(text, src)
  local s = setmetatable({text = text, src = src, line_starts = {1}}, Scanner)
  for p in text:gmatch("()\n") do s.line_starts[#s.line_starts + 1] = p + 1 end
  return s
end

function Scanner:line_of(pos)
  local lo, hi = 1, #self.line_starts
  while lo < hi do
    local mid = (lo + hi + 1) // 2
    if self.line_starts[mid] <= pos then lo = mid else hi = mid - 1 end
  end
  return lo
end

function Scanner:err(pos, msg) yerr(self.src, self:line_of(pos), msg) end

-- read a quoted scalar starting at pos (the quote); returns value, next pos
function Scanner:quoted(pos)
  local t = self.text
  local q = t:sub(pos, pos)
  local out = {}
  local i = pos + 1
  if q == "'" then
    while true do
      local j = t:find("'", i, true)
      if not j then self:err(pos, "unterminated single-quoted string") end
      out[#out + 1] = t:sub(i, j - 1)
      if t:sub(j + 1, j + 1) == "'" then out[#out + 1] = "'"; i = j + 2
      else i = j + 1; break end
    end
  else
    while true do
      local j = t:find('["\\]', i)
      if not j then self:err(pos, "unterminated double-quoted string") end
      out[#out + 1] = t:sub(i, j - 1)
      if t:sub(j, j) == '"' then i = j + 1; break end
      local e = t:sub(j + 1, j + 1)
      if DQ_ESC[e] then out[#out + 1] = DQ_ESC[e]; i = j + 2
      elseif e == "x" or e == "u" or e == "U" then
        local n = ({x = 2, u = 4, U = 8})[e]
        local hex = t:sub(j + 2, j + 1 + n)
        if #hex ~= n or not hex:match("^%x+$") then self:err(j, "bad escape \\" .. e .. hex) end
        local cp = tonumber(hex, 16)
        if cp > 0x10FFFF then self:err(j, "bad escape \\" .. e .. hex) end
        out[#out + 1] = utf8.char(cp)
        i = j + 2 + n
      elseif e == "\n" then i = j + 2   -- escaped line break
      else self:err(j, "unknown escape \\" .. e) end
    end
  end
  -- a multi-line quoted scalar folds its line breaks (YAML): keep it simple
  local s = table.concat(out)
  if s:find("\n") then
    s = s:gsub("[ \t]*\n[ \t]*", " ")
  end
  return s, i
end

-- ---- flow collections ------------------------------------------------------

function Scanner:skip_flow_ws(pos)
  local t = self.text
  while true do
    local c = t:sub(pos, pos)
    if c == " " or c == "\t" or c == "\n" or c == "\r" then pos = pos + 1
    elseif c == "#" and (pos == 1 or t:sub(pos - 1, pos - 1):match("%s")) then
      local nl = t:find("\n", pos, true)
      pos = nl and nl or #t + 1
    else return pos end
  end
end

-- plain scalar inside a flow collection: ends at , [ ] { }, ": " or " #";
-- it may continue on the next lines (folded into single spaces)
function Scanner:flow_plain(pos)
  local t = self.text
  local i = pos
  while i <= #t do
    local c = t:sub(i, i)
    if c == "," or c == "]" or c == "}" or c == "[" or c == "{" then break end
    if c == ":" then
      local n = t:sub(i + 1, i + 1)
      if n == "" or n:match("[%s,%]}]") then break end
    end
    if c == "#" and t:sub(i - 1, i - 1):match("%s") then break end
    i = i + 1
  end
  local raw = t:sub(pos, i - 1):gsub("%s+$", "")
  local np = pos + #raw
  if raw:find("\n") then raw = raw:gsub("[ \t\r]*\n[ \t\r\n]*", " ") end
  return raw, np
end

function Scanner:flow_node(pos, depth)
  if depth > 100 then self:err(pos, "nesting too deep") end
  pos = self:skip_flow_ws(pos)
  local t = self.text
  local c = t:sub(pos, pos)
  local line = self:line_of(pos)
  local open = pos
  if c == "[" then
    local arr = json.array({})
    Y.lines[arr] = line
    pos = self:skip_flow_ws(pos + 1)
    while true do
      if pos > #t then self:err(open, "unterminated flow sequence '[' (no closing ']' before the end of the text)") end
      if t:sub(pos, pos) == "]" then return arr, pos + 1 end
      local v
      local kstart = pos
      v, pos = self:flow_node(pos, depth + 1)
      pos = self:skip_flow_ws(pos)
      if t:sub(pos, pos) == ":" then
        -- single-pair mapping inside a sequence: [a: 1]
        local m = util.omap()
        local val
        val, pos = self:flow_node(pos + 1, depth + 1)
        if type(v) == "table" then self:err(kstart, "a mapping key must be a scalar") end
        m:set(v, val, self:line_of(kstart))
        v = m
        pos = self:skip_flow_ws(pos)
      end
      arr[#arr + 1] = v
      local d = t:sub(pos, pos)
      if d == "," then pos = self:skip_flow_ws(pos + 1)
      elseif d == "" then self:err(open, "unterminated flow sequence '[' (no closing ']' before the end of the text)")
      elseif d ~= "]" then self:err(pos, "expected ',' or ']' in the flow sequence opened at line " .. line .. ", got '" .. d .. "'") end
    end
  elseif c == "{" then
    local m = util.omap()
    Y.lines[m] = line
    pos = self:skip_flow_ws(pos + 1)
    while true do
      if pos > #t then self:err(open, "unterminated flow mapping '{' (no closing '}' before the end of the text)") end
      if t:sub(pos, pos) == "}" then return m, pos + 1 end
      local kpos = pos
      local k
      k, pos = self:flow_node(pos, depth + 1)
      if type(k) == "table" then self:err(kpos, "a mapping key must be a scalar") end
      if k == json.null then k = "null" end
      pos = self:skip_flow_ws(pos)
      local val = json.null
      if t:sub(pos, pos) == ":" then
        val, pos = self:flow_node(pos + 1, depth + 1)
        pos = self:skip_flow_ws(pos)
      end
      if m:has(k) then self:err(kpos, "duplicate key '" .. tostring(k) .. "'") end
      m:set(k, val, self:line_of(kpos))
      local d = t:sub(pos, pos)
      if d == "," then pos = self:skip_flow_ws(pos + 1)
      elseif d == "" then self:err(open, "unterminated flow mapping '{' (no closing '}' before the end of the text)")
      elseif d ~= "}" then self:err(pos, "expected ',' or '}' in the flow mapping opened at line " .. line .. ", got '" .. d .. "'") end
    end
  elseif c == "'" or c == '"' then
    return self:quoted(pos)
  elseif c == "&" or c == "*" or c == "!" then
    self:err(pos, "anchors, aliases and tags are not supported in recipes")
  elseif c == "]" or c == "}" or c == "," then
    -- empty entry: [a, , b] is an error in YAML
    self:err(pos, "unexpected '" .. c .. "'")
  else
    local raw, np = self:flow_plain(pos)
    return resolve_plain(raw), np
  end
end

-- ---- block structure -------------------------------------------------------

-- Split the text into logical lines {indent, col (1-based start of content),
-- pos (absolute position of content), text (content without comment), line}.
local function logical_lines(sc)
  local lines = {}
  local t = sc.text
  local ln = 0
  for start, body in t:gmatch("()([^\n]*)\n?") do
    if start > #t and body == "" then break end
    ln = ln + 1
    body = body:gsub("\r$", "")
    local lead = body:match("^[ \t]*")
    if lead:find("\t") and body:match("^[ \t]*[^ \t#]") then
      yerr(sc.src, ln, "tabs are not allowed in indentation")
    end
    local content = body:sub(#lead + 1)
    if content ~= "" and content:sub(1, 1) ~= "#" then
      lines[#lines + 1] = {indent = #lead, pos = start + #lead, line = ln, raw = content}
    end
  end
  return lines
end

-- position of the end of the "real" content of a line starting at pos:
-- strips a trailing comment (a # preceded by whitespace, outside quotes)
local function strip_comment(text, pos, stop)
  local i = pos
  local q = nil
  while i <= stop do
    local c = text:sub(i, i)
    if q then
      if c == q then
        if q == "'" and text:sub(i + 1, i + 1) == "'" then i = i + 1 else q = nil end
      elseif c == "\\" and q == '"' then i = i + 1 end
    elseif (c == "'" or c == '"') and (i == pos or text:sub(i - 1, i - 1):match("[%s%[{,:]")) then q = c
    elseif c == "#" and (i == pos or text:sub(i - 1, i - 1):match("%s")) then
      stop = i - 1
      break
    end
    i = i + 1
  end
  while stop >= pos and text:sub(stop, stop):match("%s") do stop = stop - 1 end
  return stop
end

-- find "key:" at the start of s (a mapping entry); returns key, rest-pos
-- (relative), key-is-quoted
local function split_key(sc, s, abs)
  local c = s:sub(1, 1)
  if c == "'" or c == '"' then
    local k, np = sc:quoted(abs)
    local rel = np - abs + 1
    local after = s:sub(rel)
    local sp = after:match("^[ \t]*")
    if after:sub(#sp + 1, #sp + 1) == ":" then
      local nxt = after:sub(#sp + 2, #sp + 2)
      if nxt == "" or nxt:match("%s") then return k, rel + #sp + 1 end
    end
    return nil
  end
  if c == "[" or c == "{" then return nil end
  -- plain key: up to the first ": " or ":" at end (not inside brackets)
  local i = 1
  while i <= #s do
    local ch = s:sub(i, i)
    if ch == ":" then
      local nxt = s:sub(i + 1, i + 1)
      if nxt == "" or nxt:match("%s") then
        local key = s:sub(1, i - 1):gsub("%s+$", "")
        return key, i + 1
      end
    elseif ch == "#" and i > 1 and s:sub(i - 1, i - 1):match("%s") then
      return nil
    end
    i = i + 1
  end
  return nil
end

local Block = {}
Block.__index = Block

function Block:cur() return self.lines[self.i] end

-- parse an inline value starting at absolute position pos (rest of a line);
-- flow collections may continue on the following lines
function Block:inline(pos, line_rec)
  local sc = self.sc
  local t = sc.text
  local c = t:sub(pos, pos)
  if c == "[" or c == "{" then
    local v, np = sc:flow_node(pos, 0)
    -- the rest of the last line must be empty or a comment
    local nl = t:find("\n", np, true) or (#t + 1)
    local rest = t:sub(np, nl - 1)
    if rest:match("^%s*$") == nil and rest:match("^%s+#") == nil then
      sc:err(np, "unexpected text after a flow collection: '" .. rest:gsub("^%s+", "") .. "'")
    end
    -- skip the logical lines the flow collection consumed
    local last_line = sc:line_of(np > #t and #t or np)
    while self.i <= #self.lines and self.lines[self.i].line <= last_line do self.i = self.i + 1 end
    return v
  end
  local nl = t:find("\n", pos, true) or (#t + 1)
  local stop = strip_comment(t, pos, nl - 1)
  local s = t:sub(pos, stop)
  self.i = self.i + 1
  if c == "'" or c == '"' then
    local v, np = sc:quoted(pos)
    if np <= stop then sc:err(np, "unexpected text after a quoted string") end
    if sc:line_of(np - 1) ~= line_rec.line then
      -- a multi-line quoted scalar: skip the lines it spans
      local last = sc:line_of(np - 1)
      while self.i <= #self.lines and self.lines[self.i].line <= last do self.i = self.i + 1 end
    end
    return v
  end
  if c == "|" or c == ">" then sc:err(pos, "block scalars (| and >) are not supported in recipes") end
  if c == "&" or c == "*" or c == "!" then sc:err(pos, "anchors, aliases and tags are not supported in recipes") end
  if c == "%" or c == "@" or c == "`" then sc:err(pos, "a plain scalar cannot start with '" .. c .. "'") end
  -- more-indented lines continue a plain scalar (folded into spaces)
  local parts = nil
  local nxt = self.lines[self.i]
  while nxt and nxt.indent > self.min_cont do
    local ns = t:sub(nxt.pos, strip_comment(t, nxt.pos, (t:find("\n", nxt.pos, true) or (#t + 1)) - 1))
    if ns:find(":%s") or ns:sub(-1) == ":" then
      sc:err(nxt.pos, "unexpected 'key: value' inside a multi-line value (check the indentation)")
    end
    parts = parts or {s}
    parts[#parts + 1] = ns
    self.i = self.i + 1
    nxt = self.lines[self.i]
  end
  if parts then return table.concat(parts, " ") end
  return resolve_plain(s)
end

-- parse the node whose first line is self.lines[self.i], at indent `ind`
function Block:node(ind, depth, parent)
  if depth > 100 then self.sc:err(self:cur().pos, "nesting too deep") end
  local l = self:cur()
  if not l then return json.null end
  local raw = l.raw
  if raw == "-" or raw:sub(1, 2) == "- " then return self:seq(ind, depth) end
  local key = split_key(self.sc, raw, l.pos)
  if key ~= nil then return self:map(ind, depth) end
  -- a lone scalar / flow collection
  self.min_cont = parent or -1
  return self:inline(l.pos, l)
end

function Block:seq(ind, depth)
  local arr = json.array({})
  Y.lines[arr] = self:cur().line
  while true do
    local l = self:cur()
    if not l or l.indent < ind then break end
    if l.indent > ind then self.sc:err(l.pos, "bad indentation of a sequence entry") end
    if not (l.raw == "-" or l.raw:sub(1, 2) == "- ") then
      -- a mapping key at the sequence's indent ends an indentless sequence
      break
    end
    local rest = l.raw:sub(2)
    local sp = rest:match("^ *")
    local content = rest:sub(#sp + 1)
    if content == "" or content:sub(1, 1) == "#" then
      self.i = self.i + 1
      local n = self:cur()
      if n and n.indent > ind then arr[#arr + 1] = self:node(n.indent, depth + 1, ind)
      else arr[#arr + 1] = json.null end
    else
      -- the item's content starts at a deeper virtual indent
      local vind = ind + 1 + #sp
      local virt = {indent = vind, pos = l.pos + 1 + #sp, line = l.line, raw = content}
      self.lines[self.i] = virt
      arr[#arr + 1] = self:node(vind, depth + 1, ind)
    end
  end
  return arr
end

function Block:map(ind, depth)
  local m = util.omap()
  local sc = self.sc
  Y.lines[m] = self:cur().line
  while true do
    local l = self:cur()
    if not l or l.indent < ind then break end
    if l.indent > ind then sc:err(l.pos, "bad indentation of a mapping entry") end
    if l.raw == "-" or l.raw:sub(1, 2) == "- " then
      sc:err(l.pos, "a sequence entry where a mapping key was expected")
    end
    local key, rel = split_key(sc, l.raw, l.pos)
    if key == nil then
      if l.raw:sub(1, 1) == "?" then sc:err(l.pos, "complex mapping keys (?) are not supported") end
      sc:err(l.pos, "expected 'key: value', got '" .. l.raw .. "'")
    end
    if type(key) == "string" and l.raw:sub(1, 1) ~= "'" and l.raw:sub(1, 1) ~= '"' then
      if key:sub(1, 1):match("[&*!|>%%@`]") then sc:err(l.pos, "anchors, aliases, tags and special keys are not supported") end
      local rk = resolve_plain(key)
      -- PyYAML turns keys like 1 or true into non-strings; keep them as
      -- their string text, recipes only use names
      if rk == json.null then key = "null" end
    end
    if m:has(key) then
      sc:err(l.pos, "duplicate key '" .. tostring(key) .. "' (first at line " .. tostring(m:line(key)) .. ")")
    end
    local after = l.raw:sub(rel)
    local sp = after:match("^[ \t]*")
    local vpos = l.pos + rel - 1 + #sp
    local vtext = after:sub(#sp + 1)
    local value
    if vtext == "" or vtext:sub(1, 1) == "#" then
      self.i = self.i + 1
      local n = self:cur()
      if n and n.indent > ind then value = self:node(n.indent, depth + 1, ind)
      elseif n and n.indent == ind and (n.raw == "-" or n.raw:sub(1, 2) == "- ") then
        value = self:seq(ind, depth + 1)      -- indentless sequence
      else value = json.null end
    else
      self.min_cont = ind
      value = self:inline(vpos, l)
    end
    m:set(key, value, l.line)
  end
  return m
end

--- Parse YAML text into omaps (mappings), json.array tables (sequences) and
--- scalars (null is json.null).  `src` names the text in errors.
function recipe.parse_yaml(text, src)
  src = src or "<yaml>"
  if type(text) ~= "string" then error("parse_yaml: expected a string", 2) end
  Y.lines = Y.lines or setmetatable({}, {__mode = "k"})
  local sc = new_scanner(text, src)
  local lines = logical_lines(sc)
  -- directives / document markers
  local out = {}
  local seen_doc = false
  for _, l in ipairs(lines) do
    if l.indent == 0 and (l.raw == "---" or l.raw:match("^%-%-%-%s")) then
      if seen_doc or #out > 0 then yerr(src, l.line, "several YAML documents in one recipe are not supported") end
      seen_doc = true
      local rest = l.raw:sub(4):gsub("^%s+", "")
      if rest ~= "" and rest:sub(1, 1) ~= "#" then yerr(src, l.line, "content after '---' is not supported") end
    elseif l.indent == 0 and l.raw:match("^%.%.%.") then
      break
    elseif l.indent == 0 and l.raw:sub(1, 1) == "%" then
      yerr(src, l.line, "YAML directives are not supported")
    else
      out[#out + 1] = l
    end
  end
  if #out == 0 then return json.null end
  local b = setmetatable({sc = sc, lines = out, i = 1, min_cont = 0}, Block)
  local v = b:node(out[1].indent, 0)
  if b.i <= #out then
    local l = out[b.i]
    yerr(src, l.line, "unexpected content '" .. l.raw .. "' (check the indentation)")
  end
  return v
end

--- line where a parsed node (omap / array) starts, or nil
function recipe.line_of(node) return Y.lines and Y.lines[node] end

---------------------------------------------------------------------------
-- YAML writer (PyYAML's dump with sort_keys=False, default_flow_style=None,
-- width=88, allow_unicode=True)
---------------------------------------------------------------------------

local WIDTH = 88

local function is_scalar(v) return type(v) ~= "table" or v == json.null end

local function resolves_to_non_str(s)
  local r = resolve_plain(s)
  if r ~= s then return true end
  -- PyYAML also resolves "=", "<<" and timestamps implicitly
  if s == "=" or s == "<<" then return true end
  if s:match("^%d%d%d%d%-%d%d?%-%d%d?") then return true end
  -- YAML 1.1 sexagesimal numbers ("2:4" is the int 124 to PyYAML, "1:30.5"
  -- a float): a mask_structure like "2:4" must be quoted
  if s:find(":", 1, true) then
    local parts = {}
    for p in (s .. ":"):gmatch("([^:]*):") do parts[#parts + 1] = p end
    local ok = #parts >= 2 and parts[1]:match("^[-+]?[0-9][0-9_]*$") ~= nil
    for i = 2, #parts do
      local last = i == #parts
      if not (parts[i]:match("^[0-5]?[0-9]$") or (last and parts[i]:match("^[0-5]?[0-9]%.[0-9_]*$"))) then ok = false end
    end
    if ok then return true end
  end
  return false
end

-- PyYAML's analyze_scalar, reduced to what decides plain vs quoted
local function analyze(s)
  local a = {flow_plain = true, block_plain = true, single = true}
  if s == "" then a.flow_plain, a.block_plain = false, false; return a end
  if s:sub(1, 3) == "---" or s:sub(1, 3) == "..." then a.flow_plain, a.block_plain = false, false end
  local n = #s
  local prev_space = true
  local flow_ind, block_ind = false, false
  for i = 1, n do
    local ch = s:sub(i, i)
    local nxt = s:sub(i + 1, i + 1)
    local followed_ws = nxt == "" or nxt == " " or nxt == "\t" or nxt == "\n"
    if i == 1 then
      if ch:match("[#,%[%]{}&*!|>'\"%%@`]") then flow_ind, block_ind = true, true end
      if ch == "?" or ch == ":" then
        flow_ind = true
        if followed_ws then block_ind = true end
      end
      if ch == "-" and followed_ws then flow_ind, block_ind = true, true end
    else
      if ch:match("[,?%[%]{}]") then flow_ind = true end
      if ch == ":" then
        flow_ind = true
        if followed_ws then block_ind = true end
      end
      if ch == "#" and prev_space then flow_ind, block_ind = true, true end
    end
    local b = ch:byte()
    if b < 0x20 and ch ~= "\n" then a.special = true end
    if ch == "\n" then a.multiline = true end
    prev_space = ch == " " or ch == "\t"
  end
  if s:sub(1, 1) == " " or s:sub(-1) == " " then a.flow_plain, a.block_plain = false, false end
  if a.special then a.flow_plain, a.block_plain, a.single = false, false, false end
  if a.multiline then a.flow_plain, a.block_plain = false, false end
  if flow_ind then a.flow_plain = false end
  if block_ind then a.block_plain = false end
  return a
end

local function dq(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local m = {['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\t'] = '\\t', ['\r'] = '\\r', ['\0'] = '\\0'}
    return m[c] or string.format("\\x%02X", c:byte())
  end) .. '"'
end

-- How a scalar is written: ("plain" | "single" | "double" | "raw", text).
-- "raw" = null / bool / number (never split).
local function scalar_style(v, flow)
  if v == nil or v == json.null then return "raw", "null" end
  local tv = type(v)
  if tv == "boolean" then return "raw", v and "true" or "false" end
  if tv == "number" then
    if math.type(v) == "integer" then return "raw", tostring(v) end
    if v ~= v then return "raw", ".nan" end
    if v == math.huge then return "raw", ".inf" end
    if v == -math.huge then return "raw", "-.inf" end
    local r = util.pyfloat(v):lower()
    if not r:find("%.") and r:find("e") then r = r:gsub("e", ".0e", 1) end
    return "raw", r
  end
  if tv ~= "string" then error("yaml: cannot write a " .. tv, 0) end
  local a = analyze(v)
  local plain_ok = flow and a.flow_plain or (not flow and a.block_plain)
  if plain_ok and not resolves_to_non_str(v) then return "plain", v end
  if a.single then return "single", v end
  return "double", v
end

local Emitter = {}
Emitter.__index = Emitter

function Emitter:write(s)
  self.out[#self.out + 1] = s
  local nl = s:find("\n[^\n]*$")
  if nl then self.col = #s - nl else self.col = self.col + #s end
end

function Emitter:newline(indent)
  self:write("\n" .. string.rep(" ", indent))
end

-- Write a scalar; `sind` is the indent of continuation lines when PyYAML
-- folds a long plain / single-quoted scalar at a space (split = not a key).
function Emitter:scalar(v, flow, sind, split)
  local style, text = scalar_style(v, flow)
  if style == "raw" then self:write(text); return end
  if style == "double" then self:write(dq(text)); return end
  local q = style == "single"
  if q then self:write("'") end
  local i, n = 1, #text
  while i <= n do
    local j = text:find(" ", i, true)
    local word = text:sub(i, (j or n + 1) - 1)
    if q then word = word:gsub("'", "''") end
    self:write(word)
    if not j then break end
    local k = j
    while text:sub(k + 1, k + 1) == " " do k = k + 1 end
    local single = k == j
    -- PyYAML breaks a line at a lone space once past the width (quoted:
    -- never at the first or last character)
    if single and split and self.col > WIDTH and (not q or (j ~= 1 and k ~= n)) then
      self:newline(sind)
    else
      self:write(text:sub(j, k))
    end
    i = k + 1
  end
  if q then self:write("'") end
end

-- all items plain scalars -> PyYAML chooses flow style
local function flow_style(v)
  if util.is_omap(v) then
    for _, x in v:pairs() do if not is_scalar(x) then return false end end
    return true
  end
  for _, x in ipairs(v) do if not is_scalar(x) then return false end end
  return true
end

-- flow collection at the current column; `indent` is the enclosing indent:
-- this collection's items continue at indent + 2, their folded scalars at
-- indent + 4 (PyYAML's increase_indent(flow=True) per level)
function Emitter:flow(v, indent)
  local ind = indent + 2
  local function sep(first)
    if not first then self:write(",") end
    if self.col > WIDTH then self:newline(ind)
    elseif not first then self:write(" ") end
  end
  if util.is_omap(v) then
    if v:len() == 0 then self:write("{}"); return end
    self:write("{")
    local first = true
    for k, x in v:pairs() do
      sep(first)
      first = false
      self:scalar(type(k) == "string" and k or tostring(k), true, ind + 2, false)
      self:write(":")
      if is_scalar(x) then self:write(" "); self:scalar(x, true, ind + 2, true)
      else self:write(" "); self:flow(x, ind) end
    end
    self:write("}")
  else
    if #v == 0 then self:write("[]"); return end
    self:write("[")
    for i, x in ipairs(v) do
      sep(i == 1)
      if is_scalar(x) then self:scalar(x, true, ind + 2, true) else self:flow(x, ind) end
    end
    self:write("]")
  end
end

-- value after "key:" (in_seq false) or "-" (in_seq true) of a block
-- collection at `indent`
function Emitter:value(v, indent, in_seq)
  if is_scalar(v) then self:write(" "); self:scalar(v, false, indent + 2, true); return end
  local empty = (util.is_omap(v) and v:len() == 0) or (not util.is_omap(v) and #v == 0)
  if empty or flow_style(v) then self:write(" "); self:flow(v, indent); return end
  if util.is_omap(v) then
    if in_seq then
      -- "- key: v" on the same line, the rest aligned with the key
      self:write(" ")
      self:block_map(v, indent + 2, true)
    else
      self:newline(indent + 2)
      self:block_map(v, indent + 2, true)
    end
  else
    if in_seq then
      self:write(" ")
      self:block_seq(v, indent + 2, true)
    else
      -- PyYAML: block sequences in a mapping are not indented
      self:newline(indent)
      self:block_seq(v, indent, true)
    end
  end
end

function Emitter:block_map(m, indent, first_written)
  local first = true
  for k, v in m:pairs() do
    if not (first and first_written) then self:newline(indent) end
    first = false
    self:scalar(type(k) == "string" and k or tostring(k), false, indent + 2, false)
    self:write(":")
    self:value(v, indent, false)
  end
end

function Emitter:block_seq(a, indent, first_written)
  for i, v in ipairs(a) do
    if not (i == 1 and first_written) then self:newline(indent) end
    self:write("-")
    self:value(v, indent, true)
  end
end

--- YAML text of a value (omap / array / scalars), as PyYAML dumps it.
function recipe.to_yaml(v)
  local e = setmetatable({out = {}, col = 0}, Emitter)
  if is_scalar(v) then
    e:scalar(v, false, 2, true)
    e:write("\n...")
  elseif util.is_omap(v) then
    if v:len() == 0 or flow_style(v) then e:flow(v, 0) else e:block_map(v, 0, true) end
  else
    if #v == 0 or flow_style(v) then e:flow(v, 0) else e:block_seq(v, 0, true) end
  end
  e:write("\n")
  return table.concat(e.out)
end

--- convert plain Lua tables (sorted keys) / omaps into YAML-ready values
function recipe.to_yaml_value(v)
  if v == nil or v == json.null then return json.null end
  if type(v) ~= "table" then return v end
  local mt = getmetatable(v)
  if mt and mt.__to_yaml then return mt.__to_yaml(v) end
  if util.is_omap(v) then
    local m = util.omap()
    for k, x in v:pairs() do m:set(k, recipe.to_yaml_value(x)) end
    return m
  end
  if json.is_array(v) or (getmetatable(v) == json.array_mt) then
    local a = json.array({})
    for i = 1, #v do a[i] = recipe.to_yaml_value(v[i]) end
    return a
  end
  local ks = {}
  for k in pairs(v) do ks[#ks + 1] = k end
  local order = json.keys(v)
  if order then ks = order else table.sort(ks, function(a, b) return tostring(a) < tostring(b) end) end
  local m = util.omap()
  for _, k in ipairs(ks) do m:set(k, recipe.to_yaml_value(v[k])) end
  return m
end

---------------------------------------------------------------------------
-- recipes
---------------------------------------------------------------------------

local Recipe = {__name = "llmc.Recipe"}
Recipe.__index = Recipe
recipe.Recipe = Recipe

local function modifiers_mod() return require "llmc.modifiers" end

local function is_modifier(x)
  return type(x) == "table" and getmetatable(x) ~= nil and rawget(getmetatable(x), "__modifier") == true
end
recipe.is_modifier = is_modifier

-- dotted path -> line inside a parsed modifier-args node
local function locate(node, path, fallback)
  local line = fallback
  local cur = node
  for part in tostring(path or ""):gmatch("[^%.]+") do
    if util.is_omap(cur) then
      local l = cur:line(part)
      if l then line = l end
      cur = cur:get(part)
    elseif type(cur) == "table" then
      local l = Y.lines and Y.lines[cur]
      if l then line = l end
      cur = cur[tonumber(part) or part]
    else break end
  end
  return line
end

-- build the modifier list from a parsed recipe dict (omap)
local function from_dict(d, src, target_stage)
  if not util.is_omap(d) then
    error(src .. ": a recipe must be a mapping of stages (e.g. quant_stage:), got " .. type(d), 0)
  end
  local mods = {}
  local stage = "default"
  local args = d:get("args")
  for skey, sval in d:pairs() do
    if type(skey) == "string" and skey:match("_stage$") and util.is_omap(sval)
       and (not target_stage or skey:sub(1, #target_stage) == target_stage) then
      stage = skey:gsub("_stage$", "")
      for gkey, gval in sval:pairs() do
        if type(gkey) == "string" and gkey:match("_modifiers$") and util.is_omap(gval) then
          local group = gkey:gsub("_modifiers$", "")
          for mname, margs in gval:pairs() do
            local mline = gval:line(mname)
            if margs == json.null then margs = util.omap() end
            if not util.is_omap(margs) then
              error(string.format("%s:%s: %s: arguments must be a mapping", src, tostring(mline), mname), 0)
            end
            if margs:has("group") then
              error(string.format("%s:%s: %s: 'group' comes from the enclosing '<group>_modifiers' key; remove it",
                    src, tostring(margs:line("group") or mline), mname), 0)
            end
            local where = function(field)
              local l = locate(margs, field, mline)
              return string.format("%s:%s: %s%s", src, tostring(l), mname, field and ("." .. field) or "")
            end
            local m = modifiers_mod().create(mname, margs, where, mline and (src .. ":" .. mline))
            m.group = group
            mods[#mods + 1] = m
          end
        end
      end
    end
  end
  if #mods == 0 then
    error(src .. ": the recipe defines no modifiers (expected <name>_stage: / <group>_modifiers: / <Modifier>:)", 0)
  end
  return setmetatable({modifiers = mods, stage = stage, args = args, source = src}, Recipe)
end

local function load_text(text, src, target_stage)
  local trimmed = text:gsub("^%s+", "")
  local d
  if trimmed:sub(1, 1) == "{" then
    local ok, v = pcall(json.decode, text, src)
    if ok then d = recipe.to_yaml_value(v) end
  end
  if d == nil then d = recipe.parse_yaml(text, src) end
  return from_dict(d, src, target_stage)
end

--- Lua table in the stage form, one key per level
local function from_lua_table(t)
  local function only_key(tbl, what)
    local k, n = nil, 0
    for kk in pairs(tbl) do k = kk; n = n + 1 end
    if n ~= 1 then
      error("recipe: a Lua table recipe must have exactly one " .. what .. " (Lua tables have no order); " ..
            "pass a list of modifiers instead", 0)
    end
    return k
  end
  local d = util.omap()
  for _, sk in ipairs({only_key(t, "stage")}) do
    local st = t[sk]
    if type(st) ~= "table" then error("recipe: stage '" .. tostring(sk) .. "' must be a table", 0) end
    local gk = only_key(st, "modifier group")
    local g = st[gk]
    if type(g) ~= "table" then error("recipe: group '" .. tostring(gk) .. "' must be a table", 0) end
    local mk = only_key(g, "modifier per group")
    local sm = util.omap()
    local gm = util.omap()
    local args = g[mk]
    gm:set(mk, args)
    sm:set(gk, gm)
    d:set(sk, sm)
  end
  local where = util.caller_where() or "recipe"
  -- convert the args with sorted keys (stable), keep the caller's position
  local mods = {}
  for skey, sval in d:pairs() do
    for gkey, gval in sval:pairs() do
      for mname, margs in gval:pairs() do
        local m = modifiers_mod().create(mname, margs, function(field)
          return where .. ": " .. mname .. (field and ("." .. field) or "")
        end, where)
        m.group = gkey:gsub("_modifiers$", "")
        mods[#mods + 1] = m
      end
      if not gkey:match("_modifiers$") then error("recipe: group key '" .. gkey .. "' must end in _modifiers", 0) end
    end
    if not skey:match("_stage$") then error("recipe: stage key '" .. skey .. "' must end in _stage", 0) end
  end
  local stage = next(t):gsub("_stage$", "")
  return setmetatable({modifiers = mods, stage = stage}, Recipe)
end

--- Build a Recipe from any accepted form (see the header).  opts.stage
--- keeps only stages whose key starts with it.
function recipe.load(x, opts)
  opts = opts or {}
  if getmetatable(x) == Recipe then return x end
  if is_modifier(x) then
    return setmetatable({modifiers = {x}, stage = x.group or "default"}, Recipe)
  end
  if type(x) == "table" and #x > 0 then
    local mods = {}
    local function flatten(l)
      for i, m in ipairs(l) do
        if is_modifier(m) then mods[#mods + 1] = m
        elseif type(m) == "table" and #m > 0 and is_modifier(m[1]) then flatten(m)
        else error("recipe: entry " .. i .. " of the list is not a modifier (use llmc.modifiers.<Name>{...})", 0) end
      end
    end
    flatten(x)
    local group = mods[1].group or "default"
    return setmetatable({modifiers = mods, stage = group}, Recipe)
  end
  if type(x) == "table" then return from_lua_table(x) end
  if type(x) ~= "string" then error("recipe: expected a modifier, a list of modifiers, YAML text or a file, got " .. type(x), 0) end
  local is_file = not x:find("\n") and util.exists(x) and not (util.fs and util.fs.is_dir(x))
  if is_file then
    local text = util.read_file(x)
    local lower = x:lower()
    if lower:match("%.md$") then
      local body = text:match("^%s*%-%-%-(.-)%-%-%-") or text:match("^%s*%+%+%+(.-)%+%+%+")
      if not body then error(x .. ": no YAML front matter (--- ... ---) in the recipe card", 0) end
      text = body
    end
    if lower:match("%.json$") then
      return from_dict(recipe.to_yaml_value(json.decode(text, x)), x, opts.stage)
    end
    return load_text(text, x, opts.stage)
  end
  if not x:find("[\n:]") then
    error("recipe: '" .. x .. "' is neither a file nor a YAML recipe", 0)
  end
  return load_text(x, opts.source or "<recipe>", opts.stage)
end

--- llm-compressor's get_yaml_serializable_dict: {<stage>_stage:
--- {<group>_modifiers: {Name: args}}} as an omap
function recipe.to_dict(r)
  local stage = r.stage or "default"
  local d = util.omap()
  local sd = util.omap()
  d:set(stage .. "_stage", sd)
  for _, m in ipairs(r.modifiers) do
    local group = (m.group or stage) .. "_modifiers"
    if not sd:has(group) then sd:set(group, util.omap()) end
    sd:get(group):set(m.name, m:dump())
  end
  return d
end

-- llm-compressor's append_recipe_dict: stage key clashes get numeric suffixes
local function merge_dicts(d1, d2)
  local result = util.omap()
  for k, v in d1:pairs() do result:set(k, v) end
  for k, v in d2:pairs() do
    if not result:has(k) then result:set(k, v)
    else
      local base = k:gsub("_%d+$", "")
      if k == base then
        local old = result:get(k)
        result:remove(k)
        result:set(base .. "_0", old)
        result:set(base .. "_1", v)
      else
        local i = 1
        while result:has(base .. "_" .. i) do i = i + 1 end
        result:set(base .. "_" .. i, v)
      end
    end
  end
  return result
end

--- recipe.yaml text; `existing` (optional) is the text of a recipe.yaml
--- already in the source model directory, merged in front.
function recipe.yaml(r, existing)
  local d = recipe.to_dict(r)
  if existing and existing:match("%S") then
    local ok, prev = pcall(recipe.parse_yaml, existing, "recipe.yaml")
    if ok and util.is_omap(prev) then d = merge_dicts(prev, d) end
  end
  return recipe.to_yaml(d)
end

Recipe.__tostring = function(r)
  local names = {}
  for _, m in ipairs(r.modifiers) do names[#names + 1] = m.name end
  return "Recipe(" .. table.concat(names, ", ") .. ")"
end

return recipe
