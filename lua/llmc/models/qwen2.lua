--[[
llmc.models.qwen2 — Qwen2ForCausalLM: the Llama decoder with biases on
q/k/v_proj (not o_proj) and Qwen's sliding-window rule (use_sliding_window
and layer index >= max_window_layers, unless config.layer_types says).
]]
local nn = require "llmc.nn"

local M = {}

--- Qwen's rule for which layers use a sliding window (shared with qwen3*).
function M.sliding_window(config, i)
  local w = nn.cv(config.sliding_window)
  if nn.cv(config.use_sliding_window) and w and i >= (nn.cv(config.max_window_layers) or 0) then
    return nn.toint(w, "sliding_window")
  end
  return 0
end

function M.build(config)
  return nn.build_causal_lm(config, {
    prefix = "Qwen2", qkv_bias = true, o_bias = false, sliding_window = M.sliding_window,
  })
end

return M
