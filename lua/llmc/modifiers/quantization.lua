--[[
llmc.modifiers.quantization — QuantizationModifier: round-to-nearest (RTN)
quantization of the weights of the targeted modules, dynamic activation
quantization at run time (algorithms.md §4).

  local M = llmc.modifiers.QuantizationModifier{
    targets = "Linear", scheme = "FP8_BLOCK", ignore = {"lm_head", "re:.*mlp.gate$"}}
  -- or config_groups = {group_0 = {targets = {"Linear"}, weights = {num_bits = 4, group_size = 64}}}

Arguments (llm-compressor's names and order): config_groups, targets
({"Linear"}), ignore ({}), scheme (preset name or {PRESET = targets}),
kv_cache_scheme (k_scale / v_scale observed on calibration data), weight_observer,
input_observer, output_observer, observer ({weights=, input=, output=}),
bypass_divisibility_checks (false); llmc adds rounding ("eager" = CT on a
CPU, the default; "fused" = CT's Triton kernel on a GPU; design.md §4),
which recipe.yaml leaves out so that llm-compressor can read it back.

Lifecycle:
  initialize            resolve the config, assign a scheme to every targeted
                        module (exact names > regexes > class names; ignore
                        wins), untie embeddings when one is targeted, check
                        group divisibility and that the recipe can run
                        without calibration data
  calibration_start     static activations / kv_cache_scheme: observers and
                        hooks (llmc.modifiers.activations)
  sequential_epoch_end  without observers (data-free): quantize the weights of
                        the given modules: compute scales and the compressed
                        tensors (kept on the module for saving) and replace
                        module.weight by its fake-quantized value, so the
                        model now runs quantized.  With observers: compute
                        the activation / KV scales of the given modules; the
                        weights stay unquantized in memory until
                        calibration_end, as in llm-compressor, so that later
                        layers are calibrated on unquantized activations
  calibration_end       remaining activation scales; weights; the quantized
                        forward: static (calibrated scales) and dynamic
                        input activations (module.input_transform), KV cache
                        (attention kv_transform)
  finalize              quantize whatever no pipeline event reached
Results land in state.quantized (one record per module) for the saver and
the summary.
]]
local util = require "llmc.util"
local json = util.json
local base = require "llmc.modifiers.base"
local modifiers = require "llmc.modifiers"
local schemes = require "llmc.schemes"
local qargs = require "llmc.qargs"
local quant = require "llmc.quant"
local acts = require "llmc.modifiers.activations"

local check = base.check

local function check_table(v, where)
  if type(v) ~= "table" then
    local p = type(where) == "function" and where() or where
    error(p .. ": expected a table", 0)
  end
  return v
end

local function check_scheme(v, where)
  if type(v) == "string" or type(v) == "table" then return v end
  local p = type(where) == "function" and where() or where
  error(p .. ": expected a preset name or {PRESET = targets}", 0)
end

local function check_rounding(v, where)
  if v ~= "eager" and v ~= "fused" then
    local p = type(where) == "function" and where() or where
    error(p .. ": rounding must be \"eager\" or \"fused\", got " .. tostring(v), 0)
  end
  return v
end

local QM = modifiers.define("QuantizationModifier", {
  fields = {
    {"config_groups", nil, check_table},
    {"targets", json.array({"Linear"}), check.targets},
    {"ignore", json.array({}), check.targets},
    {"scheme", nil, check_scheme},
    {"kv_cache_scheme", nil, check_table},
    {"weight_observer", nil, check.string},
    {"input_observer", nil, check.string},
    {"output_observer", nil, check.string},
    {"observer", nil, check_table},
    {"bypass_divisibility_checks", false, check.boolean},
    {"requires_calibration_data", false, check.boolean},
    {"index", nil, check.integer},
    {"group", nil, check.string},
    {"start", nil, check.number},
    {"end", nil, check.number},
    {"update", nil, check.number},
    {"rounding", "eager", check_rounding},
  },
})

local LLMC_ONLY = {rounding = true}

--- resolve scheme / config_groups and llm-compressor's
--- requires_calibration_data rule; errors carry the recipe location
function QM.validate(self, where)
  local w = where
  local locate = function(field)
    if type(w) == "function" then return w(field) end
    return (w and (w .. ": ") or "") .. "QuantizationModifier" .. (field and ("." .. field) or "")
  end
  self._resolved = schemes.resolve({
    scheme = self.scheme, config_groups = self.config_groups, targets = self.targets, ignore = self.ignore,
    kv_cache_scheme = self.kv_cache_scheme, weight_observer = self.weight_observer,
    input_observer = self.input_observer, output_observer = self.output_observer, observer = self.observer,
  }, locate)
  if not self.requires_calibration_data then
    if self._resolved.kv_cache_scheme then
      self.requires_calibration_data = true
    else
      for _, g in ipairs(self._resolved.groups) do
        if schemes.needs_calibration(g.scheme) then self.requires_calibration_data = true end
      end
    end
  end
end

--- Why calibration data is needed, naming the scheme (or nil).
function QM:calibration_reason()
  local r = self._resolved
  if r.kv_cache_scheme then
    return "kv_cache_scheme (" .. qargs.describe(r.kv_cache_scheme) .. ") needs calibration data: " ..
           "its k/v scales are observed on calibration batches"
  end
  for _, g in ipairs(r.groups) do
    local why = schemes.needs_calibration(g.scheme)
    if why then
      local label = g.scheme.preset and ("scheme " .. g.scheme.preset) or ("config group " .. g.name)
      local hint = ""
      if g.scheme.preset == "FP8" then hint = "; FP8_DYNAMIC or FP8_BLOCK need no data"
      elseif g.scheme.preset == "NVFP4" then hint = "; NVFP4A16 needs no data" end
      return label .. " needs calibration data: " .. why .. hint
    end
  end
  if self.requires_calibration_data then return "requires_calibration_data is set" end
  return nil
end

-- the recipe.yaml form of a field
function QM:dump_field(k, v)
  if LLMC_ONLY[k] then return nil end
  if k == "config_groups" and v ~= nil then
    local o = util.omap()
    for _, g in ipairs(self._resolved.groups) do o:set(g.name, schemes.to_json(g.scheme)) end
    return o
  end
  if k == "kv_cache_scheme" and v ~= nil then return qargs.to_json(self._resolved.kv_cache_scheme) end
  if k == "scheme" and type(v) == "table" and not util.is_omap(v) then
    local o = util.omap()
    for name, t in pairs(v) do o:set(name, json.array(schemes.targets_list(t) or {})) end
    return o
  end
  return v
end

function QM:has_config()
  local t = self.targets
  local default_targets = #t == 1 and t[1] == "Linear"
  return not (self.config_groups == nil and default_targets and #self.ignore == 0 and self.scheme == nil
              and self.kv_cache_scheme == nil)
end

local QUANTIZABLE = {Linear = true, Embedding = true}

--- The config group of a module: the most specific matching target
--- (exact name 1 < regex 2 < class 3; ties: alphabetical target, later
--- group wins for the same target string).
local function assign(groups, name, m, hits)
  local best, bprec, btarget, bidx
  for gi, g in ipairs(groups) do
    for _, t in ipairs(g.scheme.targets) do
      local p = base.match_kind(t, name, m)
      if p then
        hits[t] = (hits[t] or 0) + 1
        if not best or p < bprec or (p == bprec and (t < btarget or (t == btarget and gi > bidx))) then
          best, bprec, btarget, bidx = g, p, t, gi
        end
      end
    end
  end
  return best
end

function QM:on_initialize(state)
  if not self:has_config() then
    self:error("QuantizationModifier requires that quantization fields be specified (scheme or config_groups)")
  end
  local model = state.model
  local reason = self:calibration_reason()
  if reason and not state.data then
    self:error(reason .. ". Pass dataset = ... to llmc.oneshot, or choose a scheme with dynamic activations.")
  end
  local ok, err = pcall(acts.validate, self._resolved)
  if not ok then self:error(tostring(err)) end
  local groups, ignore = self._resolved.groups, self._resolved.ignore
  local hits = {}             -- target -> number of modules it matches
  local qhit, example = {}, {}  -- target -> matched a Linear/Embedding; an example of another kind
  local selected = {}
  for name, m in model:modules() do
    if name ~= "" then
      local g = assign(groups, name, m, hits)
      for _, gg in ipairs(groups) do
        for _, t in ipairs(gg.scheme.targets) do
          if base.matches(t, name, m) then
            if QUANTIZABLE[m.kind] then qhit[t] = true else example[t] = example[t] or (name .. " (" .. tostring(m.kind) .. ")") end
          end
        end
      end
      if g and QUANTIZABLE[m.kind] and not base.any_match(ignore, name, m)
         and (g.scheme.weights or g.scheme.input_activations or g.scheme.output_activations) then
        selected[#selected + 1] = {name = name, module = m, group = g}
      end
    end
  end
  -- every target must match a quantizable module of the model
  for _, g in ipairs(groups) do
    for _, t in ipairs(g.scheme.targets) do
      if not hits[t] then
        self:error(string.format("target '%s' (group %s) matches no module of the model%s", t, g.name,
          t:sub(1, 3) == "re:" and " (a re: pattern must match from the start of the full name, e.g. re:.*q_proj$)" or
          " (targets are module names such as model.layers.0.mlp.down_proj, class names such as Linear, or re: patterns)"),
          "targets")
      elseif not qhit[t] and g.scheme.weights then
        self:error(string.format("target '%s' (group %s) matches only modules whose weights cannot be quantized, " ..
          "e.g. %s: only Linear and Embedding modules are", t, g.name, example[t] or "?"), "targets")
      end
    end
  end
  if #selected == 0 and not self._resolved.kv_cache_scheme then
    self:error("no module left to quantize: every Linear/Embedding the targets match is ignored", "ignore")
  end

  -- tensor_group (NVFP4) weights: fused siblings share a global scale, so
  -- they must all be quantized alike (llm-compressor asserts the same)
  local sel_by_name = {}
  for _, s in ipairs(selected) do sel_by_name[s.name] = s end
  local linear_names = {}
  for name, m in model:modules("Linear") do linear_names[#linear_names + 1] = name end
  for _, set in ipairs(quant.fused_groups(linear_names)) do
    if #set > 1 then
      local tg, other = nil, nil
      for _, n in ipairs(set) do
        local s = sel_by_name[n]
        local w = s and s.group.scheme.weights
        if w and w.strategy == "tensor_group" then tg = tg or n else other = other or n end
      end
      if tg and other then
        self:error(string.format("fused layers %s share one NVFP4 global scale, but %s is quantized with " ..
          "tensor_group weights and %s is not: quantize or ignore all of them", table.concat(set, ", "), tg, other), "ignore")
      end
    end
  end

  -- embeddings: a targeted embedding or lm_head gets its own weight
  for _, s in ipairs(selected) do
    if (s.module.kind == "Embedding" or s.name == "lm_head") and model.untie_embeddings and model.tied and model:tied() then
      model:untie_embeddings()
      state.untied = true
      break
    end
  end

  -- group divisibility (llm-compressor validate_group_size_divisibility)
  local bad = {}
  for _, s in ipairs(selected) do
    local w = s.group.scheme.weights
    if w and (w.strategy == "group" or w.strategy == "tensor_group") then
      local cols = s.module.in_features or s.module.embedding_dim
      if cols and cols % w.group_size ~= 0 then
        bad[#bad + 1] = string.format("%s (in_features %d)", s.name, cols)
      end
    end
    if w and w.type == "float" and w.num_bits == 4 then
      local cols = s.module.in_features or s.module.embedding_dim
      if cols and cols % 2 ~= 0 then bad[#bad + 1] = string.format("%s (odd in_features %d: fp4 packs pairs)", s.name, cols) end
    end
  end
  if #bad > 0 and not self.bypass_divisibility_checks then
    local gs = selected[1].group.scheme.weights.group_size
    self:error(string.format("the columns of %d module(s) are not divisible by the group size%s: %s. " ..
      "Add them to ignore (or set bypass_divisibility_checks = true for a runtime that accepts them)",
      #bad, gs and (" " .. gs) or "", table.concat(bad, ", ")), "scheme")
  end

  self._selected = selected
  self._done = {}
  for _, s in ipairs(selected) do
    s.module.quantization_scheme = s.group.scheme
    s.module.quantization_group = s.group.name
  end
  state.quantized = state.quantized or {}
  state.quant_modifiers = state.quant_modifiers or {}
  table.insert(state.quant_modifiers, self)
  return true
end

-- quantize the weights of a list of selected records
function QM:quantize(state, records)
  local pending = {}
  for _, s in ipairs(records) do
    if not self._done[s.name] and s.group.scheme.weights then pending[#pending + 1] = s end
  end
  if #pending == 0 then return end
  -- NVFP4: fused siblings share one global scale (format §6.3)
  local gscale = {}
  local tg = {}
  for _, s in ipairs(self._selected) do
    local w = s.group.scheme.weights
    if w and w.strategy == "tensor_group" then tg[#tg + 1] = s.name end
  end
  if #tg > 0 then
    local by_name = {}
    for _, s in ipairs(self._selected) do by_name[s.name] = s end
    local need = {}
    for _, s in ipairs(pending) do need[s.name] = true end
    for _, set in ipairs(quant.fused_groups(tg)) do
      local touches = false
      for _, n in ipairs(set) do if need[n] then touches = true end end
      if touches and #set > 1 then
        local ws = {}
        for _, n in ipairs(set) do ws[#ws + 1] = by_name[n].module.weight end
        local g = quant.global_scale(ws, by_name[set[1]].group.scheme.weights)
        for _, n in ipairs(set) do gscale[n] = g end
      end
    end
  end
  local bar = state.progress
  for _, s in ipairs(pending) do
    local m = s.module
    local sc = s.group.scheme
    local w = m.weight
    local fmt = sc.format or schemes.infer_format(sc, m.kind)
    local ok, r = pcall(quant.compress, w, sc, {
      format = fmt, global_scale = gscale[s.name], rounding = self.rounding,
      -- oneshot registers (all-zero) zero points for symmetric args and adds
      -- them: -0.0 inputs give +0 fp8 bytes (format §3.4)
      force_zero_point = true, fake = true, error = true,
    })
    if not ok then self:error(string.format("quantizing %s: %s", s.name, tostring(r))) end
    local before = w:nbytes()
    local after = 0
    for _, t in ipairs(r.tensors) do after = after + t.tensor:nbytes() end
    m.weight = r.fake
    m.compressed = {format = r.format, tensors = r.tensors, scheme = sc}
    self._done[s.name] = true
    local rec = {
      name = s.name, module = m, kind = m.attr or m.kind, class = m.kind, group = s.group.name,
      scheme = sc, format = r.format, tensors = r.tensors, bytes_before = before, bytes_after = after,
      rel_err = r.sq_ref > 0 and math.sqrt(r.sq_err / r.sq_ref) or 0, max_abs_err = r.max_abs_err,
    }
    state.quantized[#state.quantized + 1] = rec
    w = nil
    quant.compact(m)   -- keep the compressed tensors only (decompressed again on use)
    if bar then bar:update(1, s.name) end
  end
end

--- modules whose weights this modifier quantizes (for progress bars)
function QM:progress_units()
  local n = 0
  for _, s in ipairs(self._selected or {}) do if s.group.scheme.weights then n = n + 1 end end
  return n
end

function QM:on_calibration_start(state)
  if self._act == nil and state.data then
    local n = acts.start(self, state)
    if n == 0 then self._act = nil end
  end
end

function QM:on_sequential_epoch_end(state, _, modules)
  local set = {}
  for _, m in ipairs(modules or {}) do set[m] = true end
  if self._act then
    -- calibrating: activation / KV scales now, weights at calibration_end
    acts.epoch_end(self, state, set)
    return
  end
  local records = {}
  for _, s in ipairs(self._selected) do
    if set[s.module] then records[#records + 1] = s end
  end
  self:quantize(state, records)
end

-- dynamic activations: fake-quantize the live input of the module
local function install_input_transform(m, ia)
  local K = require "llmc._quant"
  local ca = quant.c_args(ia)
  m.input_transform = function(x) return K.qdq_dynamic(x, ca) end
end

function QM:on_calibration_end(state)
  if self._act then
    local r = acts.finish(self, state)
    self._act = nil
    if r.activations + r.kv > 0 then
      self:log(state, string.format("%s: calibrated %d static activation scales and %d KV-cache k/v scale pairs " ..
        "(scales %.4g .. %.4g)", self.name, r.activations, r.kv, r.min_scale or 0, r.max_scale or 0))
    end
    QM.quantize(self, state, self._selected)
  end
  for _, s in ipairs(self._selected) do
    local ia = s.group.scheme.input_activations
    if ia and ia.dynamic == true then install_input_transform(s.module, ia) end
  end
end

function QM:on_finalize(state)
  self:quantize(state, self._selected)
  if not self.ended_ then self:on_calibration_end(state) end
  return true
end

return QM
