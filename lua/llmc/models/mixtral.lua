--[[
llmc.models.mixtral — MixtralForCausalLM: Mistral attention and, in every
layer, `block_sparse_moe` with router `block_sparse_moe.gate` and experts
`block_sparse_moe.experts.<e>.{w1,w2,w3}` (w2(silu(w1 x) * w3 x)), the
checkpoint names of transformers 4.x.  Routing: softmax in f32, top
num_experts_per_tok, always renormalised.
]]
local nn = require "llmc.nn"

local M = {}

function M.build(config)
  local cv = nn.cv
  return nn.build_causal_lm(config, {
    prefix = "Mixtral",
    sliding_window = function(c)
      local w = cv(c.sliding_window)
      return w and nn.toint(w, "sliding_window") or 0
    end,
    mlp = function(ln, _, c, d)
      return "block_sparse_moe", nn.new_moe(ln .. ".block_sparse_moe", d.hidden, {
        num_experts = nn.toint(cv(c.num_local_experts), "num_local_experts"),
        top_k = nn.toint(cv(c.num_experts_per_tok), "num_experts_per_tok"),
        norm_topk_prob = true,
        moe_intermediate = d.intermediate,
        class_name = "MixtralSparseMoeBlock", expert_class = "MixtralBlockSparseTop2MLP",
        expert_names = {gate = "w1", up = "w3", down = "w2", order = {"gate", "down", "up"}},
      })
    end,
  })
end

return M
