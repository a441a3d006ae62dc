--[[
recipes/w8a8_int8_gptq.lua — quantize a model to INT8 W8A8 the way
llm-compressor's SmoothQuant + GPTQ example does: SmoothQuantModifier
(smoothing_strength 0.8) first migrates activation outliers into the q/k/v and
gate/up weights, then GPTQModifier quantizes every Linear but lm_head to
int8 per-channel weights with int8 per-token dynamic activations (preset
W8A8).  Calibration data: fixtures/datasets/calib_text.jsonl, the first
`samples` lines in file order, truncated to `seq_len` tokens (--dataset FILE
calibrates on a .jsonl/.json/.csv/.txt file or folder instead).  With the
default "independent" pipeline each modifier makes its own sequential pass, so
GPTQ's Hessians come from the smoothed model (algorithms.md §2.1).  Writes a
compressed-tensors checkpoint ("int-quantized"), prints a sample generation
and, unless --no-compare, the perplexity of the fp model, RTN W8A8 and
SmoothQuant + GPTQ W8A8 on held-out lines 481-512 of the same file.

  llmc recipes/w8a8_int8_gptq.lua              # bundled tiny-llama -> out/tiny-llama-W8A8-SQ-GPTQ
  llmc recipes/w8a8_int8_gptq.lua --quick      # 32 samples x 128 tokens
  llmc recipes/w8a8_int8_gptq.lua --model DIR --output DIR --overwrite --dataset FILE --samples 128 --seq-len 256
  llmc recipes/w8a8_int8_gptq.lua --smoothing-strength 0.5
]]
local llmc = require "llmc"

local a = llmc.args{
  model = llmc.default_model(), output = "", overwrite = false, dataset = "", samples = 256, seq_len = 512,
  quick = false, compare = true, pipeline = "independent", smoothing_strength = 0.8,
  prompt = "Once upon a time", max_new_tokens = 24,
}
if a.quick then a.samples, a.seq_len = 32, 128 end
local output = a.output ~= "" and a.output or llmc.util.default_output(a.model, "W8A8-SQ-GPTQ")
local data = a.dataset ~= "" and a.dataset or llmc.bundled("datasets/calib_text.jsonl")

local model = llmc.oneshot{
  model = a.model,
  recipe = {
    llmc.modifiers.SmoothQuantModifier{smoothing_strength = a.smoothing_strength},
    llmc.modifiers.GPTQModifier{targets = "Linear", scheme = "W8A8", ignore = {"lm_head"}},
  },
  dataset = "json", dataset_path = data, shuffle_calibration_samples = false,
  num_calibration_samples = a.dataset == "" and math.min(a.samples, 480) or a.samples, max_seq_length = a.seq_len,
  pipeline = a.pipeline,
  output_dir = output,
  overwrite = a.overwrite,
}
llmc.util.print_sample(model, a.prompt, a.max_new_tokens)

if a.compare then
  local ppl = llmc.eval.heldout_perplexity()
  local rtn = llmc.oneshot{model = a.model, quiet = true,
    recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = "W8A8", ignore = {"lm_head"}}}
  print(string.format("perplexity on calib_text.jsonl lines 481-512 (256-token windows): fp %.3f, RTN W8A8 %.3f, " ..
    "SmoothQuant + GPTQ W8A8 %.3f", ppl(llmc.load(a.model)), ppl(rtn), ppl(model)))
end
