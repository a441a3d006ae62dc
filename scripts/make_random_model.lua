--[[
make_random_model.lua — write a random Hugging Face model directory
(config.json + model.safetensors, bf16) for one of llmc's architectures,
with llmc itself (no Python).  The weights depend only on (arch, seed,
config), so tests can regenerate a checkpoint and compare against reference
numbers computed once from it (fixtures/models/random/).

  llmc scripts/make_random_model.lua --arch mistral --out /tmp/rnd-mistral
  llmc scripts/make_random_model.lua --arch llama --preset bench-0.5b --out /tmp/llama-0.5b
  -- from Lua (the tests):
  local R = dofile(llmc.root() .. "/scripts/make_random_model.lua")
  R.write("qwen3", "/tmp/rnd-qwen3", {seed = 7})        -- returns the config table

Presets: "tiny" (the default: hidden 64, 2 layers, vocab 256; per-arch
options that exercise biases, q/k norms, sliding windows, rope scaling and
MoE routing) and "bench-0.5b" (llama: hidden 1024, 24 layers, 16 heads / 8
kv heads, intermediate 4608, vocab 32000, untied: 0.48 B parameters).
Weights: Linear ~ N(0, 1/in_features), embeddings ~ N(0, 1), norm weights
1 + 0.1 N(0, 1), biases 0.1 N(0, 1): activations of order one, so that
numerical comparisons are sensitive.
]]
local llmc = require "llmc"
local S = require "llmc._safetensors"
local util = require "llmc.util"

local M = {}

local json = util.json

local base = {
  hidden_act = "silu", hidden_size = 64, intermediate_size = 96, num_hidden_layers = 2,
  num_attention_heads = 4, num_key_value_heads = 2, vocab_size = 256, max_position_embeddings = 64,
  rms_norm_eps = 1e-6, rope_theta = 10000.0, tie_word_embeddings = false, torch_dtype = "bfloat16",
  bos_token_id = 1, eos_token_id = 2, initializer_range = 0.02, attention_dropout = 0.0, use_cache = true,
}

-- per-architecture tiny configs: each exercises what the architecture adds
M.tiny = {
  llama = {architectures = {"LlamaForCausalLM"}, model_type = "llama", attention_bias = false, mlp_bias = false,
    head_dim = 16, rope_scaling = {rope_type = "llama3", factor = 8.0, low_freq_factor = 1.0,
    high_freq_factor = 4.0, original_max_position_embeddings = 16}},
  mistral = {architectures = {"MistralForCausalLM"}, model_type = "mistral", sliding_window = 5, head_dim = 16},
  qwen2 = {architectures = {"Qwen2ForCausalLM"}, model_type = "qwen2", tie_word_embeddings = true,
    use_sliding_window = false, sliding_window = 32, max_window_layers = 2, max_position_embeddings = 8,
    rope_scaling = {type = "dynamic", factor = 2.0}},
  qwen3 = {architectures = {"Qwen3ForCausalLM"}, model_type = "qwen3", head_dim = 32, attention_bias = false,
    use_sliding_window = false, max_window_layers = 2, rope_theta = 1000000.0,
    rope_scaling = {rope_type = "yarn", factor = 4.0, original_max_position_embeddings = 16},
    max_position_embeddings = 64},
  qwen3_moe = {architectures = {"Qwen3MoeForCausalLM"}, model_type = "qwen3_moe", head_dim = 16,
    num_experts = 4, num_experts_per_tok = 2, moe_intermediate_size = 32, norm_topk_prob = true,
    decoder_sparse_step = 1, mlp_only_layers = {1}, use_sliding_window = false, max_window_layers = 2,
    attention_bias = false, num_hidden_layers = 2, tie_word_embeddings = true},
  mixtral = {architectures = {"MixtralForCausalLM"}, model_type = "mixtral", num_local_experts = 4,
    num_experts_per_tok = 2, head_dim = 16, sliding_window = json.null, rope_theta = 1000000.0},
}

M.presets = {
  ["bench-0.5b"] = {architectures = {"LlamaForCausalLM"}, model_type = "llama", hidden_size = 1024,
    intermediate_size = 4608, num_hidden_layers = 24, num_attention_heads = 16, num_key_value_heads = 8,
    head_dim = 64, vocab_size = 32000, max_position_embeddings = 4096, tie_word_embeddings = false,
    attention_bias = false, mlp_bias = false, rope_scaling = json.null},
}

--- The config of `arch` with `overrides` applied (a plain table).
function M.config(arch, overrides, preset)
  local spec = preset and M.presets[preset] or M.tiny[arch]
  if not spec then error("make_random_model: unknown arch/preset " .. tostring(preset or arch), 2) end
  local c = {}
  for k, v in pairs(base) do c[k] = v end
  for k, v in pairs(spec) do c[k] = v end
  for k, v in pairs(overrides or {}) do if k ~= "seed" then c[k] = v end end
  return c
end

--- Write the model directory `dir` (created) for `arch`; returns its config.
--- overrides: config keys, plus `seed` (default 1) and `preset`.
function M.write(arch, dir, overrides)
  overrides = overrides or {}
  local config = M.config(arch, overrides, overrides.preset)
  config.preset = nil
  local seed = overrides.seed or 1
  os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "'")
  util.write_file(dir .. "/config.json", json.encode(config, {indent = 2}) .. "\n")
  -- the tree says which parameters exist and their shapes
  local root = require("llmc.models").build(config)
  local nn = require("llmc.nn")
  local tensors, k = {}, 0
  for _, e in ipairs(nn.expected_params(root)) do
    local full, m, shape = e[1], e[2], e[4]
    if not (full == "lm_head.weight" and root.dims.tie) then
      k = k + 1
      local s = seed * 1000003 + k
      local t
      if m.kind == "RMSNorm" then
        t = llmc.randn(shape, {seed = s}) * 0.1 + 1.0
      elseif e[3] == "bias" then
        t = llmc.randn(shape, {seed = s}) * 0.1
      elseif m.kind == "Embedding" then
        t = llmc.randn(shape, {seed = s})
      else
        t = llmc.randn(shape, {seed = s}) * (1.0 / math.sqrt(m.in_features))
      end
      tensors[full] = t:to("bfloat16")
      t:release()
    end
  end
  S.save(dir .. "/model.safetensors", tensors)
  for _, t in pairs(tensors) do t:release() end
  util.write_file(dir .. "/generation_config.json",
    json.encode({bos_token_id = 1, eos_token_id = 2, _from_model_config = true}, {indent = 2}) .. "\n")
  return config
end

local function main(args)
  local a = {arch = "llama", out = "", preset = "", seed = 1}
  local i = 1
  while args[i] do
    local k = args[i]:match("^%-%-(.+)$")
    if not k or a[k] == nil or args[i + 1] == nil then error("make_random_model: bad argument '" .. args[i] .. "'", 0) end
    a[k] = args[i + 1]
    i = i + 2
  end
  if a.out == "" then error("usage: llmc scripts/make_random_model.lua --arch <arch> [--preset bench-0.5b] --out <dir>", 0) end
  local t0 = os.time()
  local cfg = M.write(a.arch, a.out, {preset = a.preset ~= "" and a.preset or nil, seed = tonumber(a.seed)})
  local model = require("llmc.models").load(a.out)
  print(string.format("wrote %s: %s, %d layers, %.1fM parameters (%d s)", a.out, cfg.model_type,
    cfg.num_hidden_layers, model:num_parameters() / 1e6, os.time() - t0))
end

if arg and arg[0] and arg[0]:match("make_random_model%.lua$") then main(arg) end

return M
