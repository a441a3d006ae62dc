-- test_schemes.lua — preset schemes, QuantizationArgs validation, format
-- inference, observer defaults and modifier argument errors.
-- References: CT_PRESETS is compressed-tensors 0.19.0's own
-- preset_name_to_scheme(name, ["Linear"]).model_dump_json() for every
-- preset (generated with the installed package); FORMATS are the formats
-- llm-compressor 0.14.0.1's oneshot wrote for the tiny-llama fixture.
local llmc = require "llmc"
local schemes = require "llmc.schemes"
local qargs = require "llmc.qargs"
local util = require "llmc.util"
local json = util.json

local passed, failed = 0, 0
local function check(cond, msg)
  if cond then passed = passed + 1 else failed = failed + 1; io.stderr:write("FAIL: ", msg, "\n") end
end
local function errors(fn, pattern, msg)
  local ok, err = pcall(fn)
  check(not ok and tostring(err):find(pattern, 1, true) ~= nil,
        msg .. ": expected an error containing '" .. pattern .. "', got " .. tostring(ok and "success" or err))
end
-- canonical JSON (sorted keys, compact) of a decoded / built object
local function canon(v) return json.encode(v, {compact = true}) end

local CT_PRESETS = {
  UNQUANTIZED = [[{"format":null,"input_activations":null,"output_activations":null,"targets":["Linear"],"weights":null}]],
  W4A16_ASYM = [[{"format":null,"input_activations":null,"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":4,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":false,"type":"int","zp_dtype":"torch.int8"}}]],
  W8A8 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"token","symmetric":true,"type":"int","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"channel","symmetric":true,"type":"int","zp_dtype":null}}]],
  INT8 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"token","symmetric":true,"type":"int","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"channel","symmetric":true,"type":"int","zp_dtype":null}}]],
  W4AFP8 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"token","symmetric":true,"type":"float","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":4,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  FP8 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":null,"num_bits":8,"observer":"static_minmax","observer_kwargs":{},"scale_dtype":null,"strategy":"tensor","symmetric":true,"type":"float","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"tensor","symmetric":true,"type":"float","zp_dtype":null}}]],
  FP8_DYNAMIC = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"token","symmetric":true,"type":"float","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"channel","symmetric":true,"type":"float","zp_dtype":null}}]],
  FP8_BLOCK = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":128,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"float","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":[128,128],"dynamic":false,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"block","symmetric":true,"type":"float","zp_dtype":null}}]],
  NVFP4A16 = [[{"format":null,"input_activations":null,"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":16,"num_bits":4,"observer":null,"observer_kwargs":{},"scale_dtype":"torch.float8_e4m3fn","strategy":"tensor_group","symmetric":true,"type":"float","zp_dtype":null}}]],
  NVFP4 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":"local","group_size":16,"num_bits":4,"observer":"static_minmax","observer_kwargs":{},"scale_dtype":"torch.float8_e4m3fn","strategy":"tensor_group","symmetric":true,"type":"float","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":16,"num_bits":4,"observer":null,"observer_kwargs":{},"scale_dtype":"torch.float8_e4m3fn","strategy":"tensor_group","symmetric":true,"type":"float","zp_dtype":null}}]],
  MXFP4A16 = [[{"format":null,"input_activations":null,"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":32,"num_bits":4,"observer":null,"observer_kwargs":{},"scale_dtype":"torch.uint8","strategy":"group","symmetric":true,"type":"float","zp_dtype":null}}]],
  MXFP4 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":32,"num_bits":4,"observer":null,"observer_kwargs":{},"scale_dtype":"torch.uint8","strategy":"group","symmetric":true,"type":"float","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":32,"num_bits":4,"observer":null,"observer_kwargs":{},"scale_dtype":"torch.uint8","strategy":"group","symmetric":true,"type":"float","zp_dtype":null}}]],
  MXFP8A16 = [[{"format":null,"input_activations":null,"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":32,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":"torch.uint8","strategy":"group","symmetric":true,"type":"float","zp_dtype":null}}]],
  MXFP8 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":32,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":"torch.uint8","strategy":"group","symmetric":true,"type":"float","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":32,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":"torch.uint8","strategy":"group","symmetric":true,"type":"float","zp_dtype":null}}]],
  W2A4 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":null,"num_bits":4,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"token","symmetric":true,"type":"int","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":2,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W2A8 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"token","symmetric":true,"type":"int","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":2,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W2A16 = [[{"format":null,"input_activations":null,"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":2,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W3A4 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":null,"num_bits":4,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"token","symmetric":true,"type":"int","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":3,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W3A8 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"token","symmetric":true,"type":"int","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":3,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W3A16 = [[{"format":null,"input_activations":null,"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":3,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W4A4 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":null,"num_bits":4,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"token","symmetric":true,"type":"int","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":4,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W4A8 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"token","symmetric":true,"type":"int","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":4,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W4A16 = [[{"format":null,"input_activations":null,"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":4,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W5A8 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"token","symmetric":true,"type":"int","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":5,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W5A16 = [[{"format":null,"input_activations":null,"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":5,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W6A8 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"token","symmetric":true,"type":"int","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":6,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W6A16 = [[{"format":null,"input_activations":null,"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":6,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W7A8 = [[{"format":null,"input_activations":{"actorder":null,"block_structure":null,"dynamic":true,"group_size":null,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"token","symmetric":true,"type":"int","zp_dtype":null},"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":7,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W7A16 = [[{"format":null,"input_activations":null,"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":7,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
  W8A16 = [[{"format":null,"input_activations":null,"output_activations":null,"targets":["Linear"],"weights":{"actorder":null,"block_structure":null,"dynamic":false,"group_size":128,"num_bits":8,"observer":null,"observer_kwargs":{},"scale_dtype":null,"strategy":"group","symmetric":true,"type":"int","zp_dtype":null}}]],
}

local FORMATS = {
  W4A16 = "pack-quantized", W8A16 = "pack-quantized", W2A16 = "pack-quantized", W3A16 = "pack-quantized",
  W5A16 = "pack-quantized", W6A16 = "pack-quantized", W7A16 = "pack-quantized", W4A16_ASYM = "pack-quantized",
  W8A8 = "int-quantized", INT8 = "int-quantized", W4A8 = "int-quantized", W2A4 = "int-quantized",
  W4A4 = "int-quantized", W3A8 = "int-quantized", W4AFP8 = "int-quantized", FP8_DYNAMIC = "float-quantized",
  FP8_BLOCK = "float-quantized", NVFP4A16 = "nvfp4-pack-quantized", MXFP4A16 = "mxfp4-pack-quantized",
  MXFP4 = "mxfp4-pack-quantized", MXFP8A16 = "mxfp8-quantized", MXFP8 = "mxfp8-quantized",
  -- from the spec's table (§2): these need calibration data, so no oneshot reference
  FP8 = "float-quantized", NVFP4 = "nvfp4-pack-quantized",
}

-- every preset equals compressed-tensors' own, field for field
local count = 0
for name, want in pairs(CT_PRESETS) do
  count = count + 1
  local s = schemes.preset(name, {"Linear"})
  check(canon(schemes.to_json(s)) == canon(json.decode(want)), "preset " .. name .. " matches compressed-tensors:\n  got  " ..
        canon(schemes.to_json(s)) .. "\n  want " .. want)
  if FORMATS[name] then
    check(schemes.infer_format(s, "Linear") == FORMATS[name], "format of " .. name .. ": " .. schemes.infer_format(s, "Linear"))
  end
end
check(count == 30 and #schemes.PRESET_NAMES == 30, "30 presets")
for _, n in ipairs(schemes.PRESET_NAMES) do check(CT_PRESETS[n] ~= nil, "preset list has " .. n) end
check(schemes.is_preset("w4a16") and schemes.preset("fp8_block").preset == "FP8_BLOCK", "preset names are case-insensitive")
check(schemes.infer_format(schemes.preset("UNQUANTIZED"), "Linear") == "dense", "UNQUANTIZED -> dense")
check(schemes.infer_format(schemes.preset("W4A16"), "LlamaRMSNorm") == "dense", "a non-Linear module -> dense")
check(schemes.flatten_formats({"pack-quantized", "dense", "pack-quantized"}) == "pack-quantized", "flatten one format")
check(schemes.flatten_formats({"pack-quantized", "float-quantized"}) == "mixed-precision", "flatten -> mixed-precision")
check(schemes.flatten_formats({}) == "dense", "flatten nothing -> dense")

-- the C kernels' preset table agrees with the Lua one
local Q = require "llmc._quant"
for _, name in ipairs(schemes.PRESET_NAMES) do
  local cw, ci = Q.preset(name)
  local s = schemes.preset(name)
  local function same(c, a)
    if c == nil or a == nil then return c == a end
    return c.num_bits == a.num_bits and c.type == a.type and c.symmetric == a.symmetric and c.strategy == a.strategy
       and (c.group_size or -99) == (a.group_size or -99) and c.dynamic == a.dynamic
       and (c.scale_dtype == nil) == (a.scale_dtype == nil)
  end
  check(same(cw, s.weights) and same(ci, s.input_activations), "C preset table agrees for " .. name)
end

-- observer defaults (llm-compressor's _apply_observer_overrides) and model_free's rename
local r = schemes.resolve({scheme = "FP8_BLOCK", targets = "Linear"})
local g = r.groups[1].scheme
check(g.weights.observer == "memoryless_minmax" and g.input_activations.observer == nil, "FP8_BLOCK: weight observer filled, dynamic input none")
r = schemes.resolve({scheme = "FP8", targets = "Linear"})
check(r.groups[1].scheme.input_activations.observer == "static_minmax", "FP8: explicit static_minmax kept")
r = schemes.resolve({scheme = "NVFP4"})
check(r.groups[1].scheme.input_activations.observer == "static_minmax" and r.groups[1].scheme.weights.observer == "memoryless_minmax",
      "NVFP4: local input keeps static_minmax")
r = schemes.resolve({config_groups = {g = {targets = {"Linear"}, weights = {num_bits = 4, group_size = 32},
                     input_activations = {num_bits = 8, strategy = "tensor"}}}})
check(r.groups[1].scheme.input_activations.observer == "minmax", "static custom input -> minmax")
r = schemes.resolve({scheme = "W4A16", weight_observer = "mse"})
check(r.groups[1].scheme.weights.observer == "mse", "weight_observer override")
local mf = require("llmc.model_free").resolve_config({scheme = {weights = {num_bits = 8, observer = "minmax"}}})
check(mf.groups[1].name == "config_group_0" and mf.groups[1].scheme.weights.observer == "static_minmax"
      and mf.groups[1].scheme.targets[1] == "Linear", "model_free: custom scheme group, minmax -> static_minmax, targets Linear")
mf = require("llmc.model_free").resolve_config({scheme = "W4A16", ignore = {"lm_head"}})
check(mf.groups[1].name == "W4A16" and mf.groups[1].scheme.weights.observer == nil and mf.ignore[1] == "lm_head",
      "model_free: preset group named as given, observer stays null")
errors(function() require("llmc.model_free").resolve_config({scheme = "NVFP4"}) end, "cannot calibrate activations",
       "model_free refuses NVFP4 (local input activations)")
errors(function() require("llmc.model_free").resolve_config({scheme = "FP8"}) end, "cannot calibrate activations",
       "model_free refuses FP8 (static input activations)")

-- QuantizationArgs: normalisation (§1.3) and the JSON form (§1.1)
local a = qargs.new({num_bits = 4, type = "InT", group_size = 128}, "w")
check(a.type == "int" and a.strategy == "group" and a.zp_dtype == "torch.int8", "type lower-cased, strategy and zp_dtype inferred")
check(qargs.new({group_size = -1}).strategy == "channel" and qargs.new({}).strategy == "tensor", "strategy inference")
check(canon(qargs.new({block_structure = "128x64", strategy = "block", type = "float"}).block_structure) == "[128,64]",
      "legacy block_structure string")
check(qargs.new({num_bits = 4, type = "float", group_size = 16, strategy = "tensor_group"}).zp_dtype == "torch.float8_e4m3fn",
      "fp4 zp_dtype")
check(qargs.new({scale_dtype = "float8_e4m3fn"}).scale_dtype == "torch.float8_e4m3fn", "torch. prefix added")
local j = qargs.to_json(qargs.new({num_bits = 4, symmetric = false, group_size = 128}))
check(j:len() == 12 and j:get("zp_dtype") == "torch.int8", "12 keys, asymmetric zp_dtype written")
j = qargs.to_json(qargs.new({num_bits = 4, group_size = 128}))
check(j:get("zp_dtype") == json.null, "symmetric zp_dtype written as null")
check(qargs.new({actorder = "static"}).actorder == "static" and qargs.new({actorder = false}).actorder == nil, "actorder aliases")

errors(function() qargs.new({group_size = -2}, "weights") end, "weights.group_size: invalid group size -2", "group_size < -1")
errors(function() qargs.new({strategy = "token"}, "input") end, "input.strategy: static per-token", "static token")
errors(function() qargs.new({strategy = "group"}, "w") end, "w.group_size: strategy 'group' requires group_size", "group without size")
errors(function() qargs.new({strategy = "channel", group_size = 64}, "w") end, "requires strategy 'group'", "group_size with channel")
errors(function() qargs.new({strategy = "block"}, "w") end, "w.block_structure", "block without structure")
errors(function() qargs.new({block_structure = {128, 128}}, "w") end, "block_structure requires strategy 'block'", "structure without block")
errors(function() qargs.new({block_structure = {128, 0}, strategy = "block"}, "w") end, "two positive ints", "bad block_structure")
errors(function() qargs.new({dynamic = "local", strategy = "group", group_size = 16}, "i") end, "only supported with strategy 'tensor_group'", "local needs tensor_group")
errors(function() qargs.new({dynamic = true, strategy = "channel"}, "i") end, "dynamic quantization needs strategy", "dynamic channel")
errors(function() qargs.new({actorder = "group"}, "w") end, "was removed in compressed-tensors 0.19", "actorder group")
errors(function() qargs.new({actorder = true}, "w") end, "was removed", "actorder true")
errors(function() qargs.new({actorder = "Weight"}, "w") end, "is not an activation ordering", "actorder is case-sensitive")
errors(function() qargs.new({type = "fp"}, "w") end, "w.type: 'fp' is not a quantization type", "bad type")
errors(function() qargs.new({num_bits = 6, type = "float"}, "w") end, "w.num_bits", "fp6")
errors(function() qargs.new({num_bits = 4, type = "float", symmetric = false, group_size = 16}, "w") end, "asymmetric fp4", "asym fp4")
errors(function() qargs.new({num_bit = 4}, "w") end, "w.num_bit: unknown quantization argument", "unknown key")
errors(function() qargs.new({scale_dtype = "torch.float7"}, "w") end, "no such torch dtype", "bad dtype")

-- schemes and config groups
errors(function() schemes.preset("W4A17") end, "unknown scheme 'W4A17' (presets: W4A16_ASYM, W4AFP8, W4A4, W4A8, W4A16)", "unknown preset suggests close names")
errors(function() schemes.new({weights = {num_bits = 4}}, "config_groups.g") end, "config_groups.g.targets: a scheme needs targets", "scheme without targets")
errors(function() schemes.new({targets = "Linear", input_activations = {strategy = "channel"}}, "g") end,
       "g.input_activations.strategy: strategy 'channel' is not supported for activations", "activation strategy")
errors(function() schemes.new({targets = "Linear", weight = {num_bits = 4}}, "g") end, "g.weight: unknown scheme field", "scheme unknown key")
errors(function() schemes.new({targets = "Linear", format = "mixed-precision"}, "g") end, "mixed-precision cannot be", "scheme format")
errors(function() schemes.resolve({scheme = "W4A16", config_groups = {}}) end, "either `scheme` or `config_groups`", "scheme and groups")
local om = util.omap()
om:set("W4A16", {"re:.*mlp.*"})
om:set("FP8_DYNAMIC", {"re:.*self_attn.*"})
r = schemes.resolve({scheme = om})
check(#r.groups == 2 and r.groups[1].name == "group_0" and r.groups[2].scheme.preset == "FP8_DYNAMIC"
      and r.groups[2].scheme.targets[1] == "re:.*self_attn.*", "scheme dict -> group_0, group_1 in order")
check(schemes.needs_calibration(schemes.preset("FP8")) ~= nil and schemes.needs_calibration(schemes.preset("FP8_BLOCK")) == nil
      and schemes.needs_calibration(schemes.preset("NVFP4")) ~= nil, "needs_calibration")

-- modifier arguments: errors point at the line of the recipe that built it
local QM = llmc.modifiers.QuantizationModifier
local line = debug.getinfo(1, "l").currentline + 1
local ok, err = pcall(function() return QM{targets = "Linear", scheme = "FP9"} end)
check(not ok and err:find("test_schemes.lua:" .. line, 1, true) and err:find("QuantizationModifier.scheme", 1, true)
      and err:find("unknown scheme 'FP9'", 1, true), "unknown scheme error names the recipe line: " .. tostring(err))
line = debug.getinfo(1, "l").currentline + 1
ok, err = pcall(function() return QM{scheme = "W4A16", ignore_list = {"lm_head"}} end)
check(not ok and err:find("test_schemes.lua:" .. line, 1, true) and err:find("ignore_list: unknown argument", 1, true),
      "unknown modifier argument names key and line: " .. tostring(err))
ok, err = pcall(function() return QM{config_groups = {g = {targets = {"Linear"}, weights = {num_bits = 4, group_size = -3}}}} end)
check(not ok and err:find("config_groups.g.weights.group_size: invalid group size -3", 1, true), "nested field path: " .. tostring(err))
local m = QM{targets = "Linear", scheme = "FP8", ignore = {"lm_head"}}
check(m.requires_calibration_data == true and m:calibration_reason():find("scheme FP8 needs calibration data", 1, true),
      "static FP8 requires calibration data, reason names the scheme")
m = QM{targets = "Linear", scheme = "FP8_DYNAMIC"}
check(m.requires_calibration_data == false and m.targets[1] == "Linear" and #m.ignore == 0, "dynamic scheme needs no data")
check(m:dump():keys()[1] == "targets" and m:dump():get("scheme") == "FP8_DYNAMIC" and m:dump():get("rounding") == nil,
      "dump: llm-compressor's field order, nil fields and llmc-only fields left out")
errors(function() return QM{scheme = "W4A16", rounding = "up"} end, "rounding must be", "rounding option")
errors(function() return llmc.modifiers.create("QuantModifier", {}) end, "unknown modifier 'QuantModifier'", "unknown modifier name")

-- a user-defined modifier registers and is created by name
local log = {}
llmc.modifiers.define("LogModifier", {
  fields = {{"tag", "x", llmc.modifiers.check.string}},
  on_initialize = function(self) log[#log + 1] = "init:" .. self.tag return true end,
  on_finalize = function(self) log[#log + 1] = "fin" return true end,
})
local lm = llmc.modifiers.create("LogModifier", {tag = "y"})
lm:initialize({})
lm:update_event({}, {type = "calibration_start"})
lm:finalize({})
check(table.concat(log, ",") == "init:y,fin" and lm.started_ and lm.finalized_, "custom modifier lifecycle")
errors(function() lm:finalize({}) end, "cannot finalize a modifier twice", "finalize twice")

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
