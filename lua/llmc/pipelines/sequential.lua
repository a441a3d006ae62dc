--[[
llmc.pipelines.sequential — llm-compressor's SequentialPipeline for
decoder models (algorithms.md §2.2): calibrate one decoder layer at a time.

  require("llmc.pipelines.sequential").run(state, modifiers, dataset)

Steps: calibration_start; embed every calibration batch (hidden states and
their contexts are kept); for each decoder layer: run every batch through
it (the modifiers' hooks see the layer's inputs), send
sequential_epoch_end with the layer's modules (GPTQ solves them here), then,
with hooks disabled (state.hooks_disabled), rerun the batches through the
now-compressed layer and pass those outputs on (propagate_error = true, the
default; false passes on the calibration-pass outputs instead, which makes
every layer see the uncompressed model's activations, like the basic
pipeline); then, when a modifier targets a module after the layers (lm_head),
the final norm and head as one more subgraph; calibration_end.  One progress line per layer with its time and
the peak tensor memory (unless state.quiet).
]]
local util = require "llmc.util"
local module = require "llmc.module"

local M = {name = "sequential"}

-- the hidden states this pipeline keeps are its own: release their bytes
-- as soon as they are replaced (module.free would skip kept tensors)
local function release(t) if t ~= nil then t:release() end end

local function broadcast(state, modifiers, event)
  for _, m in ipairs(modifiers) do m:update_event(state, event) end
end

--- Calibration batches of a dataset (errors name what is wrong).
function M.batches(data, state)
  if data == nil then error("calibration pipeline: no calibration dataset (pass dataset = ...)", 0) end
  if type(data) ~= "table" or not data.batches then
    error("calibration pipeline: the dataset must be an llmc.datasets Dataset", 0)
  end
  if (data.n or #data) == 0 then error("calibration pipeline: the calibration dataset is empty (0 samples)", 0) end
  local bs = (state.args and state.args.batch_size) or data.batch_size or 1
  local out = {}
  for b in data:batches(bs) do out[#out + 1] = b end
  return out
end

--- MoE: run every expert on every token during calibration (their outputs
--- still weighted by the router) so that each expert gets a Hessian;
--- llm-compressor's moe_calibrate_all_experts, true by default.
function M.all_experts(state)
  return not (state.args and state.args.moe_calibrate_all_experts == false)
end

local function report(state, fmt, ...)
  if not state.quiet then io.stderr:write(string.format(fmt, ...), "\n") end
end

function M.run(state, modifiers, data)
  local T = require "llmc._tensor"
  local model = state.model
  if not model.layers or not model.embed then
    error("sequential pipeline: the model has no decoder layers to run one by one; use pipeline = \"basic\"", 0)
  end
  local batches = M.batches(data, state)
  local propagate = true
  if state.args and state.args.propagate_error == false then propagate = false end
  if state.propagate_error == false then propagate = false end

  broadcast(state, modifiers, {type = "calibration_start"})
  local items = {}
  for i, b in ipairs(batches) do
    local h, ctx = model:embed(b, {moe_all_experts = M.all_experts(state)})
    items[i] = {h = module.keep(h), ctx = ctx}
  end
  local n = #model.layers
  for li, layer in ipairs(model.layers) do
    local t0 = util.now()
    local outs = {}
    state.hooks_disabled = false
    for i, it in ipairs(items) do outs[i] = module.keep(layer:forward(it.h, it.ctx)) end
    local mods = {}
    for _, m in layer:modules() do mods[#mods + 1] = m end
    broadcast(state, modifiers, {type = "sequential_epoch_end", modules = mods, layer = li})
    if propagate then
      state.hooks_disabled = true
      for i, it in ipairs(items) do
        local o = module.keep(layer:forward(it.h, it.ctx))
        release(outs[i])
        outs[i] = o
      end
      state.hooks_disabled = false
    end
    for i, it in ipairs(items) do
      release(it.h)
      it.h = outs[i]
    end
    -- temporaries that escaped to hooks are only freed by the collector,
    -- which does not see their bytes: collect once per layer so the peak
    -- stays at one layer's worth instead of growing with the depth
    collectgarbage()
    local mem = T.memory()
    report(state, "sequential: layer %d/%d done in %.2f s (peak tensor memory %s)", li, n, util.now() - t0,
      util.fmt_bytes(mem.host_peak or 0))
  end
  -- modules after the decoder layers (a targeted lm_head): one more
  -- subgraph, the final norm and the head, when a modifier still has work there
  local in_layers = {}
  for _, layer in ipairs(model.layers) do
    for _, m in layer:modules() do in_layers[m] = true end
  end
  local tail = false
  for _, mod in ipairs(modifiers) do
    for _, s in ipairs(mod._selected or {}) do
      if not in_layers[s.module] and not (mod._done and mod._done[s.name]) and s.module.kind == "Linear" then
        tail = true
      end
    end
  end
  local rest = {}
  for _, m in model:modules() do if not in_layers[m] then rest[#rest + 1] = m end end
  if tail then
    state.hooks_disabled = false
    for _, it in ipairs(items) do release(model:head(it.h)) end
    broadcast(state, modifiers, {type = "sequential_epoch_end", modules = rest, layer = n + 1})
  end
  for _, it in ipairs(items) do
    release(it.h)
    release(it.ctx.cos); release(it.ctx.sin)
  end
  broadcast(state, modifiers, {type = "calibration_end", modules = rest})
end

return M
