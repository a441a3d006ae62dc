--[[
recipes/fp8_block.lua — the main example: quantize a model to FP8_BLOCK
(fp8 e4m3 weights with one scale per 128x128 block, fp8 activations
quantized per group of 128 at run time) with llmc.oneshot, print a sample
generation from the quantized model and a summary, and write a
compressed-tensors checkpoint that vLLM and transformers load.

  llmc recipes/fp8_block.lua                         # bundled tiny-llama -> out/tiny-llama-FP8_BLOCK
  llmc recipes/fp8_block.lua --model DIR --output DIR --overwrite

No calibration data is needed: weights are quantized round-to-nearest,
activations dynamically.  lm_head stays in bf16 (as in llm-compressor's
examples).
]]
local llmc = require "llmc"

local a = llmc.args{
  model = llmc.default_model(), output = "", overwrite = false,
  prompt = "Once upon a time", max_new_tokens = 24,
}
local output = a.output ~= "" and a.output or llmc.util.default_output(a.model, "FP8_BLOCK")

local model = llmc.oneshot{
  model = a.model,
  recipe = llmc.modifiers.QuantizationModifier{
    targets = "Linear", scheme = "FP8_BLOCK", ignore = {"lm_head"},
  },
  output_dir = output,
  overwrite = a.overwrite,
}
llmc.util.print_sample(model, a.prompt, a.max_new_tokens)
