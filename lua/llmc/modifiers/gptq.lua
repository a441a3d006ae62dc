--[[
llmc.modifiers.gptq — GPTQModifier: GPTQ weight quantization from
calibration data (algorithms.md §5), under llm-compressor's arguments.

  local m = llmc.modifiers.GPTQModifier{targets = "Linear", scheme = "W4A16", ignore = {"lm_head"}}
  llmc.oneshot{model = model, recipe = m, dataset = "fixtures/datasets/calib_text.jsonl",
               num_calibration_samples = 256, max_seq_length = 512}

Arguments: the QuantizationModifier ones (config_groups, targets, ignore,
scheme, kv_cache_scheme, observers, bypass_divisibility_checks) plus
sequential_targets (stored; llmc's sequential pipeline runs decoder
layers), block_size (128), dampening_frac (0.01), actorder ("static" =
"weight"; false disables it; "group" is accepted and rejected when solving,
as llm-compressor does — §5.1), batched_quantization ("auto", a positive
integer or null: accepted for llm-compressor's recipes; the CPU solver solves
one module at a time either way).  offload_hessians is gone from
llm-compressor's GPTQModifier and is rejected as an unknown argument.
requires_calibration_data is true.

Lifecycle:
  initialize            QuantizationModifier's (module selection, schemes,
                        divisibility); resolve actorder per config group
  calibration_start     static activation / KV observers (as QuantizationModifier);
                        forward pre-hooks on every selected Linear: the input
                        is added to a Hessian (one per fused set — q/k/v,
                        gate/up — since they read the same tensor)
  sequential_epoch_end  activation / KV scales of the given modules, then
                        solve them (the layer just calibrated):
                        GPTQ with the scales of the pre-solve weight; the
                        module's weight becomes the fake-quantized solution and
                        its compressed tensors (from the same scales) are kept
                        for saving; one log line per module (loss, time)
  calibration_end       remove the hooks, solve what is left, dynamic
                        activations as in QuantizationModifier
  finalize              modules no calibration reached: an error (a module
                        that never ran has no Hessian)
]]
local util = require "llmc.util"
local json = util.json
local base = require "llmc.modifiers.base"
local modifiers = require "llmc.modifiers"
local quant = require "llmc.quant"
local module = require "llmc.module"
local schemes = require "llmc.schemes"
local QM = modifiers.get("QuantizationModifier")
local acts = require "llmc.modifiers.activations"

local check = base.check

local function check_batched(v, where)
  if v == "auto" or v == nil or (math.type(v) == "integer" and v > 0) then return v end
  local p = type(where) == "function" and where() or where
  error(p .. ": batched_quantization must be \"auto\", a positive integer or null, got " .. tostring(v), 0)
end

local function check_actorder(v, where)
  if v == false or v == "static" or v == "weight" or v == "group" then return v end
  local p = type(where) == "function" and where() or where
  error(p .. ": actorder must be \"static\", \"weight\" or false (no activation ordering), got " .. tostring(v), 0)
end

local function check_positive(v, where)
  v = check.integer(v, where)
  if v < 1 then
    local p = type(where) == "function" and where() or where
    error(p .. ": must be a positive integer", 0)
  end
  return v
end

local function check_frac(v, where)
  v = check.number(v, where)
  if v < 0 then
    local p = type(where) == "function" and where() or where
    error(p .. ": must be >= 0", 0)
  end
  return v
end

local function pass(v) return v end

local G = modifiers.define("GPTQModifier", {
  fields = {
    {"config_groups", nil, pass},
    {"targets", json.array({"Linear"}), check.targets},
    {"ignore", json.array({}), check.targets},
    {"scheme", nil, pass},
    {"kv_cache_scheme", nil, pass},
    {"weight_observer", nil, check.string},
    {"input_observer", nil, check.string},
    {"output_observer", nil, check.string},
    {"observer", nil, pass},
    {"bypass_divisibility_checks", false, check.boolean},
    {"sequential_targets", nil, pass},
    {"requires_calibration_data", true, check.boolean},   -- here: recipe.yaml lists fields in LC's order
    {"block_size", 128, check_positive},
    {"dampening_frac", 0.01, check_frac},
    {"actorder", "static", check_actorder},
    -- llm-compressor batches equal-shape solves on CUDA; the CPU solver
    -- solves one module at a time and the result does not depend on it
    {"batched_quantization", "auto", check_batched},
    {"index", nil, check.integer},
    {"group", nil, check.string},
    {"start", nil, check.number},
    {"end", nil, check.number},
    {"update", nil, check.number},
  },
})

G.validate = QM.validate
G.has_config = QM.has_config
G.dump_field = QM.dump_field
G.quantize_rtn = QM.quantize

-- GPTQ always needs data; the reason QuantizationModifier gives for static
-- activations (not available here) still applies
function G:calibration_reason()
  local rcd = self.requires_calibration_data
  self.requires_calibration_data = false
  local r = QM.calibration_reason(self)
  self.requires_calibration_data = rcd
  return r or "GPTQ needs calibration data: its Hessians are accumulated from layer inputs"
end

local function same_order(a, b)
  local function norm(x) return x == "weight" and "static" or x end
  return norm(a) == norm(b)
end

function G:on_initialize(state)
  -- QuantizationModifier's checks, without its "calibration is not
  -- available" error for the GPTQ reason itself
  local rcd = self.requires_calibration_data
  self.requires_calibration_data = false
  self.calibration_reason = QM.calibration_reason
  local ok, err = pcall(QM.on_initialize, self, state)
  self.calibration_reason = nil
  self.requires_calibration_data = rcd
  if not ok then error(err, 0) end
  -- actorder (§5.1): the modifier's value unless left at the default
  for _, g in ipairs(self._resolved.groups) do
    local w = g.scheme.weights
    if w then
      local eff
      if self._set.actorder then
        eff = self.actorder or nil
        if w.actorder ~= nil and not same_order(w.actorder, eff) then
          self:error(string.format("actorder %s conflicts with the scheme's actorder %s (config group %s)",
            eff == nil and "false" or tostring(eff), tostring(w.actorder), g.name), "actorder")
        end
      else
        eff = w.actorder or "static"
      end
      if eff ~= "group" then w.actorder = eff end   -- recorded in the saved config
      g.actorder = eff
    end
  end
  self._hooks = {}
  self._sets = {}
  self._log = {}
  self._fallback = {}   -- modules whose Cholesky failed (RTN fallback), warned at finalize
  return true
end

function G:progress_units() return QM.progress_units(self) end

-- one Hessian per fused set of selected modules; static activation / KV
-- observers as QuantizationModifier
function G:on_calibration_start(state)
  QM.on_calibration_start(self, state)
  local gptq = require "llmc._gptq"
  local by_name, names = {}, {}
  for _, s in ipairs(self._selected) do
    if s.group.scheme.weights and s.module.kind == "Linear" and not self._done[s.name] then
      by_name[s.name] = s
      names[#names + 1] = s.name
    end
  end
  for _, set in ipairs(quant.fused_groups(names)) do
    local S = {names = set, leader = set[1], cols = by_name[set[1]].module.in_features}
    for _, n in ipairs(set) do
      local s = by_name[n]
      s.hset = S
      if s.module.in_features ~= S.cols then S.leader = nil end
    end
    if not S.leader then
      -- different widths cannot share: one set per module
      for _, n in ipairs(set) do
        local T = {names = {n}, leader = n, cols = by_name[n].module.in_features}
        by_name[n].hset = T
        self._sets[#self._sets + 1] = T
      end
    else
      self._sets[#self._sets + 1] = S
    end
  end
  for _, S in ipairs(self._sets) do
    for _, n in ipairs(S.names) do
      local s = by_name[n]
      self._hooks[#self._hooks + 1] = s.module:register_forward_pre_hook(function(_, x)
        -- the pipeline's propagation pass reruns solved layers: no Hessian then
        if state.hooks_disabled then
          module.escaped[x] = nil
          return
        end
        if n == S.leader then
          if not S.h then S.h = gptq.hessian(S.cols) end
          S.h:add(x)
          S.last = x
        elseif not rawequal(x, S.last) then
          error(string.format("GPTQ: %s and %s are fused (one Hessian) but received different inputs", n, S.leader), 0)
        end
        -- the input is in the Hessian now: let the forward pass release it
        -- eagerly (Module:forward marks hook inputs as kept; S.last only
        -- compares identities)
        module.escaped[x] = nil
      end)
    end
  end
end

--- Solve the selected records (those with a Hessian); records the results.
function G:solve(state, records)
  local gptq = require "llmc._gptq"
  local bar = state.progress
  -- NVFP4 (tensor_group): fused siblings share one global scale, taken from
  -- their pre-solve weights (format §6.3), as QuantizationModifier does
  local gscale, by_name, tg = {}, {}, {}
  for _, s in ipairs(records) do
    local w = s.group.scheme.weights
    if w and w.strategy == "tensor_group" and not self._done[s.name] then
      tg[#tg + 1] = s.name
      by_name[s.name] = s
    end
  end
  for _, set in ipairs(quant.fused_groups(tg)) do
    if #set > 1 then
      local ws = {}
      for _, nm in ipairs(set) do ws[#ws + 1] = by_name[nm].module.weight end
      local g = quant.global_scale(ws, by_name[set[1]].group.scheme.weights)
      for _, nm in ipairs(set) do gscale[nm] = g end
    end
  end
  for _, s in ipairs(records) do
    if not self._done[s.name] and s.group.scheme.weights then
      local S = s.hset
      if (not S or not S.h or S.h:nsamples() == 0) and s.name:find("%.experts%.") then
        -- an MoE expert no calibration token was routed to (only possible
        -- with moe_calibrate_all_experts = false): llm-compressor leaves it
        -- unsolved and writes no scales; llmc rounds it to nearest instead,
        -- so the checkpoint stays complete, and says so
        self:log(state, string.format("GPTQ %s: no calibration token was routed to this expert: " ..
          "round-to-nearest instead (moe_calibrate_all_experts = true calibrates every expert)", s.name))
        self.rtn_experts = (self.rtn_experts or 0) + 1
        QM.quantize(self, state, {s})
        goto continue
      end
      if not S or not S.h or S.h:nsamples() == 0 then
        self:error(string.format("%s received no calibration input: it has no Hessian to solve with " ..
          "(is it used by the model's forward pass?)", s.name))
      end
      if s.group.actorder == "group" then
        self:error("actorder \"group\" is not supported (use \"static\"/\"weight\" or false)", "actorder")
      end
      local m = s.module
      local sc = s.group.scheme
      local fmt = sc.format or schemes.infer_format(sc, m.kind)
      local wa = quant.c_args(sc.weights, {force_zero_point = true})
      local t0 = util.now()
      local ok, r = pcall(gptq.solve, m.weight, S.h, wa, {
        block_size = self.block_size, dampening_frac = self.dampening_frac,
        actorder = s.group.actorder ~= nil, format = fmt, global_scale = gscale[s.name],
        input_args = sc.input_activations and quant.c_args(sc.input_activations) or nil,
        -- q/k/v (gate/up) share one Hessian: factor it once for all of them
        share_factor = #S.names > 1,
      })
      if not ok then self:error(string.format("GPTQ solve of %s: %s", s.name, tostring(r))) end
      local before = m.weight:nbytes()
      local after = 0
      for _, t in ipairs(r.tensors) do after = after + t.tensor:nbytes() end
      m.weight = r.fake
      m.compressed = {format = r.format, tensors = r.tensors, scheme = sc}
      self._done[s.name] = true
      local dt = util.now() - t0
      local rec = {
        name = s.name, module = m, kind = m.attr or m.kind, class = m.kind, group = s.group.name,
        scheme = sc, format = r.format, tensors = r.tensors, bytes_before = before, bytes_after = after,
        rel_err = r.sq_ref > 0 and math.sqrt(r.sq_err / r.sq_ref) or 0, max_abs_err = r.max_abs_err,
        gptq_loss = r.loss, rtn_fallback = r.rtn_fallback, seconds = dt, nsamples = S.h:nsamples(),
      }
      state.quantized[#state.quantized + 1] = rec
      if state.compact_when_solved then quant.compact(m) end
      if r.rtn_fallback then self._fallback[#self._fallback + 1] = s.name end
      self:log(state, string.format("GPTQ %s: loss %.6g, %d samples, %.3f s%s", s.name, r.loss,
        S.h:nsamples(), dt, r.rtn_fallback and " (Cholesky failed: RTN fallback)" or ""))
      if bar then bar:update(1, s.name) end
    end
    ::continue::
  end
  -- free the Hessians whose modules are all solved
  for _, S in ipairs(self._sets) do
    if S.h then
      local all = true
      for _, n in ipairs(S.names) do if not self._done[n] then all = false end end
      if all then S.h:free(); S.h = nil; S.last = nil end
    end
  end
end

function G:on_sequential_epoch_end(state, _, modules)
  local set = {}
  for _, m in ipairs(modules or {}) do set[m] = true end
  local records = {}
  for _, s in ipairs(self._selected) do
    if set[s.module] and s.hset then records[#records + 1] = s end
  end
  -- llm-compressor: activation qparams, then the solve
  if self._act then acts.epoch_end(self, state, set) end
  self:solve(state, records)
  for _, S in ipairs(self._sets) do S.last = nil end
end

function G:on_calibration_end(state)
  for _, h in ipairs(self._hooks) do h:remove() end
  self._hooks = {}
  local left = {}
  for _, s in ipairs(self._selected) do if s.hset then left[#left + 1] = s end end
  self:solve(state, left)
  QM.on_calibration_end(self, state)
end

function G:on_finalize(state)
  -- llm-compressor warns once, at finalize, about the modules whose
  -- Cholesky failed (algorithms.md §5.4)
  if #self._fallback > 0 then
    self:log(state, string.format("GPTQ: the damped Hessian of %d module(s) was not positive definite " ..
      "(dampening_frac = %g); they were rounded to nearest instead: %s. A larger dampening_frac or more " ..
      "calibration samples avoids this.", #self._fallback, self.dampening_frac, table.concat(self._fallback, ", ")))
  end
  for _, s in ipairs(self._selected) do
    if s.group.scheme.weights and not self._done[s.name] then
      if s.module.kind == "Linear" then
        self:error(s.name .. " was never calibrated: run GPTQModifier through a calibration pipeline " ..
                   "(llmc.oneshot with a dataset, or llmc.calibrate.run)")
      end
    end
  end
  -- targeted non-Linear modules (an Embedding): GPTQ does not apply, RTN
  -- as llm-compressor's QuantizationMixin does
  self:quantize_rtn(state, self._selected)
  if not self.ended_ then QM.on_calibration_end(self, state) end
  return true
end

return G
