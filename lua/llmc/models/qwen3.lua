--[[
llmc.models.qwen3 — Qwen3ForCausalLM: the Llama decoder plus per-head
RMSNorms q_norm / k_norm (over head_dim, before the rotary embedding);
attention biases per config.attention_bias; Qwen's sliding-window rule.
]]
local nn = require "llmc.nn"
local qwen2 = require "llmc.models.qwen2"

local M = {}

function M.build(config)
  return nn.build_causal_lm(config, {prefix = "Qwen3", qk_norm = true, sliding_window = qwen2.sliding_window})
end

return M
