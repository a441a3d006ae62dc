--[[
llmc.util — small helpers shared by the quantization front end.

  local util = require "llmc.util"
  local a = util.args{ model = llmc.default_model(), output = "out/x", overwrite = false }
  local s = util.json.encode(obj, {indent = 2})          -- Python json.dumps(indent=2, sort_keys=True)
  local obj = util.json.decode(text, "config.json")      -- ints stay ints, floats stay floats
  local bar = util.progress(28, "quantizing"); bar:update(1, "q_proj"); bar:close()
  print(util.fmt_bytes(22684232), util.fmt_time(3.5))   -- "21.6 MiB", "3.50 s"

JSON.  The encoder writes what Python's `json.dumps(obj, indent=2,
sort_keys=True)` writes (ensure_ascii escapes, `", "`/`": "` separators,
floats as Python's repr: 1e-05, 10000.0), because that is how
llm-compressor writes config.json and a byte-comparable file makes
reviewing a diff against it trivial.  Lua tables do not say whether `{}` is
an array or an object, so producers mark them: `json.array(t)`,
`json.object(t)`; JSON null is `json.null`.  An unmarked table is an array
when it has a positive length and no other keys, else an object.
The decoder keeps the integer/float distinction of the text (cjson turns
256 into 256.0, which transformers would then see as a float), marks
arrays/objects so that a decode/encode round trip is exact, and keeps each
object's key order (`json.keys(obj)`).

Ordered maps (`util.omap()`) keep insertion order; the YAML reader and the
recipe serialiser use them.
]]
local util = {}

local cjson_ok, cjson = pcall(require, "cjson")

---------------------------------------------------------------------------
-- ordered map
---------------------------------------------------------------------------
local OMap = {}
OMap.__index = OMap
OMap.__name = "llmc.omap"

--- A map that remembers insertion order.  om[k] reads a value; use
--- om:set(k, v) to write (so that the order is recorded).
function util.omap(pairs_list)
  local m = setmetatable({_keys = {}, _vals = {}, _line = {}}, OMap)
  if pairs_list then
    for _, kv in ipairs(pairs_list) do m:set(kv[1], kv[2]) end
  end
  return m
end

function util.is_omap(x) return getmetatable(x) == OMap end

function OMap:set(k, v, line)
  if self._vals[k] == nil then self._keys[#self._keys + 1] = k end
  if v == nil then v = util.json.null end
  self._vals[k] = v
  if line then self._line[k] = line end
  return self
end
function OMap:get(k) return self._vals[k] end
function OMap:has(k) return self._vals[k] ~= nil end
function OMap:remove(k)
  for i, kk in ipairs(self._keys) do
    if kk == k then table.remove(self._keys, i); break end
  end
  self._vals[k] = nil
  self._line[k] = nil
end
function OMap:keys() return {table.unpack(self._keys)} end
function OMap:len() return #self._keys end
function OMap:line(k) return self._line[k] end
--- iterate (key, value) in insertion order
function OMap:pairs()
  local i = 0
  return function()
    i = i + 1
    local k = self._keys[i]
    if k ~= nil then return k, self._vals[k] end
  end
end

---------------------------------------------------------------------------
-- JSON
---------------------------------------------------------------------------
local json = {}
util.json = json

json.null = cjson_ok and cjson.null or setmetatable({}, {__name = "json.null", __tostring = function() return "null" end})
local ARRAY = {__name = "json.array"}
local OBJECT = {__name = "json.object"}
json.array_mt, json.object_mt = ARRAY, OBJECT

-- key order of decoded objects, kept beside them (a key inside the object
-- would show up in every pairs() loop over a decoded config)
local key_order = setmetatable({}, {__mode = "k"})

function json.array(t) return setmetatable(t or {}, ARRAY) end
function json.object(t) return setmetatable(t or {}, OBJECT) end
function json.is_array(t)
  if type(t) ~= "table" then return false end
  local mt = getmetatable(t)
  if mt == ARRAY then return true end
  if mt == OBJECT or mt == OMap then return false end
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end
--- the key order of a decoded object (or nil)
function json.keys(t)
  local mt = getmetatable(t)
  if mt == OMap then return t:keys() end
  return key_order[t]
end

--- Python's repr() of a float (the shortest string that round-trips, fixed
--- notation when -4 <= exponent < 16, else d.ddde+XX).
function util.pyfloat(x)
  if x ~= x then return "NaN" end
  if x == math.huge then return "Infinity" end
  if x == -math.huge then return "-Infinity" end
  if x == 0 then return (1 / x < 0) and "-0.0" or "0.0" end
  local s
  for p = 0, 16 do
    s = string.format("%." .. p .. "e", x)
    if tonumber(s) == x then break end
  end
  local sign, d1, rest, e = s:match("^(%-?)(%d)%.?(%d*)e([-+]%d+)$")
  local digits = (d1 .. rest):gsub("0+$", "")
  if digits == "" then digits = "0" end
  local exp = tonumber(e)
  if exp >= -4 and exp < 16 then
    local out
    if exp >= 0 then
      if #digits <= exp + 1 then
        out = digits .. string.rep("0", exp + 1 - #digits) .. ".0"
      else
        out = digits:sub(1, exp + 1) .. "." .. digits:sub(exp + 2)
      end
    else
      out = "0." .. string.rep("0", -exp - 1) .. digits
    end
    return sign .. out
  end
  local mant = digits:sub(1, 1)
  if #digits > 1 then mant = mant .. "." .. digits:sub(2) end
  return string.format("%s%se%s%02d", sign, mant, exp < 0 and "-" or "+", math.abs(exp))
end

local escapes = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}

--- JSON string literal as Python's json.dumps writes it (ensure_ascii=True).
function json.quote(s)
  local out = {'"'}
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    if c < 0x80 then
      local ch = string.char(c)
      if escapes[ch] then out[#out + 1] = escapes[ch]
      elseif c < 0x20 then out[#out + 1] = string.format("\\u%04x", c)
      else out[#out + 1] = ch end
      i = i + 1
    else
      -- decode one UTF-8 sequence; invalid bytes become U+FFFD as Python's
      -- surrogateescape would not apply to a str anyway
      local cp, len
      if c >= 0xF0 and c < 0xF8 then cp, len = c & 0x07, 4
      elseif c >= 0xE0 then cp, len = c & 0x0F, 3
      elseif c >= 0xC0 then cp, len = c & 0x1F, 2
      else cp, len = 0xFFFD, 1 end
      if len > 1 then
        for k = 1, len - 1 do
          local b = s:byte(i + k)
          if not b or b & 0xC0 ~= 0x80 then cp, len = 0xFFFD, 1; break end
          cp = (cp << 6) | (b & 0x3F)
        end
      end
      if cp >= 0x10000 then
        cp = cp - 0x10000
        out[#out + 1] = string.format("\\u%04x\\u%04x", 0xD800 | (cp >> 10), 0xDC00 | (cp & 0x3FF))
      else
        out[#out + 1] = string.format("\\u%04x", cp)
      end
      i = i + len
    end
  end
  out[#out + 1] = '"'
  return table.concat(out)
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do
    if type(k) ~= "string" then
      error("json.encode: object key " .. tostring(k) .. " is not a string", 0)
    end
    ks[#ks + 1] = k
  end
  table.sort(ks)
  return ks
end

local function encode_value(v, opts, depth, out)
  local tv = type(v)
  if v == json.null or tv == "nil" then out[#out + 1] = "null"
  elseif tv == "boolean" then out[#out + 1] = v and "true" or "false"
  elseif tv == "number" then
    if math.type(v) == "integer" then out[#out + 1] = string.format("%d", v)
    else out[#out + 1] = util.pyfloat(v) end
  elseif tv == "string" then out[#out + 1] = json.quote(v)
  elseif tv == "table" then
    if depth > 200 then error("json.encode: nesting too deep (cycle?)", 0) end
    local indent = opts.indent
    local nl = indent and ("\n" .. string.rep(" ", indent * (depth + 1))) or ""
    local nl_end = indent and ("\n" .. string.rep(" ", indent * depth)) or ""
    local sep = indent and "," or ", "
    if opts.compact then sep = "," end
    if json.is_array(v) then
      if #v == 0 then out[#out + 1] = "[]"; return end
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = sep end
        out[#out + 1] = nl
        encode_value(v[i], opts, depth + 1, out)
      end
      out[#out + 1] = nl_end .. "]"
    else
      local keys
      if util.is_omap(v) then
        keys = v:keys()
        if opts.sort_keys ~= false then table.sort(keys) end
      else
        local order = key_order[v]
        if order and opts.sort_keys == false then keys = order else keys = sorted_keys(v) end
      end
      if #keys == 0 then out[#out + 1] = "{}"; return end
      out[#out + 1] = "{"
      local colon = opts.compact and ":" or ": "
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = sep end
        out[#out + 1] = nl
        out[#out + 1] = json.quote(k) .. colon
        local val
        if util.is_omap(v) then val = v:get(k) else val = v[k] end
        encode_value(val, opts, depth + 1, out)
      end
      out[#out + 1] = nl_end .. "}"
    end
  else
    error("json.encode: cannot encode a " .. tv, 0)
  end
end

--- Encode `v`.  opts: indent (number of spaces; nil = one line),
--- sort_keys (default true), compact (no spaces after , and :).
function json.encode(v, opts)
  opts = opts or {}
  local out = {}
  encode_value(v, opts, 0, out)
  return table.concat(out)
end

-- decoder ------------------------------------------------------------------

local function decode_error(src, name, pos, msg)
  local line, col = 1, 1
  for i = 1, pos - 1 do
    if src:byte(i) == 10 then line, col = line + 1, 1 else col = col + 1 end
  end
  error(string.format("%s:%d:%d: invalid JSON: %s", name or "json", line, col, msg), 0)
end

local function utf8_encode(cp)
  return utf8.char(cp)
end

local function decode_string(src, name, pos)
  -- pos at the opening quote
  local out = {}
  local i = pos + 1
  local n = #src
  while true do
    local j = src:find('["\\%c]', i)
    if not j then decode_error(src, name, pos, "unterminated string") end
    out[#out + 1] = src:sub(i, j - 1)
    local c = src:sub(j, j)
    if c == '"' then return table.concat(out), j + 1 end
    if c ~= "\\" then decode_error(src, name, j, "control character in string") end
    local e = src:sub(j + 1, j + 1)
    local simple = ({['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t'})[e]
    if simple then
      out[#out + 1] = simple
      i = j + 2
    elseif e == "u" then
      local hex = src:sub(j + 2, j + 5)
      if not hex:match("^%x%x%x%x$") then decode_error(src, name, j, "bad \\u escape") end
      local cp = tonumber(hex, 16)
      i = j + 6
      if cp >= 0xD800 and cp < 0xDC00 and src:sub(i, i + 1) == "\\u" then
        local lo = tonumber(src:sub(i + 2, i + 5), 16)
        if lo and lo >= 0xDC00 and lo < 0xE000 then
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
          i = i + 6
        end
      end
      out[#out + 1] = utf8_encode(cp)
    else
      decode_error(src, name, j, "bad escape \\" .. e)
    end
    if i > n then decode_error(src, name, pos, "unterminated string") end
  end
end

local function skip_ws(src, pos)
  return src:find("[^ \t\r\n]", pos) or (#src + 1)
end

local decode_value

local function decode_array(src, name, pos, depth)
  local arr = json.array({})
  pos = skip_ws(src, pos + 1)
  if src:sub(pos, pos) == "]" then return arr, pos + 1 end
  while true do
    local v
    v, pos = decode_value(src, name, pos, depth + 1)
    arr[#arr + 1] = v
    pos = skip_ws(src, pos)
    local c = src:sub(pos, pos)
    if c == "]" then return arr, pos + 1 end
    if c ~= "," then decode_error(src, name, pos, "expected ',' or ']' in array") end
    pos = skip_ws(src, pos + 1)
  end
end

local function decode_object(src, name, pos, depth)
  local obj = json.object({})
  local order = {}
  key_order[obj] = order
  pos = skip_ws(src, pos + 1)
  if src:sub(pos, pos) == "}" then return obj, pos + 1 end
  while true do
    if src:sub(pos, pos) ~= '"' then decode_error(src, name, pos, "expected a string key") end
    local k
    k, pos = decode_string(src, name, pos)
    pos = skip_ws(src, pos)
    if src:sub(pos, pos) ~= ":" then decode_error(src, name, pos, "expected ':' after key") end
    pos = skip_ws(src, pos + 1)
    local v
    v, pos = decode_value(src, name, pos, depth + 1)
    if rawget(obj, k) == nil then order[#order + 1] = k end
    rawset(obj, k, v)
    pos = skip_ws(src, pos)
    local c = src:sub(pos, pos)
    if c == "}" then return obj, pos + 1 end
    if c ~= "," then decode_error(src, name, pos, "expected ',' or '}' in object") end
    pos = skip_ws(src, pos + 1)
  end
end

decode_value = function(src, name, pos, depth)
  if depth > 500 then decode_error(src, name, pos, "nesting too deep") end
  pos = skip_ws(src, pos)
  local c = src:sub(pos, pos)
  if c == "{" then return decode_object(src, name, pos, depth)
  elseif c == "[" then return decode_array(src, name, pos, depth)
  elseif c == '"' then return decode_string(src, name, pos)
  elseif src:sub(pos, pos + 3) == "true" then return true, pos + 4
  elseif src:sub(pos, pos + 4) == "false" then return false, pos + 5
  elseif src:sub(pos, pos + 3) == "null" then return json.null, pos + 4
  elseif src:sub(pos, pos + 2) == "NaN" then return 0 / 0, pos + 3
  elseif src:sub(pos, pos + 7) == "Infinity" then return math.huge, pos + 8
  elseif src:sub(pos, pos + 8) == "-Infinity" then return -math.huge, pos + 9
  else
    local num = src:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    if not num or num == "" or num == "-" then
      decode_error(src, name, pos, c == "" and "unexpected end of input" or ("unexpected character '" .. c .. "'"))
    end
    local strict = num:match("^-?0[%d]") == nil and
      (num:match("^-?%d+$") or num:match("^-?%d+%.%d+$") or num:match("^-?%d+%.?%d*[eE][-+]?%d+$"))
    if not strict then decode_error(src, name, pos, "malformed number '" .. num .. "'") end
    local v
    if num:find("[.eE]") then v = tonumber(num) + 0.0
    else v = math.tointeger(tonumber(num)) or tonumber(num) end
    return v, pos + #num
  end
end

--- Decode JSON text.  `name` (a file name) prefixes error messages.
function json.decode(src, name)
  if type(src) ~= "string" then error("json.decode: expected a string", 2) end
  local v, pos = decode_value(src, name, 1, 0)
  pos = skip_ws(src, pos)
  if pos <= #src then decode_error(src, name, pos, "trailing characters") end
  return v
end

function json.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then error("cannot read " .. path .. ": " .. tostring(err), 0) end
  local s = f:read("a")
  f:close()
  return json.decode(s, path)
end

---------------------------------------------------------------------------
-- formatting
---------------------------------------------------------------------------

--- 22684232 -> "21.6 MiB"
function util.fmt_bytes(n)
  n = n or 0
  local units = {"B", "KiB", "MiB", "GiB", "TiB"}
  local i, v = 1, n
  while math.abs(v) >= 1024 and i < #units do v = v / 1024; i = i + 1 end
  if i == 1 then return string.format("%d B", n) end
  return string.format(v >= 100 and "%.0f %s" or (v >= 10 and "%.1f %s" or "%.2f %s"), v, units[i])
end

--- seconds -> "850 ms", "3.50 s", "2 min 05 s", "1 h 02 min"
function util.fmt_time(s)
  s = s or 0
  if s < 1 then return string.format("%.0f ms", s * 1000) end
  if s < 60 then return string.format("%.2f s", s) end
  if s < 3600 then return string.format("%d min %02d s", s // 60, math.floor(s % 60)) end
  return string.format("%d h %02d min", s // 3600, math.floor((s % 3600) / 60))
end

---------------------------------------------------------------------------
-- clocks, files (host helpers from the C side when present)
---------------------------------------------------------------------------

local fs_ok, fs = pcall(require, "llmc._stwriter")
if not fs_ok then fs = nil end
util.fs = fs

--- wall-clock seconds (sub-second when the C helpers are loaded)
function util.now()
  if fs then return fs.now() end
  return os.time()
end

function util.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then error("cannot read " .. path .. ": " .. tostring(err), 0) end
  local s = f:read("a")
  f:close()
  return s
end

function util.write_file(path, s)
  local f, err = io.open(path, "wb")
  if not f then error("cannot write " .. path .. ": " .. tostring(err), 0) end
  local ok, werr = f:write(s)
  local cok, cerr = f:close()
  if not ok or not cok then error("writing " .. path .. ": " .. tostring(werr or cerr), 0) end
end

function util.exists(path)
  if fs then return fs.exists(path) end
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

function util.basename(p) return (p:gsub("/+$", ""):match("([^/]+)$")) or p end
function util.dirname(p)
  local d = p:gsub("/+$", ""):match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end
function util.join(a, b)
  if b:sub(1, 1) == "/" then return b end
  if a == "" or a == "." then return b end
  return (a:gsub("/+$", "")) .. "/" .. b
end

---------------------------------------------------------------------------
-- progress bar
---------------------------------------------------------------------------

local Progress = {}
Progress.__index = Progress

--- A one-line progress bar on stderr.  LLMC_PROGRESS=0 silences it;
--- opts.tty_only draws it only when stderr is a terminal (per-sample bars,
--- which would fill a log file with redraws).
---   local bar = util.progress(n, "quantizing")
---   bar:update(1, "model.layers.0.q_proj")   -- advance by 1
---   bar:log("a line printed above the bar")
---   bar:clear()                              -- erase it (no final line)
---   bar:close()                              -- or leave its final state
function util.progress(total, label, opts)
  opts = opts or {}
  local quiet = opts.quiet
  if quiet == nil then quiet = os.getenv("LLMC_PROGRESS") == "0" end
  if not quiet and opts.tty_only and not (util.fs and util.fs.isatty(2)) then quiet = true end
  return setmetatable({total = math.max(total or 0, 0), n = 0, label = label or "",
                       t0 = util.now(), last = -1, quiet = quiet,
                       out = opts.out or io.stderr, width = opts.width or 30}, Progress)
end

function Progress:render(note)
  local frac = self.total > 0 and (self.n / self.total) or 1
  local fill = math.floor(frac * self.width + 0.5)
  local elapsed = util.now() - self.t0
  local eta = ""
  if self.n > 0 and self.n < self.total then
    eta = " eta " .. util.fmt_time(elapsed / self.n * (self.total - self.n))
  end
  note = note and #note > 40 and ("…" .. note:sub(-39)) or note
  return string.format("\r%s [%s%s] %d/%d %3.0f%% %s%s%s\27[K", self.label,
    string.rep("#", fill), string.rep(".", self.width - fill), self.n, self.total,
    frac * 100, util.fmt_time(elapsed), eta, note and ("  " .. note) or "")
end

function Progress:update(k, note)
  self.n = math.min(self.n + (k or 1), self.total)
  if self.quiet then return end
  local now = util.now()
  -- redraw at most ~10 times a second, and always at the end
  if now - self.last >= 0.1 or self.n == self.total then
    self.last = now
    self.out:write(self:render(note))
    self.out:flush()
  end
end

--- Print a line above the bar (the bar is redrawn below it).
function Progress:log(line)
  if self.quiet or self.closed then
    io.stderr:write(line, "\n")
    return
  end
  self.out:write("\r\27[K", line, "\n", self:render(nil))
  self.out:flush()
end

--- Erase the bar's line; a later update draws it again.
function Progress:clear()
  if self.quiet or self.closed then return end
  self.out:write("\r\27[K")
  self.out:flush()
  self.last = -1
end

function Progress:close()
  if self.quiet or self.closed then return end
  self.closed = true
  self.out:write(self:render(nil) .. "\n")
  self.out:flush()
end

---------------------------------------------------------------------------
-- command-line arguments for recipe scripts
---------------------------------------------------------------------------

local function opt_name(k) return (k:gsub("_", "-")) end

--- Parse the script's command line (the global `arg`, or opts.argv)
--- against a table of defaults; the type of each default decides how its
--- option is read.
---   local a = llmc.args{ model = llmc.default_model(), output = "out/x",
---                        overwrite = false, max_workers = 2 }
---   -- llmc recipe.lua --model DIR --output=DIR --overwrite --max-workers 4
--- Booleans are flags (--x, --no-x, --x=true|false); numbers are checked;
--- unknown options and missing values are errors; --help prints the usage
--- and exits.  Positional arguments are returned in the array part.
function util.args(defaults, opts)
  opts = opts or {}
  defaults = defaults or {}
  local argv = opts.argv or _G.arg or {}
  local res = {}
  for k, v in pairs(defaults) do res[k] = v end
  local names = {}
  for k in pairs(defaults) do names[#names + 1] = k end
  table.sort(names)
  local function usage()
    local lines = {"usage: llmc " .. tostring(argv[0] or "script.lua") .. " [options]", "options:"}
    for _, k in ipairs(names) do
      local v = defaults[k]
      local shown = type(v) == "boolean" and "" or (" " .. string.upper(k))
      lines[#lines + 1] = string.format("  --%s%s   (default: %s)", opt_name(k), shown, tostring(v))
    end
    lines[#lines + 1] = "  --help   this message"
    return table.concat(lines, "\n")
  end
  local function fail(msg)
    error(msg .. "\n" .. usage(), 0)
  end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--help" or a == "-h" then
      if opts.no_exit then return nil, usage() end
      io.stdout:write(usage(), "\n")
      os.exit(0)
    elseif a == "--" then
      for j = i + 1, #argv do res[#res + 1] = argv[j] end
      break
    elseif a:sub(1, 2) == "--" then
      local body = a:sub(3)
      local key, val = body:match("^([^=]+)=(.*)$")
      key = key or body
      local negated = false
      local k = key:gsub("-", "_")
      if defaults[k] == nil and k:sub(1, 3) == "no_" and type(defaults[k:sub(4)]) == "boolean" and not val then
        k, negated = k:sub(4), true
      end
      local d = defaults[k]
      if d == nil then fail("unknown option --" .. key) end
      if type(d) == "boolean" then
        if val == nil then res[k] = not negated
        elseif val == "true" or val == "1" or val == "yes" then res[k] = true
        elseif val == "false" or val == "0" or val == "no" then res[k] = false
        else fail("option --" .. key .. " expects true or false, got '" .. val .. "'") end
      else
        if val == nil then
          i = i + 1
          val = argv[i]
          if val == nil then fail("option --" .. key .. " needs a value") end
        end
        if type(d) == "number" then
          local n = tonumber(val)
          if n == nil then fail("option --" .. key .. " expects a number, got '" .. val .. "'") end
          if math.type(d) == "integer" then
            n = math.tointeger(n)
            if n == nil then fail("option --" .. key .. " expects an integer, got '" .. val .. "'") end
          end
          res[k] = n
        else
          res[k] = val
        end
      end
    else
      res[#res + 1] = a
    end
    i = i + 1
  end
  return res
end

--- The first stack frame outside llmc's own Lua files, as "file:line" (or
--- nil): where a user's recipe called into llmc.  Errors about recipe
--- arguments start with it so that they point at the recipe line.
function util.caller_where()
  for level = 2, 40 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    local src = info.source or ""
    if src:sub(1, 1) == "@" and not src:find("/lua/llmc/", 1, true) and info.currentline and info.currentline > 0 then
      return src:sub(2) .. ":" .. info.currentline
    end
  end
  return nil
end

--- "out/<model dir name>-<scheme>": the default output folder of the recipes
function util.default_output(model_path, scheme)
  return "out/" .. util.basename(model_path) .. "-" .. scheme
end

--- Print a greedy sample generation of `model` (the recipes' check that
--- the quantized model still writes text).
function util.print_sample(model, prompt, max_new_tokens)
  local gen = require("llmc.generate").generate
  local text = gen(model, prompt, {max_new_tokens = max_new_tokens or 24})
  io.stdout:write("sample: ", prompt, text, "\n")
end

--- deep copy of plain tables (metatables kept)
function util.deepcopy(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local c = {}
  seen[v] = c
  for k, x in pairs(v) do c[util.deepcopy(k, seen)] = util.deepcopy(x, seen) end
  if key_order[v] then key_order[c] = {table.unpack(key_order[v])} end
  return setmetatable(c, getmetatable(v))
end

return util
