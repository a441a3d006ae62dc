--[[
llmc.pipelines.basic — llm-compressor's BasicPipeline (algorithms.md §2.3):
calibration_start, every calibration batch through the whole (uncompressed)
model with the modifiers' hooks, sequential_epoch_end over every module
(GPTQ solves them all here, each from the uncompressed model's
activations), calibration_end.  Simple, but every Hessian is alive at once
and no layer sees its predecessors' quantization error.

  require("llmc.pipelines.basic").run(state, modifiers, dataset)

MoE: the tokens routed to each expert are counted over the calibration
pass and reported per block before the modifiers solve (one line each,
unless state.quiet), and stored in state.moe_routing, as the sequential
pipeline does.  The basic pipeline keeps no activations between batches,
so sequential_offload_device / activation_offload_folder do not apply.
]]
local util = require "llmc.util"
local seq = require "llmc.pipelines.sequential"

local M = {name = "basic"}

local function broadcast(state, modifiers, event)
  for _, m in ipairs(modifiers) do m:update_event(state, event) end
end

function M.run(state, modifiers, data)
  local T = require "llmc._tensor"
  local model = state.model
  local batches = seq.batches(data, state)
  broadcast(state, modifiers, {type = "calibration_start"})
  local t0 = util.now()
  state.hooks_disabled = false
  local blocks = seq.moe_blocks(model)
  seq.count_routing(blocks)
  local bar = util.progress(#batches, "calibrating", {quiet = state.quiet, tty_only = true})
  local ok, err = pcall(function()
    for _, b in ipairs(batches) do
      local logits = model:forward(b, {moe_all_experts = seq.all_experts(state)})
      logits:release()
      bar:update(1)
    end
  end)
  bar:clear()
  if not ok then
    seq.stop_routing(blocks)
    error(err, 0)
  end
  seq.report_routing(state, blocks)
  local all = {}
  for _, m in model:modules() do all[#all + 1] = m end
  -- nothing runs the model again: a solved module can drop its fake weight
  -- at once (see quant.compact) instead of every one piling up until the end
  state.compact_when_solved = true
  broadcast(state, modifiers, {type = "sequential_epoch_end", modules = all})
  state.compact_when_solved = nil
  broadcast(state, modifiers, {type = "calibration_end", modules = all})
  if not state.quiet then
    io.stderr:write(string.format("basic: %d batches calibrated and solved in %.2f s (peak tensor memory %s)\n",
      #batches, util.now() - t0, util.fmt_bytes(T.memory().host_peak or 0)))
  end
end

return M
