--[[
llmc.schemes — quantization schemes: every preset of compressed-tensors
0.19 (docs: compressed-tensors-format.md §2) with its exact args, custom
schemes (config_groups), format inference (§4.1) and the resolution of a
modifier's scheme / config_groups / targets into config groups (as
llm-compressor's QuantizationMixin does, algorithms.md §4.1).

  local schemes = require "llmc.schemes"
  local s = schemes.preset("FP8_BLOCK", {"Linear"})
  print(s.weights.strategy, s.input_activations.group_size)     --> block 128
  print(schemes.infer_format(s, "Linear"))                       --> float-quantized
  local c = schemes.new({targets = {"Linear"}, weights = {num_bits = 4, group_size = 64}},
                        "config_groups.group_0")
  for _, name in ipairs(schemes.PRESET_NAMES) do ... end

A scheme is a table {targets = {...}, weights = QArgs|nil,
input_activations = QArgs|nil, output_activations = QArgs|nil,
format = string|nil} with the metatable schemes.Scheme.
]]
local util = require "llmc.util"
local qargs = require "llmc.qargs"
local json = util.json

local schemes = {}

local Scheme = {__name = "llmc.QuantizationScheme"}
Scheme.__index = Scheme
schemes.Scheme = Scheme

---------------------------------------------------------------------------
-- presets (compressed-tensors quant_scheme.py, 0.19)
---------------------------------------------------------------------------

local function int_wnam(wbits, abits)
  local s = {weights = {num_bits = wbits, type = "int", strategy = "group", group_size = 128,
                        symmetric = true, dynamic = false}}
  if abits < 16 then
    s.input_activations = {num_bits = abits, type = "int", strategy = "token", symmetric = true, dynamic = true}
  end
  return s
end

local W8A8 = {
  weights = {num_bits = 8, type = "int", strategy = "channel", symmetric = true, dynamic = false},
  input_activations = {num_bits = 8, type = "int", strategy = "token", symmetric = true, dynamic = true},
}
local NVFP4_W = {num_bits = 4, type = "float", strategy = "tensor_group", symmetric = true, dynamic = false,
                 group_size = 16, scale_dtype = "torch.float8_e4m3fn", zp_dtype = "torch.float8_e4m3fn"}
local function mx(bits, with_act)
  local s = {weights = {num_bits = bits, type = "float", strategy = "group", symmetric = true, dynamic = false,
                        group_size = 32, scale_dtype = "torch.uint8", zp_dtype = "torch.uint8"}}
  if with_act then
    s.input_activations = {num_bits = bits, type = "float", strategy = "group", dynamic = true, symmetric = true,
                           group_size = 32, scale_dtype = "torch.uint8", zp_dtype = "torch.uint8"}
  end
  return s
end

--- name -> {weights = spec, input_activations = spec} (specs are plain
--- tables; schemes.preset() validates a fresh copy)
schemes.PRESETS = {
  UNQUANTIZED = {},
  W4A16_ASYM = {weights = {num_bits = 4, type = "int", strategy = "group", group_size = 128,
                           symmetric = false, dynamic = false}},
  W8A8 = W8A8,
  INT8 = W8A8,
  W4AFP8 = {
    weights = {num_bits = 4, type = "int", strategy = "group", group_size = 128, symmetric = true, dynamic = false},
    input_activations = {num_bits = 8, type = "float", strategy = "token", symmetric = true, dynamic = true},
  },
  FP8 = {
    weights = {num_bits = 8, type = "float", strategy = "tensor", symmetric = true, dynamic = false},
    input_activations = {num_bits = 8, type = "float", strategy = "tensor", symmetric = true, dynamic = false,
                         observer = "static_minmax"},
  },
  FP8_DYNAMIC = {
    weights = {num_bits = 8, type = "float", strategy = "channel", symmetric = true, dynamic = false},
    input_activations = {num_bits = 8, type = "float", strategy = "token", symmetric = true, dynamic = true},
  },
  FP8_BLOCK = {
    weights = {num_bits = 8, type = "float", strategy = "block", symmetric = true, dynamic = false,
               block_structure = {128, 128}},
    input_activations = {num_bits = 8, type = "float", strategy = "group", symmetric = true, dynamic = true,
                         group_size = 128},
  },
  NVFP4A16 = {weights = NVFP4_W},
  NVFP4 = {
    weights = NVFP4_W,
    input_activations = {num_bits = 4, type = "float", strategy = "tensor_group", symmetric = true,
                         dynamic = "local", group_size = 16, observer = "static_minmax",
                         scale_dtype = "torch.float8_e4m3fn", zp_dtype = "torch.float8_e4m3fn"},
  },
  MXFP4A16 = mx(4, false),
  MXFP4 = mx(4, true),
  MXFP8A16 = mx(8, false),
  MXFP8 = mx(8, true),
  W2A4 = int_wnam(2, 4), W2A8 = int_wnam(2, 8), W2A16 = int_wnam(2, 16),
  W3A4 = int_wnam(3, 4), W3A8 = int_wnam(3, 8), W3A16 = int_wnam(3, 16),
  W4A4 = int_wnam(4, 4), W4A8 = int_wnam(4, 8), W4A16 = int_wnam(4, 16),
  W5A8 = int_wnam(5, 8), W5A16 = int_wnam(5, 16),
  W6A8 = int_wnam(6, 8), W6A16 = int_wnam(6, 16),
  W7A8 = int_wnam(7, 8), W7A16 = int_wnam(7, 16),
  W8A16 = int_wnam(8, 16),
}

--- preset names in compressed-tensors' order
schemes.PRESET_NAMES = {
  "UNQUANTIZED", "W4A16_ASYM", "W8A8", "INT8", "W4AFP8", "FP8", "FP8_DYNAMIC", "FP8_BLOCK",
  "NVFP4A16", "NVFP4", "MXFP4A16", "MXFP4", "MXFP8A16", "MXFP8",
  "W2A4", "W2A8", "W2A16", "W3A4", "W3A8", "W3A16", "W4A4", "W4A8", "W4A16",
  "W5A8", "W5A16", "W6A8", "W6A16", "W7A8", "W7A16", "W8A16",
}

function schemes.is_preset(name)
  return type(name) == "string" and schemes.PRESETS[name:upper()] ~= nil
end

local function where_sub(where, sub)
  if type(where) == "function" then
    return function(field) return where(sub .. (field and ("." .. field) or "")) end
  end
  if where == nil or where == "" then return sub end
  return where .. "." .. sub
end

local function fail(where, field, msg)
  local prefix
  if type(where) == "function" then prefix = where(field)
  else prefix = (where and where ~= "") and (where .. (field and ("." .. field) or "")) or field end
  error((prefix and (prefix .. ": ") or "") .. msg, 0)
end

local function close_names(name)
  -- presets sharing a prefix, to suggest in "unknown scheme" errors
  local up = tostring(name):upper()
  local out = {}
  for _, n in ipairs(schemes.PRESET_NAMES) do
    if n:sub(1, 2) == up:sub(1, 2) then out[#out + 1] = n end
  end
  if #out == 0 then out = schemes.PRESET_NAMES end
  return table.concat(out, ", ")
end

--- Targets: a string or a list of strings -> a fresh list.
function schemes.targets_list(t, where, field)
  if t == nil or t == json.null then return nil end
  if type(t) == "string" then return {t} end
  if type(t) ~= "table" then fail(where, field, "expected a string or a list of strings, got " .. tostring(t)) end
  local out = {}
  for i, v in ipairs(t) do
    if type(v) ~= "string" then fail(where, field, "entry " .. i .. " is not a string") end
    out[i] = v
  end
  return out
end

local FORMATS = {
  ["dense"] = true, ["naive-quantized"] = true, ["pack-quantized"] = true, ["int-quantized"] = true,
  ["float-quantized"] = true, ["nvfp4-pack-quantized"] = true, ["mxfp4-pack-quantized"] = true,
  ["mxfp8-quantized"] = true, ["mixed-precision"] = true,
}
schemes.FORMATS = FORMATS

local SCHEME_FIELDS = {"targets", "weights", "input_activations", "output_activations", "format"}
local SCHEME_FIELD_SET = {targets = true, weights = true, input_activations = true, output_activations = true,
                          format = true}

--- Validate a custom scheme {targets, weights, input_activations,
--- output_activations, format} (compressed-tensors QuantizationScheme).
function schemes.new(spec, where)
  if getmetatable(spec) == Scheme then return spec end
  if type(spec) ~= "table" then fail(where, nil, "a scheme must be a table, got " .. tostring(spec)) end
  local function get(k)
    local v
    if util.is_omap(spec) then v = spec:get(k) else v = spec[k] end
    if v == json.null then return nil end
    return v
  end
  local keys = util.is_omap(spec) and spec:keys() or {}
  if not util.is_omap(spec) then for k in pairs(spec) do keys[#keys + 1] = k end end
  for _, k in ipairs(keys) do
    if not SCHEME_FIELD_SET[k] then
      fail(where, tostring(k), "unknown scheme field (valid: " .. table.concat(SCHEME_FIELDS, ", ") .. ")")
    end
  end
  local s = setmetatable({}, Scheme)
  s.targets = schemes.targets_list(get("targets"), where, "targets")
  if not s.targets then fail(where, "targets", "a scheme needs targets (e.g. {\"Linear\"})") end
  for _, f in ipairs({"weights", "input_activations", "output_activations"}) do
    local v = get(f)
    if v ~= nil then s[f] = qargs.new(v, where_sub(where, f)) end
  end
  local fmt = get("format")
  if fmt ~= nil then
    if not FORMATS[fmt] then fail(where, "format", "unknown compression format '" .. tostring(fmt) .. "'") end
    if fmt == "mixed-precision" then fail(where, "format", "mixed-precision cannot be the format of a scheme") end
    s.format = fmt
  end
  local ia = s.input_activations
  if ia then
    local ok = {token = true, tensor = true, group = true, tensor_group = true, attn_head = true}
    if not ok[ia.strategy] then
      fail(where, "input_activations.strategy", "strategy '" .. ia.strategy .. "' is not supported for activations")
    end
    if ia.actorder ~= nil then fail(where, "input_activations.actorder", "cannot apply actorder to input activations") end
  end
  if s.output_activations and s.output_activations.actorder ~= nil then
    fail(where, "output_activations.actorder", "cannot apply actorder to output activations")
  end
  return s
end

--- A preset by name (case-insensitive) with the given targets.
function schemes.preset(name, targets, where)
  if type(name) ~= "string" or not schemes.is_preset(name) then
    fail(where, nil, "unknown scheme '" .. tostring(name) .. "' (presets: " .. close_names(name) .. ")")
  end
  local p = schemes.PRESETS[name:upper()]
  local spec = {targets = schemes.targets_list(targets or {"Linear"}, where, "targets")}
  for _, f in ipairs({"weights", "input_activations", "output_activations"}) do
    if p[f] then spec[f] = util.deepcopy(p[f]) end
  end
  local s = schemes.new(spec, where)
  s.preset = name:upper()
  return s
end

function schemes.is_scheme(x) return getmetatable(x) == Scheme end

--- JSON object of a scheme (the keys compressed-tensors writes).
function schemes.to_json(s)
  local o = util.omap()
  o:set("targets", json.array({table.unpack(s.targets)}))
  o:set("weights", s.weights and qargs.to_json(s.weights) or nil)
  o:set("input_activations", s.input_activations and qargs.to_json(s.input_activations) or nil)
  o:set("output_activations", s.output_activations and qargs.to_json(s.output_activations) or nil)
  o:set("format", s.format)
  return o
end

--- same quantization (targets and format included)
function schemes.equal(a, b)
  return json.encode(schemes.to_json(a)) == json.encode(schemes.to_json(b))
end

--- Compression format of a module of kind `kind` ("Linear", "Embedding",
--- ...) under scheme `s` (compressed-tensors 0.19 priority list, §4.1).
--- An explicit s.format wins.
function schemes.infer_format(s, kind)
  if s.format then return s.format end
  local w, ia = s.weights, s.input_activations
  local compressible = (kind == nil or kind == "Linear" or kind == "Embedding")
  if not compressible or not w then return "dense" end
  if w.type == "float" and w.num_bits == 4 and w.group_size == 32 then return "mxfp4-pack-quantized" end
  if w.type == "float" and w.num_bits == 8 and w.group_size == 32 and w.scale_dtype == "torch.uint8" then
    return "mxfp8-quantized"
  end
  if w.type == "float" and w.num_bits == 4 and w.group_size == 16 then return "nvfp4-pack-quantized" end
  if w.type == "int" and ia then return "int-quantized" end
  if w.type == "int" and w.num_bits >= 1 and w.num_bits <= 8 and not (ia and ia.type == "float") then
    return "pack-quantized"
  end
  if w.type == "float" and ia then return "float-quantized" end
  return "naive-quantized"
end

--- the model-level format from a set of module formats (§4.1)
function schemes.flatten_formats(formats)
  local set, n, one = {}, 0, nil
  for _, f in ipairs(formats) do
    if f ~= "dense" and not set[f] then set[f] = true; n = n + 1; one = f end
  end
  if n == 0 then return "dense" end
  if n == 1 then return one end
  return "mixed-precision"
end

--- Does the scheme need calibration data (static activations)?  Returns
--- the reason or nil (llm-compressor's requires_calibration_data rule).
function schemes.needs_calibration(s)
  if s.weights and (s.weights.observer == "imatrix_mse" or s.weights.observer == "nvfp4_expanded_imatrix") then
    return "its weight observer '" .. s.weights.observer .. "' needs activation statistics"
  end
  local ia = s.input_activations
  if ia and (ia.dynamic == false or ia.dynamic == "local") then
    return "its input activations are static (" .. qargs.describe(ia) .. "): their scales are calibrated"
  end
  local oa = s.output_activations
  if oa and not oa.dynamic then
    return "its output activations are static (" .. qargs.describe(oa) .. "): their scales are calibrated"
  end
  return nil
end

---------------------------------------------------------------------------
-- resolution of a modifier's fields into config groups
---------------------------------------------------------------------------

--- Apply observer defaults/overrides to a scheme in place (llm-compressor's
--- _apply_observer_overrides): an explicit observer stays; otherwise
--- weights get "memoryless_minmax", static/local activations "minmax",
--- dynamic activations none.  `obs` = {weights=, input=, output=} overrides.
function schemes.apply_observer_defaults(s, obs)
  obs = obs or {}
  local map = {{"weights", obs.weights, "memoryless_minmax"},
               {"input_activations", obs.input, "minmax"},
               {"output_activations", obs.output, "minmax"}}
  for _, m in ipairs(map) do
    local field, override, default = m[1], m[2], m[3]
    local a = s[field]
    if a then
      local value = override
      if value == nil then
        if a.observer ~= nil then goto continue end
        value = (a.dynamic == true) and json.null or default
      end
      s[field] = qargs.copy(a, {observer = value})
    end
    ::continue::
  end
  return s
end

--- Resolve {scheme=, config_groups=, targets=, ignore=, kv_cache_scheme=,
--- weight_observer=, input_observer=, output_observer=, observer=} into
---   {groups = {{name=, scheme=}, ...}, ignore = {...}, kv_cache_scheme = QArgs|nil}
--- following llm-compressor's QuantizationMixin.  `where(field)` names
--- fields in errors.
function schemes.resolve(f, where)
  where = where or function(field) return field end
  local targets = schemes.targets_list(f.targets, where, "targets") or {"Linear"}
  if f.scheme ~= nil and f.config_groups ~= nil then
    fail(where, "scheme", "give either `scheme` or `config_groups`, not both")
  end
  local obs = {weights = f.weight_observer, input = f.input_observer, output = f.output_observer}
  if f.observer ~= nil then
    if f.weight_observer or f.input_observer or f.output_observer then
      fail(where, "observer", "give either the `observer` table or weight_observer/input_observer/output_observer, not both")
    end
    if type(f.observer) ~= "table" then fail(where, "observer", "expected a table {weights=, input=, output=}") end
    local function get(k) if util.is_omap(f.observer) then return f.observer:get(k) end return f.observer[k] end
    local ks = util.is_omap(f.observer) and f.observer:keys() or {}
    if not util.is_omap(f.observer) then for k in pairs(f.observer) do ks[#ks + 1] = k end end
    for _, k in ipairs(ks) do
      if k ~= "weights" and k ~= "input" and k ~= "output" then
        fail(where, "observer." .. tostring(k), "invalid observer key (valid: weights, input, output)")
      end
      if type(get(k)) ~= "string" then fail(where, "observer." .. k, "observer names are strings") end
    end
    obs = {weights = get("weights") or obs.weights, input = get("input") or obs.input,
           output = get("output") or obs.output}
  end
  for _, k in ipairs({"weights", "input", "output"}) do
    if obs[k] ~= nil and type(obs[k]) ~= "string" then
      fail(where, k == "weights" and "weight_observer" or (k .. "_observer"), "expected an observer name")
    end
  end

  local groups = {}
  if f.scheme ~= nil then
    local entries = {}   -- {key, targets, line-where}
    if type(f.scheme) == "string" then
      if not schemes.is_preset(f.scheme) then
        fail(where, "scheme", "unknown scheme '" .. f.scheme .. "' (presets: " .. close_names(f.scheme) ..
             "); use config_groups for a custom scheme")
      end
      entries[1] = {f.scheme, targets}
    elseif type(f.scheme) == "table" then
      local keys = util.is_omap(f.scheme) and f.scheme:keys() or nil
      if not keys then
        keys = {}
        for k in pairs(f.scheme) do keys[#keys + 1] = k end
        if #keys > 1 then
          fail(where, "scheme", "a Lua table has no key order: give several schemes as config_groups or use an ordered map")
        end
      end
      for _, k in ipairs(keys) do
        local v = util.is_omap(f.scheme) and f.scheme:get(k) or f.scheme[k]
        if type(k) ~= "string" or not schemes.is_preset(k) then
          fail(where, "scheme." .. tostring(k), "unknown preset scheme '" .. tostring(k) .. "' (presets: " ..
               close_names(k) .. ")")
        end
        entries[#entries + 1] = {k, schemes.targets_list(v, where, "scheme." .. k)}
      end
    else
      fail(where, "scheme", "expected a preset name or {PRESET = targets}")
    end
    for i, e in ipairs(entries) do
      local s = schemes.preset(e[1], e[2], function(field) return where("scheme" .. (field and ("." .. field) or "")) end)
      schemes.apply_observer_defaults(s, obs)
      groups[#groups + 1] = {name = "group_" .. (i - 1), scheme = s}
    end
  elseif f.config_groups ~= nil then
    local cg = f.config_groups
    if type(cg) ~= "table" then fail(where, "config_groups", "expected a table of name -> scheme") end
    local keys = util.is_omap(cg) and cg:keys() or nil
    if not keys then
      keys = {}
      for k in pairs(cg) do keys[#keys + 1] = k end
      table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    end
    for _, k in ipairs(keys) do
      local v = util.is_omap(cg) and cg:get(k) or cg[k]
      local gw = function(field) return where("config_groups." .. tostring(k) .. (field and ("." .. field) or "")) end
      local s
      if schemes.is_preset(k) and (type(v) == "string" or (type(v) == "table" and json.is_array(v))) then
        s = schemes.preset(k, v, gw)              -- {W4A16 = {"Linear"}} form
      else
        s = schemes.new(v, gw)
      end
      schemes.apply_observer_defaults(s, obs)
      groups[#groups + 1] = {name = tostring(k), scheme = s}
    end
  end
  if #groups == 0 then
    -- llm-compressor's default: a scheme with no args (quantizes nothing)
    groups[1] = {name = "group_0", scheme = setmetatable({targets = targets}, Scheme)}
  end
  local ignore = schemes.targets_list(f.ignore, where, "ignore") or {}
  local kv = nil
  if f.kv_cache_scheme ~= nil and f.kv_cache_scheme ~= json.null then
    kv = qargs.new(f.kv_cache_scheme, function(field) return where("kv_cache_scheme" .. (field and ("." .. field) or "")) end)
  end
  return {groups = groups, ignore = ignore, kv_cache_scheme = kv}
end

Scheme.__tostring = function(s)
  local parts = {}
  if s.weights then parts[#parts + 1] = "weights " .. qargs.describe(s.weights) end
  if s.input_activations then parts[#parts + 1] = "inputs " .. qargs.describe(s.input_activations) end
  if s.output_activations then parts[#parts + 1] = "outputs " .. qargs.describe(s.output_activations) end
  return string.format("Scheme(%s%s; targets %s)", s.preset and (s.preset .. ": ") or "",
    #parts > 0 and table.concat(parts, ", ") or "no quantization", table.concat(s.targets, ","))
end

return schemes
