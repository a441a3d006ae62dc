--[[
llmc.pipelines.sequential — llm-compressor's SequentialPipeline for
decoder models (algorithms.md §2.4): calibrate one decoder layer at a time.

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
the final norm and head as one more subgraph; calibration_end.  One progress
line per layer with its time and the peak tensor memory (unless state.quiet);
on a terminal, a bar over the layer's batches while they run.

Where the kept hidden states live (llm-compressor's sequential_offload_device,
read from state.args):
  "cpu" (default)  in memory: every batch's hidden states at once (twice
                   that while a layer's outputs replace its inputs)
  "disk"           in safetensors files under activation_offload_folder
                   (default: a fresh folder under $TMPDIR or /tmp): one file
                   per layer's generation of hidden states, written as each
                   batch's output is computed and read back one batch at a
                   time, so memory holds one layer's work on one batch.  The
                   rotary tables and masks are recomputed from the batch
                   instead of kept.  The files (and a folder the pipeline
                   created) are removed at the end, also after an error.
                   Giving activation_offload_folder alone implies "disk".
Results are bit-identical either way (the f32 bytes round-trip exactly).

MoE: every SparseMoeBlock counts the tokens its router sends to each expert
during the calibration pass (block.routed_tokens; not during the
propagation pass).  After each layer's calibration pass one line per MoE
block reports min / median / max tokens per expert and the experts that got
none (M.report_routing); the counts end up in state.moe_routing
({[block name] = {count of expert 0, count of expert 1, ...}}).
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

---------------------------------------------------------------------------
-- MoE routing counts
---------------------------------------------------------------------------

--- The SparseMoeBlocks under `root` (a module), in named_modules order.
function M.moe_blocks(root)
  local out = {}
  for _, m in root:modules() do
    if m.kind == "SparseMoeBlock" then out[#out + 1] = m end
  end
  return out
end

--- Start counting the tokens routed to each expert of `blocks` (the
--- forward pass adds into block.routed_tokens while the field is set).
function M.count_routing(blocks)
  for _, b in ipairs(blocks) do rawset(b, "routed_tokens", {}) end
end

--- Stop counting; returns {[block] = counts} (0-based expert e at e + 1).
function M.stop_routing(blocks)
  local out = {}
  for _, b in ipairs(blocks) do
    local c = rawget(b, "routed_tokens") or {}
    rawset(b, "routed_tokens", nil)
    local counts = {}
    for e = 1, b.num_experts do counts[e] = c[e] or 0 end
    out[b] = counts
  end
  return out
end

--- min, median, max of a list of counts and the 0-based ids of the zeros.
function M.routing_stats(counts)
  local s = {}
  local zero = {}
  for e, c in ipairs(counts) do
    s[#s + 1] = c
    if c == 0 then zero[#zero + 1] = e - 1 end
  end
  table.sort(s)
  local n = #s
  local median = n == 0 and 0 or (n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2)
  local total = 0
  for _, c in ipairs(s) do total = total + c end
  return {min = s[1] or 0, median = median, max = s[n] or 0, zero = zero, total = total, experts = n}
end

local function fmt_num(x)
  if math.type(x) == "integer" or x == math.floor(x) then return string.format("%d", math.tointeger(x) or x) end
  return string.format("%.1f", x)
end

--- Stop counting in `blocks`, store their counts in
--- state.moe_routing[block name] (0-based expert e at index e + 1) and
--- print one line per block (unless state.quiet).  Returns the blocks'
--- stats (M.routing_stats plus name).
function M.report_routing(state, blocks)
  local by_block = M.stop_routing(blocks)
  state.moe_routing = state.moe_routing or {}
  local all = M.all_experts(state)
  local out = {}
  for _, b in ipairs(blocks) do
    local counts = by_block[b]
    state.moe_routing[b.name] = counts
    local st = M.routing_stats(counts)
    st.name = b.name
    out[#out + 1] = st
    local tokens = b.top_k > 0 and st.total // b.top_k or 0
    local line = string.format("moe: %s: %d tokens x top-%d; routed tokens per expert min %s / median %s / max %s",
      b.name, tokens, b.top_k, fmt_num(st.min), fmt_num(st.median), fmt_num(st.max))
    if #st.zero == 0 then
      line = line .. string.format("; all %d experts routed to", st.experts)
    else
      local ids = {}
      for i, e in ipairs(st.zero) do ids[i] = tostring(e) end
      line = line .. string.format("; %d of %d experts got no routed token (%s): ", #st.zero, st.experts,
        table.concat(ids, ", "))
      if all then
        line = line .. "calibrated on every token anyway (moe_calibrate_all_experts)"
      else
        -- llm-compressor (algorithms.md §5.3) leaves such an expert
        -- unsolved with unset scales and says nothing; say it here
        line = line .. "they see no calibration input (moe_calibrate_all_experts = false), " ..
          "so they get no Hessian / activation statistics; set moe_calibrate_all_experts = true"
      end
    end
    report(state, "%s", line)
  end
  return out
end

---------------------------------------------------------------------------
-- kept hidden states on disk
---------------------------------------------------------------------------

--- Where the kept activations live: nil (memory) or the folder options
--- {folder = path or nil}.  Errors name the bad argument.
function M.offload_options(state)
  local a = state.args or {}
  local dev = a.sequential_offload_device
  if dev == nil then dev = state.sequential_offload_device end
  local folder = a.activation_offload_folder
  if folder == nil then folder = state.activation_offload_folder end
  if folder == false then folder = nil end
  if folder ~= nil and (type(folder) ~= "string" or folder == "") then
    error("sequential pipeline: activation_offload_folder must be a folder path (a string), got " ..
      tostring(folder), 0)
  end
  if dev == nil or dev == false or dev == "cpu" then
    if folder then return {folder = folder} end
    return nil
  elseif dev == "disk" then
    return {folder = folder}
  end
  error(string.format("sequential pipeline: sequential_offload_device = %s is not supported: calibration " ..
    "activations are kept on \"cpu\" (in memory, the default) or \"disk\" (activation_offload_folder, " ..
    "default a temporary folder)", tostring(dev)), 0)
end

local DiskCache = {}
DiskCache.__index = DiskCache
M.DiskCache = DiskCache

local serial = 0

--- A disk cache in `folder` (nil: a fresh folder under $TMPDIR or /tmp).
function DiskCache.new(folder)
  local W = require "llmc._stwriter"
  serial = serial + 1
  local tag = string.format("%d-%d", W.getpid(), serial)
  local self = setmetatable({W = W, tag = tag, gen = 0, files = {}}, DiskCache)
  if folder == nil then
    local base = os.getenv("TMPDIR")
    if base == nil or base == "" then base = "/tmp" end
    folder = base:gsub("/+$", "") .. "/llmc-activations-" .. tag
    self.default = true
  end
  self.folder = folder
  local existed = W.is_dir(folder)
  if not existed then
    if W.exists(folder) then
      error("sequential pipeline: activation_offload_folder '" .. folder .. "' exists and is not a folder", 0)
    end
    local ok, err = pcall(W.mkdir_p, folder)
    if not ok then
      error("sequential pipeline: cannot create activation_offload_folder '" .. folder .. "': " .. tostring(err), 0)
    end
    self.created = true
  end
  -- fail now, naming the folder, rather than after the first layer's work
  local probe = folder .. "/.llmc-probe-" .. tag
  local f, err = io.open(probe, "wb")
  if not f then
    self:cleanup()
    error("sequential pipeline: activation_offload_folder '" .. folder .. "' is not writable: " .. tostring(err), 0)
  end
  f:close()
  os.remove(probe)
  return self
end

--- Start the next generation of hidden states: `shapes[i]` is batch i's
--- shape (all f32).
function DiskCache:begin(shapes)
  self.gen = self.gen + 1
  local path = string.format("%s/llmc-act-%s-%d.safetensors", self.folder, self.tag, self.gen)
  local w = self.W.writer(path)
  for i, s in ipairs(shapes) do w:declare("h." .. i, "float32", s) end
  w:begin()   -- reserves the space: a full disk fails here, naming the file
  self.writer, self.writing = w, path
end

--- Write batch i's hidden states into the generation being written.
function DiskCache:put(i, t)
  self.writer:write("h." .. i, t)
end

--- Finish the generation being written: it becomes the one read from, and
--- the previous one is deleted.
function DiskCache:commit()
  self.writer:finish()
  self.writer = nil
  local old = self.reading
  self.reading, self.writing = self.writing, nil
  self.files[#self.files + 1] = self.reading
  if old then os.remove(old) end
end

--- Batch i's hidden states of the committed generation, as a tensor of
--- its own (the file is mapped only while it is copied, so the pages read
--- do not stay in the resident set).
function DiskCache:get(i)
  local S = require "llmc._safetensors"
  local f = S.open(self.reading)
  local v = f:get("h." .. i)
  local t = v:clone()
  v:release()
  f:close()
  return t
end

--- Remove every file this cache wrote (and its folder when it made it).
function DiskCache:cleanup()
  if self.writer then self.writer:abort(); self.writer = nil end
  for _, p in ipairs(self.files) do os.remove(p) end
  self.files = {}
  if self.created then
    pcall(self.W.rmtree, self.folder)
  end
end

---------------------------------------------------------------------------
-- the pipeline
---------------------------------------------------------------------------

-- modules after the decoder layers that a modifier still has to calibrate
-- (a targeted lm_head): the final norm and head run as one more subgraph
local function tail_modules(model, modifiers)
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
  return tail, rest
end

local function layer_done(state, li, n, t0, layer)
  -- the layer's compressed modules keep their codes only: no later pass
  -- reads the full-size fake weights (decompressed again when read)
  local quant = require "llmc.quant"
  for _, m in layer:modules() do quant.compact(m) end
  -- and its checkpoint pages leave the resident set: a layer read from the
  -- mapping would otherwise stay in RSS to the end (refaulted if read again)
  local st = rawget(state.model, "_st")
  if st then
    for _, m in layer:modules() do
      for _, p in ipairs(m._pnames) do st:drop_pages(m.name .. "." .. p) end
    end
  end
  -- temporaries that escaped to hooks are only freed by the collector,
  -- which does not see their bytes: collect once per layer so the peak
  -- stays at one layer's worth instead of growing with the depth
  collectgarbage()
  local T = require "llmc._tensor"
  local mem = T.memory()
  report(state, "sequential: layer %d/%d done in %.2f s (peak tensor memory %s)", li, n, util.now() - t0,
    util.fmt_bytes(mem.host_peak or 0))
end

-- a per-sample bar for one layer (terminals only: a log gets the layer line)
local function layer_bar(state, li, n, nbatches, propagate)
  return util.progress(nbatches * (propagate and 2 or 1), string.format("layer %d/%d", li, n),
                       {quiet = state.quiet, tty_only = true})
end

-- hidden states kept in memory
local function run_memory(state, modifiers, model, batches, propagate)
  local opts = {moe_all_experts = M.all_experts(state)}
  local items = {}
  for i, b in ipairs(batches) do
    local h, ctx = model:embed(b, opts)
    items[i] = {h = module.keep(h), ctx = ctx}
  end
  local n = #model.layers
  for li, layer in ipairs(model.layers) do
    local t0 = util.now()
    local blocks = M.moe_blocks(layer)
    local outs = {}
    local bar = layer_bar(state, li, n, #items, propagate)
    state.hooks_disabled = false
    M.count_routing(blocks)
    for i, it in ipairs(items) do
      local o = layer:forward(it.h, it.ctx)
      -- with propagate_error the next layer gets the second pass's outputs:
      -- drop these at once instead of holding a second copy of every batch
      if propagate then release(o) else outs[i] = module.keep(o) end
      bar:update(1, "calibrating")
    end
    bar:clear()   -- the modifiers print per-module lines next
    M.report_routing(state, blocks)
    local mods = {}
    for _, m in layer:modules() do mods[#mods + 1] = m end
    broadcast(state, modifiers, {type = "sequential_epoch_end", modules = mods, layer = li})
    if propagate then
      state.hooks_disabled = true
      for i, it in ipairs(items) do
        outs[i] = module.keep(layer:forward(it.h, it.ctx))
        bar:update(1, "propagating")
      end
      state.hooks_disabled = false
      bar:clear()
    end
    for i, it in ipairs(items) do
      release(it.h)
      it.h = outs[i]
    end
    layer_done(state, li, n, t0, layer)
  end
  local tail, rest = tail_modules(model, modifiers)
  if tail then
    state.hooks_disabled = false
    for _, it in ipairs(items) do release(model:head(it.h)) end
    broadcast(state, modifiers, {type = "sequential_epoch_end", modules = rest, layer = n + 1})
  end
  for _, it in ipairs(items) do
    release(it.h)
    release(it.ctx.cos); release(it.ctx.sin)
  end
  return rest
end

-- hidden states kept on disk (see the header)
local function run_disk(state, modifiers, model, batches, propagate, cache)
  local opts = {moe_all_experts = M.all_experts(state)}
  local function context(b) return (model:context(b, opts)) end
  local function drop(ctx) release(ctx.cos); release(ctx.sin) end
  -- embeddings: shapes first (the writer declares every tensor up front)
  local shapes = {}
  for i, b in ipairs(batches) do
    local ctx = context(b)
    shapes[i] = {ctx.batch, ctx.seq, model.dims.hidden}
    drop(ctx)
  end
  cache:begin(shapes)
  for i, b in ipairs(batches) do
    local h, ctx = model:embed(b, opts)
    cache:put(i, h)
    release(h); drop(ctx)
  end
  cache:commit()
  local n = #model.layers
  local function pass(layer, i, hooks)
    local ctx = context(batches[i])
    local h = cache:get(i)
    state.hooks_disabled = not hooks
    local o = layer:forward(h, ctx)
    state.hooks_disabled = false
    release(h); drop(ctx)
    return o
  end
  for li, layer in ipairs(model.layers) do
    local t0 = util.now()
    local blocks = M.moe_blocks(layer)
    if not propagate then cache:begin(shapes) end
    local bar = layer_bar(state, li, n, #batches, propagate)
    M.count_routing(blocks)
    for i = 1, #batches do
      local o = pass(layer, i, true)
      if not propagate then cache:put(i, o) end
      release(o)
      bar:update(1, "calibrating")
    end
    bar:clear()
    M.report_routing(state, blocks)
    local mods = {}
    for _, m in layer:modules() do mods[#mods + 1] = m end
    broadcast(state, modifiers, {type = "sequential_epoch_end", modules = mods, layer = li})
    if propagate then
      cache:begin(shapes)
      for i = 1, #batches do
        local o = pass(layer, i, false)
        cache:put(i, o)
        release(o)
        bar:update(1, "propagating")
      end
      bar:clear()
    end
    cache:commit()
    layer_done(state, li, n, t0, layer)
  end
  local tail, rest = tail_modules(model, modifiers)
  if tail then
    state.hooks_disabled = false
    for i = 1, #batches do
      local h = cache:get(i)
      release(model:head(h))
      release(h)
    end
    broadcast(state, modifiers, {type = "sequential_epoch_end", modules = rest, layer = n + 1})
  end
  return rest
end

function M.run(state, modifiers, data)
  local model = state.model
  if not model.layers or not model.embed then
    error("sequential pipeline: the model has no decoder layers to run one by one; use pipeline = \"basic\"", 0)
  end
  local off = M.offload_options(state)
  local batches = M.batches(data, state)
  local propagate = true
  if state.args and state.args.propagate_error == false then propagate = false end
  if state.propagate_error == false then propagate = false end

  broadcast(state, modifiers, {type = "calibration_start"})
  local rest
  if off then
    local cache = DiskCache.new(off.folder)
    report(state, "sequential: calibration activations offloaded to %s", cache.folder)
    local ok, err = pcall(run_disk, state, modifiers, model, batches, propagate, cache)
    cache:cleanup()
    if not ok then
      M.stop_routing(M.moe_blocks(model))
      state.hooks_disabled = false
      error(err, 0)
    end
    rest = err
  else
    local ok, err = pcall(run_memory, state, modifiers, model, batches, propagate)
    if not ok then
      M.stop_routing(M.moe_blocks(model))
      state.hooks_disabled = false
      error(err, 0)
    end
    rest = err
  end
  broadcast(state, modifiers, {type = "calibration_end", modules = rest})
end

return M
