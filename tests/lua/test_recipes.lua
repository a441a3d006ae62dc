-- llmc-test: slow
-- test_recipes.lua — every recipe in recipes/ runs on the bundled tiny-llama
-- with its quick settings (calibrating ones: 32 samples x 128 tokens, no
-- perplexity comparison) and writes a checkpoint whose config.json names the
-- expected format, whose tensors are the expected ones for a quantized
-- q_proj (and, for fp8_static, the KV-cache scales), and which
-- llmc.quant.load reads back into a model that predicts like the original.
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
local tmp = string.format("%s/llmc_test_recipes_%d", os.getenv("TMPDIR") or "/tmp", F.getpid())
F.mkdir_p(tmp)
local root = llmc.root()

-- recipe -> extra flags, expected format, tensors of layer 0's q_proj / self_attn
local Q = "model.layers.0.self_attn.q_proj."
local CASES = {
  {"fp8_block", {}, "float-quantized", {Q .. "weight", Q .. "weight_scale"}},
  {"fp8_dynamic", {}, "float-quantized", {Q .. "weight", Q .. "weight_scale"}},
  {"w8a16", {}, "pack-quantized", {Q .. "weight_packed", Q .. "weight_scale", Q .. "weight_shape"}},
  {"w4a16_rtn", {}, "pack-quantized", {Q .. "weight_packed", Q .. "weight_scale", Q .. "weight_shape"}},
  {"nvfp4a16", {}, "nvfp4-pack-quantized", {Q .. "weight_packed", Q .. "weight_scale", Q .. "weight_global_scale"}},
  {"model_free_fp8", {}, "float-quantized", {Q .. "weight", Q .. "weight_scale"}},
  {"w4a16_gptq", {"--quick", "--no-compare"}, "pack-quantized", {Q .. "weight_packed", Q .. "weight_scale"}},
  {"w4a16_gptq_actorder", {"--quick", "--no-compare"}, "pack-quantized", {Q .. "weight_packed", Q .. "weight_scale"}},
  {"fp8_static", {"--quick", "--no-compare"}, "float-quantized",
   {Q .. "weight", Q .. "weight_scale", Q .. "input_scale", "model.layers.0.self_attn.k_scale",
    "model.layers.0.self_attn.v_scale"}},
  {"w8a8_int8_gptq", {"--quick", "--no-compare"}, "int-quantized", {Q .. "weight", Q .. "weight_scale"}},
  {"w4a16_awq", {"--quick", "--no-compare"}, "pack-quantized", {Q .. "weight_packed", Q .. "weight_scale"}},
  {"sparse_2of4_fp8", {"--quick", "--no-compare"}, "float-quantized", {Q .. "weight", Q .. "weight_scale"}},
}

local base = llmc.load(llmc.default_model())
local ids = {{1, 415, 2936, 9060, 285, 1142, 461, 10575, 754, 272, 17898, 3914, 28723}}
local a0 = base:forward(ids):argmax(-1):totable()[1]

for _, c in ipairs(CASES) do
  local name, flags, fmt, want = c[1], c[2], c[3], c[4]
  local path = root .. "/recipes/" .. name .. ".lua"
  if not util.exists(path) then
    check(false, name .. ": recipes/" .. name .. ".lua is missing")
  else
    local out = tmp .. "/" .. name
    local argv = {[0] = path, "--output", out, "--overwrite"}
    for _, f in ipairs(flags) do argv[#argv + 1] = f end
    local saved = _G.arg
    _G.arg = argv
    local t0 = util.now()
    local ok, err = pcall(dofile, path)
    _G.arg = saved
    check(ok, name .. " runs: " .. tostring(err))
    if ok then
      io.stderr:write(string.format("recipe %s: %.1f s\n", name, util.now() - t0))
      local cfg = json.decode(util.read_file(out .. "/config.json")).quantization_config
      check(cfg and cfg.format == fmt, string.format("%s: format %s (want %s)", name, tostring(cfg and cfg.format), fmt))
      local f = ST.open(out .. "/model.safetensors")
      local have = {}
      for _, k in ipairs(f:names()) do have[k] = true end
      for _, k in ipairs(want) do check(have[k], name .. ": writes " .. k) end
      local m = llmc.quant.load(out)
      local a1 = m:forward(ids):argmax(-1):totable()[1]
      local same = 0
      for i = 1, #a0 do if a0[i] == a1[i] then same = same + 1 end end
      check(same >= #a0 - 3, string.format("%s: reloaded checkpoint keeps %d of %d greedy predictions", name, same, #a0))
    end
  end
  collectgarbage()
end

F.rmtree(tmp)
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
