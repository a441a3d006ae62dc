--[[
llmc.jinja -- a Jinja2 subset, in pure Lua 5.4, for Hugging Face chat templates.

Lexer -> parser (AST) -> tree-walking renderer.  It follows Jinja2 3.x as configured by
transformers (ImmutableSandboxedEnvironment, trim_blocks=True, lstrip_blocks=True,
keep_trailing_newline=False, extension loopcontrols, the {% generation %} tag, a
json.dumps-compatible `tojson`, `raise_exception` and `strftime_now` globals), and emulates the
Python semantics templates rely on: truthiness, str()/repr() of values, int vs float, string
methods (.startswith, .split, .strip, ...), slicing, comparison chains, and Jinja's Undefined.

Usage:

    local jinja = require "llmc.jinja"
    local t = jinja.compile("{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}\n{% endfor %}")
    print(t:render{ messages = { {role = "user", content = " hi "} } })   --> "<|user|>hi\n"
    print(jinja.render("{{ x | tojson }}", { x = jinja.json_decode('{"b": 1, "a": [true, null]}') }))
                                                                           --> {"b": 1, "a": [true, null]}

Value model (Python value -> Lua value):
  str -> string (UTF-8; lengths, indexing, slicing count code points); int -> Lua integer;
  float -> Lua float; bool -> boolean; None -> jinja.none (== cjson.null);
  list / tuple / dict -> table.  A table is a list when it was marked with jinja.list() (or
  came from jinja.json_decode / a template literal), or when t[1] ~= nil, or when it is
  empty; otherwise it is a dict.  Lua tables do not remember key order, so dicts keep an
  order only when it is known: jinja.json_decode() and jinja.dict()/jinja.odict() record it
  (in a weak side table; the table itself stays a plain table), and template dict literals
  keep theirs.  Keys of an unordered dict iterate sorted.  Use jinja.dict{} for an empty
  dict (an unmarked empty table is a list) and jinja.none, not nil, for None inside lists.
  A missing variable / key / attribute is Undefined: prints as "", is falsy, iterates as
  empty, `is defined` is false; any other use raises an UndefinedError (as jinja2's default).

Errors are raised with error(msg, 0); msg is "NAME:LINE:COL: Kind: message" (syntax errors:
"NAME:LINE:COL: TemplateSyntaxError: ..."; raise_exception(m): "NAME:LINE:COL: m").
Not supported: template inheritance/include/import, {% call %} blocks, recursive loops,
autoescaping, the async/i18n extensions.  upper()/lower() map ASCII, Latin-1, Latin
Extended-A, Greek and Cyrillic letters only.
]]

local cjson = require "cjson"

local M = {}

local NULL = cjson.null
M.none = NULL

local floor, mtype, tointeger = math.floor, math.type, math.tointeger
local concat, sort, unpack = table.concat, table.sort, table.unpack
local fmt = string.format

-- =====================================================================================
-- Errors
-- =====================================================================================

local ERR_MT = { __name = "jinja.Error" }
ERR_MT.__tostring = function(e) return e.full or e.msg end

-- Raise a template error of Python class `cls` (nil = raise_exception's TemplateError,
-- whose message is shown bare).
local function raise(cls, msg, ...)
  if select("#", ...) > 0 then msg = fmt(msg, ...) end
  error(setmetatable({ cls = cls, msg = msg }, ERR_MT), 0)
end

-- =====================================================================================
-- Value model
-- =====================================================================================

local UNDEF_MT = { __name = "jinja.Undefined" }
local NS_MT = { __name = "jinja.Namespace" }
local LOOP_MT = { __name = "jinja.LoopContext" }
local CALL_MT = { __name = "jinja.Callable" }
local MACRO_MT = { __name = "jinja.Macro" }

-- Undefined carries the message of the error its misuse raises.
local function undefined(hint) return setmetatable({ hint = hint }, UNDEF_MT) end
M.undefined = function(hint) return undefined(hint or "value is undefined") end

local KIND = setmetatable({}, { __mode = "k" })  -- table -> "list" | "tuple" | "dict"
local ORDER = setmetatable({}, { __mode = "k" }) -- dict -> array of keys in insertion order

local function new_list(t) t = t or {}; KIND[t] = "list"; return t end
local function new_tuple(t) t = t or {}; KIND[t] = "tuple"; return t end
local function new_dict(t, keys) t = t or {}; KIND[t] = "dict"; ORDER[t] = keys or {}; return t end

--- Mark `t` (default: a new table) as a list; returns it.
function M.list(t) return new_list(t) end
--- Mark `t` as a dict; `keys` (optional) gives the key order.  Returns `t`.
function M.dict(t, keys) return new_dict(t, keys) end
--- Build an ordered dict from { {k1, v1}, {k2, v2}, ... }.
function M.odict(pairs_list)
  local t, keys = {}, {}
  for _, kv in ipairs(pairs_list) do
    if t[kv[1]] == nil then keys[#keys + 1] = kv[1] end
    t[kv[1]] = kv[2]
  end
  return new_dict(t, keys)
end

local function kind(v)
  local tv = type(v)
  if tv == "string" then return "str"
  elseif tv == "number" then return mtype(v) == "integer" and "int" or "float"
  elseif tv == "boolean" then return "bool"
  elseif tv == "nil" then return "undefined"
  elseif v == NULL then return "none"
  elseif tv == "table" then
    local mt = getmetatable(v)
    if mt == UNDEF_MT then return "undefined"
    elseif mt == NS_MT then return "namespace"
    elseif mt == LOOP_MT then return "loop"
    elseif mt == CALL_MT then return "callable"
    elseif mt == MACRO_MT then return "macro" end
    local k = KIND[v]
    if k then return k end
    if rawget(v, 1) ~= nil or next(v) == nil then return "list" end
    return "dict"
  elseif tv == "function" then return "callable"
  end
  return "object"
end
M.kind = kind

local PYTYPE = {
  str = "str", int = "int", float = "float", bool = "bool", none = "NoneType", list = "list",
  tuple = "tuple", dict = "dict", undefined = "Undefined", namespace = "Namespace",
  loop = "LoopContext", callable = "function", macro = "Macro", object = "object",
}
local function pytype(v) return PYTYPE[kind(v)] end

-- Jinja's object_type_repr, used in "has no attribute" messages.
local function type_repr(v)
  if v == NULL then return "None" end
  return "'" .. pytype(v) .. " object'"
end

local function check_defined(v)
  if v == nil then raise("UndefinedError", "value is undefined") end
  if type(v) == "table" and getmetatable(v) == UNDEF_MT then raise("UndefinedError", v.hint) end
end

-- Python truthiness.
local function truthy(v)
  if v == nil or v == false or v == NULL then return false end
  local tv = type(v)
  if tv == "number" then return v ~= 0 end
  if tv == "string" then return v ~= "" end
  if tv == "table" then
    local mt = getmetatable(v)
    if mt == UNDEF_MT then return false end
    if mt == NS_MT or mt == LOOP_MT or mt == CALL_MT or mt == MACRO_MT then return true end
    return next(v) ~= nil
  end
  return true
end
M.truthy = truthy

-- Sort keys of mixed types deterministically (numbers before strings, each in natural order).
local function key_lt(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

-- Keys of a dict: recorded insertion order (skipping removed keys), then any other keys sorted.
local function dict_keys(d)
  local ord, keys = ORDER[d], {}
  if ord then
    local seen = {}
    for i = 1, #ord do
      local k = ord[i]
      if not seen[k] and d[k] ~= nil then keys[#keys + 1] = k; seen[k] = true end
    end
    local extra
    for k in pairs(d) do
      if not seen[k] then extra = extra or {}; extra[#extra + 1] = k end
    end
    if extra then
      sort(extra, key_lt)
      for i = 1, #extra do keys[#keys + 1] = extra[i] end
    end
  else
    for k in pairs(d) do keys[#keys + 1] = k end
    sort(keys, key_lt)
  end
  return keys
end
M.dict_keys = dict_keys

-- =====================================================================================
-- UTF-8 and Python string helpers
-- =====================================================================================

local WS = {}  -- Python str.isspace() code points, as UTF-8 strings
for _, cp in ipairs { 9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 0x85, 0xA0, 0x1680, 0x2028,
  0x2029, 0x202F, 0x205F, 0x3000 } do WS[utf8.char(cp)] = true end
for cp = 0x2000, 0x200A do WS[utf8.char(cp)] = true end

local function clen(b)
  if b < 0xC0 then return 1 elseif b < 0xE0 then return 2 elseif b < 0xF0 then return 3 end
  return 4
end

local function is_ascii(s) return not s:find("[\128-\255]") end

-- Code points of s as an array of strings (bytes if s is not valid UTF-8).
local function chars(s)
  local t = {}
  if is_ascii(s) or not utf8.len(s) then
    for i = 1, #s do t[i] = s:sub(i, i) end
  else
    for ch in s:gmatch(utf8.charpattern) do t[#t + 1] = ch end
  end
  return t
end

local function str_len(s)
  if is_ascii(s) then return #s end
  return utf8.len(s) or #s
end

local function charset(set_str)
  local set = {}
  for _, ch in ipairs(chars(set_str)) do set[ch] = true end
  return set
end

local function rstrip_set(s, set)
  local e = #s
  while e > 0 do
    local st = e
    while st > 1 and e - st < 3 and (s:byte(st) & 0xC0) == 0x80 do st = st - 1 end
    if set[s:sub(st, e)] then e = st - 1 else break end
  end
  return s:sub(1, e)
end

local function lstrip_set(s, set)
  local i, n = 1, #s
  while i <= n do
    local l = clen(s:byte(i))
    if set[s:sub(i, i + l - 1)] then i = i + l else break end
  end
  return s:sub(i)
end

local function py_strip(s, which, chars_arg)
  local set = WS
  if chars_arg ~= nil and chars_arg ~= NULL then
    if type(chars_arg) ~= "string" then raise("TypeError", "strip arg must be None or str") end
    set = charset(chars_arg)
  end
  if which ~= "r" then s = lstrip_set(s, set) end
  if which ~= "l" then s = rstrip_set(s, set) end
  return s
end
M.py_strip = py_strip

-- Case mapping: ASCII via string.upper/lower, plus Latin-1, Latin Extended-A, Greek, Cyrillic.
local UP, LOW = {}, {}
do
  local function pair(lo, up) UP[lo] = up; LOW[up] = lo end
  pair(0xB5, 0x39C)
  for cp = 0xE0, 0xFE do if cp ~= 0xF7 then pair(cp, cp - 32) end end
  pair(0xFF, 0x178)
  for cp = 0x100, 0x136, 2 do pair(cp + 1, cp) end
  for cp = 0x139, 0x147, 2 do pair(cp + 1, cp) end
  for cp = 0x14A, 0x176, 2 do pair(cp + 1, cp) end
  for cp = 0x179, 0x17D, 2 do pair(cp + 1, cp) end
  UP[0x131] = 0x49; LOW[0x130] = nil; LOW[0x49] = nil
  pair(0x3C2, 0x3A3)
  for cp = 0x3B1, 0x3C9 do if cp ~= 0x3C2 then pair(cp, cp - 32) end end
  for cp = 0x430, 0x44F do pair(cp, cp - 32) end
  for cp = 0x450, 0x45F do pair(cp, cp - 80) end
end

local function map_case(s, upper)
  local ascii = upper and string.upper or string.lower
  if is_ascii(s) or not utf8.len(s) then return ascii(s) end
  local map = upper and UP or LOW
  return (s:gsub(utf8.charpattern, function(ch)
    if #ch == 1 then return ascii(ch) end
    local cp = utf8.codepoint(ch)
    if upper and cp == 0xDF then return "SS" end
    local m = map[cp]
    if m then return utf8.char(m) end
    return ch
  end))
end
local function py_upper(s) return map_case(s, true) end
local function py_lower(s) return map_case(s, false) end

local function is_cased_letter(ch)
  if #ch == 1 then return ch:find("^%a") ~= nil end
  local cp = utf8.codepoint(ch)
  return UP[cp] ~= nil or LOW[cp] ~= nil or cp == 0xDF
end

local function py_capitalize(s)
  local cs = chars(s)
  if #cs == 0 then return s end
  return py_upper(cs[1]) .. py_lower(concat(cs, "", 2))
end

-- str.title(): a cased letter after an uncased character starts a word.
local function py_title(s)
  local out, prev_cased = {}, false
  for _, ch in ipairs(chars(s)) do
    local cased = is_cased_letter(ch)
    if cased then
      out[#out + 1] = prev_cased and py_lower(ch) or py_upper(ch)
    else
      out[#out + 1] = ch
    end
    prev_cased = cased
  end
  return concat(out)
end

-- Python slice index adjustment (PySlice_AdjustIndices); returns the selected 1-based indices.
local function slice_indices(n, start, stop, step)
  if step == nil then step = 1 end
  if step == 0 then raise("ValueError", "slice step cannot be zero") end
  local function adj(v, dflt)
    if v == nil then return dflt end
    if v < 0 then
      v = v + n
      if v < 0 then v = step < 0 and -1 or 0 end
    elseif v >= n then
      v = step < 0 and n - 1 or n
    end
    return v
  end
  local a = adj(start, step < 0 and n - 1 or 0)
  local b = adj(stop, step < 0 and -1 or n)
  local idx = {}
  local i = a
  if step > 0 then
    while i < b do idx[#idx + 1] = i + 1; i = i + step end
  else
    while i > b do idx[#idx + 1] = i + 1; i = i + step end
  end
  return idx
end

-- =====================================================================================
-- str() and repr()
-- =====================================================================================

-- Python repr(float): shortest round-tripping digits; fixed notation for 1e-4 <= |x| < 1e16.
local function float_repr(x)
  if x ~= x then return "nan" end
  if x == math.huge then return "inf" end
  if x == -math.huge then return "-inf" end
  local s
  for p = 0, 16 do
    s = fmt("%." .. p .. "e", x)
    if tonumber(s) == x then break end
  end
  local sign, d1, frac, ex = s:match("^(%-?)(%d)%.?(%d*)e([-+]%d+)$")
  local digits = (d1 .. frac):gsub("0+$", "")
  if digits == "" then digits = "0" end
  local e = tonumber(ex)
  if e >= -4 and e < 16 then
    if e >= #digits - 1 then
      return sign .. digits .. string.rep("0", e - #digits + 1) .. ".0"
    elseif e >= 0 then
      return sign .. digits:sub(1, e + 1) .. "." .. digits:sub(e + 2)
    else
      return sign .. "0." .. string.rep("0", -e - 1) .. digits
    end
  end
  local mant = digits:sub(1, 1)
  if #digits > 1 then mant = mant .. "." .. digits:sub(2) end
  return fmt("%s%se%s%02d", sign, mant, e < 0 and "-" or "+", math.abs(e))
end
M.float_repr = float_repr

local function str_repr(s)
  local q = "'"
  if s:find("'", 1, true) and not s:find('"', 1, true) then q = '"' end
  local out = s:gsub("[\0-\31\\'\"\127]", function(c)
    if c == "\\" then return "\\\\" end
    if c == q then return "\\" .. q end
    if c == "'" or c == '"' then return c end
    if c == "\n" then return "\\n" end
    if c == "\r" then return "\\r" end
    if c == "\t" then return "\\t" end
    return fmt("\\x%02x", c:byte())
  end)
  -- Non-printable code points that Python's repr escapes: C1 controls, NBSP, soft hyphen,
  -- line/paragraph separators.
  out = out:gsub("\194([\128-\160\173])", function(c) return fmt("\\x%02x", c:byte()) end)
  out = out:gsub("\226\128([\168\169])", function(c) return fmt("\\u%04x", 0x2000 + c:byte() - 0x80) end)
  return q .. out .. q
end

local to_str, repr

repr = function(v, seen)
  local k = kind(v)
  if k == "str" then return str_repr(v) end
  if k == "undefined" then return "Undefined" end
  if k == "list" or k == "tuple" or k == "dict" or k == "namespace" then
    seen = seen or {}
    if seen[v] then return k == "dict" and "{...}" or "[...]" end
    seen[v] = true
    local parts = {}
    local r
    if k == "dict" or k == "namespace" then
      local d = k == "dict" and v or v.vals
      for _, key in ipairs(dict_keys(d)) do parts[#parts + 1] = repr(key, seen) .. ": " .. repr(d[key], seen) end
      r = "{" .. concat(parts, ", ") .. "}"
      if k == "namespace" then r = "<Namespace " .. r .. ">" end
    else
      for i = 1, #v do parts[i] = repr(v[i], seen) end
      if k == "tuple" then
        r = "(" .. concat(parts, ", ") .. (#v == 1 and ",)" or ")")
      else
        r = "[" .. concat(parts, ", ") .. "]"
      end
    end
    seen[v] = nil
    return r
  end
  if k == "loop" then return fmt("<LoopContext %d/%d>", v.i, v.n) end
  if k == "macro" then return fmt("<Macro '%s'>", v.name) end
  if k == "callable" then return fmt("<built-in function %s>", type(v) == "table" and v.name or "lua") end
  return to_str(v)
end

-- Python str(v); Undefined prints as "".
to_str = function(v)
  local tv = type(v)
  if tv == "string" then return v end
  if tv == "number" then
    if mtype(v) == "integer" then return fmt("%d", v) end
    return float_repr(v)
  end
  if tv == "boolean" then return v and "True" or "False" end
  if v == NULL then return "None" end
  if v == nil then return "" end
  if tv == "table" and getmetatable(v) == UNDEF_MT then return "" end
  if tv == "table" or tv == "function" then return repr(v) end
  return tostring(v)
end
M.to_str = to_str
M.repr = function(v) return repr(v) end

-- =====================================================================================
-- JSON: json.dumps-compatible encoder and an order-preserving decoder
-- =====================================================================================

local JSON_ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  ["\b"] = "\\b", ["\f"] = "\\f" }

local function json_str(s, ensure_ascii)
  s = s:gsub('[\0-\31"\\]', function(c) return JSON_ESC[c] or fmt("\\u%04x", c:byte()) end)
  if ensure_ascii and not is_ascii(s) and utf8.len(s) then
    s = s:gsub(utf8.charpattern, function(ch)
      if #ch == 1 then return ch end
      local cp = utf8.codepoint(ch)
      if cp < 0x10000 then return fmt("\\u%04x", cp) end
      cp = cp - 0x10000
      return fmt("\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF))
    end)
  end
  return '"' .. s .. '"'
end

local function json_float(x)
  if x ~= x then return "NaN" end
  if x == math.huge then return "Infinity" end
  if x == -math.huge then return "-Infinity" end
  return float_repr(x)
end

local function json_key(k)
  local tk = type(k)
  if tk == "string" then return k end
  if tk == "number" then return mtype(k) == "integer" and fmt("%d", k) or json_float(k) end
  if tk == "boolean" then return k and "true" or "false" end
  if k == NULL then return "null" end
  raise("TypeError", "keys must be str, int, float, bool or None, not %s", pytype(k))
end

-- Python json.dumps(v, ensure_ascii=, indent=, separators=, sort_keys=).
local function tojson(v, o, level, seen)
  local k = kind(v)
  if k == "str" then return json_str(v, o.ensure_ascii) end
  if k == "int" then return fmt("%d", v) end
  if k == "float" then return json_float(v) end
  if k == "bool" then return v and "true" or "false" end
  if k == "none" then return "null" end
  if k ~= "list" and k ~= "tuple" and k ~= "dict" then
    raise("TypeError", "Object of type %s is not JSON serializable", pytype(v))
  end
  if seen[v] then raise("ValueError", "Circular reference detected") end
  seen[v] = true
  local parts = {}
  if k == "dict" then
    local keys = dict_keys(v)
    if o.sort_keys then
      local ks = {}
      for i, key in ipairs(keys) do ks[i] = { json_key(key), key } end
      sort(ks, function(a, b) return a[1] < b[1] end)
      for i = 1, #ks do keys[i] = ks[i][2] end
    end
    for i, key in ipairs(keys) do
      parts[i] = json_str(json_key(key), o.ensure_ascii) .. o.key_sep .. tojson(v[key], o, level + 1, seen)
    end
  else
    for i = 1, #v do parts[i] = tojson(v[i], o, level + 1, seen) end
  end
  seen[v] = nil
  local open, close = "[", "]"
  if k == "dict" then open, close = "{", "}" end
  if #parts == 0 then return open .. close end
  if o.indent then
    local inner = "\n" .. string.rep(o.indent, level + 1)
    return open .. inner .. concat(parts, o.item_sep .. inner) .. "\n" .. string.rep(o.indent, level) .. close
  end
  return open .. concat(parts, o.item_sep) .. close
end

--- json.dumps(v) as transformers' tojson filter does it: ensure_ascii=false, separators
--- (", ", ": ") without indent and (",", ": ") with one, dict key order preserved.
--- opts: { indent = int|string, ensure_ascii = bool, sort_keys = bool, separators = {item, key} }
function M.tojson(v, opts)
  opts = opts or {}
  local o = { ensure_ascii = opts.ensure_ascii, sort_keys = opts.sort_keys }
  local ind = opts.indent
  if ind ~= nil and ind ~= NULL then
    if type(ind) == "string" then o.indent = ind
    elseif mtype(ind) == "integer" then o.indent = string.rep(" ", math.max(ind, 0))
    else raise("TypeError", "indent must be an int or a string") end
  end
  if opts.separators ~= nil and opts.separators ~= NULL then
    o.item_sep, o.key_sep = opts.separators[1], opts.separators[2]
    if type(o.item_sep) ~= "string" or type(o.key_sep) ~= "string" then
      raise("TypeError", "separators must be a pair of strings")
    end
  else
    o.item_sep = o.indent and "," or ", "
    o.key_sep = ": "
  end
  return tojson(v, o, 0, {})
end

local cj = cjson.new()          -- private instance: our settings do not leak to other users
cj.decode_invalid_numbers(false) -- strict JSON numbers (no hex, NaN, Infinity)

--- Decode JSON text keeping object key order (objects -> ordered dicts, arrays -> lists,
--- null -> jinja.none, integers -> Lua integers, other numbers -> floats, as Python's json).
--- Raises "invalid JSON: ..." on malformed input (validation by lua-cjson).
function M.json_decode(text)
  if type(text) ~= "string" then error("json_decode: expected a string, got " .. type(text), 2) end
  local ok, err = pcall(cj.decode, text)
  if not ok then error("invalid JSON: " .. tostring(err), 2) end
  -- The text is valid JSON now, so this walk only has to follow its structure.
  local pos = 1
  local function ws() pos = text:find("[^ \t\r\n]", pos) or (#text + 1) end
  local function str()
    local s, i, j = pos, pos + 1, nil
    while true do
      j = text:find('["\\]', i)
      if text:byte(j) == 92 then i = j + 2 else break end
    end
    pos = j + 1
    local raw = text:sub(s, j)
    if not raw:find("\\", 1, true) then return raw:sub(2, -2) end
    return cj.decode(raw)
  end
  local value
  value = function()
    ws()
    local c = text:byte(pos)
    if c == 123 then -- {
      pos = pos + 1
      local t, keys = {}, {}
      ws()
      if text:byte(pos) == 125 then pos = pos + 1; return new_dict(t, keys) end
      while true do
        ws()
        local key = str()
        ws(); pos = pos + 1 -- ':'
        local v = value()
        if t[key] == nil then keys[#keys + 1] = key end
        t[key] = v
        ws()
        local d = text:byte(pos); pos = pos + 1
        if d == 125 then break end
      end
      return new_dict(t, keys)
    elseif c == 91 then -- [
      pos = pos + 1
      local t = new_list()
      ws()
      if text:byte(pos) == 93 then pos = pos + 1; return t end
      while true do
        t[#t + 1] = value()
        ws()
        local d = text:byte(pos); pos = pos + 1
        if d == 93 then break end
      end
      return t
    elseif c == 34 then return str()
    elseif c == 116 then pos = pos + 4; return true
    elseif c == 102 then pos = pos + 5; return false
    elseif c == 110 then pos = pos + 4; return NULL
    end
    local a, b = text:find("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    pos = b + 1
    return tonumber(text:sub(a, b))
  end
  return value()
end

-- =====================================================================================
-- Lexer
-- =====================================================================================

local function line_col(src, p)
  local line, ls = 1, 1
  for nl in src:gmatch("()\n") do
    if nl >= p then break end
    line, ls = line + 1, nl + 1
  end
  local col = 1
  if p > ls then col = (utf8.len(src, ls, p - 1) or (p - ls)) + 1 end
  return line, col
end

local function syntax_error(src, name, p, msg, ...)
  if select("#", ...) > 0 then msg = fmt(msg, ...) end
  local line, col = line_col(src, p)
  error(fmt("%s:%d:%d: TemplateSyntaxError: %s", name, line, col, msg), 0)
end

-- Python's \s at position p: returns the position after a run of whitespace.
local function skip_ws(src, p)
  local n = #src
  while p <= n do
    local l = clen(src:byte(p))
    if WS[src:sub(p, p + l - 1)] then p = p + l else break end
  end
  return p
end

local SIMPLE_ESC = { n = "\n", t = "\t", r = "\r", ["\\"] = "\\", ["'"] = "'", ['"'] = '"',
  a = "\a", b = "\b", f = "\f", v = "\v", ["\n"] = "" }

-- Python 'unicode-escape' decoding of a string literal body.
local function unescape(s, src, name, p)
  if not s:find("\\", 1, true) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local j = s:find("\\", i, true)
    if not j then out[#out + 1] = s:sub(i); break end
    out[#out + 1] = s:sub(i, j - 1)
    local c = s:sub(j + 1, j + 1)
    if SIMPLE_ESC[c] then
      out[#out + 1] = SIMPLE_ESC[c]; i = j + 2
    elseif c:find("^[0-7]") then
      local o = s:match("^[0-7][0-7]?[0-7]?", j + 1)
      out[#out + 1] = utf8.char(tonumber(o, 8)); i = j + 1 + #o
    elseif c == "x" or c == "u" or c == "U" then
      local nd = c == "x" and 2 or c == "u" and 4 or 8
      local h = s:match("^" .. string.rep("%x", nd), j + 2)
      if not h then syntax_error(src, name, p, "truncated \\%sXX escape in string", c) end
      local cp = tonumber(h, 16)
      if cp > 0x10FFFF then syntax_error(src, name, p, "illegal Unicode character in string") end
      out[#out + 1] = utf8.char(cp); i = j + 2 + nd
    elseif c == "N" then
      syntax_error(src, name, p, "\\N{...} escapes are not supported")
    else
      out[#out + 1] = "\\"; i = j + 1 -- unknown escapes stay as written
    end
  end
  return concat(out)
end

-- Scan \d+(_\d+)* at p; returns the last index or nil.
local function scan_digits(src, p)
  local _, b = src:find("^%d+", p)
  if not b then return nil end
  while true do
    local _, d = src:find("^_%d+", b + 1)
    if not d then return b end
    b = d
  end
end

local OPS2 = { ["//"] = true, ["**"] = true, ["=="] = true, ["!="] = true, [">="] = true, ["<="] = true }
local OPS1 = {}
for c in ("+-/*%~[](){}><=.:|,;"):gmatch(".") do OPS1[c] = true end
local CLOSER = { ["("] = ")", ["["] = "]", ["{"] = "}" }

-- Tokenise the inside of a {{ }} or {% %} tag starting at p.  Returns the new position.
local function lex_tag(src, p, toks, is_var, o, name)
  local n = #src
  local stack = {}
  while true do
    if #stack == 0 then
      if is_var then
        if src:find("^%-}}", p) then
          toks[#toks + 1] = { t = "var_end", p = p }; return skip_ws(src, p + 3)
        elseif src:find("^}}", p) then
          toks[#toks + 1] = { t = "var_end", p = p }; return p + 2
        end
      else
        if src:find("^%+%%}", p) then
          toks[#toks + 1] = { t = "block_end", p = p }; return p + 3
        elseif src:find("^%-%%}", p) then
          toks[#toks + 1] = { t = "block_end", p = p }; return skip_ws(src, p + 3)
        elseif src:find("^%%}", p) then
          toks[#toks + 1] = { t = "block_end", p = p }
          p = p + 2
          if o.trim_blocks and src:byte(p) == 10 then p = p + 1 end
          return p
        end
      end
    end
    local q = skip_ws(src, p)
    if q > p then
      p = q
    elseif p > n then
      syntax_error(src, name, p, "unexpected end of template, expected '%s'", is_var and "}}" or "%}")
    else
      local c = src:sub(p, p)
      local b
      -- float (never right after a '.', so x.0.1 is x[0][1])
      local e1 = src:sub(p - 1, p - 1) ~= "." and scan_digits(src, p)
      if e1 then
        local e, isf = e1, false
        if src:byte(e + 1) == 46 then
          local e2 = scan_digits(src, e + 2)
          if e2 then e, isf = e2, true end
        end
        local ex = src:match("^[eE][-+]?()", e + 1)
        if ex then
          local e3 = scan_digits(src, ex)
          if e3 then e, isf = e3, true end
        end
        if isf then
          toks[#toks + 1] = { t = "float", v = tonumber((src:sub(p, e):gsub("_", ""))) + 0.0, p = p }
          b = e
        end
      end
      if not b then
        -- integer: 0b / 0o / 0x prefixes, decimal, or a run of zeros
        local pre = src:match("^0([bBoOxX])", p)
        if pre then
          local cls = ({ b = "[01]", o = "[0-7]", x = "%x" })[pre:lower()]
          local e = p + 1
          while true do
            local _, d = src:find("^_?" .. cls, e + 1)
            if not d then break end
            e = d
          end
          if e > p + 1 then
            local digits = src:sub(p + 2, e):gsub("_", "")
            toks[#toks + 1] = { t = "int", v = tonumber(digits, ({ b = 2, o = 8, x = 16 })[pre:lower()]), p = p }
            b = e
          end
        end
        if not b then
          local e = nil
          if src:find("^[1-9]", p) then
            e = p
            while true do
              local _, d = src:find("^_?%d", e + 1)
              if not d then break end
              e = d
            end
          elseif src:find("^0", p) then
            e = p
            while true do
              local _, d = src:find("^_?0", e + 1)
              if not d then break end
              e = d
            end
          end
          if e then
            local s = src:sub(p, e):gsub("_", "")
            toks[#toks + 1] = { t = "int", v = tointeger(tonumber(s)) or tonumber(s), p = p }
            b = e
          end
        end
      end
      if not b then
        local _, e = src:find("^[%a_][%w_]*", p)
        if e then
          toks[#toks + 1] = { t = "name", v = src:sub(p, e), p = p }
          b = e
        end
      end
      if not b and (c == "'" or c == '"') then
        local i = p + 1
        while true do
          local j = src:find(c == "'" and "['\\]" or '["\\]', i)
          if not j then syntax_error(src, name, p, "unterminated string literal") end
          if src:byte(j) == 92 then i = j + 2 else b = j; break end
        end
        toks[#toks + 1] = { t = "string", v = unescape(src:sub(p + 1, b - 1), src, name, p), p = p }
      end
      if not b then
        local two = src:sub(p, p + 1)
        local op
        if OPS2[two] then op = two elseif OPS1[c] then op = c end
        if not op then syntax_error(src, name, p, "unexpected char %s", str_repr(c)) end
        if CLOSER[op] then
          stack[#stack + 1] = CLOSER[op]
        elseif op == ")" or op == "]" or op == "}" then
          local want = stack[#stack]
          if not want then syntax_error(src, name, p, "unexpected '%s'", op) end
          if want ~= op then syntax_error(src, name, p, "unexpected '%s', expected '%s'", op, want) end
          stack[#stack] = nil
        end
        toks[#toks + 1] = { t = "op", v = op, p = p }
        b = p + #op - 1
      end
      p = b + 1
    end
  end
end

-- Tokenise a whole template.  Returns the newline-normalised source and the token array.
local function lex(source, o, name)
  local src = source:gsub("\r\n", "\n"):gsub("\r", "\n")
  if not o.keep_trailing_newline and src:sub(-1) == "\n" then src = src:sub(1, -2) end
  local toks, n = {}, #src
  local pos, line_starting = 1, true

  -- Whitespace control for the text before a tag (Jinja's OptionalLStrip).
  local function strip_text(text, sign, kind_char)
    if sign == "-" then
      return rstrip_set(text, WS)
    elseif sign ~= "+" and o.lstrip_blocks and kind_char ~= "{" then
      local lpos = 1
      local last_nl = text:match(".*()\n")
      if last_nl then lpos = last_nl + 1 end
      if lpos > 1 or line_starting then
        local tail = text:sub(lpos)
        if tail ~= "" and rstrip_set(tail, WS) == "" then return text:sub(1, lpos - 1) end
      end
    end
    return text
  end
  local function data(text, p)
    if text ~= "" then toks[#toks + 1] = { t = "data", v = text, p = p } end
  end

  while pos <= n do
    local s = src:find("{[{%%#]", pos)
    if not s then data(src:sub(pos), pos); break end
    local kc = src:sub(s + 1, s + 1)
    local sign = src:sub(s + 2, s + 2)
    if sign ~= "-" and sign ~= "+" then sign = "" end
    local rb, re, rsign
    if kc == "%" then rb, re, rsign = src:find("^{%%[-+]?%s*raw%s*(%-?)%%}", s) end
    data(strip_text(src:sub(pos, s - 1), sign, kc), pos)
    if rb then
      -- {% raw %}...{% endraw %}: the body is data, verbatim.
      local p = re + 1
      if rsign == "-" then p = skip_ws(src, p) end
      line_starting = src:sub(p - 1, p - 1) == "\n"
      local es, ee, s1, s2 = src:find("{%%([-+]?)%s*endraw%s*([-+]?)%%}", p)
      if not es then syntax_error(src, name, s, "Missing end of raw directive") end
      data(strip_text(src:sub(p, es - 1), s1, "%"), p)
      pos = ee + 1
      if s2 == "-" then pos = skip_ws(src, pos)
      elseif s2 == "" and o.trim_blocks and src:byte(pos) == 10 then pos = pos + 1 end
    elseif kc == "#" then
      local cstart = s + 2 + #sign
      local q = src:find("#}", cstart, true)
      if not q then syntax_error(src, name, s, "Missing end of comment tag") end
      local esign = q - 1 >= cstart and src:sub(q - 1, q - 1) or ""
      pos = q + 2
      if esign == "-" then pos = skip_ws(src, pos)
      elseif esign ~= "+" and o.trim_blocks and src:byte(pos) == 10 then pos = pos + 1 end
    else
      local is_var = kc == "{"
      toks[#toks + 1] = { t = is_var and "var_begin" or "block_begin", p = s }
      pos = lex_tag(src, s + 2 + #sign, toks, is_var, o, name)
    end
    line_starting = src:sub(pos - 1, pos - 1) == "\n"
  end
  toks[#toks + 1] = { t = "eof", p = n + 1 }
  return src, toks
end

-- =====================================================================================
-- Parser
-- =====================================================================================

local FILTERS, TESTS = {}, {}   -- filled below; the parser checks names against them

local function describe(tok)
  if tok.t == "name" or tok.t == "op" then return "'" .. tok.v .. "'" end
  if tok.t == "string" then return "string" end
  if tok.t == "int" then return "integer" end
  if tok.t == "float" then return "float" end
  if tok.t == "block_end" then return "end of statement block" end
  if tok.t == "var_end" then return "end of print statement" end
  if tok.t == "block_begin" then return "begin of statement block" end
  if tok.t == "var_begin" then return "begin of print statement" end
  if tok.t == "data" then return "template data" end
  return "end of template"
end

local function parse(toks, src, name)
  local i = 1
  local blocks = {}        -- stack of open block names, for error messages
  local loop_depth = 0

  local function cur() return toks[i] end
  local function nxt() local t = toks[i]; i = i + 1; return t end
  local function fail(tok, msg, ...) syntax_error(src, name, tok.p, msg, ...) end
  local function is_op(v) local t = toks[i]; return t.t == "op" and t.v == v end
  local function is_name(v) local t = toks[i]; return t.t == "name" and t.v == v end
  local function expect_op(v)
    local t = toks[i]
    if t.t ~= "op" or t.v ~= v then fail(t, "expected token '%s', got %s", v, describe(t)) end
    i = i + 1
    return t
  end
  local function expect(tt, what)
    local t = toks[i]
    if t.t ~= tt then fail(t, "expected token '%s', got %s", what, describe(t)) end
    i = i + 1
    return t
  end
  local function expect_name()
    local t = toks[i]
    if t.t ~= "name" then fail(t, "expected token 'name', got %s", describe(t)) end
    i = i + 1
    return t
  end
  local function expect_block_end()
    local t = toks[i]
    if t.t ~= "block_end" then fail(t, "expected token 'end of statement block', got %s", describe(t)) end
    i = i + 1
  end

  local parse_expression, parse_tuple, parse_unary, parse_primary, parse_postfix
  local parse_filter_expr, parse_call_args, parse_expression_or, parse_expression_and

  local function parse_condexpr()
    local e = parse_expression_or()
    while is_name("if") do
      local tok = nxt()
      local test = parse_expression_or()
      local other
      if is_name("else") then nxt(); other = parse_condexpr() end
      e = { t = "cond", p = tok.p, test = test, a = e, b = other }
    end
    return e
  end

  parse_expression_or = function()
    local l = parse_expression_and()
    while is_name("or") do
      local tok = nxt()
      l = { t = "or", p = tok.p, l = l, r = parse_expression_and() }
    end
    return l
  end

  local parse_not
  parse_expression_and = function()
    local l = parse_not()
    while is_name("and") do
      local tok = nxt()
      l = { t = "and", p = tok.p, l = l, r = parse_not() }
    end
    return l
  end

  local CMP = { ["=="] = true, ["!="] = true, ["<"] = true, ["<="] = true, [">"] = true, [">="] = true }
  local parse_math1

  local function parse_compare()
    local e = parse_math1()
    local ops = {}
    while true do
      local t = cur()
      if t.t == "op" and CMP[t.v] then
        nxt(); ops[#ops + 1] = { op = t.v, p = t.p, e = parse_math1() }
      elseif is_name("in") then
        nxt(); ops[#ops + 1] = { op = "in", p = t.p, e = parse_math1() }
      elseif is_name("not") and toks[i + 1].t == "name" and toks[i + 1].v == "in" then
        i = i + 2; ops[#ops + 1] = { op = "notin", p = t.p, e = parse_math1() }
      else
        break
      end
    end
    if #ops == 0 then return e end
    return { t = "compare", p = e.p, e = e, ops = ops }
  end

  parse_not = function()
    if is_name("not") then
      local tok = nxt()
      return { t = "not", p = tok.p, e = parse_not() }
    end
    return parse_compare()
  end

  local function binary(next_fn, ops_set)
    return function()
      local l = next_fn()
      while true do
        local t = cur()
        if t.t == "op" and ops_set[t.v] then
          nxt(); l = { t = "bin", op = t.v, p = t.p, l = l, r = next_fn() }
        else
          break
        end
      end
      return l
    end
  end

  local parse_pow = binary(function() return parse_unary(true) end, { ["**"] = true })
  local parse_math2 = binary(parse_pow, { ["*"] = true, ["/"] = true, ["//"] = true, ["%"] = true })
  local function parse_concat()
    local e = parse_math2()
    if not is_op("~") then return e end
    local items = { e }
    local p = cur().p
    while is_op("~") do nxt(); items[#items + 1] = parse_math2() end
    return { t = "concat", p = p, items = items }
  end
  parse_math1 = binary(parse_concat, { ["+"] = true, ["-"] = true })

  parse_unary = function(with_filter)
    local t = cur()
    local node
    if is_op("-") then nxt(); node = { t = "neg", p = t.p, e = parse_unary(false) }
    elseif is_op("+") then nxt(); node = { t = "pos", p = t.p, e = parse_unary(false) }
    else node = parse_primary() end
    node = parse_postfix(node)
    if with_filter then node = parse_filter_expr(node) end
    return node
  end

  local function parse_list()
    local tok = expect_op("[")
    local items = {}
    while not is_op("]") do
      if #items > 0 then expect_op(",") end
      if is_op("]") then break end
      items[#items + 1] = parse_expression()
    end
    expect_op("]")
    return { t = "list", p = tok.p, items = items }
  end

  local function parse_dict()
    local tok = expect_op("{")
    local keys, vals = {}, {}
    while not is_op("}") do
      if #keys > 0 then expect_op(",") end
      if is_op("}") then break end
      keys[#keys + 1] = parse_expression()
      expect_op(":")
      vals[#vals + 1] = parse_expression()
    end
    expect_op("}")
    return { t = "dict", p = tok.p, keys = keys, vals = vals }
  end

  parse_primary = function()
    local t = cur()
    if t.t == "name" then
      nxt()
      if t.v == "true" or t.v == "True" then return { t = "const", p = t.p, v = true } end
      if t.v == "false" or t.v == "False" then return { t = "const", p = t.p, v = false } end
      if t.v == "none" or t.v == "None" then return { t = "const", p = t.p, v = NULL } end
      return { t = "name", p = t.p, name = t.v }
    elseif t.t == "string" then
      nxt()
      local parts = { t.v }
      while cur().t == "string" do parts[#parts + 1] = nxt().v end
      return { t = "const", p = t.p, v = concat(parts) }
    elseif t.t == "int" or t.t == "float" then
      nxt()
      return { t = "const", p = t.p, v = t.v }
    elseif is_op("(") then
      nxt()
      local e = parse_tuple { explicit_parentheses = true }
      expect_op(")")
      return e
    elseif is_op("[") then
      return parse_list()
    elseif is_op("{") then
      return parse_dict()
    end
    fail(t, "unexpected %s", describe(t))
  end

  local function is_tuple_end(extra)
    local t = cur()
    if t.t == "var_end" or t.t == "block_end" or (t.t == "op" and t.v == ")") then return true end
    if extra and t.t == "name" and extra[t.v] then return true end
    return false
  end

  -- o: { simplified, with_condexpr (default true), extra_end (set of names), explicit_parentheses }
  parse_tuple = function(o)
    o = o or {}
    local p = cur().p
    local parse_one
    if o.simplified then parse_one = parse_primary
    elseif o.with_condexpr == false then parse_one = parse_expression_or
    else parse_one = parse_condexpr end
    local args, is_tuple = {}, false
    while true do
      if #args > 0 then expect_op(",") end
      if is_tuple_end(o.extra_end) then break end
      args[#args + 1] = parse_one()
      if is_op(",") then is_tuple = true else break end
    end
    if not is_tuple then
      if #args > 0 then return args[1] end
      if not o.explicit_parentheses then fail(cur(), "Expected an expression, got %s", describe(cur())) end
    end
    return { t = "tuple", p = p, items = args }
  end

  parse_expression = function(with_condexpr)
    if with_condexpr == false then return parse_expression_or() end
    return parse_condexpr()
  end

  local function parse_subscribed()
    local p = cur().p
    local start
    if is_op(":") then
      nxt()
    else
      local e = parse_expression()
      if not is_op(":") then return e end
      nxt()
      start = e
    end
    local stop, step
    if not is_op(":") and not is_op("]") and not is_op(",") then stop = parse_expression() end
    if is_op(":") then
      nxt()
      if not is_op("]") and not is_op(",") then step = parse_expression() end
    end
    return { t = "slice", p = p, start = start, stop = stop, step = step }
  end

  local function parse_subscript(node)
    local tok = nxt()
    if tok.v == "." then
      local a = nxt()
      if a.t == "name" then return { t = "getattr", p = tok.p, obj = node, attr = a.v } end
      if a.t == "int" then return { t = "getitem", p = tok.p, obj = node, key = { t = "const", p = a.p, v = a.v } } end
      fail(a, "expected name or number")
    end
    local args = {}
    while not is_op("]") do
      if #args > 0 then expect_op(",") end
      args[#args + 1] = parse_subscribed()
    end
    expect_op("]")
    local key = args[1]
    if #args ~= 1 then key = { t = "tuple", p = tok.p, items = args } end
    return { t = "getitem", p = tok.p, obj = node, key = key }
  end

  parse_call_args = function()
    expect_op("(")
    local args, kwargs, kwnames = {}, {}, {}
    local dyn_args, dyn_kwargs
    local need_comma = false
    while not is_op(")") do
      if need_comma then
        expect_op(",")
        if is_op(")") then break end
      end
      if is_op("**") then
        nxt(); dyn_kwargs = parse_expression()
      elseif is_op("*") then
        nxt(); dyn_args = parse_expression()
      elseif cur().t == "name" and toks[i + 1].t == "op" and toks[i + 1].v == "=" then
        local key = nxt().v
        nxt()
        kwnames[#kwnames + 1] = key
        kwargs[#kwargs + 1] = parse_expression()
      else
        if #kwnames > 0 or dyn_args or dyn_kwargs then fail(cur(), "invalid syntax for function call expression") end
        args[#args + 1] = parse_expression()
      end
      need_comma = true
    end
    expect_op(")")
    return { args = args, kwargs = kwargs, kwnames = kwnames, dyn_args = dyn_args, dyn_kwargs = dyn_kwargs }
  end

  local function parse_call(node)
    local p = cur().p
    local c = parse_call_args()
    c.t, c.p, c.fn = "call", p, node
    return c
  end

  local function parse_dotted_name()
    local t = expect_name()
    local nm = t.v
    while is_op(".") do nxt(); nm = nm .. "." .. expect_name().v end
    return nm, t
  end

  -- Filter chain; node == nil for {% filter %} / {% set x | f %} blocks.
  local function parse_filter(node, start_inline)
    while is_op("|") or start_inline do
      if not start_inline then nxt() end
      start_inline = false
      local nm, t = parse_dotted_name()
      if not FILTERS[nm] then fail(t, "No filter named '%s'.", nm) end
      local c
      if is_op("(") then c = parse_call_args() else c = { args = {}, kwargs = {}, kwnames = {} } end
      c.t, c.p, c.name, c.e = "filter", t.p, nm, node
      node = c
    end
    return node
  end

  local ARG_START = { name = true, string = true, int = true, float = true }
  local function parse_test(node)
    local tok = nxt() -- 'is'
    local negated = false
    if is_name("not") then nxt(); negated = true end
    local nm, t = parse_dotted_name()
    if not TESTS[nm] then fail(t, "No test named '%s'.", nm) end
    local c
    local ct = cur()
    if is_op("(") then
      c = parse_call_args()
    elseif (ARG_START[ct.t] or (ct.t == "op" and (ct.v == "(" or ct.v == "[" or ct.v == "{")))
        and not (ct.t == "name" and (ct.v == "else" or ct.v == "or" or ct.v == "and")) then
      if ct.t == "name" and ct.v == "is" then fail(ct, "You cannot chain multiple tests with is") end
      local a = parse_postfix(parse_primary())
      c = { args = { a }, kwargs = {}, kwnames = {} }
    else
      c = { args = {}, kwargs = {}, kwnames = {} }
    end
    c.t, c.p, c.name, c.e, c.negated = "test", tok.p, nm, node, negated
    return c
  end

  parse_postfix = function(node)
    while true do
      if is_op(".") or is_op("[") then node = parse_subscript(node)
      elseif is_op("(") then node = parse_call(node)
      else break end
    end
    return node
  end

  parse_filter_expr = function(node)
    while true do
      if is_op("|") then node = parse_filter(node)
      elseif is_name("is") then node = parse_test(node)
      elseif is_op("(") then node = parse_call(node)
      else break end
    end
    return node
  end

  local function check_target(node, allow_ns)
    if node.t == "name" then
      if node.name == "true" or node.name == "false" or node.name == "none" then fail(node, "can't assign to keyword") end
      return node
    end
    if node.t == "tuple" then
      for _, it in ipairs(node.items) do check_target(it, false) end
      return node
    end
    fail(node, "can't assign to %s", node.t == "const" and "literal" or "expression")
  end

  -- o: { name_only, with_tuple (default true), extra_end, with_namespace }
  local function parse_assign_target(o)
    o = o or {}
    if o.with_namespace and cur().t == "name" and toks[i + 1].t == "op" and toks[i + 1].v == "." then
      local nt = nxt(); nxt()
      local attr = expect_name()
      return { t = "nsref", p = nt.p, name = nt.v, attr = attr.v }
    end
    if o.name_only then
      local t = expect_name()
      return { t = "name", p = t.p, name = t.v }
    end
    local target
    if o.with_tuple ~= false then
      target = parse_tuple { simplified = true, extra_end = o.extra_end }
    else
      target = parse_primary()
    end
    return check_target(target)
  end

  local subparse

  local function parse_statements(end_names, drop_needle)
    if is_op(":") then nxt() end
    expect_block_end()
    local body = subparse(end_names)
    if drop_needle then nxt() end
    return body
  end

  local STMT = {}

  STMT["for"] = function(tok)
    local target = parse_assign_target { extra_end = { ["in"] = true } }
    if not is_name("in") then fail(cur(), "expected token 'in', got %s", describe(cur())) end
    nxt()
    local iter = parse_tuple { with_condexpr = false, extra_end = { recursive = true } }
    local filter
    if is_name("if") then nxt(); filter = parse_expression() end
    if is_name("recursive") then fail(cur(), "recursive for loops are not supported") end
    loop_depth = loop_depth + 1
    local body = parse_statements({ endfor = true, ["else"] = true })
    loop_depth = loop_depth - 1
    local else_
    if nxt().v == "else" then else_ = parse_statements({ endfor = true }, true) end
    return { t = "for", p = tok.p, target = target, iter = iter, filter = filter, body = body, else_ = else_ }
  end

  STMT["if"] = function(tok)
    local node = { t = "if", p = tok.p, tests = {}, bodies = {} }
    while true do
      node.tests[#node.tests + 1] = parse_tuple { with_condexpr = false }
      node.bodies[#node.bodies + 1] = parse_statements({ elif = true, ["else"] = true, endif = true })
      local t = nxt()
      if t.v == "else" then
        node.else_ = parse_statements({ endif = true }, true)
        break
      elseif t.v ~= "elif" then
        break
      end
    end
    return node
  end

  STMT.set = function(tok)
    local target = parse_assign_target { with_namespace = true }
    if is_op("=") then
      nxt()
      return { t = "assign", p = tok.p, target = target, e = parse_tuple() }
    end
    local filter = parse_filter(nil)
    local body = parse_statements({ endset = true }, true)
    return { t = "assignblock", p = tok.p, target = target, body = body, filter = filter }
  end

  STMT.macro = function(tok)
    local nm = expect_name().v
    local params, defaults = {}, {}
    expect_op("(")
    while not is_op(")") do
      if #params > 0 then expect_op(",") end
      local a = parse_assign_target { name_only = true }
      params[#params + 1] = a.name
      if is_op("=") then
        nxt(); defaults[#params] = parse_expression()
      elseif next(defaults) then
        fail(a, "non-default argument follows default argument")
      end
    end
    expect_op(")")
    local saved = loop_depth
    loop_depth = 0
    local body = parse_statements({ endmacro = true }, true)
    loop_depth = saved
    return { t = "macro", p = tok.p, name = nm, params = params, defaults = defaults, body = body }
  end

  STMT.with = function(tok)
    local targets, values = {}, {}
    while cur().t ~= "block_end" do
      if #targets > 0 then expect_op(",") end
      targets[#targets + 1] = parse_assign_target()
      expect_op("=")
      values[#values + 1] = parse_expression()
    end
    local body = parse_statements({ endwith = true }, true)
    return { t = "with", p = tok.p, targets = targets, values = values, body = body }
  end

  STMT.filter = function(tok)
    local filter = parse_filter(nil, true)
    local body = parse_statements({ endfilter = true }, true)
    return { t = "filterblock", p = tok.p, filter = filter, body = body }
  end

  STMT.print = function(tok)
    return { t = "output", p = tok.p, e = parse_tuple() }
  end

  STMT.generation = function(tok)
    local body = parse_statements({ endgeneration = true }, true)
    return { t = "generation", p = tok.p, body = body }
  end

  STMT["break"] = function(tok)
    if loop_depth == 0 then fail(tok, "'break' outside of a loop") end
    return { t = "break", p = tok.p }
  end
  STMT["continue"] = function(tok)
    if loop_depth == 0 then fail(tok, "'continue' outside of a loop") end
    return { t = "continue", p = tok.p }
  end

  local UNSUPPORTED = { extends = true, block = true, include = true, import = true, from = true,
    call = true, autoescape = true, trans = true, ["do"] = true }

  local function parse_statement()
    local tok = cur()
    if tok.t ~= "name" then fail(tok, "tag name expected") end
    local f = STMT[tok.v]
    if f then
      nxt()
      blocks[#blocks + 1] = tok.v
      local node = f(tok)
      blocks[#blocks] = nil
      return node
    end
    if UNSUPPORTED[tok.v] then fail(tok, "the '%s' tag is not supported by llmc.jinja", tok.v) end
    local msg = fmt("Encountered unknown tag '%s'.", tok.v)
    if #blocks > 0 then msg = msg .. fmt(" The innermost block that needs to be closed is '%s'.", blocks[#blocks]) end
    fail(tok, "%s", msg)
  end

  subparse = function(end_names)
    local body = {}
    while true do
      local t = cur()
      if t.t == "data" then
        nxt(); body[#body + 1] = { t = "text", p = t.p, v = t.v }
      elseif t.t == "var_begin" then
        nxt()
        local e = parse_tuple()
        expect("var_end", "end of print statement")
        body[#body + 1] = { t = "output", p = t.p, e = e }
      elseif t.t == "block_begin" then
        nxt()
        local c = cur()
        if end_names and c.t == "name" and end_names[c.v] then return body end
        body[#body + 1] = parse_statement()
        expect_block_end()
      else -- eof
        if end_names then
          local want = {}
          for k in pairs(end_names) do want[#want + 1] = "'" .. k .. "'" end
          sort(want)
          fail(t, "Unexpected end of template. Jinja was looking for the following tags: %s. "
            .. "The innermost block that needs to be closed is '%s'.", concat(want, " or "), blocks[#blocks] or "?")
        end
        return body
      end
    end
  end

  return subparse(nil)
end

-- =====================================================================================
-- Runtime: operators
-- =====================================================================================

local function num(v) -- bool participates in arithmetic as int, like Python
  if type(v) == "boolean" then return v and 1 or 0 end
  return v
end
local function is_num(v) local t = type(v); return t == "number" or t == "boolean" end

local py_eq
py_eq = function(a, b)
  if a == b then return true end
  local ta, tb = type(a), type(b)
  if (ta == "number" or ta == "boolean") and (tb == "number" or tb == "boolean") then
    return num(a) == num(b)
  end
  if ta ~= "table" or tb ~= "table" then return false end
  local ka, kb = kind(a), kind(b)
  if ka ~= kb then return false end
  if ka == "undefined" then return true end
  if ka == "list" or ka == "tuple" then
    if #a ~= #b then return false end
    for i = 1, #a do if not py_eq(a[i], b[i]) then return false end end
    return true
  end
  if ka == "dict" then
    local n = 0
    for k, v in pairs(a) do
      n = n + 1
      if b[k] == nil or not py_eq(v, b[k]) then return false end
    end
    for _ in pairs(b) do n = n - 1 end
    return n == 0
  end
  return false
end
M.py_eq = py_eq

local function py_lt(a, b, op)
  if is_num(a) and is_num(b) then return num(a) < num(b) end
  local ta, tb = type(a), type(b)
  if ta == "string" and tb == "string" then return a < b end -- UTF-8 byte order == code point order
  check_defined(a); check_defined(b)
  local ka, kb = kind(a), kind(b)
  if ka == kb and (ka == "list" or ka == "tuple") then
    for i = 1, math.min(#a, #b) do
      if not py_eq(a[i], b[i]) then return py_lt(a[i], b[i], op) end
    end
    return #a < #b
  end
  raise("TypeError", "'%s' not supported between instances of '%s' and '%s'", op or "<", pytype(a), pytype(b))
end

local function contains(container, item)
  local k = kind(container)
  if k == "str" then
    if type(item) ~= "string" then
      check_defined(item)
      raise("TypeError", "'in <string>' requires string as left operand, not %s", pytype(item))
    end
    return container:find(item, 1, true) ~= nil
  elseif k == "list" or k == "tuple" then
    for i = 1, #container do if py_eq(container[i], item) then return true end end
    return false
  elseif k == "dict" then
    local ti = type(item)
    if ti == "string" or ti == "number" then return container[item] ~= nil end
    return false
  elseif k == "namespace" then
    return type(item) == "string" and container.vals[item] ~= nil
  elseif k == "undefined" then
    return false
  end
  raise("TypeError", "argument of type '%s' is not iterable", pytype(container))
end

local function ipow(a, b)
  local r = 1
  while b > 0 do
    if b & 1 == 1 then r = r * a end
    a = a * a
    b = b >> 1
  end
  return r
end

local percent_format -- defined with the filters

local function unsupported(op, a, b)
  check_defined(a); check_defined(b)
  raise("TypeError", "unsupported operand type(s) for %s: '%s' and '%s'", op, pytype(a), pytype(b))
end

local function seq_repeat(s, n)
  if type(s) == "string" then return string.rep(s, math.max(n, 0)) end
  local r = KIND[s] == "tuple" and new_tuple() or new_list()
  for _ = 1, n do for i = 1, #s do r[#r + 1] = s[i] end end
  return r
end

local BINOP = {
  ["+"] = function(a, b)
    if is_num(a) and is_num(b) then return num(a) + num(b) end
    local ta, tb = type(a), type(b)
    if ta == "string" and tb == "string" then return a .. b end
    check_defined(a); check_defined(b)
    if ta == "string" then raise("TypeError", 'can only concatenate str (not "%s") to str', pytype(b)) end
    local ka, kb = kind(a), kind(b)
    if (ka == "list" or ka == "tuple") and ka == kb then
      local r = ka == "tuple" and new_tuple() or new_list()
      for i = 1, #a do r[#r + 1] = a[i] end
      for i = 1, #b do r[#r + 1] = b[i] end
      return r
    end
    if ka == "list" then raise("TypeError", 'can only concatenate list (not "%s") to list', pytype(b)) end
    unsupported("+", a, b)
  end,
  ["-"] = function(a, b)
    if is_num(a) and is_num(b) then return num(a) - num(b) end
    unsupported("-", a, b)
  end,
  ["*"] = function(a, b)
    if is_num(a) and is_num(b) then return num(a) * num(b) end
    local ka, kb = kind(a), kind(b)
    if (ka == "str" or ka == "list" or ka == "tuple") and (kb == "int" or kb == "bool") then return seq_repeat(a, num(b)) end
    if (kb == "str" or kb == "list" or kb == "tuple") and (ka == "int" or ka == "bool") then return seq_repeat(b, num(a)) end
    unsupported("*", a, b)
  end,
  ["/"] = function(a, b)
    if is_num(a) and is_num(b) then
      if num(b) == 0 then raise("ZeroDivisionError", "division by zero") end
      return num(a) / num(b)
    end
    unsupported("/", a, b)
  end,
  ["//"] = function(a, b)
    if is_num(a) and is_num(b) then
      a, b = num(a), num(b)
      if b == 0 then
        raise("ZeroDivisionError", mtype(a) == "integer" and mtype(b) == "integer"
          and "integer division or modulo by zero" or "float floor division by zero")
      end
      return a // b
    end
    unsupported("//", a, b)
  end,
  ["%"] = function(a, b)
    if is_num(a) and is_num(b) then
      a, b = num(a), num(b)
      if b == 0 then
        raise("ZeroDivisionError", mtype(a) == "integer" and mtype(b) == "integer"
          and "integer division or modulo by zero" or "float modulo")
      end
      return a % b
    end
    if type(a) == "string" then return percent_format(a, b) end
    unsupported("%", a, b)
  end,
  ["**"] = function(a, b)
    if is_num(a) and is_num(b) then
      a, b = num(a), num(b)
      if mtype(a) == "integer" and mtype(b) == "integer" and b >= 0 then return ipow(a, b) end
      if a == 0 and b < 0 then raise("ZeroDivisionError", "0.0 cannot be raised to a negative power") end
      return (a + 0.0) ^ b
    end
    unsupported("** or pow()", a, b)
  end,
}

local function compare(op, a, b)
  if op == "==" then return py_eq(a, b) end
  if op == "!=" then return not py_eq(a, b) end
  if op == "<" then return py_lt(a, b, "<") end
  if op == ">" then return py_lt(b, a, ">") end
  if op == "<=" then return py_eq(a, b) and (is_num(a) or type(a) == "string" or kind(a) == "list" or kind(a) == "tuple") or py_lt(a, b, "<=") end
  if op == ">=" then return py_eq(a, b) and (is_num(a) or type(a) == "string" or kind(a) == "list" or kind(a) == "tuple") or py_lt(b, a, ">=") end
  if op == "in" then return contains(b, a) end
  if op == "notin" then return not contains(b, a) end
end

-- Iterate a value the way a Python for loop does; returns an array.
local function iterate(v)
  local k = kind(v)
  if k == "list" or k == "tuple" then return v end
  if k == "dict" then return dict_keys(v) end
  if k == "str" then return chars(v) end
  if k == "undefined" then return {} end
  if k == "namespace" then raise("TypeError", "'Namespace' object is not iterable") end
  raise("TypeError", "'%s' object is not iterable", pytype(v))
end
M.iterate = iterate

local function length(v)
  local k = kind(v)
  if k == "str" then return str_len(v) end
  if k == "list" or k == "tuple" then return #v end
  if k == "dict" then local n = 0; for _ in pairs(v) do n = n + 1 end; return n end
  if k == "undefined" then return 0 end
  raise("TypeError", "object of type '%s' has no len()", pytype(v))
end

-- =====================================================================================
-- Runtime: callables, attributes, items
-- =====================================================================================

local function callable(name, fn) return setmetatable({ name = name, fn = fn }, CALL_MT) end
M.callable = callable

-- Argument helper: positional index i or keyword `key`, else default.
local function arg(args, kwargs, i, key, default)
  local v = args[i]
  if v == nil and key then v = kwargs[key] end
  if v == nil then return default end
  return v
end

local function bound(name, method, self)
  return callable(name, function(args, kwargs, cx) return method(self, args, kwargs, cx) end)
end

local function need_str(v, what)
  if type(v) ~= "string" then
    check_defined(v)
    raise("TypeError", "%s must be str, not %s", what, pytype(v))
  end
  return v
end

local function split_ws(s, maxsplit)
  local out, cur_start = new_list(), nil
  local cs = chars(s)
  local i = 1
  while i <= #cs do
    if WS[cs[i]] then
      if cur_start then out[#out + 1] = concat(cs, "", cur_start, i - 1); cur_start = nil end
    elseif not cur_start then
      if maxsplit >= 0 and #out >= maxsplit then
        out[#out + 1] = rstrip_set(concat(cs, "", i), WS)
        return out
      end
      cur_start = i
    end
    i = i + 1
  end
  if cur_start then out[#out + 1] = concat(cs, "", cur_start) end
  return out
end

local function split_sep(s, sep, maxsplit)
  if sep == "" then raise("ValueError", "empty separator") end
  local out, pos = new_list(), 1
  while maxsplit < 0 or #out < maxsplit do
    local a, b = s:find(sep, pos, true)
    if not a then break end
    out[#out + 1] = s:sub(pos, a - 1)
    pos = b + 1
  end
  out[#out + 1] = s:sub(pos)
  return out
end

local function rsplit_sep(s, sep, maxsplit)
  if sep == "" then raise("ValueError", "empty separator") end
  local found, pos = {}, 1
  while true do
    local a, b = s:find(sep, pos, true)
    if not a then break end
    found[#found + 1] = { a, b }
    pos = b + 1
  end
  local use = #found
  if maxsplit >= 0 and maxsplit < use then use = maxsplit end
  local out, last = new_list(), #s
  local parts = {}
  for k = #found, #found - use + 1, -1 do
    parts[#parts + 1] = s:sub(found[k][2] + 1, last)
    last = found[k][1] - 1
  end
  parts[#parts + 1] = s:sub(1, last)
  for k = #parts, 1, -1 do out[#out + 1] = parts[k] end
  return out
end

local function py_replace(s, old, new, count)
  count = count or -1
  if old == "" then
    local cs, out, n = chars(s), {}, 0
    for i = 1, #cs + 1 do
      if count < 0 or n < count then out[#out + 1] = new; n = n + 1 end
      out[#out + 1] = cs[i]
    end
    return concat(out)
  end
  local out, pos, n = {}, 1, 0
  while count < 0 or n < count do
    local a, b = s:find(old, pos, true)
    if not a then break end
    out[#out + 1] = s:sub(pos, a - 1)
    out[#out + 1] = new
    pos = b + 1
    n = n + 1
  end
  out[#out + 1] = s:sub(pos)
  return concat(out)
end

-- Code point offset <-> byte offset, for find()/index() results.
local function cp_index(s, byte_pos) return (utf8.len(s, 1, byte_pos - 1) or (byte_pos - 1)) end

local function count_sub(s, sub)
  if sub == "" then return str_len(s) + 1 end
  local n, pos = 0, 1
  while true do
    local a, b = s:find(sub, pos, true)
    if not a then return n end
    n, pos = n + 1, b + 1
  end
end

local function affix_test(s, affix, at_end)
  local function one(a)
    need_str(a, at_end and "endswith arg" or "startswith arg")
    if at_end then return a == "" or s:sub(-#a) == a end
    return s:sub(1, #a) == a
  end
  local k = kind(affix)
  if k == "tuple" or k == "list" then
    for i = 1, #affix do if one(affix[i]) then return true end end
    return false
  end
  return one(affix)
end

local function str_format(s, args, kwargs)
  local auto = 0
  local out = s:gsub("()({{?)([^{}]*)(}?}?)", function(_, open, body, close)
    if open == "{{" then return "{" .. body .. (close == "}}" and "}" or close) end
    if close == "" then raise("ValueError", "Single '{' encountered in format string") end
    if close == "}}" then close = "}" end
    local field, conv, spec = body:match("^([^!:]*)!?([rsa]?):?(.*)$")
    if spec ~= "" then raise("ValueError", "format specs are not supported by llmc.jinja's str.format") end
    local v
    if field == "" then auto = auto + 1; v = args[auto]
    elseif field:find("^%d+$") then v = args[tonumber(field) + 1]
    else v = kwargs[field] end
    if v == nil then raise("IndexError", "Replacement index %s out of range", field == "" and tostring(auto - 1) or field) end
    return (conv == "r" or conv == "a") and repr(v) or to_str(v)
  end)
  out = out:gsub("}}", "}")
  return out
end

local STR_METHODS = {
  startswith = function(s, a) return affix_test(s, a[1], false) end,
  endswith = function(s, a) return affix_test(s, a[1], true) end,
  strip = function(s, a) return py_strip(s, "b", a[1]) end,
  lstrip = function(s, a) return py_strip(s, "l", a[1]) end,
  rstrip = function(s, a) return py_strip(s, "r", a[1]) end,
  split = function(s, a, kw)
    local sep, maxsplit = arg(a, kw, 1, "sep"), arg(a, kw, 2, "maxsplit", -1)
    if sep == nil or sep == NULL then return split_ws(s, maxsplit) end
    return split_sep(s, need_str(sep, "sep"), maxsplit)
  end,
  rsplit = function(s, a, kw)
    local sep, maxsplit = arg(a, kw, 1, "sep"), arg(a, kw, 2, "maxsplit", -1)
    if sep == nil or sep == NULL then
      if maxsplit >= 0 then raise("ValueError", "rsplit() without a separator and with maxsplit is not supported") end
      return split_ws(s, -1)
    end
    return rsplit_sep(s, need_str(sep, "sep"), maxsplit)
  end,
  splitlines = function(s, a, kw)
    local keep = truthy(arg(a, kw, 1, "keepends", false))
    local out, pos = new_list(), 1
    while pos <= #s do
      local a1, b1 = s:find("\r\n", pos, true)
      local a2, b2 = s:find("[\n\r\v\f\28\29\30]", pos)
      local a3, b3 = s:find("\194\133", pos, true)
      local a4, b4 = s:find("\226\128[\168\169]", pos)
      local best, bend
      for _, c in ipairs { { a1, b1 }, { a2, b2 }, { a3, b3 }, { a4, b4 } } do
        if c[1] and (not best or c[1] < best or (c[1] == best and c[2] > bend)) then best, bend = c[1], c[2] end
      end
      if not best then break end
      out[#out + 1] = s:sub(pos, keep and bend or best - 1)
      pos = bend + 1
    end
    if pos <= #s then out[#out + 1] = s:sub(pos) end
    return out
  end,
  upper = function(s) return py_upper(s) end,
  lower = function(s) return py_lower(s) end,
  title = function(s) return py_title(s) end,
  capitalize = function(s) return py_capitalize(s) end,
  replace = function(s, a, kw)
    local c = arg(a, kw, 3, "count", -1)
    return py_replace(s, need_str(a[1], "replace() argument 1"), need_str(a[2], "replace() argument 2"), c)
  end,
  find = function(s, a)
    local p = s:find(need_str(a[1], "find() argument"), 1, true)
    return p and cp_index(s, p) or -1
  end,
  rfind = function(s, a)
    local sub, last = need_str(a[1], "rfind() argument"), nil
    local pos = 1
    while true do
      local p = s:find(sub, pos, true)
      if not p then break end
      last, pos = p, p + 1
    end
    return last and cp_index(s, last) or -1
  end,
  index = function(s, a)
    local p = s:find(need_str(a[1], "index() argument"), 1, true)
    if not p then raise("ValueError", "substring not found") end
    return cp_index(s, p)
  end,
  count = function(s, a) return count_sub(s, need_str(a[1], "count() argument")) end,
  join = function(s, a)
    local parts = {}
    for i, v in ipairs(iterate(a[1])) do
      if type(v) ~= "string" then raise("TypeError", "sequence item %d: expected str instance, %s found", i - 1, pytype(v)) end
      parts[i] = v
    end
    return concat(parts, s)
  end,
  isdigit = function(s) return s ~= "" and s:find("^%d+$") ~= nil end,
  isnumeric = function(s) return s ~= "" and s:find("^%d+$") ~= nil end,
  isalpha = function(s) return s ~= "" and s:find("^%a+$") ~= nil end,
  isalnum = function(s) return s ~= "" and s:find("^%w+$") ~= nil end,
  isspace = function(s) return s ~= "" and rstrip_set(s, WS) == "" end,
  islower = function(s) return s:find("%l") ~= nil and s:find("%u") == nil end,
  isupper = function(s) return s:find("%u") ~= nil and s:find("%l") == nil end,
  format = function(s, a, kw) return str_format(s, a, kw) end,
}

local DICT_METHODS = {
  items = function(d)
    local out = new_list()
    for _, k in ipairs(dict_keys(d)) do out[#out + 1] = new_tuple { k, d[k] } end
    return out
  end,
  keys = function(d) return new_list(dict_keys(d)) end,
  values = function(d)
    local out = new_list()
    for _, k in ipairs(dict_keys(d)) do out[#out + 1] = d[k] end
    return out
  end,
  get = function(d, a)
    local key = a[1]
    local v
    if type(key) == "string" or type(key) == "number" then v = d[key] end
    if v == nil then v = a[2] end
    if v == nil then v = NULL end
    return v
  end,
}

local LIST_METHODS = {
  index = function(l, a)
    for i = 1, #l do if py_eq(l[i], a[1]) then return i - 1 end end
    raise("ValueError", "%s is not in list", repr(a[1]))
  end,
  count = function(l, a)
    local n = 0
    for i = 1, #l do if py_eq(l[i], a[1]) then n = n + 1 end end
    return n
  end,
}

-- Mutating methods: the immutable sandbox refuses them when called.
local UNSAFE = {
  list = { append = 1, extend = 1, insert = 1, pop = 1, remove = 1, reverse = 1, sort = 1, clear = 1 },
  dict = { update = 1, pop = 1, popitem = 1, setdefault = 1, clear = 1 },
}
local function unsafe(obj, name)
  return undefined(fmt("access to attribute '%s' of '%s' object is unsafe.", name, pytype(obj)))
end

local function loop_attr(l, name)
  local i, n = l.i, l.n
  if name == "index" then return i
  elseif name == "index0" then return i - 1
  elseif name == "revindex" then return n - i + 1
  elseif name == "revindex0" then return n - i
  elseif name == "first" then return i == 1
  elseif name == "last" then return i == n
  elseif name == "length" then return n
  elseif name == "depth" then return l.depth
  elseif name == "depth0" then return l.depth - 1
  elseif name == "previtem" then
    if i > 1 then return l.items[i - 1] end
    return undefined("there is no previous item")
  elseif name == "nextitem" then
    if i < n then return l.items[i + 1] end
    return undefined("there is no next item")
  elseif name == "cycle" then
    return callable("cycle", function(args)
      if #args == 0 then raise("TypeError", "no items for cycling given") end
      return args[(i - 1) % #args + 1]
    end)
  elseif name == "changed" then
    return callable("changed", function(args)
      local key = new_list({ unpack(args) })
      if l.last_changed == nil or not py_eq(l.last_changed, key) then l.last_changed = key; return true end
      return false
    end)
  end
  return undefined(fmt("'LoopContext object' has no attribute '%s'", name))
end

local function get_attr(obj, name)
  local k = kind(obj)
  if k == "dict" then
    local m = DICT_METHODS[name]
    if m then return bound(name, m, obj) end
    if UNSAFE.dict[name] then return unsafe(obj, name) end
    local v = obj[name]
    if v == nil then return undefined(fmt("'dict object' has no attribute '%s'", name)) end
    return v
  elseif k == "str" then
    local m = STR_METHODS[name]
    if m then return bound(name, m, obj) end
  elseif k == "list" or k == "tuple" then
    local m = LIST_METHODS[name]
    if m then return bound(name, m, obj) end
    if k == "list" and UNSAFE.list[name] then return unsafe(obj, name) end
  elseif k == "namespace" then
    local v = obj.vals[name]
    if v ~= nil then return v end
    return undefined(fmt("'Namespace object' has no attribute '%s'", name))
  elseif k == "loop" then
    return loop_attr(obj, name)
  elseif k == "undefined" then
    check_defined(obj)
  end
  return undefined(fmt("%s has no attribute '%s'", type_repr(obj), name))
end

local function get_item(obj, key)
  local k = kind(obj)
  local tk = type(key)
  if k == "dict" then
    if tk == "string" or tk == "number" then
      local v = obj[key]
      if v ~= nil then return v end
    end
    if tk == "string" then
      local m = DICT_METHODS[key]
      if m then return bound(key, m, obj) end
    end
  elseif k == "list" or k == "tuple" or k == "str" then
    if tk == "boolean" then key, tk = num(key), "number" end
    if mtype(key) == "integer" then
      if k == "str" then
        if is_ascii(obj) then
          local n = #obj
          local i = key < 0 and key + n or key
          if i >= 0 and i < n then return obj:sub(i + 1, i + 1) end
        else
          local cs = chars(obj)
          local i = key < 0 and key + #cs or key
          if i >= 0 and i < #cs then return cs[i + 1] end
        end
      else
        local n = #obj
        local i = key < 0 and key + n or key
        if i >= 0 and i < n then return obj[i + 1] end
      end
    elseif tk == "string" then
      return get_attr(obj, key)
    end
  elseif k == "namespace" or k == "loop" then
    if tk == "string" then return get_attr(obj, key) end
  elseif k == "undefined" then
    check_defined(obj)
  end
  return undefined(fmt("%s has no attribute %s", type_repr(obj), repr(key)))
end

local function get_slice(obj, start, stop, step)
  local function int_or_nil(v, what)
    if v == nil or v == NULL then return nil end
    if type(v) == "boolean" then return num(v) end
    if mtype(v) ~= "integer" then
      check_defined(v)
      raise("TypeError", "slice indices must be integers or None, not %s", pytype(v))
    end
    return v
  end
  start, stop, step = int_or_nil(start), int_or_nil(stop), int_or_nil(step)
  local k = kind(obj)
  if k == "str" then
    local cs = is_ascii(obj) and nil or chars(obj)
    local n = cs and #cs or #obj
    local out = {}
    for _, i in ipairs(slice_indices(n, start, stop, step)) do out[#out + 1] = cs and cs[i] or obj:sub(i, i) end
    return concat(out)
  elseif k == "list" or k == "tuple" then
    local out = k == "tuple" and new_tuple() or new_list()
    for _, i in ipairs(slice_indices(#obj, start, stop, step)) do out[#out + 1] = obj[i] end
    return out
  elseif k == "undefined" then
    check_defined(obj)
  end
  return undefined(fmt("%s is not subscriptable", type_repr(obj)))
end

-- Convert what a user-supplied Lua function returned.
local function from_lua(v)
  if v == nil then return NULL end
  return v
end

local call_macro

local function call_value(fn, args, kwargs, cx)
  local tf = type(fn)
  if tf == "table" then
    local mt = getmetatable(fn)
    if mt == CALL_MT then return from_lua(fn.fn(args, kwargs, cx)) end
    if mt == MACRO_MT then return call_macro(fn, args, kwargs, cx) end
    if mt == UNDEF_MT then check_defined(fn) end
  elseif tf == "function" then
    -- plain Lua functions get positional arguments, then the keyword table if there is one
    local n = args.n or #args
    if next(kwargs) ~= nil then
      args = { unpack(args, 1, n) }; n = n + 1; args[n] = kwargs
    end
    return from_lua((fn(unpack(args, 1, n))))
  end
  check_defined(fn)
  raise("TypeError", "'%s' object is not callable", pytype(fn))
end

-- =====================================================================================
-- Runtime: evaluation
-- =====================================================================================

local EV, EX = {}, {}

local function eval(node, f, cx) return EV[node.t](node, f, cx) end

local function eval_args(node, f, cx)
  local args, kwargs = {}, {}
  local n = #node.args
  for k = 1, n do args[k] = eval(node.args[k], f, cx) end
  local keys = {}
  for k = 1, #node.kwnames do
    local nm = node.kwnames[k]
    keys[#keys + 1] = nm
    kwargs[nm] = eval(node.kwargs[k], f, cx)
  end
  if node.dyn_args then
    for _, v in ipairs(iterate(eval(node.dyn_args, f, cx))) do n = n + 1; args[n] = v end
  end
  if node.dyn_kwargs then
    local d = eval(node.dyn_kwargs, f, cx)
    if kind(d) ~= "dict" then raise("TypeError", "argument after ** must be a mapping, not %s", pytype(d)) end
    for _, key in ipairs(dict_keys(d)) do
      if kwargs[key] == nil then keys[#keys + 1] = key end
      kwargs[key] = d[key]
    end
  end
  args.n = n
  new_dict(kwargs, keys)
  return args, kwargs
end

EV.const = function(n) return n.v end

EV.name = function(n, f)
  local v = f[n.name]
  if v == nil then return undefined(fmt("'%s' is undefined", n.name)) end
  return v
end

EV.getattr = function(n, f, cx)
  local obj = eval(n.obj, f, cx)
  cx.node = n
  return get_attr(obj, n.attr)
end

EV.getitem = function(n, f, cx)
  local obj = eval(n.obj, f, cx)
  local key = n.key
  if key.t == "slice" then
    local a = key.start and eval(key.start, f, cx)
    local b = key.stop and eval(key.stop, f, cx)
    local c = key.step and eval(key.step, f, cx)
    cx.node = n
    return get_slice(obj, a, b, c)
  end
  local kv = eval(key, f, cx)
  cx.node = n
  return get_item(obj, kv)
end

EV.slice = function(n, f, cx)
  cx.node = n
  raise("TypeError", "a slice is only allowed inside []")
end

EV.list = function(n, f, cx)
  local out = new_list()
  for k = 1, #n.items do out[k] = eval(n.items[k], f, cx) end
  return out
end

EV.tuple = function(n, f, cx)
  local out = new_tuple()
  for k = 1, #n.items do out[k] = eval(n.items[k], f, cx) end
  return out
end

EV.dict = function(n, f, cx)
  local t, keys = {}, {}
  for k = 1, #n.keys do
    local key = eval(n.keys[k], f, cx)
    local tk = type(key)
    if tk ~= "string" and tk ~= "number" and tk ~= "boolean" then
      cx.node = n.keys[k]
      raise("TypeError", "unhashable or unsupported dict key type: '%s'", pytype(key))
    end
    if tk == "boolean" then key = num(key) end
    if t[key] == nil then keys[#keys + 1] = key end
    t[key] = eval(n.vals[k], f, cx)
  end
  return new_dict(t, keys)
end

EV.cond = function(n, f, cx)
  if truthy(eval(n.test, f, cx)) then return eval(n.a, f, cx) end
  if n.b then return eval(n.b, f, cx) end
  return undefined("the inline if-expression evaluated to false and no else section was defined.")
end

EV["and"] = function(n, f, cx)
  local l = eval(n.l, f, cx)
  if not truthy(l) then return l end
  return eval(n.r, f, cx)
end

EV["or"] = function(n, f, cx)
  local l = eval(n.l, f, cx)
  if truthy(l) then return l end
  return eval(n.r, f, cx)
end

EV["not"] = function(n, f, cx) return not truthy(eval(n.e, f, cx)) end

EV.neg = function(n, f, cx)
  local v = eval(n.e, f, cx)
  cx.node = n
  if is_num(v) then return -num(v) end
  check_defined(v)
  raise("TypeError", "bad operand type for unary -: '%s'", pytype(v))
end

EV.pos = function(n, f, cx)
  local v = eval(n.e, f, cx)
  cx.node = n
  if is_num(v) then return num(v) end
  check_defined(v)
  raise("TypeError", "bad operand type for unary +: '%s'", pytype(v))
end

EV.bin = function(n, f, cx)
  local a = eval(n.l, f, cx)
  local b = eval(n.r, f, cx)
  cx.node = n
  return BINOP[n.op](a, b)
end

EV.concat = function(n, f, cx)
  local parts = {}
  for k = 1, #n.items do parts[k] = to_str(eval(n.items[k], f, cx)) end
  return concat(parts)
end

EV.compare = function(n, f, cx)
  local a = eval(n.e, f, cx)
  for k = 1, #n.ops do
    local o = n.ops[k]
    local b = eval(o.e, f, cx)
    cx.node = o
    if not compare(o.op, a, b) then return false end
    a = b
  end
  return true
end

EV.call = function(n, f, cx)
  local fn = eval(n.fn, f, cx)
  local args, kwargs = eval_args(n, f, cx)
  cx.node = n
  return call_value(fn, args, kwargs, cx)
end

EV.filter = function(n, f, cx, value)
  if n.e then value = eval(n.e, f, cx) end
  local args, kwargs = eval_args(n, f, cx)
  cx.node = n
  return FILTERS[n.name](value, args, kwargs, cx)
end

EV.test = function(n, f, cx)
  local v = eval(n.e, f, cx)
  local args, kwargs = eval_args(n, f, cx)
  cx.node = n
  local r = TESTS[n.name](v, args, kwargs, cx)
  if n.negated then return not r end
  return r and true or false
end

-- Apply a filter chain parsed with no base expression to `value`.
local function apply_filter_chain(node, value, f, cx)
  if node.e then value = apply_filter_chain(node.e, value, f, cx) end
  local args, kwargs = eval_args(node, f, cx)
  cx.node = node
  return FILTERS[node.name](value, args, kwargs, cx)
end

-- =====================================================================================
-- Runtime: statements
-- =====================================================================================

local function exec_body(body, f, cx)
  for k = 1, #body do
    local st = body[k]
    local sig = EX[st.t](st, f, cx)
    if sig then return sig end
  end
end

local function assign(target, value, f, cx)
  if value == nil then value = undefined("value is undefined") end
  local t = target.t
  if t == "name" then
    f[target.name] = value
  elseif t == "tuple" then
    cx.node = target
    local items = iterate(value)
    local want = #target.items
    if #items > want then raise("ValueError", "too many values to unpack (expected %d)", want) end
    if #items < want then raise("ValueError", "not enough values to unpack (expected %d, got %d)", want, #items) end
    for k = 1, want do assign(target.items[k], items[k], f, cx) end
  elseif t == "nsref" then
    cx.node = target
    local ns = f[target.name]
    if ns == nil or getmetatable(ns) ~= NS_MT then
      raise("TemplateRuntimeError", "cannot assign attribute on non-namespace object")
    end
    ns.vals[target.attr] = value
  end
end

local function capture(body, f, cx)
  local saved = cx.buf
  cx.buf = {}
  exec_body(body, f, cx)
  local s = concat(cx.buf)
  cx.buf = saved
  return s
end

EX.text = function(st, f, cx)
  local b = cx.buf
  b[#b + 1] = st.v
end

EX.output = function(st, f, cx)
  cx.node = st
  local v = eval(st.e, f, cx)
  local b = cx.buf
  b[#b + 1] = to_str(v)
end

EX["if"] = function(st, f, cx)
  for k = 1, #st.tests do
    cx.node = st.tests[k]
    if truthy(eval(st.tests[k], f, cx)) then return exec_body(st.bodies[k], f, cx) end
  end
  if st.else_ then return exec_body(st.else_, f, cx) end
end

EX["for"] = function(st, f, cx)
  cx.node = st
  local seq = eval(st.iter, f, cx)
  cx.node = st
  local items = iterate(seq)
  local mt = { __index = f }
  if st.filter then
    local kept = {}
    for k = 1, #items do
      local ff = setmetatable({}, mt)
      assign(st.target, items[k], ff, cx)
      if truthy(eval(st.filter, ff, cx)) then kept[#kept + 1] = items[k] end
    end
    items = kept
  end
  local n = #items
  if n == 0 then
    if st.else_ then return exec_body(st.else_, f, cx) end
    return
  end
  -- depth only grows in recursive loops, which are not supported: always 1
  local loop = setmetatable({ items = items, n = n, i = 0, depth = 1 }, LOOP_MT)
  for k = 1, n do
    loop.i = k
    local ff = setmetatable({ loop = loop }, mt)
    assign(st.target, items[k], ff, cx)
    if exec_body(st.body, ff, cx) == "break" then break end
  end
end

EX.assign = function(st, f, cx)
  cx.node = st
  assign(st.target, eval(st.e, f, cx), f, cx)
end

EX.assignblock = function(st, f, cx)
  local s = capture(st.body, f, cx)
  if st.filter then s = apply_filter_chain(st.filter, s, f, cx) end
  assign(st.target, s, f, cx)
end

EX.macro = function(st, f, cx)
  f[st.name] = setmetatable({ name = st.name, node = st, frame = f }, MACRO_MT)
end

call_macro = function(m, args, kwargs, cx)
  local st = m.node
  local ff = setmetatable({}, { __index = m.frame })
  local nargs = args.n or #args
  local used = {}
  for k, pname in ipairs(st.params) do
    local v
    if k <= nargs then
      v = args[k]
      if kwargs[pname] ~= nil then
        raise("TypeError", "macro '%s' got multiple values for argument '%s'", m.name, pname)
      end
    else
      v = kwargs[pname]
      used[pname] = true
      if v == nil then
        if st.defaults[k] then
          v = eval(st.defaults[k], ff, cx)
        else
          v = undefined(fmt("parameter '%s' was not provided", pname))
        end
      end
    end
    ff[pname] = v
  end
  local varargs = new_tuple()
  for k = #st.params + 1, nargs do varargs[#varargs + 1] = args[k] end
  local kw, keys = {}, {}
  for _, key in ipairs(dict_keys(kwargs)) do
    if not used[key] then keys[#keys + 1] = key; kw[key] = kwargs[key] end
  end
  ff.varargs = varargs
  ff.kwargs = new_dict(kw, keys)
  return capture(st.body, ff, cx)
end

EX.with = function(st, f, cx)
  local ff = setmetatable({}, { __index = f })
  local vals = {}
  for k = 1, #st.values do vals[k] = eval(st.values[k], f, cx) end
  for k = 1, #st.targets do assign(st.targets[k], vals[k], ff, cx) end
  return exec_body(st.body, ff, cx)
end

EX.filterblock = function(st, f, cx)
  local s = capture(st.body, f, cx)
  local b = cx.buf
  b[#b + 1] = to_str(apply_filter_chain(st.filter, s, f, cx))
end

EX.generation = function(st, f, cx) return exec_body(st.body, f, cx) end
EX["break"] = function() return "break" end
EX["continue"] = function() return "continue" end

-- =====================================================================================
-- Filters
-- =====================================================================================

local function to_int_or_float(v)
  if is_num(v) then return num(v) end
  raise("TypeError", "bad operand type: '%s'", pytype(v))
end

local function attr_getter(attribute)
  if attribute == nil or attribute == NULL then return function(v) return v end end
  local path = {}
  if type(attribute) == "string" then
    for part in attribute:gmatch("[^.]+") do path[#path + 1] = tointeger(tonumber(part)) or part end
  else
    path[1] = attribute
  end
  return function(v)
    for _, p in ipairs(path) do v = get_item(v, p) end
    return v
  end
end

-- Stable sort of an array by key function and Python ordering.
local function stable_sort(items, keyf, reverse)
  local dec = {}
  for k, v in ipairs(items) do dec[k] = { keyf(v), k, v } end
  sort(dec, function(a, b)
    if reverse then
      if py_lt(b[1], a[1]) then return true end
      if py_lt(a[1], b[1]) then return false end
    else
      if py_lt(a[1], b[1]) then return true end
      if py_lt(b[1], a[1]) then return false end
    end
    return a[2] < b[2]
  end)
  local out = new_list()
  for k, d in ipairs(dec) do out[k] = d[3] end
  return out
end

local function case_key(case_sensitive)
  if case_sensitive then return function(v) return v end end
  return function(v) if type(v) == "string" then return py_lower(v) end return v end
end

local function html_escape(s)
  return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&#34;", ["'"] = "&#39;" }))
end

-- Python's int(str, base) for the int filter; returns nil when it does not parse.
local function parse_int(s, base)
  s = py_strip(s, "b")
  local sign = 1
  if s:sub(1, 1) == "-" then sign, s = -1, s:sub(2) elseif s:sub(1, 1) == "+" then s = s:sub(2) end
  if base == 16 then s = s:gsub("^0[xX]", "") elseif base == 8 then s = s:gsub("^0[oO]", "")
  elseif base == 2 then s = s:gsub("^0[bB]", "") end
  s = s:gsub("(%w)_(%w)", "%1%2")
  if s == "" or s:find("[^%w]") then return nil end
  local v = tonumber(s, base)
  if not v then return nil end
  return sign * v
end

local function parse_float(s)
  s = py_strip(s, "b"):gsub("(%d)_(%d)", "%1%2")
  local low = s:lower()
  if low == "nan" or low == "+nan" or low == "-nan" then return 0 / 0 end
  if low == "inf" or low == "+inf" or low == "infinity" or low == "+infinity" then return math.huge end
  if low == "-inf" or low == "-infinity" then return -math.huge end
  if not s:find("^[-+]?%d*%.?%d*[eE]?[-+]?%d*$") or not s:find("%d") then return nil end
  local v = tonumber(s)
  return v and v + 0.0
end

local function do_select(value, args, kwargs, cx, select_attr, want)
  local getter = function(v) return v end
  local ti = 1
  if select_attr then getter = attr_getter(args[1]); ti = 2 end
  local test_name = args[ti]
  local test
  if test_name == nil then
    test = function(v) return truthy(v) end
  else
    local tf = TESTS[test_name]
    if not tf then raise("TemplateRuntimeError", "No test named %s.", repr(test_name)) end
    local rest = { n = 0 }
    for k = ti + 1, args.n or #args do rest[#rest + 1] = args[k]; rest.n = rest.n + 1 end
    test = function(v) return tf(v, rest, {}, cx) end
  end
  local out = new_list()
  for _, v in ipairs(iterate(value)) do
    if (test(getter(v)) and true or false) == want then out[#out + 1] = v end
  end
  return out
end

FILTERS.abs = function(v)
  v = to_int_or_float(v)
  return v < 0 and -v or v
end

FILTERS.attr = function(v, a) return get_attr(v, need_str(a[1], "attribute name")) end

FILTERS.capitalize = function(v) return py_capitalize(to_str(v)) end

FILTERS.center = function(v, a, kw)
  local s = to_str(v)
  local width = arg(a, kw, 1, "width", 80)
  local n = str_len(s)
  if width <= n then return s end
  local total = width - n
  local left = total // 2 + (total & width & 1)
  return string.rep(" ", left) .. s .. string.rep(" ", total - left)
end

FILTERS.length = function(v) return length(v) end
FILTERS.count = FILTERS.length

FILTERS.default = function(v, a, kw)
  local dflt = arg(a, kw, 1, "default_value", "")
  local boolean = truthy(arg(a, kw, 2, "boolean", false))
  if kind(v) == "undefined" or (boolean and not truthy(v)) then return dflt end
  return v
end
FILTERS.d = FILTERS.default

FILTERS.dictsort = function(v, a, kw)
  local case_sensitive = truthy(arg(a, kw, 1, "case_sensitive", false))
  local by = arg(a, kw, 2, "by", "key")
  local reverse = truthy(arg(a, kw, 3, "reverse", false))
  if kind(v) ~= "dict" then raise("TypeError", "dictsort expects a dict, got %s", pytype(v)) end
  local pos = by == "key" and 1 or by == "value" and 2
  if not pos then raise("FilterArgumentError", "You can only sort by either \"key\" or \"value\"") end
  local items = DICT_METHODS.items(v)
  local ck = case_key(case_sensitive)
  return stable_sort(items, function(it) return ck(it[pos]) end, reverse)
end

FILTERS.escape = function(v)
  if type(v) == "string" then return html_escape(v) end
  return html_escape(to_str(v))
end
FILTERS.e = FILTERS.escape
FILTERS.forceescape = FILTERS.escape

FILTERS.first = function(v)
  local items = iterate(v)
  if #items == 0 then return undefined("No first item, sequence was empty.") end
  return items[1]
end

FILTERS.last = function(v)
  local k = kind(v)
  if k ~= "list" and k ~= "tuple" and k ~= "str" then
    check_defined(v)
    raise("TypeError", "'%s' object is not reversible", pytype(v))
  end
  local items = iterate(v)
  if #items == 0 then return undefined("No last item, sequence was empty.") end
  return items[#items]
end

FILTERS.float = function(v, a, kw)
  local dflt = arg(a, kw, 1, "default", 0.0)
  if type(v) == "number" then return v + 0.0 end
  if type(v) == "boolean" then return num(v) + 0.0 end
  if type(v) == "string" then
    local r = parse_float(v)
    if r then return r end
  end
  return dflt
end

FILTERS.int = function(v, a, kw)
  local dflt = arg(a, kw, 1, "default", 0)
  local base = arg(a, kw, 2, "base", 10)
  if type(v) == "boolean" then return num(v) end
  if type(v) == "number" then
    if mtype(v) == "integer" then return v end
    if v ~= v or v == math.huge or v == -math.huge then return dflt end
    local r = v >= 0 and floor(v) or -floor(-v)
    return tointeger(r) or dflt
  end
  if type(v) == "string" then
    local r = parse_int(v, base)
    if r then return r end
    local fv = parse_float(v)
    if fv and fv == fv and fv ~= math.huge and fv ~= -math.huge then
      return tointeger(fv >= 0 and floor(fv) or -floor(-fv)) or dflt
    end
  end
  return dflt
end

FILTERS.indent = function(v, a, kw)
  local width = arg(a, kw, 1, "width", 4)
  local first = truthy(arg(a, kw, 2, "first", false))
  local blank = truthy(arg(a, kw, 3, "blank", false))
  local ind = type(width) == "string" and width or string.rep(" ", num(width))
  local s = to_str(v) .. "\n"
  local lines = STR_METHODS.splitlines(s, {}, {})
  local rv
  if blank then
    rv = concat(lines, "\n" .. ind)
  else
    rv = lines[1] or ""
    if #lines > 1 then
      local rest = {}
      for k = 2, #lines do rest[#rest + 1] = lines[k] ~= "" and ind .. lines[k] or lines[k] end
      rv = rv .. "\n" .. concat(rest, "\n")
    end
  end
  if first then rv = ind .. rv end
  return rv
end

FILTERS.items = function(v)
  local k = kind(v)
  if k == "undefined" then return new_list() end
  if k ~= "dict" then raise("TypeError", "Can only get item pairs from a mapping.") end
  return DICT_METHODS.items(v)
end

FILTERS.join = function(v, a, kw)
  local sep = to_str(arg(a, kw, 1, "d", ""))
  local getter = attr_getter(arg(a, kw, 2, "attribute"))
  local parts = {}
  for k, it in ipairs(iterate(v)) do parts[k] = to_str(getter(it)) end
  return concat(parts, sep)
end

FILTERS.list = function(v)
  local out = new_list()
  for k, it in ipairs(iterate(v)) do out[k] = it end
  return out
end

FILTERS.lower = function(v) return py_lower(to_str(v)) end
FILTERS.upper = function(v) return py_upper(to_str(v)) end

FILTERS.map = function(v, a, kw, cx)
  local out = new_list()
  local items = iterate(v)
  if a[1] == nil and kw.attribute ~= nil then
    local getter = attr_getter(kw.attribute)
    local dflt = kw.default
    for k, it in ipairs(items) do
      local r = getter(it)
      if dflt ~= nil and kind(r) == "undefined" then r = dflt end
      out[k] = r
    end
    return out
  end
  local fname = a[1]
  local fn = FILTERS[fname]
  if not fn then raise("TemplateRuntimeError", "No filter named %s.", repr(fname)) end
  local rest = { n = 0 }
  for k = 2, a.n or #a do rest[#rest + 1] = a[k]; rest.n = rest.n + 1 end
  for k, it in ipairs(items) do out[k] = fn(it, rest, kw, cx) end
  return out
end

local function minmax(v, a, kw, want_max)
  local case_sensitive = truthy(arg(a, kw, 1, "case_sensitive", false))
  local getter = attr_getter(arg(a, kw, 2, "attribute"))
  local ck = case_key(case_sensitive)
  local best, bestk
  for _, it in ipairs(iterate(v)) do
    local key = ck(getter(it))
    if best == nil or (want_max and py_lt(bestk, key)) or (not want_max and py_lt(key, bestk)) then
      best, bestk = it, key
    end
  end
  if best == nil then return undefined(fmt("No aggregated item, sequence was empty.")) end
  return best
end
FILTERS.max = function(v, a, kw) return minmax(v, a, kw, true) end
FILTERS.min = function(v, a, kw) return minmax(v, a, kw, false) end

FILTERS.select = function(v, a, kw, cx) return do_select(v, a, kw, cx, false, true) end
FILTERS.reject = function(v, a, kw, cx) return do_select(v, a, kw, cx, false, false) end
FILTERS.selectattr = function(v, a, kw, cx) return do_select(v, a, kw, cx, true, true) end
FILTERS.rejectattr = function(v, a, kw, cx) return do_select(v, a, kw, cx, true, false) end

FILTERS.replace = function(v, a, kw)
  local s = to_str(v)
  local count = arg(a, kw, 3, "count")
  if count == NULL then count = nil end
  return py_replace(s, to_str(a[1]), to_str(a[2]), count)
end

FILTERS.reverse = function(v)
  local k = kind(v)
  if k == "str" then
    local cs, out = chars(v), {}
    for i = #cs, 1, -1 do out[#out + 1] = cs[i] end
    return concat(out)
  end
  local items, out = iterate(v), new_list()
  for i = #items, 1, -1 do out[#out + 1] = items[i] end
  return out
end

FILTERS.round = function(v, a, kw)
  local precision = arg(a, kw, 1, "precision", 0)
  local method = arg(a, kw, 2, "method", "common")
  v = to_int_or_float(v)
  if method == "common" then
    if precision < 0 then
      local m = 10.0 ^ -precision
      return tonumber(fmt("%.0f", v / m)) * m
    end
    return tonumber(fmt("%." .. precision .. "f", v)) + 0.0
  end
  local m = 10.0 ^ precision
  if method == "ceil" then return math.ceil(v * m) / m end
  if method == "floor" then return floor(v * m) / m end
  raise("FilterArgumentError", "method must be common, ceil or floor")
end

FILTERS.safe = function(v) return to_str(v) end

FILTERS.sort = function(v, a, kw)
  local reverse = truthy(arg(a, kw, 1, "reverse", false))
  local case_sensitive = truthy(arg(a, kw, 2, "case_sensitive", false))
  local getter = attr_getter(arg(a, kw, 3, "attribute"))
  local ck = case_key(case_sensitive)
  return stable_sort(iterate(v), function(it) return ck(getter(it)) end, reverse)
end

FILTERS.string = function(v) return to_str(v) end

FILTERS.sum = function(v, a, kw)
  local getter = attr_getter(arg(a, kw, 1, "attribute"))
  local total = arg(a, kw, 2, "start", 0)
  for _, it in ipairs(iterate(v)) do total = BINOP["+"](total, getter(it)) end
  return total
end

FILTERS.title = function(v)
  -- Jinja's title: split on runs of whitespace and -({[< ; capitalise each piece.
  local s = to_str(v)
  return (s:gsub("()([^%s%-%(%{%[<]+)", function(_, word) return py_capitalize(word) end))
end

FILTERS.tojson = function(v, a, kw)
  return M.tojson(v, {
    ensure_ascii = truthy(arg(a, kw, 1, "ensure_ascii", false)),
    indent = arg(a, kw, 2, "indent"),
    separators = arg(a, kw, 3, "separators"),
    sort_keys = truthy(arg(a, kw, 4, "sort_keys", false)),
  })
end

FILTERS.trim = function(v, a, kw)
  local c = arg(a, kw, 1, "chars")
  return py_strip(to_str(v), "b", c)
end

FILTERS.truncate = function(v, a, kw)
  local s = to_str(v)
  local len = arg(a, kw, 1, "length", 255)
  local killwords = truthy(arg(a, kw, 2, "killwords", false))
  local ending = arg(a, kw, 3, "end", "...")
  local leeway = arg(a, kw, 4, "leeway", 5)
  local cs = chars(s)
  if #cs <= len + leeway then return s end
  local keep = len - str_len(ending)
  if keep < 0 then keep = 0 end
  local head = concat(cs, "", 1, keep)
  if killwords then return head .. ending end
  local cut = head:match("^(.*) [^ ]*$")
  return (cut or head) .. ending
end

FILTERS.unique = function(v, a, kw)
  local case_sensitive = truthy(arg(a, kw, 1, "case_sensitive", false))
  local getter = attr_getter(arg(a, kw, 2, "attribute"))
  local ck = case_key(case_sensitive)
  local out, seen = new_list(), {}
  for _, it in ipairs(iterate(v)) do
    local key = ck(getter(it))
    local dup = false
    for _, s in ipairs(seen) do if py_eq(s, key) then dup = true; break end end
    if not dup then seen[#seen + 1] = key; out[#out + 1] = it end
  end
  return out
end

FILTERS.wordcount = function(v)
  local n = 0
  for _ in to_str(v):gmatch("[%w_]+") do n = n + 1 end
  return n
end

FILTERS.format = function(v, a, kw)
  if next(kw) ~= nil then
    return percent_format(to_str(v), kw)
  end
  local t = new_tuple()
  for k = 1, a.n or #a do t[k] = a[k] end
  return percent_format(to_str(v), t)
end

-- Python printf-style formatting: "%s, %d" % (a, b) and "%(name)s" % mapping.
percent_format = function(s, values)
  local k = kind(values)
  local list
  if k == "tuple" then list = values elseif k ~= "dict" then list = { values } end
  local idx = 0
  local out, i, n = {}, 1, #s
  while i <= n do
    local j = s:find("%", i, true)
    if not j then out[#out + 1] = s:sub(i); break end
    out[#out + 1] = s:sub(i, j - 1)
    local p = j + 1
    local key
    if s:sub(p, p) == "(" then
      local q = s:find(")", p, true)
      if not q then raise("ValueError", "incomplete format key") end
      key, p = s:sub(p + 1, q - 1), q + 1
    end
    local flags, width, prec, conv, e = s:match("^([-+ #0]*)(%d*)(%.?%d*)([diouxXeEfFgGcrsa%%])()", p)
    if not conv then raise("ValueError", "unsupported format character at index %d", p - 1) end
    i = e
    if conv == "%" and not key then
      out[#out + 1] = "%"
    else
      local v
      if key then
        if k ~= "dict" then raise("TypeError", "format requires a mapping") end
        v = values[key]
        if v == nil then raise("KeyError", "%s", repr(key)) end
      else
        idx = idx + 1
        if not list or idx > #list then raise("TypeError", "not enough arguments for format string") end
        v = list[idx]
      end
      local spec = "%" .. flags .. width .. prec
      local r
      if conv == "s" then r = fmt(spec .. "s", to_str(v))
      elseif conv == "r" or conv == "a" then r = fmt(spec .. "s", repr(v))
      elseif conv == "c" then r = type(v) == "number" and utf8.char(v) or to_str(v)
      else
        if not is_num(v) then raise("TypeError", "%%%s format: a real number is required, not %s", conv, pytype(v)) end
        v = num(v)
        if conv == "d" or conv == "i" or conv == "u" then
          v = v >= 0 and floor(v) or -floor(-v)
          r = fmt(spec .. "d", tointeger(v) or v)
        elseif conv == "o" or conv == "x" or conv == "X" then
          r = fmt(spec .. conv, tointeger(v) or floor(v))
        else
          r = fmt(spec .. conv, v)
        end
      end
      out[#out + 1] = r
    end
  end
  if list and idx < #list then raise("TypeError", "not all arguments converted during string formatting") end
  return concat(out)
end

-- =====================================================================================
-- Tests
-- =====================================================================================

TESTS.defined = function(v) return kind(v) ~= "undefined" end
TESTS.undefined = function(v) return kind(v) == "undefined" end
TESTS.none = function(v) return v == NULL end
TESTS.boolean = function(v) return type(v) == "boolean" end
TESTS["false"] = function(v) return v == false end
TESTS["true"] = function(v) return v == true end
TESTS.integer = function(v) return mtype(v) == "integer" end
TESTS.float = function(v) return mtype(v) == "float" end
TESTS.number = function(v) return type(v) == "number" or type(v) == "boolean" end
TESTS.string = function(v) return type(v) == "string" end
TESTS.mapping = function(v) local k = kind(v); return k == "dict" end
TESTS.sequence = function(v)
  local k = kind(v); return k == "list" or k == "tuple" or k == "str" or k == "dict"
end
TESTS.iterable = function(v)
  local k = kind(v); return k == "list" or k == "tuple" or k == "str" or k == "dict" or k == "undefined"
end
TESTS.callable = function(v) local k = kind(v); return k == "callable" or k == "macro" end
TESTS.odd = function(v) return num(v) % 2 == 1 end
TESTS.even = function(v) return num(v) % 2 == 0 end
TESTS.divisibleby = function(v, a) return num(v) % num(a[1]) == 0 end
TESTS.eq = function(v, a) return py_eq(v, a[1]) end
TESTS.ne = function(v, a) return not py_eq(v, a[1]) end
TESTS.lt = function(v, a) return compare("<", v, a[1]) end
TESTS.le = function(v, a) return compare("<=", v, a[1]) end
TESTS.gt = function(v, a) return compare(">", v, a[1]) end
TESTS.ge = function(v, a) return compare(">=", v, a[1]) end
TESTS["in"] = function(v, a) return contains(a[1], v) end
TESTS.sameas = function(v, a) return rawequal(v, a[1]) end
TESTS.lower = function(v) local s = to_str(v); return py_lower(s) == s end
TESTS.upper = function(v) local s = to_str(v); return py_upper(s) == s end
TESTS.escaped = function() return false end
TESTS.filter = function(v) return type(v) == "string" and FILTERS[v] ~= nil end
TESTS.test = function(v) return type(v) == "string" and TESTS[v] ~= nil end
TESTS.equalto, TESTS["=="] = TESTS.eq, TESTS.eq
TESTS["!="] = TESTS.ne
TESTS.lessthan, TESTS["<"], TESTS["<="] = TESTS.lt, TESTS.lt, TESTS.le
TESTS.greaterthan, TESTS[">"], TESTS[">="] = TESTS.gt, TESTS.gt, TESTS.ge

-- =====================================================================================
-- Globals
-- =====================================================================================

local MAX_RANGE = 100000 -- as jinja2.sandbox

local GLOBALS = {}

GLOBALS.range = callable("range", function(a)
  local start, stop, step = 0, nil, 1
  local n = a.n or #a
  if n == 1 then stop = a[1]
  elseif n == 2 then start, stop = a[1], a[2]
  elseif n == 3 then start, stop, step = a[1], a[2], a[3]
  else raise("TypeError", "range expected 1 to 3 arguments, got %d", n) end
  for _, x in ipairs { start, stop, step } do
    if mtype(num(x)) ~= "integer" then raise("TypeError", "'%s' object cannot be interpreted as an integer", pytype(x)) end
  end
  start, stop, step = num(start), num(stop), num(step)
  if step == 0 then raise("ValueError", "range() arg 3 must not be zero") end
  local out = new_list()
  local x = start
  while (step > 0 and x < stop) or (step < 0 and x > stop) do
    if #out >= MAX_RANGE then raise("OverflowError", "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", MAX_RANGE) end
    out[#out + 1] = x
    x = x + step
  end
  return out
end)

GLOBALS.namespace = callable("namespace", function(a, kw)
  local vals = {}
  for k = 1, a.n or #a do
    local d = a[k]
    if kind(d) ~= "dict" then raise("TypeError", "namespace() positional arguments must be dicts") end
    for _, key in ipairs(dict_keys(d)) do vals[key] = d[key] end
  end
  for _, key in ipairs(dict_keys(kw)) do vals[key] = kw[key] end
  return setmetatable({ vals = vals }, NS_MT)
end)

GLOBALS.dict = callable("dict", function(a, kw)
  local t, keys = {}, {}
  if a[1] ~= nil then
    if kind(a[1]) ~= "dict" then raise("TypeError", "dict() positional argument must be a dict") end
    for _, key in ipairs(dict_keys(a[1])) do keys[#keys + 1] = key; t[key] = a[1][key] end
  end
  for _, key in ipairs(dict_keys(kw)) do
    if t[key] == nil then keys[#keys + 1] = key end
    t[key] = kw[key]
  end
  return new_dict(t, keys)
end)

GLOBALS.raise_exception = callable("raise_exception", function(a)
  raise(nil, "%s", to_str(a[1]))
end)

GLOBALS.strftime_now = callable("strftime_now", function(a, _, cx)
  local f = need_str(a[1], "strftime_now() format")
  local now = cx.now
  if type(now) == "function" then now = now() end
  now = now or os.time()
  local prefix = cx.utc and "!" or ""
  -- glibc's "%-d" (no padding) is not accepted by Lua's os.date: format, then unpad.
  f = f:gsub("%%%-(%a)", function(c)
    local r = os.date(prefix .. "%" .. c, now):gsub("^[0 ]+(.)", "%1")
    return (r:gsub("%%", "%%%%"))
  end)
  local ok, r = pcall(os.date, prefix .. f, now)
  if not ok then raise("ValueError", "strftime_now: %s", tostring(r)) end
  return r
end)

M.globals = GLOBALS
M.filters = FILTERS
M.tests = TESTS

-- =====================================================================================
-- Public API
-- =====================================================================================

local Template = {}
Template.__index = Template

--- Compile a template.  opts: name (used in error messages, default "<template>"),
--- trim_blocks (default true), lstrip_blocks (default true), keep_trailing_newline
--- (default false) -- the Hugging Face chat-template environment.  Raises
--- "NAME:LINE:COL: TemplateSyntaxError: ..." on a syntax error.
function M.compile(source, opts)
  if type(source) ~= "string" then error("jinja.compile: template source must be a string, got " .. type(source), 2) end
  opts = opts or {}
  local o = {
    trim_blocks = opts.trim_blocks ~= false,
    lstrip_blocks = opts.lstrip_blocks ~= false,
    keep_trailing_newline = opts.keep_trailing_newline == true,
  }
  local name = opts.name or "<template>"
  local src, toks = lex(source, o, name)
  local body = parse(toks, src, name)
  return setmetatable({ body = body, src = src, name = name }, Template)
end

--- Render with variables `vars` (a table; missing names are Undefined).  ropts: now (epoch
--- seconds or a function returning them, for strftime_now; default os.time()), utc (format
--- strftime_now in UTC instead of local time).  Returns the rendered string; raises
--- "NAME:LINE:COL: Kind: message" on a runtime error.
function Template:render(vars, ropts)
  vars = vars or {}
  ropts = ropts or {}
  local cx = { buf = {}, now = ropts.now, utc = ropts.utc }
  local top = setmetatable({}, { __index = function(_, k)
    local v = vars[k]
    if v == nil then v = GLOBALS[k] end
    return v
  end })
  local ok, err = xpcall(exec_body, function(e)
    if type(e) == "table" and getmetatable(e) == ERR_MT then return e end
    return setmetatable({ cls = "InternalError", msg = tostring(e) .. "\n" .. debug.traceback() }, ERR_MT)
  end, self.body, top, cx)
  if not ok then
    local where = self.name
    if cx.node and cx.node.p then
      local line, col = line_col(self.src, cx.node.p)
      where = fmt("%s:%d:%d", self.name, line, col)
    end
    if err.cls then error(fmt("%s: %s: %s", where, err.cls, err.msg), 0) end
    error(fmt("%s: %s", where, err.msg), 0)
  end
  return concat(cx.buf)
end

--- One-shot compile + render.
function M.render(source, vars, opts)
  return M.compile(source, opts):render(vars, opts)
end

return M
