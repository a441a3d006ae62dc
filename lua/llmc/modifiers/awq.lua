--[[
llmc.modifiers.awq — AWQModifier: activation-aware weight scaling (AWQ,
arXiv 2306.00978) as llm-compressor's AWQModifier does it (algorithms.md §8),
followed by round-to-nearest quantization of the rescaled weights.

  local m = llmc.modifiers.AWQModifier{scheme = "W4A16_ASYM", targets = "Linear", ignore = {"lm_head"}}
  llmc.oneshot{model = model, recipe = m, dataset = "json",
               dataset_path = llmc.bundled("datasets/calib_text.jsonl"),
               num_calibration_samples = 256, max_seq_length = 512}

It is llm-compressor's deprecated `modifiers.awq.AWQModifier(**kw)`, i.e.
[AWQModifier(transform), QuantizationModifier(quant kw)] in one modifier:
the quantization fields (config_groups, targets, ignore, scheme, observers,
bypass_divisibility_checks) are QuantizationModifier's; a quantization
config is required.  AWQ fields: mappings (nil: inferred from the model
class, AWQ.MAPPINGS), offload_device (nil: "cpu" for MoE models, else nil;
llmc keeps the cached inputs in memory either way), duo_scaling (true,
false or "both"), n_grid (20).  requires_calibration_data is true.

A mapping is {smooth_layer = pattern, balance_layers = {patterns...},
activation_hook_target = dotted path under the parent (optional)}, or
positionally {smooth, {balance...}}.  Resolution (§8.1): SmoothQuant's port
of match_modules_set groups matches per parent scope; a set needs one smooth
layer; sets are skipped when v_proj -> o_proj shapes disagree (GQA), when
they have no balance layer, or when no layer of the set is quantized.  The
parent is the lowest common ancestor of the balance layers above any
ModuleList (q/k/v -> self_attn, gate/up -> mlp; a single balance layer is its
own parent).

Lifecycle:
  initialize            QuantizationModifier's (schemes, divisibility); infer
                        and resolve the mappings
  calibration_start     duo_scaling with a TENSOR weight strategy -> error;
                        hooks (skipped while state.hooks_disabled): a pre-hook
                        on every parent caches its input and context per batch
                        (copied: the pipeline frees its own); a hook on the
                        first balance layer (or activation_hook_target) adds
                        |x| of its input per channel (llmc._observer abs_sum)
  sequential_epoch_end  every mapping with statistics: grid search (§8.3),
                        then balance W *= s, smooth layer /= s; caches freed
  calibration_end       error if statistics were never used; remove hooks;
                        quantize every selected weight (RTN, QuantizationModifier's
                        path): in llm-compressor the QuantizationModifier after
                        the AWQ transform sees the rescaled, unquantized model,
                        so later layers are calibrated on unquantized outputs
  finalize              error if statistics remain; quantize leftovers
Grid search (per mapping; replays run with state.hooks_disabled):
  fp   = parent(x, ctx) for every cached batch (current weights)
  x    = sum |x| / tokens (f32);   w = mean over balance rows of |W| / (chunk max + 1e-6)
         (chunks = the weight quantization groups / channels / blocks / tensor; f64)
  grid = duo true:  (0, plain), (k/(n_grid-2), duo) k = 0..n_grid-2
         duo false: (k/(n_grid-1), plain) k = 0..n_grid-1
         "both":    m = n_grid // 2; (k/(m-1), plain), (k/(m-1), duo) k = 0..m-1
  s    = max(x^r / (w^(1-r) + 1e-4), 1e-4)  (duo, f64)   |  max(x^r, 1e-4)  (plain, f32)
  s    = s / sqrt(max(s) * min(s)); inf / nan -> 1
  each balance layer with a weight scheme: W = dt(dt(W0 * s) fake-quantized with
  memoryless min-max qparams / s)
  loss = sum over batches of sum((fp - out)^2), f32 accumulation, / elements
  keep the first strictly smallest loss.
self.smoothed_[smooth name] = {scales = s (Tensor), ratio, duo, index (1-based grid
point), losses = {...}, initial_error, best_error, parent, balance = {names}}.
]]
local util = require "llmc.util"
local json = util.json
local base = require "llmc.modifiers.base"
local modifiers = require "llmc.modifiers"
local quant = require "llmc.quant"
local module = require "llmc.module"
local QM = modifiers.get("QuantizationModifier")
local SQ = modifiers.get("SmoothQuantModifier")

local check = base.check

local function where_of(where)
  return type(where) == "function" and where() or where
end

local function pass(v) return v end

local function check_duo(v, where)
  if v == "both" then return v end
  if type(v) == "boolean" then return v end
  if type(v) == "string" and (v:lower() == "true" or v:lower() == "false") then return v:lower() == "true" end
  error(where_of(where) .. ": duo_scaling must be true, false or \"both\", got " .. tostring(v), 0)
end

local function check_ngrid(v, where)
  v = check.integer(v, where)
  if v < 1 then error(where_of(where) .. ": n_grid must be a positive integer, got " .. v, 0) end
  return v
end

local function check_offload(v, where)
  if v == "cpu" or v == false then return v end
  error(where_of(where) .. ": offload_device must be \"cpu\" (llmc computes on the CPU and keeps the " ..
        "cached inputs in memory), got " .. tostring(v), 0)
end

-- one mapping -> {smooth_layer =, balance_layers = {...}, activation_hook_target =}
local function norm_mapping(m, i, where)
  local bad = where_of(where) .. ": mappings[" .. i .. "] "
  if util.is_omap(m) then
    local t = {}
    for _, k in ipairs(m:keys()) do t[k] = m:get(k) end
    m = t
  end
  if type(m) ~= "table" then
    error(bad .. "must be {smooth_layer = pattern, balance_layers = {patterns...}}, got " .. tostring(m), 0)
  end
  local smooth, bal, hook = m.smooth_layer, m.balance_layers, m.activation_hook_target
  if smooth == nil and bal == nil then smooth, bal, hook = m[1], m[2], m[3] end
  for k in pairs(m) do
    if type(k) == "string" and k ~= "smooth_layer" and k ~= "balance_layers" and k ~= "activation_hook_target" then
      error(bad .. "unknown key '" .. k .. "' (smooth_layer, balance_layers, activation_hook_target)", 0)
    end
  end
  if type(smooth) ~= "string" then error(bad .. "smooth_layer must be a pattern string", 0) end
  if type(bal) == "string" then bal = {bal} end
  if type(bal) ~= "table" or #bal == 0 then error(bad .. "balance_layers must be a non-empty list of patterns", 0) end
  local out = {}
  for j, b in ipairs(bal) do
    if type(b) ~= "string" then error(bad .. "balance_layers[" .. j .. "] must be a pattern string", 0) end
    out[j] = b
  end
  if hook == json.null then hook = nil end
  if hook ~= nil and type(hook) ~= "string" then error(bad .. "activation_hook_target must be a dotted path", 0) end
  return {smooth_layer = smooth, balance_layers = out, activation_hook_target = hook}
end

local function check_mappings(v, where)
  if type(v) ~= "table" or util.is_omap(v) or #v == 0 then
    error(where_of(where) .. ": mappings must be a non-empty list of {smooth_layer =, balance_layers = {...}}", 0)
  end
  local out = {}
  for i = 1, #v do out[i] = norm_mapping(v[i], i, where) end
  return out
end

local AWQ = modifiers.define("AWQModifier", {
  fields = {
    {"mappings", nil, check_mappings},
    {"offload_device", nil, check_offload},
    {"duo_scaling", true, check_duo},
    {"n_grid", 20, check_ngrid},
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
    {"requires_calibration_data", true, check.boolean},
    {"index", nil, check.integer},
    {"group", nil, check.string},
    {"start", nil, check.number},
    {"end", nil, check.number},
    {"update", nil, check.number},
  },
})

---------------------------------------------------------------------------
-- default mappings (llm-compressor's AWQ_MAPPING_REGISTRY, §8.4)
---------------------------------------------------------------------------

local function mp(smooth, balance) return {smooth_layer = smooth, balance_layers = balance} end

AWQ.DEFAULT_MAPPINGS = {
  mp("re:.*input_layernorm$", {"re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$"}),
  mp("re:.*v_proj$", {"re:.*o_proj$"}),
  mp("re:.*post_attention_layernorm$", {"re:.*gate_proj$", "re:.*up_proj$"}),
  mp("re:.*up_proj$", {"re:.*down_proj$"}),
}
local MOE = {
  AWQ.DEFAULT_MAPPINGS[1], AWQ.DEFAULT_MAPPINGS[2],
  mp("re:.*post_attention_layernorm$", {"re:.*mlp.gate$", "re:.*mlp.experts.*.gate_proj$", "re:.*mlp.experts.*.up_proj$"}),
  AWQ.DEFAULT_MAPPINGS[4],
}
-- Mixtral is not registered upstream (default mappings); llm-compressor
-- linearizes its experts into gate_proj / up_proj / down_proj first.  llmc
-- keeps the checkpoint names w1 (gate), w3 (up), w2 (down): the same
-- mappings under those names (the router is not balanced, as by default).
local MIXTRAL = {
  AWQ.DEFAULT_MAPPINGS[1], AWQ.DEFAULT_MAPPINGS[2],
  mp("re:.*post_attention_layernorm$", {"re:.*experts.*.w1$", "re:.*experts.*.w3$"}),
  mp("re:.*w3$", {"re:.*w2$"}),
}
AWQ.MAPPINGS = {
  LlamaForCausalLM = AWQ.DEFAULT_MAPPINGS, MistralForCausalLM = AWQ.DEFAULT_MAPPINGS,
  Qwen2ForCausalLM = AWQ.DEFAULT_MAPPINGS, Qwen3ForCausalLM = AWQ.DEFAULT_MAPPINGS,
  Qwen2MoeForCausalLM = MOE, Qwen3MoeForCausalLM = MOE, MixtralForCausalLM = MIXTRAL,
}

---------------------------------------------------------------------------
-- quantization config (QuantizationMixin, as GPTQModifier)
---------------------------------------------------------------------------

AWQ.has_config = QM.has_config
AWQ.quantize_rtn = QM.quantize

function AWQ.validate(self, where)
  QM.validate(self, where)
  local g = AWQ.grid(self.duo_scaling, self.n_grid)
  if not g then
    local loc = type(where) == "function" and where("n_grid") or
                ((where and (where .. ": ") or "") .. "AWQModifier.n_grid")
    error(loc .. string.format(": n_grid = %d is too small for duo_scaling = %s (the grid divides by %s)",
      self.n_grid, tostring(self.duo_scaling),
      self.duo_scaling == true and "n_grid - 2" or self.duo_scaling == false and "n_grid - 1" or "n_grid // 2 - 1"), 0)
  end
end

function AWQ:calibration_reason()
  return "AWQ needs calibration data: its scales are searched on the activations of calibration batches"
end

function AWQ:dump_field(k, v)
  if k == "mappings" and v ~= nil then
    local out = json.array({})
    for i, m in ipairs(v) do
      local o = util.omap()
      o:set("smooth_layer", m.smooth_layer)
      o:set("balance_layers", json.array(util.deepcopy(m.balance_layers)))
      if m.activation_hook_target then o:set("activation_hook_target", m.activation_hook_target) end
      out[i] = o
    end
    return out
  end
  return QM.dump_field(self, k, v)
end

function AWQ:progress_units() return QM.progress_units(self) end

--- Grid points {ratio, duo} for a duo_scaling setting (nil when n_grid is too small).
function AWQ.grid(duo, n_grid)
  local g = {}
  if duo == "both" then
    local m = n_grid // 2
    if m < 2 then return nil end
    for k = 0, m - 1 do
      g[#g + 1] = {k / (m - 1), false}
      g[#g + 1] = {k / (m - 1), true}
    end
  elseif duo == false then
    if n_grid < 2 then return nil end
    for k = 0, n_grid - 1 do g[#g + 1] = {k / (n_grid - 1), false} end
  else
    if n_grid < 3 then return nil end
    g[1] = {0.0, false}
    for k = 0, n_grid - 2 do g[#g + 1] = {k / (n_grid - 2), true} end
  end
  return g
end

---------------------------------------------------------------------------
-- resolution
---------------------------------------------------------------------------

local function warn(self, state, msg) self:log(state, "AWQ: " .. msg) end

-- the module under `root` at a dotted attribute path (nil when absent)
local function getattr_chain(root, path)
  local m = root
  for part in path:gmatch("[^.]+") do
    if type(m) ~= "table" then return nil end
    m = rawget(m, part) or (m.children and (function()
      for _, c in ipairs(m.children) do if c.attr == part then return c end end
    end)())
    if m == nil then return nil end
  end
  return m
end

local function is_moe(model)
  for _, m in model:named_modules() do
    if m.kind == "SparseMoeBlock" then return true end
  end
  return false
end

local function endswith(s, suffix) return s:sub(-#suffix) == suffix end

-- v_proj -> o_proj (and fused qkv_proj -> o_proj) whose shapes disagree (GQA)
local function compatible(smooth, balance)
  for _, b in ipairs(balance) do
    if smooth.module.kind == "Linear" and b.module.kind == "Linear" and endswith(b.name, ".o_proj") then
      if (endswith(smooth.name, ".v_proj") and smooth.module.out_features ~= b.module.in_features) or
         (endswith(smooth.name, ".qkv_proj") and smooth.module.out_features ~= 3 * b.module.in_features) then
        return false
      end
    end
  end
  return true
end

--- Resolve self.mappings on `model` (§8.1) into self._resolved_mappings.
function AWQ:resolve(state)
  local model = state.model
  local resolved, incompatible = {}, 0
  for i, mapping in ipairs(self.mappings) do
    local targets = {mapping.smooth_layer}
    for _, b in ipairs(mapping.balance_layers) do targets[#targets + 1] = b end
    local ok, sets = pcall(SQ.match_modules_set, model, targets)
    if not ok then self:error(string.format("mappings[%d]: %s", i, tostring(sets)), "mappings") end
    for _, set in ipairs(sets) do
      local smooths = set[1]
      if #smooths ~= 1 then
        local names = {}
        for _, s in ipairs(smooths) do names[#names + 1] = s.name end
        self:error(string.format("mappings[%d]: AWQ needs a single smooth layer per set, got %s", i,
          table.concat(names, ", ")), "mappings")
      end
      local smooth = smooths[1]
      local balance = {}
      for k = 2, #set do
        for _, b in ipairs(set[k]) do balance[#balance + 1] = b end
      end
      local any = smooth.module.quantization_scheme ~= nil
      for _, b in ipairs(balance) do if b.module.quantization_scheme ~= nil then any = true end end
      if not compatible(smooth, balance) then
        incompatible = incompatible + 1
      elseif not any or #balance == 0 then
        warn(self, state, string.format("skipping %s (mappings[%d]): %s", smooth.name, i,
          #balance == 0 and "no balance layers were found" or "no layers are targeted for quantization"))
      else
        for _, b in ipairs(balance) do
          if b.module.kind ~= "Linear" then
            self:error(string.format("mappings[%d]: balance layer %s is a %s, not a Linear", i, b.name,
              tostring(b.module.kind)), "mappings")
          end
        end
        local sw = smooth.module:has_param("weight") and smooth.module:param_info("weight")
        if not sw then
          self:error(string.format("mappings[%d]: smooth layer %s has no weight to rescale", i, smooth.name), "mappings")
        end
        local dim = balance[1].module.in_features
        for _, b in ipairs(balance) do
          if b.module.in_features ~= dim then
            self:error(string.format("mappings[%d]: balance layers %s and %s have different input widths (%d, %d)",
              i, balance[1].name, b.name, dim, b.module.in_features), "mappings")
          end
        end
        if sw.shape[1] < dim or (#sw.shape == 1 and sw.shape[1] ~= dim) then
          self:error(string.format("mappings[%d]: smooth layer %s has %d output channels, the balance layers %d " ..
            "inputs", i, smooth.name, sw.shape[1], dim), "mappings")
        end
        -- parent: lowest common ancestor of the balance layers, above ModuleLists
        local pname = balance[1].name
        for k = 2, #balance do pname = SQ.common_ancestor(pname, balance[k].name) end
        local parent
        while true do
          if pname == "" then parent = model break end
          parent = model:get(pname)
          if parent.kind ~= "ModuleList" then break end
          pname = pname:match("^(.*)%.[^.]*$") or ""
        end
        local target
        if mapping.activation_hook_target then
          target = getattr_chain(parent, mapping.activation_hook_target)
          if not target then
            self:error(string.format("mappings[%d]: activation_hook_target '%s' not found on parent module '%s'",
              i, mapping.activation_hook_target, pname), "mappings")
          end
        end
        local names = {}
        for _, b in ipairs(balance) do names[#names + 1] = b.name end
        resolved[#resolved + 1] = {
          smooth_name = smooth.name, smooth = smooth.module, balance = balance, balance_names = names,
          parent = parent, parent_name = pname, hook_target = target or balance[1].module, dim = dim,
        }
      end
    end
  end
  if incompatible > 0 then
    warn(self, state, string.format("%d mappings were skipped due to incompatible shapes (v_proj -> o_proj with " ..
      "grouped-query attention)", incompatible))
  end
  self._resolved_mappings = resolved
  self.skipped_incompatible_ = incompatible
end

function AWQ:on_initialize(state)
  if not self:has_config() then
    self:error("AWQModifier requires a quantization config (scheme or config_groups): AWQ searches its " ..
               "scales for a weight quantization scheme, e.g. scheme = \"W4A16_ASYM\"")
  end
  -- QuantizationModifier's initialize; the data requirement is oneshot's check
  local rcd = self.requires_calibration_data
  self.requires_calibration_data = false
  self.calibration_reason = QM.calibration_reason
  local ok, err = pcall(QM.on_initialize, self, state)
  self.calibration_reason = nil
  self.requires_calibration_data = rcd
  if not ok then error(err, 0) end
  if not state.data then
    self:error(self:calibration_reason() .. ". Pass dataset = ... to llmc.oneshot.")
  end
  -- static activations / a KV-cache scheme would be observed before the
  -- smoothing changed them (upstream calibrates them in the quantization
  -- modifier's own pass after AWQ)
  self.requires_calibration_data = false
  local static = QM.calibration_reason(self)
  self.requires_calibration_data = rcd
  if static then
    self:error("static input / output activations and kv_cache_scheme are not supported by AWQModifier: " ..
               "their scales must be observed after smoothing; use a weight-only or dynamic-activation scheme", "scheme")
  end
  if self.mappings == nil then
    self.mappings = util.deepcopy(AWQ.MAPPINGS[state.model.class_name] or AWQ.DEFAULT_MAPPINGS)
  end
  if self.offload_device == nil then
    self.offload_device_ = is_moe(state.model) and "cpu" or nil
  else
    self.offload_device_ = self.offload_device or nil
  end
  self:resolve(state)
  self._stats = {}
  self._cache = {}
  self._hooks = {}
  self.smoothed_ = {}
  return true
end

---------------------------------------------------------------------------
-- capture
---------------------------------------------------------------------------

local function copy_ctx(ctx, copies)
  if ctx == nil then return nil end
  local c = copies[ctx]
  if c then return c end
  local T = require "llmc._tensor"
  c = {}
  for k, v in pairs(ctx) do
    -- upstream replaces kv-cache objects by None; router logits are an output
    if k ~= "cache" and k ~= "router_logits" then
      c[k] = T.is_tensor(v) and v:clone() or v
    end
  end
  copies[ctx] = c
  return c
end

function AWQ:on_calibration_start(state)
  if self.duo_scaling ~= false then
    for _, m in ipairs(self._resolved_mappings) do
      for _, b in ipairs(m.balance) do
        local sc = b.module.quantization_scheme
        if sc and sc.weights and sc.weights.strategy == "tensor" then
          self:error("duo_scaling is only supported with per-channel quantization strategies (group or channel), " ..
            "but found TENSOR strategy on layer " .. b.name .. ". Set duo_scaling = false or use a per-channel " ..
            "quantization strategy.", "duo_scaling")
        end
      end
    end
  end
  local O = require "llmc._observer"
  local copies = setmetatable({}, {__mode = "k"})
  local hooked = {}
  for _, m in ipairs(self._resolved_mappings) do
    local parent = m.parent
    if not hooked[parent] then
      hooked[parent] = true
      self._cache[parent] = {}
      self._hooks[#self._hooks + 1] = parent:register_forward_pre_hook(function(_, x, ctx)
        -- Module:forward marks a hook's arguments as kept; the cache holds
        -- its own copy, so hand x back to the forward pass's eager release
        -- (else every replay of the grid search would pile up until the
        -- garbage collector runs)
        if not state.hooks_disabled then
          local list = self._cache[parent]
          if not list then list = {}; self._cache[parent] = list end
          -- copies: the pipeline (and other modifiers' hooks) may release these
          list[#list + 1] = {x = x:clone(), ctx = copy_ctx(ctx, copies)}
        end
        module.escaped[x] = nil
      end)
    end
    local name = m.smooth_name
    self._hooks[#self._hooks + 1] = m.hook_target:register_forward_hook(function(_, x, y)
      if not state.hooks_disabled then
        local obs = self._stats[name]
        if not obs then
          obs = O.new{reduce = "channel", cols = m.dim, update = "static_minmax", dtype = x:dtype()}
          self._stats[name] = obs
        end
        obs:observe(x)
      end
      module.escaped[x] = nil
      module.escaped[y] = nil
    end)
  end
end

---------------------------------------------------------------------------
-- grid search
---------------------------------------------------------------------------

local function f32(v) return (string.unpack("<f", string.pack("<f", v))) end

local function run_samples(parent, cache)
  local outs = {}
  for i, e in ipairs(cache) do
    local y = parent:forward(e.x, e.ctx)
    if type(y) == "table" and not require("llmc._tensor").is_tensor(y) then y = y[1] end
    outs[i] = y
  end
  return outs
end

local function release_all(list)
  for _, t in ipairs(list) do t:release() end
end

--- sum over batches of sum((a - b)^2) / elements, accumulated in f32 as
--- llm-compressor's mse_loss(reduction = "sum") sums are
function AWQ.loss(fp, out)
  local acc, n = 0.0, 0
  for i = 1, #fp do
    local d = fp[i] - out[i]
    local sq = d * d
    acc = f32(acc + f32(sq:sum()))
    n = n + d:numel()
    d:release(); sq:release()
  end
  return f32(acc / n)
end

--- Mean normalised |W| per input column over the balance layers (§8.3,
--- _compute_layer_means): each quantization chunk of |W| divided by its
--- max + 1e-6 (in W's dtype), summed over rows in f64, / total rows.
--- Returns an f64 Tensor [cols] (nil when no layer has weight args).
function AWQ.layer_means(weights, wargs)
  local total, rows_total
  for i, W in ipairs(weights) do
    local a = wargs[i]
    if a then
      local shp = W:shape()
      local rows, cols = shp[1], shp[2]
      local A = W:abs()
      local chunk, bh, bw
      if a.strategy == "tensor" then chunk = rows * cols
      elseif a.strategy == "channel" then chunk = cols
      elseif a.strategy == "group" or a.strategy == "tensor_group" then chunk = a.group_size
      elseif a.strategy == "block" then
        bh, bw = a.block_structure[1], a.block_structure[2]
        if rows % bh ~= 0 or cols % bw ~= 0 then
          error(string.format("AWQ: a %dx%d weight does not split into %dx%d blocks", rows, cols, bh, bw), 0)
        end
        A = A:reshape({rows // bh, bh, cols // bw, bw}):permute({0, 2, 1, 3}):contiguous()
        chunk = bh * bw
      else
        error("AWQ: weight strategy " .. tostring(a.strategy) .. " has no quantization chunks", 0)
      end
      if (rows * cols) % chunk ~= 0 then
        error(string.format("AWQ: %d columns do not split into groups of %d", cols, chunk), 0)
      end
      local C = A:reshape({-1, chunk})
      local mx = C:amax(1, true) + 1e-6
      local Nrm = C / mx
      if bh then
        Nrm = Nrm:reshape({rows // bh, cols // bw, bh, bw}):permute({0, 2, 1, 3}):contiguous()
      end
      local s = Nrm:reshape({rows, cols}):to("float64"):sum(0)
      total = total and (total + s) or s
      rows_total = (rows_total or 0) + rows
      A:release(); C:release(); mx:release(); Nrm:release()
    end
  end
  if not total then return nil end
  return total / rows_total
end

--- Scales for one grid point: x_mean (f32), w_mean (f64 or nil), ratio, duo.
function AWQ.grid_scales(x_mean, w_mean, ratio, duo)
  local T = require "llmc._tensor"
  local s
  if duo then
    s = (x_mean:pow(ratio) / (w_mean:pow(1 - ratio) + 1e-4)):clamp(1e-4)
  else
    s = x_mean:pow(ratio):clamp(1e-4)
  end
  local dt = s:dtype()
  local prod = s:max() * s:min()
  local c
  if dt == "float64" then c = math.sqrt(prod) else c = f32(math.sqrt(f32(prod))) end
  s = s / T.full({1}, c, dt)
  -- inf / nan -> 1
  local bad = s:ne(s)
  local inf = s:abs():eq(math.huge)
  local one = T.ones({1}, dt)
  s = T.where(bad, one, s)
  s = T.where(inf, one, s)
  return s
end

local function weight_args_of(b)
  local sc = b.module.quantization_scheme
  return sc and sc.weights or nil
end

-- the memoryless min-max args the search quantizes with (§8.3)
local function search_args(wa, rounding)
  local ca = quant.c_args(wa, {rounding = rounding, force_zero_point = true})
  ca.observer = "memoryless_minmax"
  ca.observer_kwargs = {}
  return ca
end

function AWQ:best_scales(state, m, fp, orig, x_mean)
  local T = require "llmc._tensor"
  local K = require "llmc._quant"
  local patched, wargs, ws = {}, {}, {}
  for i, b in ipairs(m.balance) do
    local wa = weight_args_of(b)
    wargs[i] = wa
    ws[i] = orig[i]
    if wa then patched[#patched + 1] = {b = b, i = i, ca = search_args(wa, self.rounding), wa = wa} end
  end
  local w_mean
  if self.duo_scaling then
    w_mean = AWQ.layer_means(ws, wargs)
    if not w_mean then
      self:error(string.format("mapping %s: no balance layer has a weight quantization scheme", m.smooth_name))
    end
  end
  -- NVFP4: fused siblings share one global scale from their (scaled) weights
  local fused = {}
  do
    local tg = {}
    for _, p in ipairs(patched) do if p.wa.strategy == "tensor_group" then tg[#tg + 1] = p.b.name end end
    for _, set in ipairs(quant.fused_groups(tg)) do
      for _, n in ipairs(set) do fused[n] = set end
    end
  end
  local cache = self._cache[m.parent]
  local best_err, best_s, best_i = math.huge, nil, nil
  local losses, initial = {}, nil
  for gi, pt in ipairs(AWQ.grid(self.duo_scaling, self.n_grid)) do
    local ratio, duo = pt[1], pt[2]
    local s = AWQ.grid_scales(x_mean, w_mean, ratio, duo)
    local row = s:reshape({1, s:numel()})
    local scaled = {}
    for _, p in ipairs(patched) do
      local W0 = orig[p.i]
      scaled[p.b.name] = (W0 * row):to(W0:dtype())
    end
    for _, p in ipairs(patched) do
      local W0 = orig[p.i]
      local Ws = scaled[p.b.name]
      local gs
      if p.wa.strategy == "tensor_group" then
        local sibs = {}
        for _, n in ipairs(fused[p.b.name] or {p.b.name}) do sibs[#sibs + 1] = scaled[n] end
        gs = quant.global_scale(sibs, p.wa)
      end
      local Q = K.fake_quantize(Ws, p.ca, gs)
      local qd = Q / row
      p.b.module.weight = qd:to(W0:dtype())
      Q:release()
      if qd:dtype() ~= W0:dtype() then qd:release() end
    end
    for _, t in pairs(scaled) do t:release() end
    local out = run_samples(m.parent, cache)
    local loss = AWQ.loss(fp, out)
    release_all(out)
    losses[gi] = loss
    if initial == nil then initial = loss end
    if loss < best_err then
      best_err, best_s, best_i = loss, s, gi
    else
      s:release()
    end
  end
  if best_i == nil then
    self:error(string.format("no finite loss was found in the grid search for %s: the forward pass of %s " ..
      "produces NaN (losses %s)", m.smooth_name, m.parent_name, table.concat(losses, ", ")))
  end
  local grid = AWQ.grid(self.duo_scaling, self.n_grid)
  return best_s, {index = best_i, ratio = grid[best_i][1], duo = grid[best_i][2], losses = losses,
                  initial_error = initial, best_error = best_err}
end

--- Apply scales s to a resolved mapping: balance W = dt(W0 * s) per column,
--- smooth layer /= s (1-D weight; 2-D: its last #s output rows), bias /= s.
function AWQ.apply_scales(m, s, orig)
  local n = s:numel()
  local row = s:reshape({1, n})
  for i, b in ipairs(m.balance) do
    local W0 = orig and orig[i] or b.module.weight
    b.module.weight = (W0 * row):to(W0:dtype())
  end
  local sm = m.smooth
  local w = sm.weight
  if w:dim() == 1 then
    sm.weight = (w / s):to(w:dtype())
  else
    local rows = w:shape()[1]
    local col = s:reshape({n, 1})
    if rows == n then
      sm.weight = (w / col):to(w:dtype())
    else
      local T = require "llmc._tensor"
      local top = w:narrow(0, 0, rows - n):contiguous()
      local bottom = (w:narrow(0, rows - n, n) / col):to(w:dtype())
      sm.weight = T.cat({top, bottom}, 0)
    end
  end
  if sm:has_param("bias") and sm.bias ~= nil then
    local bb = sm.bias
    if bb:numel() == n then
      sm.bias = (bb / s):to(bb:dtype())
    else
      local T = require "llmc._tensor"
      local k = bb:numel()
      sm.bias = T.cat({bb:narrow(0, 0, k - n):contiguous(), (bb:narrow(0, k - n, n) / s):to(bb:dtype())}, 0)
    end
  end
end

local function short(name) return (name:gsub("^model%.layers%.%d+%.", "")) end

--- Search and apply the scales of every mapping with statistics (§8.3).
function AWQ:apply_smoothing(state)
  local pending = {}
  for _, m in ipairs(self._resolved_mappings) do
    if self._stats[m.smooth_name] then pending[#pending + 1] = m end
  end
  if #pending == 0 then return end
  local was = state.hooks_disabled
  state.hooks_disabled = true
  local ok, err = pcall(function()
    for _, m in ipairs(pending) do
      local t0 = util.now()
      local obs = self._stats[m.smooth_name]
      local cache = self._cache[m.parent] or {}
      local fp = run_samples(m.parent, cache)
      local empty = #fp == 0
      if not empty then
        empty = true
        for _, y in ipairs(fp) do if y:numel() > 0 then empty = false end end
      end
      local finite = true
      if not empty then
        for _, y in ipairs(fp) do
          local st = y:stats()
          if st.nan > 0 or st.absmax == math.huge then finite = false end
        end
      end
      if empty then
        warn(self, state, "skipping " .. m.smooth_name .. ": no activations found to scale")
      elseif not finite then
        warn(self, state, "skipping " .. m.smooth_name .. ": NaN or inf outputs from " .. m.parent_name)
      else
        local abs_sum = obs:abs_sum()
        local _, tokens = obs:count()
        local x_mean = abs_sum:to("float32") / tokens
        abs_sum:release()
        local orig = {}
        for i, b in ipairs(m.balance) do orig[i] = b.module.weight end
        local s, info = self:best_scales(state, m, fp, orig, x_mean)
        AWQ.apply_scales(m, s, orig)
        info.scales, info.parent, info.balance = s, m.parent_name, m.balance_names
        self.smoothed_[m.smooth_name] = info
        local names = {}
        for _, n in ipairs(m.balance_names) do names[#names + 1] = short(n) end
        self:log(state, string.format("AWQ %s -> %s: ratio %.4f%s (grid point %d), loss %.4g -> %.4g (%.1f%%), %.2f s",
          m.smooth_name, table.concat(names, ", "), info.ratio, info.duo and " duo" or "", info.index,
          info.initial_error, info.best_error,
          info.initial_error > 0 and 100 * info.best_error / info.initial_error or 100, util.now() - t0))
        x_mean:release()
      end
      release_all(fp)
      obs:free()
      self._stats[m.smooth_name] = nil
      -- the parent's cache goes when no pending mapping needs it any more
      local needed = false
      for _, o in ipairs(self._resolved_mappings) do
        if o.parent == m.parent and self._stats[o.smooth_name] then needed = true end
      end
      if not needed and self._cache[m.parent] then
        for _, e in ipairs(self._cache[m.parent]) do e.x:release() end
        self._cache[m.parent] = {}
      end
    end
  end)
  state.hooks_disabled = was
  if not ok then error(err, 0) end
end

function AWQ:on_sequential_epoch_end(state)
  self:apply_smoothing(state)
end

local function leftover(self)
  local left = {}
  for name in pairs(self._stats or {}) do left[#left + 1] = name end
  table.sort(left)
  return left
end

function AWQ:on_calibration_end(state)
  local left = leftover(self)
  if #left > 0 then
    self:error("some cached activations were not used (no sequential_epoch_end reached " ..
      table.concat(left, ", ") .. ")")
  end
  for _, h in ipairs(self._hooks or {}) do h:remove() end
  self._hooks = {}
  self._cache = {}
  -- the rescaled weights, quantized as QuantizationModifier does
  QM.quantize(self, state, self._selected)
  QM.on_calibration_end(self, state)
end

function AWQ:on_finalize(state)
  local left = leftover(self)
  if #left > 0 then
    self:error(string.format("failed to smooth %d mappings (statistics never applied: %s)", #left,
      table.concat(left, ", ")))
  end
  QM.quantize(self, state, self._selected)
  if not self.ended_ then
    for _, h in ipairs(self._hooks or {}) do h:remove() end
    self._hooks = {}
    QM.on_calibration_end(self, state)
  end
  return true
end

return AWQ
