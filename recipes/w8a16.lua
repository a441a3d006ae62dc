--[[
recipes/w8a16.lua — quantize a model to W8A16: int8 weights, one scale per group of 128 input columns, bf16 activations (pack-quantized).
Data-free (llmc.oneshot with a QuantizationModifier); prints a sample
generation from the quantized model and a summary, writes a
compressed-tensors checkpoint.

  llmc recipes/w8a16.lua                     # bundled tiny-llama -> out/tiny-llama-W8A16
  llmc recipes/w8a16.lua --model DIR --output DIR --overwrite
]]
local llmc = require "llmc"

local a = llmc.args{
  model = llmc.default_model(), output = "", overwrite = false,
  prompt = "Once upon a time", max_new_tokens = 24,
}
local output = a.output ~= "" and a.output or llmc.util.default_output(a.model, "W8A16")

local model = llmc.oneshot{
  model = a.model,
  recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = "W8A16", ignore = {"lm_head"}},
  output_dir = output,
  overwrite = a.overwrite,
}
llmc.util.print_sample(model, a.prompt, a.max_new_tokens)
