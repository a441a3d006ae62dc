--[[
llmc.modifiers.wanda — WandaPruningModifier: one-shot pruning by
|W| * sqrt(mean of x^2 per input column) (algorithms.md §6.2), under
llm-compressor's arguments.

  local m = llmc.modifiers.WandaPruningModifier{sparsity = 0.5, ignore = {"re:.*lm_head"}}
  llmc.oneshot{model = model, recipe = m, dataset = "fixtures/datasets/calib_text.jsonl"}

Arguments: the SparsityModifierBase ones (see llmc.modifiers.sparsegpt):
sparsity (required), sparsity_profile, mask_structure ("0:0"; "N:M" prunes
the N smallest of every M consecutive weights of a row), owl_m, owl_lmbda,
sequential_update, targets ({"Linear"}), ignore ({}).  Unstructured: each row
loses its int(in_features * sparsity) smallest metrics (ties: the lower
column).  No weight update.  Lifecycle, hooks, logging and results as
SparseGPTModifier (the statistic is the per-column sum of x^2 over all
tokens divided by the number of sequences).
]]
local common = require("llmc.modifiers.sparsegpt").common

return common.define("WandaPruningModifier", "colsq", {})
