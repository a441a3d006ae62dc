-- test_static_activations.lua — static activation and KV-cache scales
-- calibrated by llmc.oneshot on tiny-llama against llm-compressor 0.14.0.1's
-- own output for the same calibration tokens (tests/lua/data/static_act_ref.json,
-- written by scripts/lc_static_reference.py):
--  * FP8 (static per-tensor fp8 inputs, static_minmax) + kv_cache_scheme fp8
--    per tensor (default observer: the minmax EMA): input_scale, k_scale, v_scale;
--  * int8 channel weights + int8 ASYMMETRIC static per-tensor inputs (EMA) +
--    kv attn_head with static_minmax: input_scale, input_zero_point,
--    k_scale / v_scale [kv_heads, 1, 1];
--  * NVFP4 (dynamic = "local" inputs): input_global_scale.
-- Both on the model loaded in float32 (llm-compressor then computes like
-- llmc: scales equal to ~1e-6) and on the bf16 model as it is (llm-compressor
-- computes in bf16, llmc in fp32: within 2.5%).  Also: dtypes, shapes, names, the saved
-- kv_cache_scheme, GPTQ with a static scheme, the quantized forward (static
-- QDQ and a quantized KV cache change the logits a little, and the model
-- still predicts), and errors (no data, unsupported observer / strategy).
local llmc = require "llmc"
local util = llmc.util
local json = util.json

local passed, failed = 0, 0
local function check(cond, msg)
  if cond then passed = passed + 1 else failed = failed + 1; io.stderr:write("FAIL: ", msg, "\n") end
end
if not util.fs then print("SKIP: needs the llmc executable"); os.exit(77) end
local F = util.fs
local ST = require "llmc._safetensors"
local QM = llmc.modifiers.QuantizationModifier
local tmp = string.format("%s/llmc_test_static_%d", os.getenv("TMPDIR") or "/tmp", F.getpid())
F.mkdir_p(tmp)

local ref = json.decode(util.read_file(llmc.root() .. "/tests/lua/data/static_act_ref.json"))
local DATA = {dataset = "json", dataset_path = llmc.bundled("datasets/calib_text.jsonl"),
              num_calibration_samples = ref.samples, max_seq_length = ref.seq_len,
              shuffle_calibration_samples = false}

local KV_TENSOR = {num_bits = 8, type = "float", strategy = "tensor", dynamic = false, symmetric = true}
local KV_HEAD = {num_bits = 8, type = "float", strategy = "attn_head", dynamic = false, symmetric = true,
                 observer = "static_minmax"}
local RECIPES = {
  fp8_kv = function() return QM{targets = "Linear", scheme = "FP8", ignore = {"lm_head"}, kv_cache_scheme = KV_TENSOR} end,
  int8_asym_head = function()
    return QM{ignore = {"lm_head"}, kv_cache_scheme = KV_HEAD, config_groups = {group_0 = {
      targets = {"Linear"},
      weights = {num_bits = 8, type = "int", symmetric = true, strategy = "channel"},
      input_activations = {num_bits = 8, type = "int", symmetric = false, strategy = "tensor", dynamic = false}}}}
  end,
  nvfp4 = function() return QM{targets = "Linear", scheme = "NVFP4", ignore = {"lm_head"}} end,
}

local function args(t) local a = {} for k, v in pairs(DATA) do a[k] = v end for k, v in pairs(t) do a[k] = v end return a end

-- one bf16 step at the magnitude of x
local function bf16_ulp(x)
  x = math.abs(x)
  if x == 0 then return 2 ^ -133 end
  local _, e = math.frexp(x)
  return 2.0 ^ (e - 8)
end

-- compare llmc's saved scales with llm-compressor's; tol(x, dtype) is the
-- allowed distance of a value that is not equal; at most max_near of the
-- tensors may differ at all
local function compare(label, r, out, tol, max_near)
  local f = ST.open(out .. "/model.safetensors")
  local have = {}
  for _, k in ipairs(f:names()) do
    local s = k:match("%.([%w_]+)$")
    if s == "input_scale" or s == "input_zero_point" or s == "input_global_scale" or s == "k_scale" or
       s == "v_scale" or s == "k_zero_point" or s == "v_zero_point" then have[k] = true end
  end
  local nref, exact, near, bad, worst = 0, 0, 0, {}, 0
  for k, e in pairs(r.tensors) do
    nref = nref + 1
    if not have[k] then bad[#bad + 1] = k .. " missing"
    else
      have[k] = nil
      local t = f:get(k)
      local dt = ({bfloat16 = "bfloat16", float32 = "float32", int8 = "int8"})[e.dtype]
      check(t:dtype() == dt, string.format("%s %s dtype %s (llm-compressor %s)", label, k, t:dtype(), e.dtype))
      check(table.concat(t:shape(), ",") == table.concat(e.shape, ","),
            string.format("%s %s shape {%s} (llm-compressor {%s})", label, k, table.concat(t:shape(), ","), table.concat(e.shape, ",")))
      local v = t:to("float32"):flatten():totable()
      local all_exact, all_near = true, true
      for i, x in ipairs(e.values) do
        local y = v[i]
        if y ~= x then
          all_exact = false
          local rel = math.abs(y - x) / math.max(math.abs(x), 1e-30)
          if e.dtype ~= "int8" and rel > worst then worst = rel end
          if math.abs(y - x) > tol(x, e.dtype) then all_near = false; bad[#bad + 1] = string.format("%s[%d] %.9g vs %.9g", k, i, y, x) end
        end
      end
      if all_exact then exact = exact + 1 elseif all_near then near = near + 1 end
    end
  end
  for k in pairs(have) do bad[#bad + 1] = k .. " written by llmc but not by llm-compressor" end
  io.stderr:write(string.format("%s: %d tensors, %d equal, %d within tolerance, %d beyond; largest relative " ..
    "difference of a scale %.3g\n", label, nref, exact, near, #bad, worst))
  check(#bad == 0, label .. ": every scale tensor within tolerance of llm-compressor's: " .. table.concat(bad, "; "))
  check(near <= max_near(nref), string.format("%s: few tensors differ at all (%d of %d)", label, near, nref))
  local cfg = json.decode(util.read_file(out .. "/config.json")).quantization_config
  check(cfg.format == r.format, label .. " format " .. tostring(cfg.format))
  if r.kv_cache_scheme ~= json.null and r.kv_cache_scheme ~= nil then
    check(json.encode(cfg.kv_cache_scheme) == json.encode(r.kv_cache_scheme),
          label .. " kv_cache_scheme as llm-compressor writes it: " .. json.encode(cfg.kv_cache_scheme))
  else
    check(cfg.kv_cache_scheme == json.null, label .. " kv_cache_scheme null")
  end
end

-- fp32: llm-compressor on the model loaded in float32 computes like llmc;
-- the activations still differ in their last bits (summation order), so a
-- scale may move by a few fp32 ulps (measured: <= 6.4e-7 relative) and a
-- zero point by one step at most
local F32_TOL = function(x, dt) return dt == "int8" and 1 or math.abs(x) * 2e-6 end
for _, name in ipairs({"fp8_kv", "int8_asym_head", "nvfp4"}) do
  local out = tmp .. "/f32_" .. name
  llmc.oneshot(args{model = llmc.default_model(), precision = "float32", quiet = true, recipe = RECIPES[name](),
    output_dir = out})
  compare("float32 " .. name, ref.recipes_f32[name], out, F32_TOL, function(n) return n end)
end

-- bf16: llm-compressor runs the bf16 model in bf16 arithmetic and llmc in
-- fp32, so activation ranges drift apart through the layers: scales within
-- 2.5%, zero points within 3 steps
local BF16_TOL = function(x, dt) return dt == "int8" and 3 or math.abs(x) * 0.025 end
local models = {}
for _, name in ipairs({"fp8_kv", "int8_asym_head", "nvfp4"}) do
  local out = tmp .. "/" .. name
  models[name] = llmc.oneshot(args{model = llmc.default_model(), quiet = true, recipe = RECIPES[name](),
    output_dir = out})
  compare("bfloat16 " .. name, ref.recipes[name], out, BF16_TOL, function(n) return n end)
end

-- the quantized forward: static input QDQ + fp8 KV cache change the logits
-- a little; the top prediction stays mostly the same
local base = llmc.load(llmc.default_model())
local ids = {{1, 415, 2936, 9060, 285, 1142, 461, 10575, 754, 272, 17898, 3914, 28723}}
local l0 = base:forward(ids)
for _, name in ipairs({"fp8_kv", "int8_asym_head"}) do
  local m = models[name]
  local attn = m:get("model.layers.0.self_attn")
  check(attn.kv_transform ~= nil, name .. ": quantized KV cache installed")
  check(m:get("model.layers.0.mlp.down_proj").input_transform ~= nil, name .. ": static input QDQ installed")
  local l1 = m:forward(ids)
  local d = (l1 - l0):abs():max()
  if type(d) ~= "number" then d = d:item() end
  local a0, a1 = l0:argmax(-1):totable()[1], l1:argmax(-1):totable()[1]
  local same = 0
  for i = 1, #a0 do if a0[i] == a1[i] then same = same + 1 end end
  check(d > 0 and d < 2.0, string.format("%s: logits move by %.4g (0 < d < 2)", name, d))
  check(same >= #a0 - 2, string.format("%s: %d of %d greedy predictions kept", name, same, #a0))
end

-- GPTQ with a static scheme: the same activation observers (input scales
-- of layer 0 equal QuantizationModifier's: same inputs)
do
  local m = llmc.oneshot(args{model = llmc.default_model(), quiet = true, output_dir = tmp .. "/gptq_fp8",
    recipe = llmc.modifiers.GPTQModifier{targets = "Linear", scheme = "FP8", ignore = {"lm_head"}}})
  local f = ST.open(tmp .. "/gptq_fp8/model.safetensors")
  local e = ref.recipes.fp8_kv.tensors["model.layers.0.self_attn.q_proj.input_scale"].values[1]
  local v = f:get("model.layers.0.self_attn.q_proj.input_scale"):to("float32"):item()
  check(math.abs(v - e) <= bf16_ulp(e), string.format("GPTQ FP8 layer 0 input_scale %.9g vs %.9g", v, e))
  check(m:get("model.layers.1.self_attn.o_proj").input_transform ~= nil, "GPTQ FP8: static input QDQ installed")
end

-- errors
local function err_of(t)
  local ok, e = pcall(llmc.oneshot, t)
  return not ok and tostring(e) or ""
end
local e1 = err_of{model = llmc.default_model(), quiet = true, recipe = QM{targets = "Linear", scheme = "FP8", ignore = {"lm_head"}}}
check(e1:find("FP8") and e1:find("dataset"), "FP8 without data: error names the scheme and the dataset: " .. e1)
local e2 = err_of(args{model = llmc.default_model(), quiet = true, recipe = QM{ignore = {"lm_head"}, config_groups = {g = {
  targets = {"Linear"}, weights = {num_bits = 8, type = "int", strategy = "channel"},
  input_activations = {num_bits = 8, type = "int", strategy = "tensor", dynamic = false, observer = "mse"}}}}})
check(e2:find("observer 'mse'") and e2:find("input_activations"), "mse activation observer: clear error: " .. e2)
local e3 = err_of(args{model = llmc.default_model(), quiet = true, recipe = QM{targets = "Linear", scheme = "FP8_DYNAMIC",
  ignore = {"lm_head"}, kv_cache_scheme = {num_bits = 8, type = "float", strategy = "channel", dynamic = false}}})
check(e3:find("kv_cache_scheme"), "kv_cache_scheme channel: clear error: " .. e3)

F.rmtree(tmp)
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
