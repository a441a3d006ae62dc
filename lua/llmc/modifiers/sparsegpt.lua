--[[
llmc.modifiers.sparsegpt — SparseGPTModifier: one-shot pruning with the
SparseGPT solve (algorithms.md §6.1), under llm-compressor's arguments; the
shared SparsityModifierBase logic also serves WandaPruningModifier
(llmc.modifiers.wanda, §6.2).

  local m = llmc.modifiers.SparseGPTModifier{sparsity = 0.5, mask_structure = "2:4",
                                             targets = {"re:model.layers.\\d*$"}}
  llmc.oneshot{model = model, recipe = m, dataset = "fixtures/datasets/calib_text.jsonl",
               num_calibration_samples = 256, max_seq_length = 512}

Arguments (llm-compressor's names, order and defaults): sparsity (required:
a fraction, or a list with one value per target layer), sparsity_profile
(nil; "owl" is refused: OWL is not part of llmc), mask_structure ("0:0" =
unstructured, "N:M" prunes N of every M consecutive weights of a row and
ignores sparsity), owl_m / owl_lmbda, sequential_update (deprecated, stored
as true when given), targets ({"Linear"}: the "target layers"; every Linear
inside one — itself included — is pruned), ignore ({}), block_size (128),
dampening_frac (0.01), preserve_sparsity_mask (false), offload_hessians
(ignored: Hessians live on the CPU).  requires_calibration_data is true.

`ignore` is matched against each Linear's own name.  (llm-compressor
matches the name "<target>.<sub>", which for a targeted Linear itself ends
with a dot, so there a plain "lm_head" does not match and only a regex like
"re:.*lm_head" does; llmc ignores lm_head either way.)  A pruned lm_head
tied to the embedding stays tied: both get the pruned matrix, as in
llm-compressor, where they are one tensor.

Lifecycle:
  initialize            pick the target layers (model order) and the Linears
                        in them; check a sparsity list against their count
  calibration_start     forward pre-hooks: each Linear's input goes into its
                        statistics (SparseGPT: the GPTQ Hessian; Wanda: the
                        per-column sum of x^2), one per fused set (q/k/v,
                        gate/up read the same tensor); skipped while
                        state.hooks_disabled (the pipeline's propagation pass)
  sequential_epoch_end  prune the given modules (the layer just calibrated);
                        the weight is replaced by the pruned one, so later
                        layers calibrate on the pruned model; one log line
                        per module (sparsity, loss, samples, time)
  calibration_end       remove the hooks, prune what is left
  finalize              no module received any input: an error; some did
                        not (e.g. an expert never routed): a warning, they
                        stay dense (llm-compressor skips them silently)
Results: state.sparsity = {{name, zeros, numel, loss, seconds, nsamples}, ...}.
Saving needs nothing special: compressed-tensors 0.19 does not encode
sparsity, the zeros live in the (possibly later quantized) weight.
]]
local util = require "llmc.util"
local json = util.json
local base = require "llmc.modifiers.base"
local modifiers = require "llmc.modifiers"
local module = require "llmc.module"
local quant = require "llmc.quant"

local check = base.check

local function where_text(where)
  return type(where) == "function" and where() or where
end

local function check_sparsity(v, where)
  local function one(x, w)
    x = check.number(x, w)
    if not (x >= 0 and x <= 1) then error(where_text(w) .. ": must be a fraction in [0, 1], got " .. tostring(x), 0) end
    return x
  end
  if type(v) == "table" then
    if util.is_omap(v) then error(where_text(where) .. ": expected a number or a list of numbers", 0) end
    local out = json.array({})
    for i, x in ipairs(v) do out[i] = one(x, (where_text(where) or "sparsity") .. "[" .. i .. "]") end
    if #out == 0 then error(where_text(where) .. ": an empty list", 0) end
    return out
  end
  return one(v, where)
end

local function check_profile(v, where)
  v = check.string(v, where)
  if v:lower() ~= "owl" then error(where_text(where) .. ": choose the profile from [\"owl\"] (got " .. v .. ")", 0) end
  return v:lower()
end

local function check_mask(v, where)
  v = check.string(v, where)
  local ok, err = pcall(require("llmc._sparsegpt").parse_mask, v)
  if not ok then error(where_text(where) .. ": " .. tostring(err):gsub("^mask_structure ", ""), 0) end
  return v
end

local function check_positive(v, where)
  v = check.integer(v, where)
  if v < 1 then error(where_text(where) .. ": must be a positive integer", 0) end
  return v
end

local function check_frac(v, where)
  v = check.number(v, where)
  if v < 0 then error(where_text(where) .. ": must be >= 0", 0) end
  return v
end

local function deprecated_true(v, where)
  check.boolean(v, where)
  return true   -- llm-compressor: sequential_update=False is no longer supported
end

local S = {}

--- The SparsityModifierBase fields, then `extra` (the subclass's own).
function S.fields(extra)
  local f = {
    {"requires_calibration_data", true, check.boolean},
    {"sparsity", nil, check_sparsity},
    {"sparsity_profile", nil, check_profile},
    {"mask_structure", "0:0", check_mask},
    {"owl_m", nil, check.integer},
    {"owl_lmbda", nil, check.number},
    {"sequential_update", false, deprecated_true},
    {"targets", json.array({"Linear"}), check.targets},
    {"ignore", json.array({}), check.targets},
  }
  for _, e in ipairs(extra or {}) do f[#f + 1] = e end
  return f
end

function S.validate(self, where)
  local function loc(field)
    if type(where) == "function" then return where(field) end
    return (where and (where .. ": ") or "") .. self.name .. "." .. field
  end
  if self.sparsity == nil then
    error(loc("sparsity") .. ": required (a fraction such as 0.5, or a list with one value per target layer)", 0)
  end
  local has = {self.owl_m ~= nil, self.owl_lmbda ~= nil, self.sparsity_profile == "owl"}
  if (has[1] or has[2] or has[3]) and not (has[1] and has[2] and has[3]) then
    error(loc("sparsity_profile") .. ": give all of sparsity_profile = \"owl\", owl_m and owl_lmbda, or none", 0)
  end
  if self.sparsity_profile == "owl" then
    error(loc("sparsity_profile") .. ": \"owl\" (outlier-weighted layer-wise sparsity) is not available in llmc; " ..
          "give per-layer values as a sparsity list instead", 0)
  end
  self._prune_n, self._prune_m = require("llmc._sparsegpt").parse_mask(self.mask_structure)
  if self._prune_n > 0 and self.block_size and self.block_size % self._prune_m ~= 0 then
    error(loc("block_size") .. string.format(": %d must be a multiple of M = %d of mask_structure %s " ..
          "(N:M groups are formed inside a column block)", self.block_size, self._prune_m, self.mask_structure), 0)
  end
  if self._prune_n == 0 and self.stat_kind == "hessian" then
    local function below_one(x, f)
      if x >= 1 then error(loc(f) .. ": SparseGPT needs a sparsity below 1 (got " .. tostring(x) .. ")", 0) end
    end
    if type(self.sparsity) == "table" then for _, x in ipairs(self.sparsity) do below_one(x, "sparsity") end
    else below_one(self.sparsity, "sparsity") end
  end
end

function S.calibration_reason(self)
  return self.name .. " needs calibration data: its " ..
         (self.stat_kind == "hessian" and "Hessians are" or "input statistics are") .. " accumulated from layer inputs"
end

function S.on_initialize(self, state)
  local model = state.model
  -- target layers in model order; every Linear inside (itself included)
  local layers = {}
  for name, m in model:modules() do
    if name ~= "" and base.any_match(self.targets, name, m) then layers[#layers + 1] = {name = name, module = m} end
  end
  if type(self.sparsity) == "table" and #self.sparsity ~= #layers then
    self:error(string.format("sparsity has %d values but the model has %d target layers (targets %s)",
      #self.sparsity, #layers, json.encode(self.targets)), "sparsity")
  end
  if #layers == 0 then self:error("targets " .. json.encode(self.targets) .. " match no module of the model", "targets") end
  local selected, index = {}, {}
  for i, L in ipairs(layers) do
    local sp = type(self.sparsity) == "table" and self.sparsity[i] or self.sparsity
    for name, m in L.module:modules() do
      if m.kind == "Linear" and not base.any_match(self.ignore, name, m) then
        if index[name] then
          index[name].sparsity = sp          -- llm-compressor: the last target layer wins
        else
          local s = {name = name, module = m, sparsity = sp}
          selected[#selected + 1] = s
          index[name] = s
        end
      end
    end
  end
  self._selected = selected
  self._done = {}
  self._hooks = {}
  self._sets = {}
  self._log = {}
  return true
end

function S.on_calibration_start(self, state)
  local C = require "llmc._sparsegpt"
  local by_name, names = {}, {}
  for _, s in ipairs(self._selected) do
    if not self._done[s.name] then by_name[s.name] = s; names[#names + 1] = s.name end
  end
  for _, set in ipairs(quant.fused_groups(names)) do
    local cols = by_name[set[1]].module.in_features
    local same = true
    for _, n in ipairs(set) do if by_name[n].module.in_features ~= cols then same = false end end
    local groups = same and {set} or {}
    if not same then for _, n in ipairs(set) do groups[#groups + 1] = {n} end end
    for _, g in ipairs(groups) do
      local T = {names = g, leader = g[1], cols = by_name[g[1]].module.in_features}
      for _, n in ipairs(g) do by_name[n].sset = T end
      self._sets[#self._sets + 1] = T
    end
  end
  local make = self.stat_kind == "hessian" and C.hessian or C.colsq
  for _, T in ipairs(self._sets) do
    for _, n in ipairs(T.names) do
      local s = by_name[n]
      self._hooks[#self._hooks + 1] = s.module:register_forward_pre_hook(function(_, x)
        if state.hooks_disabled then return end
        if n == T.leader then
          if not T.stats then T.stats = make(T.cols) end
          T.stats:add(x)
          T.last = x
        elseif not rawequal(x, T.last) then
          error(string.format("%s: %s and %s are fused (one set of statistics) but received different inputs",
            self.name, n, T.leader), 0)
        end
        module.escaped[x] = nil   -- in the statistics now: let the forward pass free it
      end)
    end
  end
end

--- Prune the records that have statistics.
function S.prune(self, state, records)
  local C = require "llmc._sparsegpt"
  state.sparsity = state.sparsity or {}
  for _, s in ipairs(records) do
    local T = s.sset
    if not self._done[s.name] and T and T.stats and T.stats:nsamples() > 0 then
      local m = s.module
      local t0 = util.now()
      local opts = {sparsity = s.sparsity, prune_n = self._prune_n, prune_m = self._prune_m}
      local ok, r
      if self.stat_kind == "hessian" then
        opts.block_size, opts.dampening_frac = self.block_size, self.dampening_frac
        opts.preserve_mask = self.preserve_sparsity_mask
        ok, r = pcall(C.sparsegpt, m.weight, T.stats, opts)
      else
        ok, r = pcall(C.wanda, m.weight, T.stats, opts)
      end
      if not ok then self:error(string.format("pruning %s: %s", s.name, tostring(r))) end
      -- a tied lm_head and its embedding are one tensor in llm-compressor
      local tied = rawget(m, "_tied")
      if tied then tied.weight = r.weight end
      m.weight = r.weight
      self._done[s.name] = true
      local dt = util.now() - t0
      local numel = m.out_features * m.in_features
      local rec = {name = s.name, zeros = r.zeros, numel = numel, loss = r.loss, seconds = dt,
                   nsamples = T.stats:nsamples(), inverse_fallback = r.inverse_fallback, modifier = self.name}
      state.sparsity[#state.sparsity + 1] = rec
      self:log(state, string.format("%s %s: sparsity %.4f (%d of %d zero)%s, %d samples, %.3f s%s",
        self.stat_kind == "hessian" and "SparseGPT" or "Wanda", s.name, r.zeros / numel, r.zeros, numel,
        r.loss and string.format(", loss %.6g", r.loss) or "", T.stats:nsamples(), dt,
        r.inverse_fallback and " (Hessian not invertible: pruned without weight update; raise dampening_frac " ..
          "or calibrate on more samples)" or ""))
      if state.progress then state.progress:update(1, s.name) end
    end
  end
  for _, T in ipairs(self._sets) do
    if T.stats then
      local all = true
      for _, n in ipairs(T.names) do if not self._done[n] then all = false end end
      if all then T.stats:free(); T.stats = nil; T.last = nil end
    end
  end
end

function S.progress_units(self) return #(self._selected or {}) end

function S.on_sequential_epoch_end(self, state, _, modules)
  local set = {}
  for _, m in ipairs(modules or {}) do set[m] = true end
  local records = {}
  for _, s in ipairs(self._selected) do if set[s.module] then records[#records + 1] = s end end
  S.prune(self, state, records)
  for _, T in ipairs(self._sets) do T.last = nil end
end

function S.on_calibration_end(self, state)
  for _, h in ipairs(self._hooks) do h:remove() end
  self._hooks = {}
  S.prune(self, state, self._selected)
end

function S.on_finalize(self, state)
  for _, h in ipairs(self._hooks or {}) do h:remove() end
  self._hooks = {}
  local missing, done = {}, 0
  for _, s in ipairs(self._selected or {}) do
    if self._done[s.name] then done = done + 1 else missing[#missing + 1] = s.name end
  end
  if #missing > 0 and done == 0 then
    self:error("no module received calibration input: run " .. self.name .. " through a calibration pipeline " ..
               "(llmc.oneshot with a dataset, or llmc.calibrate.run)")
  end
  if #missing > 0 then
    self:log(state, string.format("warning: %s: %d module(s) received no calibration input and stay dense: %s",
      self.name, #missing, table.concat(missing, ", ")))
  end
  for _, T in ipairs(self._sets or {}) do if T.stats then T.stats:free(); T.stats = nil end end
  return true
end

--- Define a sparsity modifier class: `kind` "hessian" (SparseGPT) or "colsq" (Wanda).
function S.define(name, kind, extra_fields)
  local cls = modifiers.define(name, {fields = S.fields(extra_fields)})
  cls.stat_kind = kind
  cls.validate = S.validate
  cls.calibration_reason = S.calibration_reason
  cls.on_initialize = S.on_initialize
  cls.on_calibration_start = S.on_calibration_start
  cls.on_sequential_epoch_end = S.on_sequential_epoch_end
  cls.on_calibration_end = S.on_calibration_end
  cls.on_finalize = S.on_finalize
  cls.progress_units = S.progress_units
  return cls
end

local SG = S.define("SparseGPTModifier", "hessian", {
  {"block_size", 128, check_positive},
  {"dampening_frac", 0.01, check_frac},
  {"preserve_sparsity_mask", false, check.boolean},
  {"offload_hessians", false, check.boolean},
})
SG.common = S

return SG
