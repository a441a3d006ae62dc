--[[
llmc.models.qwen3_moe — Qwen3MoeForCausalLM: Qwen3 attention (q_norm/k_norm)
and, in layer i, a sparse MoE block `mlp` (router `mlp.gate`, experts
`mlp.experts.<e>.{gate,up,down}_proj`) when i is not in mlp_only_layers and
(i + 1) % decoder_sparse_step == 0, else a dense Qwen3MoeMLP.  Routing
(transformers 4.x Qwen3MoeSparseMoeBlock): softmax of the router logits in
f32, top num_experts_per_tok, renormalised when norm_topk_prob.
Parameter names are the checkpoints' (per-expert Linears), which is also
how llm-compressor targets and writes them.
]]
local nn = require "llmc.nn"
local qwen2 = require "llmc.models.qwen2"

local M = {}

function M.build(config)
  local cv = nn.cv
  local only = {}
  for _, i in ipairs(cv(config.mlp_only_layers) or {}) do only[math.tointeger(i)] = true end
  local E = nn.toint(cv(config.num_experts) or 0, "num_experts")
  local step = nn.toint(cv(config.decoder_sparse_step) or 1, "decoder_sparse_step")
  return nn.build_causal_lm(config, {
    prefix = "Qwen3Moe", qk_norm = true, sliding_window = qwen2.sliding_window,
    mlp = function(ln, i, c, d)
      if not only[i] and E > 0 and (i + 1) % step == 0 then
        return "mlp", nn.new_moe(ln .. ".mlp", d.hidden, {
          num_experts = E, top_k = nn.toint(cv(c.num_experts_per_tok), "num_experts_per_tok"),
          norm_topk_prob = cv(c.norm_topk_prob) and true or false,
          moe_intermediate = nn.toint(cv(c.moe_intermediate_size), "moe_intermediate_size"),
          class_name = "Qwen3MoeSparseMoeBlock", expert_class = "Qwen3MoeMLP",
        })
      end
      return "mlp", nn.new_mlp(ln .. ".mlp", d.hidden, d.intermediate, false, "Qwen3MoeMLP")
    end,
  })
end

return M
