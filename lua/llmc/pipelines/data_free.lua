--[[
llmc.pipelines.data_free — the pipeline for recipes that need no
calibration data (llm-compressor's DataFreePipeline, algorithms.md §2.2):
no forward pass; the modifiers see calibration_start, one
sequential_epoch_end over every module of the model, calibration_end.

  require("llmc.pipelines.data_free").run(state, modifiers)

state.progress is a progress bar over the modules the modifiers will
quantize (modifiers advance it), closed at the end.
]]
local util = require "llmc.util"

local M = {name = "datafree"}

local function broadcast(state, modifiers, event)
  for _, m in ipairs(modifiers) do m:update_event(state, event) end
end

--- Run the events; `modifiers` are initialized.
function M.run(state, modifiers)
  local total = 0
  for _, m in ipairs(modifiers) do
    if m.progress_units then total = total + m:progress_units()
    elseif m._selected then total = total + #m._selected end
  end
  state.progress = util.progress(total, "quantizing", {quiet = state.quiet})
  local all = {}
  for _, mod in state.model:modules() do all[#all + 1] = mod end
  broadcast(state, modifiers, {type = "calibration_start"})
  broadcast(state, modifiers, {type = "sequential_epoch_end", modules = all})
  broadcast(state, modifiers, {type = "calibration_end"})
  state.progress:close()
end

return M
