--[[
llmc.modifiers.activations — calibration of static activation and KV-cache
scales for QuantizationModifier and GPTQModifier (algorithms.md §4.5, §4.6;
compressed-tensors-format.md §4.2, §7).

  local acts = require "llmc.modifiers.activations"
  acts.start(mod, state)              -- calibration_start: observers + hooks
  acts.epoch_end(mod, state, set)     -- sequential_epoch_end: qparams of the modules in set
  acts.finish(mod, state)             -- calibration_end: remove hooks, qparams of what is
                                      -- left, quantized forward (static QDQ) from now on

What is observed (forward hooks; skipped while state.hooks_disabled, the
sequential pipeline's propagation pass):
  * input_activations with dynamic = false (tensor strategy): the Linear's
    input -> `input_scale` [1] in the model dtype W (+ `input_zero_point`
    when asymmetric);
  * input_activations with dynamic = "local" (tensor_group, NVFP4): the
    input -> `input_global_scale` (fp32 [1]); per-group scales stay dynamic;
  * output_activations with dynamic = false: the output -> `output_scale`;
  * kv_cache_scheme on every Attention module: the key (after RoPE) and
    value states -> `k_scale` / `v_scale`, [1] (tensor) or
    [kv_heads, 1, 1] (attn_head), dtype W.
Statistics are kept by the C observers of llmc._observer in the model dtype,
with llm-compressor's update rules: `static_minmax` (running min / max),
`minmax` (the default when a scheme names no observer: an EMA with
averaging_constant 0.01 seeded by the first batch) or `memoryless_minmax`.
The results land in module.calibrated = {name = Tensor}, which llmc.save
writes as "<module>.<name>" next to the module's compressed weight.

As in llm-compressor, activations are NOT fake-quantized during calibration
(the observers see the unquantized model, apart from weight edits such as
GPTQ's); from calibration_end on, module.input_transform / output_transform /
kv_transform apply the calibrated static quantization in every forward pass.
]]
local quant = require "llmc.quant"
local module = require "llmc.module"

local M = {}

local UPDATE = {static_minmax = "static_minmax", minmax = "minmax", memoryless_minmax = "memoryless_minmax"}
local DT = {bfloat16 = "bf16", float16 = "f16", float32 = "f32", bf16 = "bf16", f16 = "f16", f32 = "f32"}

--- Whether activation args are calibrated (static or "local").
function M.is_static(a)
  return a ~= nil and (a.dynamic == false or a.dynamic == "local")
end

-- the observer update rule of activation args (error names the args)
local function update_rule(a, what)
  local name = a.observer or "minmax"
  local u = UPDATE[name]
  if not u then
    error(string.format("%s: observer '%s' is not available for activations in llmc " ..
      "(static_minmax, minmax, memoryless_minmax)", what, tostring(name)), 0)
  end
  local kw = a.observer_kwargs or {}
  local c = kw.averaging_constant or 0.01
  return u, c
end

--- Check, at initialize time, that every static activation of the resolved
--- groups (and the KV-cache args) can be calibrated; errors name the group.
function M.validate(resolved)
  for _, g in ipairs(resolved.groups) do
    for _, f in ipairs({"input_activations", "output_activations"}) do
      local a = g.scheme[f]
      if M.is_static(a) then
        local what = string.format("config group %s %s", g.name, f)
        update_rule(a, what)
        local ok = (a.dynamic == false and a.strategy == "tensor") or
                   (a.dynamic == "local" and a.strategy == "tensor_group" and f == "input_activations")
        if not ok then
          error(string.format("%s: static %s activations are not supported (static scales are per tensor; " ..
            "dynamic = \"local\" needs tensor_group inputs)", what, tostring(a.strategy)), 0)
        end
      end
    end
  end
  local kv = resolved.kv_cache_scheme
  if kv then
    update_rule(kv, "kv_cache_scheme")
    if kv.dynamic ~= false then error("kv_cache_scheme: the KV-cache scales are static: set dynamic = false", 0) end
    if kv.strategy ~= "tensor" and kv.strategy ~= "attn_head" then
      error("kv_cache_scheme: strategy must be tensor or attn_head (got " .. tostring(kv.strategy) .. ")", 0)
    end
  end
end

local function new_observer(a, cols, heads, dtype, what)
  local O = require "llmc._observer"
  local u, c = update_rule(a, what)
  local reduce = "tensor"
  if a.strategy == "attn_head" then reduce = "head"
  elseif a.strategy == "tensor_group" then
    -- llm-compressor keeps one statistic per group (B*S, H/g, g) and takes
    -- the global scale from the largest: the same as a tensor-wide max for
    -- static_minmax, not for an EMA
    reduce, heads = "head", cols // a.group_size
  end
  return O.new{reduce = reduce, heads = reduce == "head" and heads or nil, cols = cols, update = u,
               averaging_constant = c, dtype = DT[dtype] or dtype}
end

local function model_dtype(state, m)
  local ok, info = pcall(m.param_info, m, "weight")
  if ok and info and info.dtype then return info.dtype end
  return state.model.dtype or "float32"
end

--- Attach the observers and hooks; returns the number of observers.
function M.start(mod, state)
  mod._act = {}
  mod._act_hooks = {}
  local n = 0
  for _, s in ipairs(mod._selected or {}) do
    local sc, m = s.group.scheme, s.module
    if m.kind == "Linear" then
      for _, f in ipairs({"input_activations", "output_activations"}) do
        local a = sc[f]
        if M.is_static(a) then
          local cols = f == "input_activations" and m.in_features or m.out_features
          local rec = {s = s, field = f, args = a,
                       obs = new_observer(a, cols, nil, model_dtype(state, m), s.name .. " " .. f)}
          mod._act[#mod._act + 1] = rec
          n = n + 1
          if f == "input_activations" then
            mod._act_hooks[#mod._act_hooks + 1] = m:register_forward_pre_hook(function(_, x)
              if not state.hooks_disabled then rec.obs:observe(x) end
              -- observed: the forward pass may release it eagerly again
              -- (Module:forward marks hook arguments as kept)
              module.escaped[x] = nil
            end)
          else
            mod._act_hooks[#mod._act_hooks + 1] = m:register_forward_hook(function(_, x, y)
              if not state.hooks_disabled then rec.obs:observe(y) end
              module.escaped[x] = nil
              module.escaped[y] = nil
            end)
          end
        end
      end
    end
  end
  local kv = mod._resolved and mod._resolved.kv_cache_scheme
  if kv then
    for name, m in state.model:modules("Attention") do
      local dtype = model_dtype(state, m.k_proj)
      local cols = m.num_kv_heads * m.head_dim
      local rec = {name = name, attn = m, args = kv, heads = m.num_kv_heads, kv = true,
                   kobs = new_observer(kv, cols, m.num_kv_heads, dtype, "kv_cache_scheme"),
                   vobs = new_observer(kv, cols, m.num_kv_heads, dtype, "kv_cache_scheme")}
      mod._act[#mod._act + 1] = rec
      n = n + 2
      -- the states are [B, T, kv_heads, head_dim]: one row per token
      local function observe(obs, x)
        local x2 = x:reshape({x:numel() // cols, cols})
        obs:observe(x2)
        if x2 ~= x then x2:release() end
      end
      m.kv_observer = function(_, k, v)
        if not state.hooks_disabled then
          observe(rec.kobs, k)
          observe(rec.vobs, v)
        end
      end
    end
  end
  return n
end

-- a Lua number as a fp32 [1] tensor
local function f32_scalar(x)
  local T = require "llmc._tensor"
  return T.tensor({x}, "float32")
end

-- qparams of one observer -> {suffix = Tensor}
local function qparams_of(obs, a, prefix, what, shape)
  local b, tokens = obs:count()
  if (b or 0) == 0 then
    error(string.format("%s: no calibration data reached it, so its static %s scale cannot be computed " ..
      "(is it used by the forward pass? an MoE expert that no token was routed to needs " ..
      "moe_calibrate_all_experts = true)", what, prefix:gsub("_$", "")), 0)
  end
  local q = obs:qparams(quant.c_args(a))
  local out = {}
  if a.dynamic == "local" then
    out[prefix .. "global_scale"] = f32_scalar(q.global_scale)
  else
    out[prefix .. "scale"] = shape and q.scale:view(shape) or q.scale
    if q.zero_point then out[prefix .. "zero_point"] = shape and q.zero_point:view(shape) or q.zero_point end
  end
  return out, tokens
end

local function store(m, t)
  local c = rawget(m, "calibrated")
  if not c then c = {}; m.calibrated = c end
  for k, v in pairs(t) do c[k] = v end
end

-- compute and store the qparams of one record; frees its observers
local function finish_record(rec)
  if rec.done then return end
  if rec.kv then
    local shape = rec.args.strategy == "attn_head" and {rec.heads, 1, 1} or nil
    local ks = qparams_of(rec.kobs, rec.args, "k_", rec.name .. " (keys)", shape)
    local vs = qparams_of(rec.vobs, rec.args, "v_", rec.name .. " (values)", shape)
    store(rec.attn, ks)
    store(rec.attn, vs)
    rec.kobs:free(); rec.vobs:free()
    rec.attn.kv_observer = nil
  else
    local prefix = rec.field == "input_activations" and "input_" or "output_"
    local t = qparams_of(rec.obs, rec.args, prefix, rec.s.name)
    store(rec.s.module, t)
    rec.obs:free()
  end
  rec.done = true
end

--- Compute the qparams of the observed modules in `set` (a table keyed by
--- module); an Attention module in the set finishes its KV scales.
function M.epoch_end(mod, state, set)
  for _, rec in ipairs(mod._act or {}) do
    local m = rec.kv and rec.attn or rec.s.module
    if set[m] then finish_record(rec) end
  end
end

-- the runtime (post-calibration) quantized forward
local function install(rec)
  local K = require "llmc._quant"
  local ca = quant.c_args(rec.args)
  if rec.kv then
    local attn = rec.attn
    local c = rawget(attn, "calibrated")
    local ks, kz, vs, vz = c.k_scale, c.k_zero_point, c.v_scale, c.v_zero_point
    local head = rec.args.strategy == "attn_head"
    local function qdq(x, s, z)
      if not head then return K.qdq_static(x, ca, s, z) end
      -- per head: lay the states out as [heads, rest], then back
      local shp = x:shape()
      local xh = x:permute({2, 0, 1, 3}):contiguous()
      local yh = K.qdq_static(xh, ca, s, z)
      xh:release()
      local y = yh:permute({1, 2, 0, 3}):contiguous()
      yh:release()
      assert(#y:shape() == #shp)
      return y
    end
    attn.kv_transform = function(_, k, v) return qdq(k, ks, kz), qdq(v, vs, vz) end
    return
  end
  local m = rec.s.module
  local c = rawget(m, "calibrated")
  local fn
  if rec.args.dynamic == "local" then
    local gs = c.input_global_scale:item()
    fn = function(x) return K.qdq_dynamic(x, ca, gs) end
  elseif rec.field == "input_activations" then
    local s, z = c.input_scale, c.input_zero_point
    fn = function(x) return K.qdq_static(x, ca, s, z) end
  else
    local s, z = c.output_scale, c.output_zero_point
    fn = function(x) return K.qdq_static(x, ca, s, z) end
  end
  if rec.field == "input_activations" then m.input_transform = fn else m.output_transform = fn end
end

--- Remove the hooks, finish every record, switch the quantized forward on.
--- Returns {activations = n, kv = n attention modules, min_scale =, max_scale =}.
function M.finish(mod, state)
  for _, h in ipairs(mod._act_hooks or {}) do h:remove() end
  mod._act_hooks = {}
  local n, nkv, lo, hi = 0, 0, math.huge, -math.huge
  for _, rec in ipairs(mod._act or {}) do
    finish_record(rec)
    install(rec)
    if rec.kv then nkv = nkv + 1 else n = n + 1 end
    local m = rec.kv and rec.attn or rec.s.module
    for k, t in pairs(rawget(m, "calibrated") or {}) do
      if k:match("scale$") and not k:match("global") then
        local st = t:to("float32")
        local a, b = st:min(), st:max()
        if type(a) ~= "number" then a, b = a:item(), b:item() end
        if a < lo then lo = a end
        if b > hi then hi = b end
      end
    end
  end
  return {activations = n, kv = nkv, min_scale = lo <= hi and lo or nil, max_scale = lo <= hi and hi or nil}
end

return M
