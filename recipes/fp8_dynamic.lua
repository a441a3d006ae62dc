--[[
recipes/fp8_dynamic.lua — quantize a model to FP8_DYNAMIC: fp8 e4m3 weights with one scale per output channel, fp8 activations quantized per token at run time.
Data-free (llmc.oneshot with a QuantizationModifier); prints a sample
generation from the quantized model and a summary, writes a
compressed-tensors checkpoint.

  llmc recipes/fp8_dynamic.lua                     # bundled tiny-llama -> out/tiny-llama-FP8_DYNAMIC
  llmc recipes/fp8_dynamic.lua --model DIR --output DIR --overwrite
]]
local llmc = require "llmc"

local a = llmc.args{
  model = llmc.default_model(), output = "", overwrite = false,
  prompt = "Once upon a time", max_new_tokens = 24,
}
local output = a.output ~= "" and a.output or llmc.util.default_output(a.model, "FP8_DYNAMIC")

local model = llmc.oneshot{
  model = a.model,
  recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = "FP8_DYNAMIC", ignore = {"lm_head"}},
  output_dir = output,
  overwrite = a.overwrite,
}
llmc.util.print_sample(model, a.prompt, a.max_new_tokens)
