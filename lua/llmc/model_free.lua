--[[
llmc.model_free — llmc.model_free_ptq{...}: quantize the weights of a
safetensors checkpoint without building a model (llm-compressor's
model_free_ptq, compressed-tensors-format.md §8, algorithms.md §12).

  llmc.model_free_ptq{
    model = "fixtures/models/tiny-llama",      -- a model directory (model_stub)
    output_dir = "out/tiny-llama-FP8_BLOCK-mf", -- (save_directory)
    scheme = "FP8_BLOCK",                        -- a preset, or a scheme table (config_group_0)
    ignore = {"lm_head", "model.embed_tokens"},  -- module names / re: patterns
    max_workers = 2,
  }

or config = {config_groups = {...}, ignore = {...}} instead of scheme.
Other keys: overwrite, quiet, rounding ("eager" | "fused"), device
("cpu"; the kernels run on the host), errors (default false; true
measures each weight's quantization error for the summary's error table,
which costs one more fake-quantize pass per tensor, about 2x the time).  Unknown keys are an error.

What is quantized (name-only matching, as upstream): a tensor
"<module>.weight" whose module does not end in "norm", targeted by a config
group (targets empty or containing "Linear" = every module; else exact
names / re: patterns) and not ignored; the first group wins.  So lm_head and
the embeddings are quantized unless ignored.  Fused 3-D MoE tensors
(gate_up_proj / down_proj) are split into per-expert 2-D tensors first.
tensor_group schemes (NVFP4A16) share one global scale across q/k/v and
mlp gate/up, fetching partners from other shards.

Streaming: one input shard at a time, one tensor at a time: the input is
memory-mapped, each quantized tensor is compressed by one kernel call
(multithreaded inside) and its outputs written straight into the
preallocated output shard (llmc._stwriter); nothing else is held, so the
memory stays at a few tensors whatever the model size.  Output shards keep
the input file names; model.safetensors.index.json is always written;
every other file is copied; config.json gets the quantization_config.
Bytes of the quantized tensors equal the oneshot path's for the same
scheme, except fp8 elements that are exactly -0.0 (oneshot adds its
all-zero zero point, giving +0; model_free keeps -0, as upstream, §3.4).
]]
local util = require "llmc.util"
local json = util.json
local schemes = require "llmc.schemes"
local qargs = require "llmc.qargs"
local quant = require "llmc.quant"
local base = require "llmc.modifiers.base"
local save = require "llmc.save"

local M = {}

local KEYS = {model = true, model_stub = true, output_dir = true, save_directory = true, scheme = true,
              config = true, ignore = true, max_workers = true, device = true, overwrite = true, quiet = true,
              rounding = true, converter = true, errors = true}

local function fail(msg) error("llmc.model_free_ptq: " .. msg, 0) end

--- Resolve scheme / config into {groups = {{name=, scheme=}}, ignore = {...}}
--- with upstream's checks (validate_config).
function M.resolve_config(a)
  if a.scheme ~= nil and a.config ~= nil then fail("give either `scheme` or `config`, not both") end
  if a.scheme == nil and a.config == nil then fail("give `scheme` (a preset name or a scheme table) or `config`") end
  local groups, ignore = {}, {}
  local user_ignore = schemes.targets_list(a.ignore, "llmc.model_free_ptq", "ignore") or {}
  if a.scheme ~= nil then
    if type(a.scheme) == "string" then
      if not schemes.is_preset(a.scheme) then
        local ok, err = pcall(schemes.preset, a.scheme, {}, "llmc.model_free_ptq: scheme")
        if not ok then error(err, 0) end
      end
      groups[1] = {name = a.scheme, scheme = schemes.preset(a.scheme, {}, "llmc.model_free_ptq: scheme")}
    else
      local spec = util.deepcopy(a.scheme)
      if type(spec) == "table" and not schemes.is_scheme(spec) and spec.targets == nil then spec.targets = {} end
      groups[1] = {name = "config_group_0", scheme = schemes.new(spec, "llmc.model_free_ptq: scheme")}
    end
    ignore = user_ignore
  else
    local c = a.config
    if type(c) ~= "table" then fail("config must be a table {config_groups = ..., ignore = ...}") end
    local r = schemes.resolve({config_groups = c.config_groups, ignore = c.ignore, targets = {}},
      function(field) return "llmc.model_free_ptq: config" .. (field and ("." .. field) or "") end)
    for _, g in ipairs(r.groups) do
      -- resolve() filled observers (oneshot rule); model_free keeps the user's
      local orig = c.config_groups[g.name]
      local s = g.scheme
      for _, f in ipairs({"weights", "input_activations", "output_activations"}) do
        local spec = orig and orig[f]
        if s[f] and (type(spec) ~= "table" or spec.observer == nil) then s[f] = qargs.copy(s[f], {observer = json.null}) end
      end
      groups[#groups + 1] = g
    end
    for _, e in ipairs(r.ignore) do ignore[#ignore + 1] = e end
    for _, e in ipairs(user_ignore) do ignore[#ignore + 1] = e end
  end
  for _, g in ipairs(groups) do
    local s = g.scheme
    local where = "llmc.model_free_ptq: scheme " .. g.name
    if not s.weights then error(where .. ": weights are required (model_free_ptq quantizes weights only)", 0) end
    for _, f in ipairs({"input_activations", "output_activations"}) do
      if s[f] and s[f].dynamic ~= true then
        error(where .. ": " .. f .. " are " .. (s[f].dynamic == "local" and "dynamic=\"local\"" or "static") ..
              ": model_free_ptq cannot calibrate activations (use llmc.oneshot, or e.g. NVFP4A16 instead of NVFP4)", 0)
      end
    end
    if s.weights.observer == "minmax" or s.weights.observer == "mse" then
      s.weights = qargs.copy(s.weights, {observer = "static_" .. s.weights.observer})
    end
    if #s.targets == 0 then s.targets = {"Linear"} end
  end
  return {groups = groups, ignore = ignore}
end

-- does config group g select module `mname` (name-only rule)?
local function targeted(s, mname)
  for _, t in ipairs(s.targets) do
    if t == "Linear" then return true end
  end
  for _, t in ipairs(s.targets) do
    if base.matches(t, mname, nil) then return true end
  end
  return false
end

--- The config group owning tensor `name`, or nil.
function M.select(cfg, name)
  local mname, pname = name:match("^(.*)%.([^.]*)$")
  if not mname then mname, pname = "", name end
  if mname:sub(-4) == "norm" or pname ~= "weight" then return nil end
  for _, g in ipairs(cfg.groups) do
    if targeted(g.scheme, mname) then
      if base.any_match(cfg.ignore, mname, nil) then return nil end
      return g, mname
    end
  end
  return nil
end

-- fused sets for tensor_group global scales (upstream's _DEFAULT_FUSED_MAPPINGS_LIST)
local FUSED = {
  {pat = {"^(.*)%.q_proj%.weight$", "^(.*)%.k_proj%.weight$", "^(.*)%.v_proj%.weight$"}, attn = true},
  {pat = {"^(.*)%.wq_a%.weight$", "^(.*)%.wkv_a_with_mqa%.weight$"}, attn = true},
  {pat = {"^(.*mlp)%.gate_proj%.weight$", "^(.*mlp)%.up_proj%.weight$"}},
  {pat = {"^(.*)%.w1%.weight$", "^(.*)%.w3%.weight$"}},
}

--- Group tensor names into complete fused sets: list of {names...}.
function M.fused_sets(names)
  local sets = {}
  for fi, f in ipairs(FUSED) do
    local by_prefix, order = {}, {}
    for _, n in ipairs(names) do
      for pi, p in ipairs(f.pat) do
        local prefix = n:match(p)
        if prefix and (not f.attn or prefix:match("attn$") or prefix:match("attention$")) then
          local key = fi .. ":" .. prefix
          if not by_prefix[key] then by_prefix[key] = {}; order[#order + 1] = key end
          by_prefix[key][pi] = n
        end
      end
    end
    for _, key in ipairs(order) do
      local s = by_prefix[key]
      local complete = true
      for pi = 1, #f.pat do if not s[pi] then complete = false end end
      if complete then
        local l = {}
        for pi = 1, #f.pat do l[pi] = s[pi] end
        sets[#sets + 1] = l
      end
    end
  end
  return sets
end

-- walk a directory: relative paths of every file (skipping .cache*, .gitattributes)
local function walk(F, root, rel, out)
  for _, n in ipairs(F.listdir(rel == "" and root or (root .. "/" .. rel))) do
    local r = rel == "" and n or (rel .. "/" .. n)
    if not (rel == "" and (n:sub(1, 6) == ".cache" or n == ".gitattributes")) then
      if F.is_dir(root .. "/" .. r) then walk(F, root, r, out) else out[#out + 1] = r end
    end
  end
  return out
end

local function shape_str(s) return "[" .. table.concat(s, ", ") .. "]" end

--- llmc.model_free_ptq{...}; returns a summary table.
function M.model_free_ptq(args)
  local t0 = util.now()
  if type(args) ~= "table" then fail("expected a table of arguments") end
  for k in pairs(args) do
    if not KEYS[k] then fail("unknown argument '" .. tostring(k) .. "'") end
  end
  local F = util.fs
  if not F then fail("needs the llmc executable (llmc._stwriter)") end
  local W = require "llmc._stwriter"
  local ST = require "llmc._safetensors"
  local K = require "llmc._quant"
  local T = require "llmc._tensor"
  F.tune_malloc()   -- streamed tensors go back to the system when freed
  T.reset_peak_memory()
  if args.converter then fail("converters are not supported") end
  local src = args.model or args.model_stub
  local out = args.output_dir or args.save_directory
  if type(src) ~= "string" then fail("`model` must be a checkpoint directory") end
  if type(out) ~= "string" then fail("`output_dir` is required") end
  src = src:gsub("/+$", "")
  if not F.is_dir(src) then fail(src .. " is not a directory") end
  if args.device ~= nil and args.device ~= "cpu" then
    fail("device '" .. tostring(args.device) .. "': llmc's model_free_ptq runs its kernels on the CPU")
  end
  local max_workers = args.max_workers or 1
  if math.type(max_workers) ~= "integer" or max_workers < 1 then fail("max_workers must be a positive integer") end
  local rounding = args.rounding or "eager"
  if rounding ~= "eager" and rounding ~= "fused" then fail("rounding must be \"eager\" or \"fused\"") end
  local cfg = M.resolve_config(args)
  out = save.check_output_dir(out, args.overwrite)

  -- files and the weight map
  local files = walk(F, src, "", {})
  local index_name
  for _, f in ipairs(files) do if f == "model.safetensors.index.json" then index_name = f end end
  if not index_name then
    for _, f in ipairs(files) do if f:match("%.safetensors%.index%.json$") then index_name = f; break end end
  end
  local weight_map = {}      -- tensor -> shard (relative name)
  local shard_names = {}
  if index_name then
    local idx = json.read_file(src .. "/" .. index_name)
    if type(idx) ~= "table" or type(idx.weight_map) ~= "table" then fail(src .. "/" .. index_name .. ": no weight_map") end
    local seen = {}
    for k, v in pairs(idx.weight_map) do
      weight_map[k] = v
      if not seen[v] then seen[v] = true; shard_names[#shard_names + 1] = v end
    end
  else
    local has = false
    for _, f in ipairs(files) do if f == "model.safetensors" then has = true end end
    if not has then fail(src .. ": neither model.safetensors nor a *.safetensors.index.json") end
    shard_names = {"model.safetensors"}
  end
  table.sort(shard_names)
  local is_shard = {}
  for _, s in ipairs(shard_names) do is_shard[s] = true end

  -- open the shards (headers only: tensors are mapped on demand)
  local opened = {}
  local function shard(name)
    local f = opened[name]
    if not f then
      f = ST.open(src .. "/" .. name)
      opened[name] = f
    end
    return f
  end
  local function close_shard(name)
    if opened[name] then opened[name]:close(); opened[name] = nil end
  end

  -- virtual entries per input shard: {name, src_shard, src_name, dtype, shape, slice}
  local entries = {}      -- shard -> list
  local all_names = {}
  local total_in = 0
  for _, sn in ipairs(shard_names) do
    local f = shard(sn)
    local list = {}
    for _, name in ipairs(f:names()) do
      if index_name and weight_map[name] ~= sn then
        fail(string.format("%s: tensor %s is in %s but the index maps it to %s", src, name, sn, tostring(weight_map[name])))
      end
      local info = f:info(name)
      total_in = total_in + info.nbytes
      local split = nil
      if #info.shape == 3 then
        if name:find("gate_up_proj", 1, true) and name:find("down_proj", 1, true) then
          fail("tensor " .. name .. " matches both gate_up_proj and down_proj")
        end
        if name:find("gate_up_proj", 1, true) then split = {"gate_up_proj", {"gate_proj", "up_proj"}}
        elseif name:find("down_proj", 1, true) then split = {"down_proj", {"down_proj"}} end
      end
      if split then
        local E, R, C = info.shape[1], info.shape[2], info.shape[3]
        local parts = split[2]
        if R % #parts ~= 0 then fail(string.format("%s: dim 1 of %s is not divisible by %d", name, shape_str(info.shape), #parts)) end
        local inter = R // #parts
        for e = 0, E - 1 do
          for pi, pn in ipairs(parts) do
            local key = name:gsub(split[1]:gsub("%p", "%%%0"), e .. "." .. pn, 1)
            if key:sub(-7) ~= ".weight" then key = key .. ".weight" end
            list[#list + 1] = {name = key, shard = sn, src = name, dtype = info.dtype, shape = {inter, C},
                               slice = {e, (pi - 1) * inter, inter}, nbytes = info.nbytes // (E * #parts)}
            all_names[#all_names + 1] = key
          end
        end
      else
        list[#list + 1] = {name = name, shard = sn, src = name, dtype = info.dtype, shape = info.shape,
                           nbytes = info.nbytes}
        all_names[#all_names + 1] = name
      end
    end
    entries[sn] = list
    close_shard(sn)
  end
  for _, f in ipairs(files) do
    if f:match("%.safetensors$") and not is_shard[f] and not args.quiet then
      io.stderr:write("llmc.model_free_ptq: skipping ", f, ": not part of the checkpoint's weight map\n")
    end
  end

  -- selection and validation (before any work)
  local by_name = {}
  local nquant = 0
  local used_groups = {}
  for _, sn in ipairs(shard_names) do
    for _, e in ipairs(entries[sn]) do
      by_name[e.name] = e
      local g, mname = M.select(cfg, e.name)
      if g then
        e.group, e.module = g, mname
        local w = g.scheme.weights
        local where = "llmc.model_free_ptq: tensor " .. e.name
        if #e.shape ~= 2 then
          error(where .. " has shape " .. shape_str(e.shape) .. ": only 2-D weights can be quantized; add '" ..
                mname .. "' to ignore", 0)
        end
        if e.dtype ~= "bfloat16" and e.dtype ~= "float16" and e.dtype ~= "float32" then
          error(where .. " is " .. e.dtype .. ": only bfloat16, float16 and float32 weights can be quantized", 0)
        end
        local cols = e.shape[2]
        if (w.strategy == "group" or w.strategy == "tensor_group") and cols % w.group_size ~= 0 then
          error(string.format("%s %s: %d columns are not divisible by group_size %d; add '%s' to ignore",
            where, shape_str(e.shape), cols, w.group_size, mname), 0)
        end
        if w.type == "float" and w.num_bits == 4 and cols % 2 ~= 0 then
          error(where .. " " .. shape_str(e.shape) .. ": fp4 packing needs an even number of columns", 0)
        end
        e.format = g.scheme.format or schemes.infer_format(g.scheme, "Linear")
        local ok, layout = pcall(K.layout, e.format, quant.c_args(w),
          g.scheme.input_activations and quant.c_args(g.scheme.input_activations) or nil,
          g.scheme.output_activations and quant.c_args(g.scheme.output_activations) or nil,
          e.dtype, e.shape[1], e.shape[2])
        if not ok then error(where .. ": " .. tostring(layout), 0) end
        e.layout = layout
        nquant = nquant + 1
        used_groups[g.name] = e.format
      end
    end
  end

  -- fused tensor_group sets: members move to the shard of the first member
  local gset = {}     -- name -> set (list of names)
  local any_tg = false
  for _, g in ipairs(cfg.groups) do if g.scheme.weights.strategy == "tensor_group" then any_tg = true end end
  if any_tg then
    for _, set in ipairs(M.fused_sets(all_names)) do
      local ok = true
      for _, n in ipairs(set) do
        local e = by_name[n]
        if not (e and e.group and e.group.scheme.weights.strategy == "tensor_group") then ok = false end
      end
      if ok then
        for _, n in ipairs(set) do gset[n] = set end
      end
    end
    for _, sn in ipairs(shard_names) do
      local keep = {}
      for _, e in ipairs(entries[sn]) do
        local set = gset[e.name]
        if set and set[1] ~= e.name then
          local home = by_name[set[1]].shard
          if home ~= sn then
            e.moved = true
            entries[home].extra = entries[home].extra or {}
            table.insert(entries[home].extra, e)
          end
        end
        if not e.moved then keep[#keep + 1] = e end
      end
      entries[sn].keep = keep
    end
  end

  local bar = util.progress(nquant, "quantizing", {quiet = args.quiet})
  local weight_map_out = {}
  local total_out = 0
  local bytes_before, bytes_after = 0, 0
  local kinds, kind_order = {}, {}
  local function load(e)
    local f = shard(e.shard)
    local t = f:get(e.src)
    if e.slice then
      local x = t:select(0, e.slice[1]):narrow(0, e.slice[2], e.slice[3])
      t = x
    end
    return t
  end

  save.atomic_dir(out, args.overwrite, function(tmp)
    -- copy every non-weight file (config.json is rewritten below)
    for _, f in ipairs(files) do
      if not f:match("%.safetensors$") and f ~= index_name then
        local dir = util.dirname(f)
        if dir ~= "." then F.mkdir_p(tmp .. "/" .. dir) end
        F.copy_file(src .. "/" .. f, tmp .. "/" .. f)
      end
    end
    for _, sn in ipairs(shard_names) do
      local list = {}
      for _, e in ipairs(entries[sn].keep or entries[sn]) do list[#list + 1] = e end
      for _, e in ipairs(entries[sn].extra or {}) do list[#list + 1] = e end
      local dir = util.dirname(sn)
      if dir ~= "." then F.mkdir_p(tmp .. "/" .. dir) end
      local w = W.writer(tmp .. "/" .. sn)
      for _, e in ipairs(list) do
        if e.layout then
          for _, d in ipairs(e.layout) do
            if d.source == "weight" then
              local n = e.module .. "." .. d.name
              w:declare(n, d.dtype, d.shape)
              weight_map_out[n] = util.basename(sn)
              total_out = total_out + d.nbytes
            end
          end
        else
          w:declare(e.name, e.dtype, e.shape)
          weight_map_out[e.name] = util.basename(sn)
          total_out = total_out + e.nbytes
        end
      end
      w:begin()
      local gdone = {}
      for _, e in ipairs(list) do
        local t = load(e)
        if e.layout then
          local gs = nil
          local set = gset[e.name]
          if set then
            if not gdone[set] then
              local ws = {}
              for _, n in ipairs(set) do ws[#ws + 1] = load(by_name[n]) end
              gdone[set] = quant.global_scale(ws, e.group.scheme.weights)
              for _, x in ipairs(ws) do x:release() end
            end
            gs = gdone[set]
          end
          local r = quant.compress(t, e.group.scheme, {format = e.format, global_scale = gs, rounding = rounding,
                                                      force_zero_point = false, fake = false,
                                                      error = args.errors == true})
          for _, x in ipairs(r.tensors) do
            w:write(e.module .. "." .. x.name, x.tensor)
            bytes_after = bytes_after + x.tensor:nbytes()
            x.tensor:release()
          end
          bytes_before = bytes_before + t:nbytes()
          if args.errors == true then
            local kind = e.module:match("([^.]+)$")
            local k = kinds[kind]
            if not k then k = {n = 0, sum = 0, max = 0, format = e.format}; kinds[kind] = k; kind_order[#kind_order + 1] = kind end
            local rel = (r.sq_ref or 0) > 0 and math.sqrt(r.sq_err / r.sq_ref) or 0
            k.n, k.sum, k.max = k.n + 1, k.sum + rel, math.max(k.max, rel)
          end
          bar:update(1, e.name)
        else
          w:write(e.name, t)
        end
        t:release()
      end
      w:finish()
      close_shard(sn)
      for _, e in ipairs(entries[sn].extra or {}) do close_shard(e.shard) end
    end
    -- the index (always), then config.json
    local idx = util.omap()
    local meta = util.omap()
    meta:set("total_size", total_out)
    idx:set("metadata", meta)
    local wm = json.object({})
    for k, v in pairs(weight_map_out) do wm[k] = v end
    idx:set("weight_map", wm)
    util.write_file(tmp .. "/" .. (index_name or "model.safetensors.index.json"), json.encode(idx, {indent = 2}))

    local records = {}
    for _, g in ipairs(cfg.groups) do
      if used_groups[g.name] then
        records[#records + 1] = {name = g.name, scheme = g.scheme, format = used_groups[g.name]}
      end
    end
    local qc = save.quantization_config(records, {
      ignore = cfg.ignore, sparsity_config = false,
      group_names = function(i) return records[i].name end,
    })
    -- groups that matched nothing keep format null, as upstream
    for _, g in ipairs(cfg.groups) do
      if not used_groups[g.name] then qc:get("config_groups"):set(g.name, schemes.to_json(g.scheme)) end
    end
    local cpath = tmp .. "/config.json"
    if F.exists(cpath) then
      local c = json.read_file(cpath)
      if type(c.quantization_config) == "table" and c.quantization_config.quant_method == "compressed-tensors" then
        error(src .. " is already a compressed-tensors checkpoint: quantizing it again is not supported", 0)
      end
      util.write_file(cpath, save.config_json(c, qc))
    elseif F.exists(tmp .. "/params.json") then
      local c = json.read_file(tmp .. "/params.json")
      util.write_file(tmp .. "/params.json", save.config_json(c, qc))
    else
      io.stderr:write("llmc.model_free_ptq: no config.json; set quantization_config to:\n",
                      json.encode(qc, {indent = 2}), "\n")
    end
  end)
  bar:close()
  for _, sn in ipairs(shard_names) do close_shard(sn) end
  local s = {modules = nquant, bytes_before = bytes_before, bytes_after = bytes_after, kinds = kinds,
             kind_order = kind_order, seconds = util.now() - t0, output_dir = out,
             peak_host = T.memory().host_peak, peak_rss = F.peak_rss(), input_bytes = total_in,
             output_bytes = total_out, files = shard_names}
  if not args.quiet then io.stdout:write(require("llmc.oneshot").format_summary(s), "\n") end
  return s
end

return M
