--[[
recipes/nvfp4a16.lua — quantize a model to NVFP4A16: fp4 e2m1 weights with fp8 scales per group of 16 and an fp32 global scale per tensor (shared by q/k/v and gate/up), bf16 activations.
Data-free (llmc.oneshot with a QuantizationModifier); prints a sample
generation from the quantized model and a summary, writes a
compressed-tensors checkpoint.

  llmc recipes/nvfp4a16.lua                     # bundled tiny-llama -> out/tiny-llama-NVFP4A16
  llmc recipes/nvfp4a16.lua --model DIR --output DIR --overwrite
]]
local llmc = require "llmc"

local a = llmc.args{
  model = llmc.default_model(), output = "", overwrite = false,
  prompt = "Once upon a time", max_new_tokens = 24,
}
local output = a.output ~= "" and a.output or llmc.util.default_output(a.model, "NVFP4A16")

local model = llmc.oneshot{
  model = a.model,
  recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = "NVFP4A16", ignore = {"lm_head"}},
  output_dir = output,
  overwrite = a.overwrite,
}
llmc.util.print_sample(model, a.prompt, a.max_new_tokens)
