--[[
llmc.save — write a quantized model as a compressed-tensors checkpoint
(docs: compressed-tensors-format.md §4, §5; algorithms.md §1.5): the
safetensors shards with each quantized module's compressed tensors,
config.json with the full quantization_config, recipe.yaml, and the
tokenizer / generation files of the source model.

  local save = require "llmc.save"
  save.save(model, "out/tiny-llama-FP8_BLOCK", {quantized = state.quantized, recipe = r,
                                                overwrite = false})

Atomic: everything is written into "<output_dir>.tmp.<pid>" and renamed
to output_dir at the end; on any error (a full disk included) the
temporary directory is removed and output_dir is left as it was.  An
existing output_dir is refused unless overwrite = true.

quantization_config is built as llm-compressor's oneshot builds it (§5.1):
one config group per distinct scheme in module order (group_0, ...), the
format inferred per module (§4.1), `ignore` recomputed as the names of the
modules of a quantized class that were left unquantized, and the whole
config.json written with sorted keys and indent 2.
]]
local util = require "llmc.util"
local json = util.json
local schemes = require "llmc.schemes"
local qargs = require "llmc.qargs"

local save = {}

save.CT_VERSION = "0.19.0"

-- files of the source model directory copied verbatim
save.COPY_FILES = {
  "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
  "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
  "chat_template.json", "preprocessor_config.json", "processor_config.json",
}

local function fs()
  local f = util.fs
  if not f then error("llmc.save needs the llmc._stwriter module (run scripts with the llmc executable)", 3) end
  return f
end

--- The quantization_config object (an omap) for a list of quantized-module
--- records {name, module, scheme, format} in model order.
---   opts.ignore: a list to write instead of the recomputed one (model_free)
---   opts.group_names: function(i, scheme) -> name (default "group_<i-1>")
---   opts.kv_cache_scheme: QArgs or nil; opts.sparsity_config (default {}; false = leave out)
---   opts.model: the model (for the recomputed ignore list)
function save.quantization_config(records, opts)
  opts = opts or {}
  local groups = {}            -- {name, scheme(json), key}
  local formats = {}
  local seen = {}
  for _, r in ipairs(records) do
    local s = r.scheme
    local fmt = r.format or schemes.infer_format(s, r.class or "Linear")
    local copy = setmetatable({targets = s.targets, weights = s.weights, input_activations = s.input_activations,
                               output_activations = s.output_activations, format = fmt}, schemes.Scheme)
    local key = json.encode(schemes.to_json(copy))
    if not seen[key] then
      seen[key] = true
      local name = opts.group_names and opts.group_names(#groups + 1, s) or ("group_" .. #groups)
      groups[#groups + 1] = {name = name, scheme = copy}
    end
    formats[#formats + 1] = fmt
  end
  local cg = util.omap()
  for _, g in ipairs(groups) do cg:set(g.name, schemes.to_json(g.scheme)) end

  local ignore
  if opts.ignore then
    ignore = json.array({table.unpack(opts.ignore)})
  else
    -- every module of a quantized class that was not quantized, in model order
    ignore = json.array({})
    local model = opts.model
    if model then
      local classes, done = {}, {}
      for _, r in ipairs(records) do
        classes[r.class or (r.module and r.module.kind) or "Linear"] = true
        done[r.name] = true
      end
      for name, m in model:modules() do
        if name ~= "" and classes[m.kind] and not done[name] then ignore[#ignore + 1] = name end
      end
    end
  end

  local qc = util.omap()
  qc:set("config_groups", cg)
  qc:set("format", schemes.flatten_formats(formats))
  qc:set("global_compression_ratio", json.null)
  qc:set("ignore", ignore)
  qc:set("kv_cache_scheme", opts.kv_cache_scheme and qargs.to_json(opts.kv_cache_scheme) or json.null)
  qc:set("quant_method", "compressed-tensors")
  qc:set("quantization_status", "compressed")
  if opts.sparsity_config ~= false then qc:set("sparsity_config", json.object({})) end
  qc:set("transform_config", json.object({}))
  qc:set("version", save.CT_VERSION)
  return qc
end

--- config.json text: the source config with quantization_config set (sorted keys, indent 2).
function save.config_json(config, qc, patch)
  local c = json.object({})
  for k, v in pairs(config) do c[k] = v end
  for k, v in pairs(patch or {}) do c[k] = v end
  c.quantization_config = qc
  return json.encode(c, {indent = 2})
end

local function exists(p) return fs().exists(p) end

--- Check that output_dir can be written (not existing unless overwrite).
function save.check_output_dir(output_dir, overwrite)
  if type(output_dir) ~= "string" or output_dir == "" then error("output_dir must be a non-empty path", 3) end
  output_dir = output_dir:gsub("/+$", "")
  if exists(output_dir) and not overwrite then
    error(string.format("output_dir %s already exists: refusing to overwrite it (pass overwrite = true, " ..
      "or --overwrite to the recipe scripts)", output_dir), 0)
  end
  return output_dir
end

--- Run `body(tmp)` to fill a temporary directory next to output_dir, then
--- rename it into place.  Any error removes the temporary directory and is
--- re-raised as "saving <output_dir>: <message>".
function save.atomic_dir(output_dir, overwrite, body)
  local F = fs()
  output_dir = save.check_output_dir(output_dir, overwrite)
  local parent = util.dirname(output_dir)
  local tmp = string.format("%s.tmp.%d", output_dir, F.getpid())
  local ok, err = pcall(function()
    F.mkdir_p(parent)
    if F.exists(tmp) then F.rmtree(tmp) end
    F.mkdir(tmp)
    body(tmp)
    F.fsync_dir(tmp)
    if F.exists(output_dir) then
      local old = string.format("%s.old.%d", output_dir, F.getpid())
      F.rename(output_dir, old)
      local rok, rerr = pcall(F.rename, tmp, output_dir)
      if not rok then F.rename(old, output_dir); error(rerr, 0) end
      F.rmtree(old)
    else
      F.rename(tmp, output_dir)
    end
    F.fsync_dir(parent)
  end)
  if not ok then
    pcall(F.rmtree, tmp)
    local msg = tostring(err)
    if msg:find("No space left") or msg:find("File too large") or msg:find("Disk quota") then
      msg = msg .. " — the disk (or file-size limit) is full; nothing was written to " .. output_dir
    end
    error("saving " .. output_dir .. ": " .. msg, 0)
  end
  return output_dir
end

--- Copy the tokenizer / generation files (and custom *.py code) of `src`
--- into `dst`.  Returns the list of copied names.
function save.copy_aux_files(src, dst)
  local F = fs()
  local copied = {}
  if not src or not F.is_dir(src) then return copied end
  local want = {}
  for _, n in ipairs(save.COPY_FILES) do want[n] = true end
  for _, n in ipairs(F.listdir(src)) do
    if want[n] or n:match("%.py$") then
      local p = src .. "/" .. n
      if not F.is_dir(p) then
        F.copy_file(p, dst .. "/" .. n)
        copied[#copied + 1] = n
      end
    end
  end
  return copied
end

local function bytes_equal(a, b)
  if a:dtype() ~= b:dtype() then return false end
  local sa, sb = a:shape(), b:shape()
  if #sa ~= #sb then return false end
  for i = 1, #sa do if sa[i] ~= sb[i] then return false end end
  return a:bytes() == b:bytes()
end

--- Save a quantized model.  opts:
---   quantized   records from the QuantizationModifier (state.quantized)
---   recipe      the Recipe (for recipe.yaml) or nil
---   kv_cache_scheme  QArgs or nil
---   overwrite   replace an existing output_dir
---   max_shard_size   bytes or "5GB" (default "20GB", as llm-compressor)
--- Returns {output_dir=, files=, bytes=}.
function save.save(model, output_dir, opts)
  opts = opts or {}
  local st = require "llmc._safetensors"
  local quantized = opts.quantized or {}
  local by_name = {}
  for _, r in ipairs(quantized) do by_name[r.name] = r end

  -- the tensors to write, in model order
  local tensors, total = {}, 0
  local wrote_head = false
  -- parameter_slots: a quantized weight is not read (it may be compacted:
  -- reading it would decompress it)
  for full, m, pname in model:parameter_slots() do
    local mname = m.name
    local r = by_name[mname]
    if r and pname == "weight" then
      for _, e in ipairs(r.tensors) do
        tensors[mname .. "." .. e.name] = e.tensor
        total = total + e.tensor:nbytes()
      end
    else
      local t = m[pname]
      tensors[full] = t
      total = total + t:nbytes()
      if full == "lm_head.weight" then wrote_head = true end
    end
  end
  -- calibrated activation / KV-cache qparams (input_scale, k_scale, ...):
  -- llmc.modifiers.activations keeps them on their module
  for name, m in model:modules() do
    local c = rawget(m, "calibrated")
    if c then
      for k, t in pairs(c) do
        tensors[name .. "." .. k] = t
        total = total + t:nbytes()
      end
    end
  end
  local patch = {}
  local config = model.config
  -- re-tie: an untouched lm_head equal to the embedding is written once (llm-compressor's _retie_embeddings)
  if wrote_head and tensors["model.embed_tokens.weight"] and not by_name["lm_head"]
     and bytes_equal(tensors["lm_head.weight"], tensors["model.embed_tokens.weight"]) then
    total = total - tensors["lm_head.weight"]:nbytes()
    tensors["lm_head.weight"] = nil
    if config.tie_word_embeddings ~= nil then patch.tie_word_embeddings = true end
  elseif wrote_head and config.tie_word_embeddings == true then
    patch.tie_word_embeddings = false
  end

  -- the dtype the weights were held in (a float32 run of a bf16 checkpoint
  -- writes float32 tensors, and transformers records that, as in LC's output)
  local src_dtype = config.torch_dtype or config.dtype
  if type(model.dtype) == "string" and type(src_dtype) == "string" and src_dtype ~= model.dtype then
    if config.torch_dtype ~= nil then patch.torch_dtype = model.dtype end
    if config.dtype ~= nil then patch.dtype = model.dtype end
  end
  -- nothing quantized (pruning alone): llm-compressor writes no quantization_config
  local qc = (#quantized > 0 or opts.kv_cache_scheme)
    and save.quantization_config(quantized, {model = model, kv_cache_scheme = opts.kv_cache_scheme}) or nil
  local cfg_text = save.config_json(config, qc, patch)
  local recipe_text
  if opts.recipe then
    local existing = nil
    if model.path and util.exists(model.path .. "/recipe.yaml") then existing = util.read_file(model.path .. "/recipe.yaml") end
    recipe_text = require("llmc.recipe").yaml(opts.recipe, existing)
  end

  local F = fs()
  local out = save.check_output_dir(output_dir, opts.overwrite)
  -- fail early and clearly when the disk cannot hold the result
  local parent = util.dirname(out)
  local probe = parent
  while not F.exists(probe) and probe ~= "/" and probe ~= "." do probe = util.dirname(probe) end
  local ok_free, free = pcall(F.free_space, probe)
  if ok_free and free < total + (1 << 20) then
    error(string.format("saving %s: not enough disk space: the checkpoint needs %s, %s is free on %s",
      out, util.fmt_bytes(total), util.fmt_bytes(free), probe), 0)
  end
  local files
  save.atomic_dir(out, opts.overwrite, function(tmp)
    files = st.save(tmp, tensors, {metadata = {format = "pt"}, max_shard_size = opts.max_shard_size or "20GB"})
    util.write_file(tmp .. "/config.json", cfg_text)
    if recipe_text then util.write_file(tmp .. "/recipe.yaml", recipe_text) end
    save.copy_aux_files(model.path, tmp)
  end)
  local names = {}
  for _, f in ipairs(files or {}) do names[#names + 1] = util.basename(f) end
  return {output_dir = out, files = names, bytes = total, quantization_config = qc}
end

return save
