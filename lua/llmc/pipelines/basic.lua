--[[
llmc.pipelines.basic — llm-compressor's BasicPipeline (algorithms.md §2.2):
calibration_start, every calibration batch through the whole (uncompressed)
model with the modifiers' hooks, sequential_epoch_end over every module
(GPTQ solves them all here, each from the uncompressed model's
activations), calibration_end.  Simple, but every Hessian is alive at once
and no layer sees its predecessors' quantization error.

  require("llmc.pipelines.basic").run(state, modifiers, dataset)
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
  for _, b in ipairs(batches) do
    local logits = model:forward(b, {moe_all_experts = seq.all_experts(state)})
    logits:release()
  end
  local all = {}
  for _, m in model:modules() do all[#all + 1] = m end
  broadcast(state, modifiers, {type = "sequential_epoch_end", modules = all})
  broadcast(state, modifiers, {type = "calibration_end", modules = all})
  if not state.quiet then
    io.stderr:write(string.format("basic: %d batches calibrated and solved in %.2f s (peak tensor memory %s)\n",
      #batches, util.now() - t0, util.fmt_bytes(T.memory().host_peak or 0)))
  end
end

return M
