--[[
recipes/w4a16_gptq.lua — quantize a model to W4A16 with GPTQ: int4 weights,
one scale per group of 128, bf16 activations, packed 8 per int32; the
rounding is chosen by GPTQ from calibration data (fixtures/datasets/
calib_text.jsonl, the first `samples` lines in file order, truncated to
`seq_len` tokens) through the sequential pipeline (one decoder layer at a
time; --dataset FILE calibrates on a .jsonl/.json/.csv/.txt file or folder
instead).  Writes a compressed-tensors checkpoint, prints a sample generation
and, unless --no-compare, the perplexity of the fp model, RTN W4A16 and
GPTQ W4A16 on held-out lines 481-512 of the same file.

  llmc recipes/w4a16_gptq.lua                 # bundled tiny-llama -> out/tiny-llama-W4A16-GPTQ
  llmc recipes/w4a16_gptq.lua --quick         # 32 samples x 128 tokens
  llmc recipes/w4a16_gptq.lua --model DIR --output DIR --overwrite --dataset FILE --samples 128 --seq-len 256
]]
local llmc = require "llmc"

local a = llmc.args{
  model = llmc.default_model(), output = "", overwrite = false, dataset = "", samples = 256, seq_len = 512,
  quick = false, compare = true, pipeline = "sequential",
  prompt = "Once upon a time", max_new_tokens = 24,
}
if a.quick then a.samples, a.seq_len = 32, 128 end
local output = a.output ~= "" and a.output or llmc.util.default_output(a.model, "W4A16-GPTQ")
local data = a.dataset ~= "" and a.dataset or llmc.bundled("datasets/calib_text.jsonl")

local model = llmc.oneshot{
  model = a.model,
  recipe = llmc.modifiers.GPTQModifier{targets = "Linear", scheme = "W4A16", ignore = {"lm_head"}},
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
    recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = "W4A16", ignore = {"lm_head"}}}
  print(string.format("perplexity on calib_text.jsonl lines 481-512 (256-token windows): fp %.3f, RTN W4A16 %.3f, GPTQ W4A16 %.3f",
    ppl(llmc.load(a.model)), ppl(rtn), ppl(model)))
end
