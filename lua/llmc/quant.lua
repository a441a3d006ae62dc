--[[
llmc.quant — Lua helpers around the quantization kernels ("llmc._quant"):
quantize one weight into the tensors of its compressed-tensors format,
measure quantization error, group fused layers for shared NVFP4 global
scales, and decompress checkpoint tensors.

  local llmc = require "llmc"
  local w = model:get("model.layers.0.mlp.down_proj").weight
  local e = llmc.qerror(w, "W4A16")          -- {rel = 0.071, max_abs = 0.0039, fake = Tensor, ...}
  print(string.format("%.4f", e.rel))
  local r = llmc.quant.compress(w, "FP8_BLOCK")   -- {format =, tensors = {{name =, tensor =}}, fake =}

A "scheme" argument may be a preset name, a scheme (llmc.schemes), a
QuantizationArgs (llmc.qargs) or a plain args table; only the weight args
are used by the weight helpers.
]]
local util = require "llmc.util"
local qargs = require "llmc.qargs"
local schemes = require "llmc.schemes"

local quant = {}

local Q
local function kernels()
  if not Q then Q = require "llmc._quant" end
  return Q
end

-- LC observers that are parameterisations of the MSE grid search
-- (algorithms.md §4.2): name -> observer_kwargs defaults
local MSE_ALIASES = {
  nvfp4_expanded_mse = {expand = 1.8, maxshrink = 1 - 0.8 / 1.8, grid = 200, patience = 1000},
  fouroversix = {expand = 1.8, maxshrink = 1 - 0.8 / 1.8, grid = 200, patience = 1000},
}

--- The plain table the C kernels read, from QuantizationArgs, plus llmc's
--- options: rounding ("eager" | "fused"), force_zero_point.
function quant.c_args(a, extra)
  local t = {}
  for _, f in ipairs(qargs.FIELDS) do t[f] = a[f] end
  local kw = {}
  for k, v in pairs(a.observer_kwargs or {}) do kw[k] = v end
  local alias = a.observer and MSE_ALIASES[a.observer]
  if alias then
    t.observer = "mse"
    for k, v in pairs(alias) do if kw[k] == nil then kw[k] = v end end
  end
  t.observer_kwargs = kw
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

--- Weight args (QArgs) of a scheme-like argument (see the header).
function quant.weight_args(s)
  if type(s) == "string" then
    local sc = schemes.preset(s, {"Linear"})
    if not sc.weights then error("scheme " .. s .. " does not quantize weights", 2) end
    return sc.weights, sc
  end
  if schemes.is_scheme(s) then
    if not s.weights then error("the scheme does not quantize weights", 2) end
    return s.weights, s
  end
  if qargs.is_qargs(s) then return s end
  if type(s) == "table" then return qargs.new(s, "args") end
  error("expected a scheme name, a scheme or quantization args, got " .. type(s), 2)
end

--- Quantize a 2-D weight into its compressed tensors.
--- opts: format, input_args / output_args (QArgs; pick the format and
--- layout), global_scale (shared G), rounding, force_zero_point, fake,
--- error.  Returns the kernel's result table (see src/lua_quant.c).
function quant.compress(w, s, opts)
  opts = opts or {}
  local wa, sc = quant.weight_args(s)
  local ia = opts.input_args or (sc and sc.input_activations)
  local oa = opts.output_args or (sc and sc.output_activations)
  local kopts = {
    format = opts.format, global_scale = opts.global_scale, fake = opts.fake ~= false,
    error = opts.error ~= false,
    input_args = ia and quant.c_args(ia) or nil,
    output_args = oa and quant.c_args(oa) or nil,
  }
  return kernels().compress(w, quant.c_args(wa, {rounding = opts.rounding, force_zero_point = opts.force_zero_point}), kopts)
end

--- Quantization error of a weight under a scheme: {rel = ||w - fq|| / ||w||,
--- max_abs = max |w - fq|, sq_err, sq_ref, fake = the fake-quantized weight}.
function quant.qerror(w, s, opts)
  opts = opts or {}
  local wa = quant.weight_args(s)
  local gs = opts.global_scale
  if not gs and wa.strategy == "tensor_group" then
    gs = quant.global_scale({w}, wa)
  end
  local fake = kernels().fake_quantize(w, quant.c_args(wa, {rounding = opts.rounding}), gs)
  local se, sr, mx = kernels().error_stats(w, fake)
  return {rel = sr > 0 and math.sqrt(se / sr) or 0, max_abs = mx, sq_err = se, sq_ref = sr, fake = fake}
end

--- Shared fp32 global scale of a fused set of tensor_group weights (§6.3):
--- G from the largest group absmax over all of them.
function quant.global_scale(weights, wa)
  local K = kernels()
  local amax, dtype = 0, nil
  local ca = quant.c_args(wa)
  for _, w in ipairs(weights) do
    local a = K.global_amax(w, ca)
    if a > amax then amax = a end
    dtype = dtype or w:dtype()
  end
  return K.global_scale(amax, dtype or "bfloat16")
end

---------------------------------------------------------------------------
-- fused sets (NVFP4 global scales)
---------------------------------------------------------------------------

-- oneshot (llm-compressor's fuse_weight_observers): siblings under the same parent
quant.FUSED_SIBLINGS = {
  {"q_proj", "k_proj", "v_proj"},
  {"gate_proj", "up_proj"},
  {"q_a_proj", "kv_a_proj_with_mqa"},
  {"w1", "w3"},
}

--- Partition module names into fused sets by parent and sibling names
--- (oneshot rule).  Returns {set = {names...}} lists; unfused names form
--- singletons.  Order follows `names`.
function quant.fused_groups(names)
  local by_parent = {}
  for _, n in ipairs(names) do
    local parent, leaf = n:match("^(.*)%.([^.]+)$")
    if not parent then parent, leaf = "", n end
    by_parent[parent] = by_parent[parent] or {}
    by_parent[parent][leaf] = n
  end
  local done, out = {}, {}
  for _, n in ipairs(names) do
    if not done[n] then
      local parent, leaf = n:match("^(.*)%.([^.]+)$")
      if not parent then parent, leaf = "", n end
      local set = {n}
      for _, sib in ipairs(quant.FUSED_SIBLINGS) do
        local member = false
        for _, s in ipairs(sib) do if s == leaf then member = true end end
        if member then
          set = {}
          for _, s in ipairs(sib) do
            local full = by_parent[parent][s]
            if full then set[#set + 1] = full end
          end
          break
        end
      end
      for _, x in ipairs(set) do done[x] = true end
      out[#out + 1] = set
    end
  end
  return out
end

---------------------------------------------------------------------------
-- decompression of a compressed-tensors checkpoint
---------------------------------------------------------------------------

local SUFFIXES = {"weight_packed", "weight_scale", "weight_zero_point", "weight_global_scale", "weight_shape",
                  "input_scale", "input_zero_point", "input_global_scale", "output_scale",
                  "output_zero_point", "output_global_scale", "weight"}

--- For a checkpoint's quantization_config (config.json, decoded), return a
--- resolver: res:scheme_of(module_name, kind) -> scheme, format | nil.
--- Name matching follows the config's targets / ignore (class names match
--- the module kind, "Linear" by default).
function quant.config_resolver(qc)
  local base = require "llmc.modifiers.base"
  local json = util.json
  local groups = {}
  local cg = qc.config_groups or {}
  local keys = json.keys(cg) or {}
  if #keys == 0 then for k in pairs(cg) do keys[#keys + 1] = k end table.sort(keys) end
  for _, k in ipairs(keys) do
    local v = cg[k]
    local s
    if schemes.is_preset(k) and json.is_array(v) then s = schemes.preset(k, v, "quantization_config.config_groups." .. k)
    else
      local spec = {}
      for _, f in ipairs({"targets", "weights", "input_activations", "output_activations", "format"}) do
        if v[f] ~= nil and v[f] ~= json.null then spec[f] = v[f] end
      end
      s = schemes.new(spec, "quantization_config.config_groups." .. k)
    end
    groups[#groups + 1] = {name = k, scheme = s}
  end
  local ignore = {}
  for _, e in ipairs(qc.ignore ~= json.null and qc.ignore or {}) do ignore[#ignore + 1] = e end
  local model_format = qc.format ~= json.null and qc.format or nil
  local res = {groups = groups, ignore = ignore, format = model_format}
  function res:scheme_of(name, kind)
    local m = {kind = kind or "Linear", class_name = kind or "Linear"}
    if base.any_match(ignore, name, m) then return nil end
    local best, bprec, btarget
    for _, g in ipairs(groups) do
      for _, t in ipairs(g.scheme.targets) do
        local p = base.match_kind(t, name, m)
        if p and (not best or p < bprec or (p == bprec and t <= btarget)) then
          best, bprec, btarget = g, p, t
        end
      end
    end
    if not best then return nil end
    local f = best.scheme.format
    if not f or f == "mixed-precision" then
      f = (model_format and model_format ~= "mixed-precision") and model_format or schemes.infer_format(best.scheme, kind)
    end
    return best.scheme, f
  end
  return res
end

--- Decompress module `prefix` of a checkpoint: `get(name)` returns the
--- tensor called name (or nil); returns the weight [rows, cols] in `dtype`
--- (default: the scale's dtype, bf16 for the fp4 / MX formats).
function quant.decompress(get, prefix, scheme, format, rows, cols, dtype)
  local tensors = {}
  for _, s in ipairs(SUFFIXES) do
    local t = get(prefix .. "." .. s)
    if t then tensors[s] = t end
  end
  if format == "dense" then return tensors.weight end
  if not rows then
    local shp = tensors.weight_shape
    if shp then rows, cols = shp:get(0), shp:get(1)
    elseif tensors.weight then rows, cols = tensors.weight:shape()[1], tensors.weight:shape()[2] end
  end
  if not rows then error("decompress " .. prefix .. ": cannot tell the weight shape", 2) end
  return kernels().decompress(format, quant.c_args(scheme.weights), rows, cols, tensors, dtype)
end

--- Decompress every quantized module of a compressed-tensors checkpoint
--- directory.  Returns a table name -> Tensor holding the checkpoint's
--- tensors with each quantized module's tensors replaced by its dequantized
--- `weight` (in the scale's dtype; bf16 for the fp4 / MX formats), and the
--- decoded config.json.  Memory: the whole dequantized model.
function quant.decompress_checkpoint(path)
  local json = util.json
  local ST = require "llmc._safetensors"
  local config = json.read_file(path .. "/config.json")
  local qc = config.quantization_config
  if type(qc) ~= "table" or qc.quant_method ~= "compressed-tensors" then
    error(path .. ": not a compressed-tensors checkpoint (no quantization_config with quant_method compressed-tensors)", 0)
  end
  local res = quant.config_resolver(qc)
  local f = ST.open(path)
  local names = f:names()
  local have = {}
  for _, n in ipairs(names) do have[n] = true end
  local modules, order = {}, {}
  for _, n in ipairs(names) do
    local mname, suffix = n:match("^(.*)%.([^.]+)$")
    if mname and quant.is_qparam_suffix(suffix) and (suffix == "weight_packed" or suffix == "weight_scale") then
      if not modules[mname] then modules[mname] = true; order[#order + 1] = mname end
    end
  end
  local out = {}
  local consumed = {}
  for _, mname in ipairs(order) do
    local scheme, fmt = res:scheme_of(mname, mname:match("embed_tokens$") and "Embedding" or "Linear")
    if scheme and scheme.weights and fmt ~= "dense" then
      local get = function(n) if have[n] then return f:get(n) end return nil end
      local rows, cols
      if have[mname .. ".weight_shape"] then
        local shp = f:get(mname .. ".weight_shape")
        rows, cols = shp:get(0), shp:get(1)
      elseif have[mname .. ".weight"] then
        local info = f:info(mname .. ".weight")
        rows, cols = info.shape[1], info.shape[2]
      else
        local info = f:info(mname .. ".weight_packed")
        rows, cols = info.shape[1], info.shape[2] * 2      -- fp4: two values per byte
      end
      out[mname .. ".weight"] = quant.decompress(get, mname, scheme, fmt, rows, cols)
      for _, s in ipairs(SUFFIXES) do
        if s:sub(1, 7) == "weight_" or s == "weight" then consumed[mname .. "." .. s] = true end
      end
    end
  end
  for _, n in ipairs(names) do
    if not consumed[n] then out[n] = f:get(n) end
  end
  return out, config
end

--- Load a compressed-tensors checkpoint as an ordinary (dequantized) model:
--- the quantized weights are decompressed into a temporary bf16 checkpoint
--- that llmc.load maps (the files are unlinked right away; the mapping keeps
--- them alive).  Other checkpoints load with llmc.load unchanged.
---   local m = llmc.quant.load("out/tiny-llama-FP8_BLOCK")
---   print(llmc.eval.perplexity(m, text))
function quant.load(path, opts)
  local json = util.json
  path = path:gsub("/+$", "")
  local config = json.read_file(path .. "/config.json")
  local qc = config.quantization_config
  if type(qc) ~= "table" or qc.quant_method ~= "compressed-tensors" then
    return require("llmc.models").load(path, opts)
  end
  local F = util.fs
  local tensors, cfg = quant.decompress_checkpoint(path)
  cfg.quantization_config = nil
  local tmp = string.format("%s/llmc-dequant.%d.%d", os.getenv("TMPDIR") or "/tmp", F.getpid(), math.random(1 << 30))
  F.mkdir_p(tmp)
  local ok, model = pcall(function()
    require("llmc._safetensors").save(tmp .. "/model.safetensors", tensors, {metadata = {format = "pt"}})
    util.write_file(tmp .. "/config.json", json.encode(cfg, {indent = 2}))
    local m = require("llmc.models").load(tmp, opts)
    return m
  end)
  pcall(F.rmtree, tmp)
  if not ok then error(model, 0) end
  model.path = path
  model.config.quantization_config = qc
  return model
end

--- Drop the full-size quantize-dequantized weight of a module that holds its
--- compressed form (m.compressed = {format, tensors, scheme}); the weight
--- becomes a lazy parameter decompressed from those tensors the first time
--- something reads it (then kept).  This is what keeps oneshot's memory at
--- the compressed model plus the layer at work instead of a full-precision
--- copy of every quantized weight; llm-compressor's model is in the same
--- state after saving (compress_model replaces the weights by their codes).
--- The values are the checkpoint's: for RTN the fake weight's (only the sign
--- of a zero may differ, docs/quantization.md); for GPTQ int8 on bf16
--- weights a few elements one bf16 ulp away from the solver's fake weight,
--- because compressed-tensors re-derives the codes from the rounded weight.
--- The dropped tensor is released at once (its bytes are not left for the
--- collector): nothing may keep using a fake weight read before the call.
--- Returns the bytes dropped (0 when there is nothing to drop).
---   quant.compact(model:get("model.layers.0.mlp.down_proj"))
---   for _, m in model:modules() do quant.compact(m) end
function quant.compact(m)
  local c = rawget(m, "compressed")
  local w = rawget(m, "weight")
  if not (c and c.scheme and c.scheme.weights and w) or c.format == "dense" then return 0 end
  local shape, dtype = w:shape(), w:dtype()
  if #shape ~= 2 then return 0 end
  local nbytes = w:nbytes()
  local meta = rawget(m, "_pmeta") or {}
  rawset(m, "_pmeta", meta)
  meta.weight = {shape = shape, dtype = dtype, device = m.device or "cpu"}
  m:param("weight", function(self, k)
    local byname = {}
    for _, e in ipairs(c.tensors) do byname[e.name] = e.tensor end
    local t = kernels().decompress(c.format, quant.c_args(c.scheme.weights), shape[1], shape[2], byname, dtype)
    rawset(self, k, t)
    return t
  end)
  w:release()
  return nbytes
end

--- Tensor names that belong to a quantized module (suffixes of §4.3).
function quant.is_qparam_suffix(s)
  for _, x in ipairs(SUFFIXES) do if x == s and x ~= "weight" then return true end end
  return false
end

return quant
