--[[
recipes/fp8_static.lua — FP8 with STATIC activation scales: fp8 e4m3 weights
with one scale per tensor, and each Linear's input quantized to fp8 with one
scale per tensor calibrated on data (llm-compressor's FP8 preset: the running
max of |x| over every calibration token that reached the layer, /448); by
default also an fp8 KV cache (`k_scale` / `v_scale` per attention layer from
the post-RoPE keys and the values, compressed-tensors' kv_cache_scheme, which
vLLM uses with kv_cache_dtype="fp8").  Calibration data: the first `samples`
lines of the dataset (default the bundled calib_text.jsonl) truncated to
`seq_len` tokens, one decoder layer at a time.  Prints a sample generation and,
unless --no-compare, the perplexity of the fp model, FP8_DYNAMIC (per-token
scales computed at run time, no data) and this checkpoint on held-out lines
481-512 of calib_text.jsonl.

  llmc recipes/fp8_static.lua                       # bundled tiny-llama -> out/tiny-llama-FP8-static
  llmc recipes/fp8_static.lua --no-kv-cache          # static inputs only
  llmc recipes/fp8_static.lua --model DIR --output DIR --overwrite --dataset FILE --samples 256 --seq-len 512
]]
local llmc = require "llmc"

local a = llmc.args{
  model = llmc.default_model(), output = "", overwrite = false, dataset = "", samples = 256, seq_len = 512,
  kv_cache = true, quick = false, compare = true, prompt = "Once upon a time", max_new_tokens = 24,
}
if a.quick then a.samples, a.seq_len = 32, 128 end
local output = a.output ~= "" and a.output or llmc.util.default_output(a.model, "FP8-static")
local data = a.dataset ~= "" and a.dataset or llmc.bundled("datasets/calib_text.jsonl")

local kv = nil
if a.kv_cache then kv = {num_bits = 8, type = "float", strategy = "tensor", dynamic = false, symmetric = true} end
local model = llmc.oneshot{
  model = a.model,
  recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = "FP8", ignore = {"lm_head"},
                                               kv_cache_scheme = kv},
  dataset = "json", dataset_path = data, shuffle_calibration_samples = false,
  num_calibration_samples = a.dataset == "" and math.min(a.samples, 480) or a.samples, max_seq_length = a.seq_len,
  output_dir = output,
  overwrite = a.overwrite,
}
llmc.util.print_sample(model, a.prompt, a.max_new_tokens)

if a.compare then
  local ppl = llmc.eval.heldout_perplexity()
  local dyn = llmc.oneshot{model = a.model, quiet = true,
    recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = "FP8_DYNAMIC", ignore = {"lm_head"}}}
  print(string.format("perplexity on calib_text.jsonl lines 481-512 (256-token windows): fp %.3f, FP8_DYNAMIC %.3f, " ..
    "FP8 static%s %.3f", ppl(llmc.load(a.model)), ppl(dyn), a.kv_cache and " + fp8 KV cache" or "", ppl(model)))
end
