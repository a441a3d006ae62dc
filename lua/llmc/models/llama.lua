--[[
llmc.models.llama — LlamaForCausalLM and MistralForCausalLM (the same
decoder; Mistral adds a sliding attention window when config.sliding_window
is set).  Names and layout follow transformers' modeling_llama.py /
modeling_mistral.py: q/k/v/o_proj (bias: config.attention_bias), a
SiLU-gated MLP (bias: config.mlp_bias), pre-norm RMSNorm, rotary embeddings
(default / linear / dynamic / llama3 / yarn scaling).

  local model = llmc.load("fixtures/models/tiny-llama")   -- dispatches here on model_type
]]
local nn = require "llmc.nn"

local M = {}

function M.build(config)
  local mistral = nn.cv(config.model_type) == "mistral"
  return nn.build_causal_lm(config, {
    prefix = mistral and "Mistral" or "Llama",
    sliding_window = mistral and function(c)
      local w = nn.cv(c.sliding_window)
      return w and nn.toint(w, "sliding_window") or 0
    end or nil,
  })
end

return M
