--[[
recipes/model_free_fp8.lua — FP8_BLOCK straight from the safetensors files
with llmc.model_free_ptq: no model is built, tensors stream shard by shard
(constant memory, any architecture).  As upstream, lm_head and the
embeddings are quantized unless ignored, so they are ignored here.

  llmc recipes/model_free_fp8.lua              # bundled tiny-llama -> out/tiny-llama-FP8_BLOCK-model-free
  llmc recipes/model_free_fp8.lua --model DIR --output DIR --scheme FP8_DYNAMIC --overwrite
]]
local llmc = require "llmc"

local a = llmc.args{
  model = llmc.default_model(), output = "", overwrite = false, scheme = "FP8_BLOCK", max_workers = 1,
}
local output = a.output ~= "" and a.output or llmc.util.default_output(a.model, a.scheme .. "-model-free")

llmc.model_free_ptq{
  model = a.model,
  output_dir = output,
  scheme = a.scheme,
  ignore = {"lm_head", "re:.*embed_tokens$"},
  max_workers = a.max_workers,
  overwrite = a.overwrite,
  errors = true,             -- the summary's per-kind error table (one more pass per tensor)
}
