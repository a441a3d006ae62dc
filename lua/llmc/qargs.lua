--[[
llmc.qargs — QuantizationArgs: how one tensor kind (weights, input or output
activations, KV cache) is quantized.  Normalisation and validation follow
compressed-tensors 0.19 (docs: compressed-tensors-format.md §1.1, §1.3), so
that every args object llmc writes loads there unchanged.

  local qargs = require "llmc.qargs"
  local a = qargs.new({num_bits = 4, type = "int", group_size = 128}, "weights")
  print(a.strategy, a.zp_dtype)                       --> group   torch.int8
  local obj = qargs.to_json(a)                        -- the 12 JSON keys
  qargs.new({num_bits = 4, group_size = -2}, "weights")
  --> error "weights.group_size: -2 is invalid: use group_size > 0 for ..."

An args object is a plain table with the fields below (nil = JSON null) and
the metatable qargs.QArgs; treat it as immutable (qargs.copy to change one).

`where` (second argument of new) names the object in error messages: a
string ("config_groups.group_0.weights") or a function(field) returning one
(the recipe reader passes a function that adds "recipe.yaml:12: ").
]]
local util = require "llmc.util"
local json = util.json

local qargs = {}

local QArgs = {__name = "llmc.QuantizationArgs"}
QArgs.__index = QArgs
qargs.QArgs = QArgs

--- JSON key order of compressed-tensors' model_dump (declaration order).
qargs.FIELDS = {"num_bits", "type", "symmetric", "group_size", "strategy", "block_structure",
                "dynamic", "actorder", "scale_dtype", "zp_dtype", "observer", "observer_kwargs"}
local FIELD_SET = {}
for _, f in ipairs(qargs.FIELDS) do FIELD_SET[f] = true end

qargs.STRATEGIES = {"tensor", "channel", "group", "block", "token", "tensor_group", "attn_head"}
local STRATEGY_SET = {}
for _, s in ipairs(qargs.STRATEGIES) do STRATEGY_SET[s] = true end

-- torch dtype names accepted for scale_dtype / zp_dtype, with torch's aliases
local TORCH_DTYPES = {
  float8_e4m3fn = "float8_e4m3fn", float8_e5m2 = "float8_e5m2", uint8 = "uint8", int8 = "int8",
  int16 = "int16", short = "int16", int32 = "int32", int = "int32", int64 = "int64", long = "int64",
  float16 = "float16", half = "float16", bfloat16 = "bfloat16", float32 = "float32",
  float = "float32", float64 = "float64", double = "float64",
}
-- llmc dtype names (dtype.h) of the torch dtypes
qargs.LLMC_DTYPE = {
  ["torch.float8_e4m3fn"] = "float8_e4m3fn", ["torch.float8_e5m2"] = "float8_e5m2",
  ["torch.uint8"] = "uint8", ["torch.int8"] = "int8", ["torch.int16"] = "int16",
  ["torch.int32"] = "int32", ["torch.int64"] = "int64", ["torch.float16"] = "float16",
  ["torch.bfloat16"] = "bfloat16", ["torch.float32"] = "float32", ["torch.float64"] = "float64",
}

local function is_null(v) return v == nil or v == json.null end

local function fail(where, field, msg)
  local prefix
  if type(where) == "function" then prefix = where(field)
  else
    prefix = where and where ~= "" and (where .. (field and ("." .. field) or "")) or field
  end
  error((prefix and (prefix .. ": ") or "") .. msg, 0)
end

local function show(v)
  if type(v) == "string" then return "'" .. v .. "'" end
  if type(v) == "table" then
    local ok, s = pcall(json.encode, v)
    return ok and s or tostring(v)
  end
  return tostring(v)
end

local function as_int(v)
  if math.type(v) == "integer" then return v end
  if math.type(v) == "float" and v == math.floor(v) then return math.tointeger(v) end
  if type(v) == "string" and v:match("^%s*[-+]?%d+%s*$") then return math.tointeger(tonumber(v)) end
  return nil
end

local function as_bool(v)
  if type(v) == "boolean" then return v end
  if v == 1 or v == 0 then return v == 1 end
  if type(v) == "string" then
    local l = v:lower()
    if l == "true" or l == "yes" or l == "on" or l == "1" then return true end
    if l == "false" or l == "no" or l == "off" or l == "0" then return false end
  end
  return nil
end

local function torch_dtype(v, where, field)
  if is_null(v) then return nil end
  if type(v) ~= "string" then fail(where, field, "expected a torch dtype name, got " .. show(v)) end
  local name = v:gsub("^torch%.", "")
  local canon = TORCH_DTYPES[name]
  if not canon then fail(where, field, "no such torch dtype `torch." .. name .. "`") end
  return "torch." .. canon
end

-- iterate the fields of a spec given as a plain table or an omap
local function spec_get(spec, k)
  if util.is_omap(spec) then return spec:get(k) end
  return spec[k]
end
local function spec_keys(spec)
  if util.is_omap(spec) then return spec:keys() end
  local ks = {}
  for k in pairs(spec) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

--- Build validated args from a table (or omap, or another QArgs).
--- Raises an error naming `where` and the offending field.
function qargs.new(spec, where)
  if getmetatable(spec) == QArgs then return spec end
  if type(spec) ~= "table" then fail(where, nil, "quantization args must be a table, got " .. show(spec)) end
  for _, k in ipairs(spec_keys(spec)) do
    if type(k) ~= "string" or not FIELD_SET[k] then
      fail(where, tostring(k), "unknown quantization argument (valid: " .. table.concat(qargs.FIELDS, ", ") .. ")")
    end
  end
  local a = {}
  local function get(k) local v = spec_get(spec, k); if is_null(v) then return nil end return v end

  -- field validators (compressed-tensors runs them in declaration order)
  local nb = get("num_bits")
  if nb == nil then a.num_bits = 8
  else
    a.num_bits = as_int(nb)
    if not a.num_bits then fail(where, "num_bits", "expected an integer, got " .. show(nb)) end
  end

  local ty = get("type")
  if ty == nil then a.type = "int"
  else
    if type(ty) ~= "string" or (ty:lower() ~= "int" and ty:lower() ~= "float") then
      fail(where, "type", show(ty) .. " is not a quantization type (int or float)")
    end
    a.type = ty:lower()
  end

  local sym = get("symmetric")
  if sym == nil then a.symmetric = true
  else
    a.symmetric = as_bool(sym)
    if a.symmetric == nil then fail(where, "symmetric", "expected true or false, got " .. show(sym)) end
  end

  local gs = get("group_size")
  if gs ~= nil then
    a.group_size = as_int(gs)
    if not a.group_size then fail(where, "group_size", "expected an integer, got " .. show(gs)) end
    if a.group_size < -1 then
      fail(where, "group_size", "invalid group size " .. a.group_size ..
           ": use group_size > 0 for strategy 'group' and group_size = -1 for 'channel'")
    end
  end

  local st = get("strategy")
  if st ~= nil then
    if type(st) ~= "string" or not STRATEGY_SET[st:lower()] then
      fail(where, "strategy", show(st) .. " is not a strategy (" .. table.concat(qargs.STRATEGIES, ", ") .. ")")
    end
    a.strategy = st:lower()
  end

  local bs = get("block_structure")
  if bs ~= nil then
    local berr = "invalid block_structure " .. show(bs) .. ": must be a list of two positive ints [rows, cols]"
    if type(bs) == "string" then
      local r, c = bs:match("^(%d+)x(%d+)$")
      if not r then fail(where, "block_structure", berr) end
      bs = {tonumber(r), tonumber(c)}
    end
    if type(bs) ~= "table" or #bs ~= 2 then fail(where, "block_structure", berr) end
    local r, c = as_int(bs[1]), as_int(bs[2])
    if not r or not c or r <= 0 or c <= 0 or math.type(bs[1]) == "float" or math.type(bs[2]) == "float" then
      fail(where, "block_structure", berr)
    end
    a.block_structure = {r, c}
  end

  local dyn = get("dynamic")
  if dyn == nil then a.dynamic = false
  elseif type(dyn) == "boolean" then a.dynamic = dyn
  elseif type(dyn) == "string" and dyn:lower() == "local" then a.dynamic = "local"
  else fail(where, "dynamic", "expected true, false or \"local\", got " .. show(dyn)) end

  local ao = spec_get(spec, "actorder")
  if ao == true then
    fail(where, "actorder", "actorder=true (group activation ordering) was removed in compressed-tensors 0.19; use \"weight\" or null")
  elseif ao == false or is_null(ao) then a.actorder = nil
  elseif type(ao) == "string" then
    local l = ao:lower()
    if l == "group" or l == "dynamic" then
      fail(where, "actorder", "actorder=" .. show(ao) .. " was removed in compressed-tensors 0.19; use \"weight\" or null")
    end
    if ao ~= "weight" and ao ~= "static" then
      fail(where, "actorder", show(ao) .. " is not an activation ordering (\"weight\", \"static\" or null)")
    end
    a.actorder = ao
  else
    fail(where, "actorder", "expected a string or null, got " .. show(ao))
  end

  a.scale_dtype = torch_dtype(get("scale_dtype"), where, "scale_dtype")
  a.zp_dtype = torch_dtype(get("zp_dtype"), where, "zp_dtype")

  local obs = get("observer")
  if obs ~= nil and type(obs) ~= "string" then fail(where, "observer", "expected a string or null, got " .. show(obs)) end
  a.observer = obs

  local ok = get("observer_kwargs")
  if ok == nil then a.observer_kwargs = json.object({})
  else
    if type(ok) ~= "table" or json.is_array(ok) and #ok > 0 then
      fail(where, "observer_kwargs", "expected a table of keyword arguments, got " .. show(ok))
    end
    local c = json.object({})
    if util.is_omap(ok) then for k, v in ok:pairs() do c[k] = v end
    else for k, v in pairs(ok) do c[k] = v end end
    a.observer_kwargs = c
  end

  -- model validator (compressed-tensors' order)
  local strategy = a.strategy
  if strategy == nil then
    if a.group_size == nil then strategy = "tensor"
    elseif a.group_size > 0 then strategy = "group"
    elseif a.group_size == -1 then strategy = "channel"
    else
      fail(where, "group_size", "invalid group size " .. a.group_size ..
           ": use group_size > 0 for strategy 'group' and group_size = -1 for 'channel'")
    end
  end
  if strategy == "token" and not a.dynamic then
    fail(where, "strategy", "static per-token quantization is impossible: set dynamic = true")
  end
  if (strategy == "group" or strategy == "tensor_group") and (a.group_size == nil or a.group_size <= 0) then
    fail(where, "group_size", "strategy '" .. strategy .. "' requires group_size to be set to a positive value")
  end
  if a.group_size ~= nil and a.group_size > 0 and strategy ~= "group" and strategy ~= "tensor_group" then
    fail(where, "group_size", "group_size " .. a.group_size .. " requires strategy 'group' or 'tensor_group' (got '" .. strategy .. "')")
  end
  if strategy == "block" and not a.block_structure then
    fail(where, "block_structure", "strategy 'block' requires block_structure, e.g. [128, 128]")
  end
  if a.block_structure and strategy ~= "block" then
    fail(where, "strategy", "block_structure requires strategy 'block' (got '" .. strategy .. "')")
  end
  if a.dynamic then
    if strategy ~= "token" and strategy ~= "tensor" and strategy ~= "tensor_group" and strategy ~= "group" then
      fail(where, "dynamic", "dynamic quantization needs strategy token, tensor, tensor_group or group (got '" .. strategy .. "')")
    end
    if a.dynamic == "local" and strategy ~= "tensor_group" then
      fail(where, "dynamic", "dynamic = \"local\" is only supported with strategy 'tensor_group'")
    end
  end
  -- zp_dtype inference (compressed-tensors' pytorch_dtype())
  if a.zp_dtype == nil then
    if a.type == "float" then
      if a.num_bits == 4 or a.num_bits == 8 then a.zp_dtype = "torch.float8_e4m3fn"
      else fail(where, "num_bits", "float quantization supports num_bits 4 (fp4 e2m1) or 8 (fp8 e4m3), got " .. a.num_bits) end
    elseif a.num_bits <= 8 then a.zp_dtype = "torch.int8"
    elseif a.num_bits <= 16 then a.zp_dtype = "torch.int16"
    else a.zp_dtype = "torch.int32" end
  end
  a.strategy = strategy

  -- what llmc's kernels implement (a narrower set than the format allows)
  if a.type == "int" and (a.num_bits < 1 or a.num_bits > 8) then
    fail(where, "num_bits", "int quantization supports 1..8 bits, got " .. a.num_bits)
  end
  if a.type == "float" and a.num_bits ~= 4 and a.num_bits ~= 8 then
    fail(where, "num_bits", "float quantization supports num_bits 4 (fp4 e2m1) or 8 (fp8 e4m3), got " .. a.num_bits)
  end
  if a.type == "float" and a.num_bits == 4 and not a.symmetric then
    fail(where, "symmetric", "asymmetric fp4 quantization is not supported")
  end
  return setmetatable(a, QArgs)
end

function qargs.is_qargs(x) return getmetatable(x) == QArgs end

--- a modified copy: qargs.copy(a, {observer = "mse"}) (json.null clears)
function qargs.copy(a, changes)
  local spec = {}
  for _, f in ipairs(qargs.FIELDS) do spec[f] = a[f] end
  spec.observer_kwargs = util.deepcopy(a.observer_kwargs)
  -- zp_dtype was inferred; keep it only if it differs from the inference
  for k, v in pairs(changes or {}) do
    if v == json.null then spec[k] = nil else spec[k] = v end
  end
  local r = qargs.new(spec)
  return r
end

--- The JSON object compressed-tensors writes (all 12 keys; zp_dtype null
--- for symmetric args), as an ordered object (encode with sort_keys to get
--- config.json's order).
function qargs.to_json(a)
  local o = util.omap()
  o:set("num_bits", a.num_bits)
  o:set("type", a.type)
  o:set("symmetric", a.symmetric)
  o:set("group_size", a.group_size)
  o:set("strategy", a.strategy)
  o:set("block_structure", a.block_structure and json.array({a.block_structure[1], a.block_structure[2]}) or nil)
  o:set("dynamic", a.dynamic)
  o:set("actorder", a.actorder)
  o:set("scale_dtype", a.scale_dtype)
  o:set("zp_dtype", (not a.symmetric) and a.zp_dtype or nil)
  o:set("observer", a.observer)
  local kw = util.omap()
  local ks = {}
  for k in pairs(a.observer_kwargs or {}) do ks[#ks + 1] = k end
  table.sort(ks)
  for _, k in ipairs(ks) do kw:set(k, a.observer_kwargs[k]) end
  o:set("observer_kwargs", kw)
  return o
end

--- structural equality (what makes two config groups "the same scheme")
function qargs.equal(a, b)
  if a == nil or b == nil then return a == b end
  return json.encode(qargs.to_json(a)) == json.encode(qargs.to_json(b))
end

-- ---- derived properties used by the kernels, saver and summaries ---------

--- MX (microscaling) args: float 4/8 bits, group 32, uint8 (E8M0) scales
function qargs.is_mx(a)
  return a.type == "float" and (a.num_bits == 4 or a.num_bits == 8) and a.group_size == 32
     and a.scale_dtype == "torch.uint8"
end

--- NVFP4-style args: fp4 with a global scale (tensor_group)
function qargs.is_nvfp4(a)
  return a.type == "float" and a.num_bits == 4 and a.strategy == "tensor_group"
end

--- (q_min, q_max) of §3.1
function qargs.range(a)
  if a.type == "int" then return -(1 << (a.num_bits - 1)), (1 << (a.num_bits - 1)) - 1 end
  if a.num_bits == 8 then return -448.0, 448.0 end
  return -6.0, 6.0
end

--- Scale tensor shape for a 2-D weight [rows, cols] (§3.11); nil for
--- dynamic strategies without stored scales.
function qargs.scale_shape(a, rows, cols)
  local s = a.strategy
  if s == "tensor" then return {1}
  elseif s == "channel" then return {rows, 1}
  elseif s == "group" or s == "tensor_group" then return {rows, (cols + a.group_size - 1) // a.group_size}
  elseif s == "block" then
    local bh, bw = a.block_structure[1], a.block_structure[2]
    return {(rows + bh - 1) // bh, (cols + bw - 1) // bw}
  end
  return nil
end

--- one-line description: "int4 sym group(128)", "fp8 block[128x128]"
function qargs.describe(a)
  if not a then return "none" end
  local t = a.type == "int" and ("int" .. a.num_bits) or (a.num_bits == 8 and "fp8" or "fp4")
  local s = a.strategy
  if s == "group" or s == "tensor_group" then s = s .. "(" .. a.group_size .. ")"
  elseif s == "block" then s = s .. "[" .. a.block_structure[1] .. "x" .. a.block_structure[2] .. "]" end
  local d = a.dynamic == true and " dynamic" or (a.dynamic == "local" and " dynamic=local" or "")
  return string.format("%s %s %s%s", t, a.symmetric and "sym" or "asym", s, d)
end

QArgs.__tostring = function(a) return "QuantizationArgs(" .. qargs.describe(a) .. ")" end

return qargs
