--[[
recipes/w4a16_rtn.lua — quantize a model to W4A16: int4 weights, one scale per group of 128, bf16 activations, round-to-nearest (no GPTQ), packed 8 per int32.
Data-free (llmc.oneshot with a QuantizationModifier); prints a sample
generation from the quantized model and a summary, writes a
compressed-tensors checkpoint.

  llmc recipes/w4a16_rtn.lua                     # bundled tiny-llama -> out/tiny-llama-W4A16
  llmc recipes/w4a16_rtn.lua --model DIR --output DIR --overwrite
]]
local llmc = require "llmc"

local a = llmc.args{
  model = llmc.default_model(), output = "", overwrite = false,
  prompt = "Once upon a time", max_new_tokens = 24,
}
local output = a.output ~= "" and a.output or llmc.util.default_output(a.model, "W4A16")

local model = llmc.oneshot{
  model = a.model,
  recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = "W4A16", ignore = {"lm_head"}},
  output_dir = output,
  overwrite = a.overwrite,
}
llmc.util.print_sample(model, a.prompt, a.max_new_tokens)
