--[[
llmc.oneshot — one-shot compression of a model with a recipe, under
llm-compressor's argument names (algorithms.md §1).

  local llmc = require "llmc"
  local model = llmc.oneshot{
    model = llmc.default_model(),           -- a path or a loaded model
    recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = "FP8_BLOCK",
                                                  ignore = {"lm_head"}},
    output_dir = "out/tiny-llama-FP8_BLOCK",
  }
  print(llmc.generate(model, "Once upon a time", {max_new_tokens = 20}))

Steps: parse the arguments (unknown keys are an error); build the recipe;
check output_dir; load the model (a path) with `precision` as its dtype;
preprocessing (tie_word_embeddings = false unties the embeddings; the
QuantizationModifier unties them itself when lm_head is targeted);
initialize every modifier; run the pipeline (the default "independent":
each modifier in recipe order with its own pipeline, "sequential" when it
needs calibration data, else "datafree"; M.plan); finalize them all; save to output_dir; print a summary.
Returns the model — quantized in memory (fake-quantized weights, dynamic
activations quantized on the fly), so llmc.generate and
llmc.eval.perplexity measure the compressed model — and the summary table.

llmc's own keys beside llm-compressor's: overwrite (replace output_dir),
max_shard_size, quiet (no progress bar / summary), dtype (alias of
precision), activation_offload_folder (where the sequential pipeline keeps
calibration activations when sequential_offload_device = "disk", which
llmc adds to LC's "cpu"; giving the folder alone implies "disk").  The
summary also carries moe_routing (tokens routed per expert during
calibration, per MoE block) when the model has experts.
]]
local util = require "llmc.util"

local M = {}

-- llm-compressor 0.14 oneshot arguments (ModelArguments, DatasetArguments,
-- RecipeArguments, output_dir, log_dir) with their defaults
local LC_ARGS = {
  model = false, config_name = false, tokenizer = false, processor = false, precision = "auto",
  tie_word_embeddings = true, trust_remote_code_model = false, save_compressed = true,
  model_revision = "main",
  dataset = false, dataset_config_name = false, dataset_path = false, dvc_data_repository = false,
  text_column = "text", remove_columns = false, preprocessing_func = false, batch_size = 1,
  data_collator = "truncation", max_seq_length = false, concatenate_data = false, raw_kwargs = false,
  splits = false, num_calibration_samples = 512, shuffle_calibration_samples = true, streaming = false,
  overwrite_cache = false, preprocessing_num_workers = false, pad_to_max_length = false,
  min_tokens_per_module = false, moe_calibrate_all_experts = true, pipeline = "independent",
  tracing_ignore = false, sequential_targets = false, sequential_offload_device = "cpu",
  sequential_targets_per_subgraph = 1, quantization_aware_calibration = true, propagate_error = true,
  use_loss_mask = false, dataloader_num_workers = 0, sequential_prefetch = false,
  recipe = false, recipe_args = false, clear_sparse_session = false, stage = false,
  output_dir = false, log_dir = false,
  -- llmc
  overwrite = false, max_shard_size = false, quiet = false, dtype = false,
  activation_offload_folder = false,   -- sequential pipeline, with sequential_offload_device = "disk"
}
M.ARGUMENTS = LC_ARGS

local function edit_distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = {[0] = i} end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local c = a:sub(i, i) == b:sub(j, j) and 0 or 1
      d[i][j] = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + c)
    end
  end
  return d[#a][#b]
end

local function suggest(k)
  local best, bd = nil, 4
  local names = {}
  for name in pairs(LC_ARGS) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local dd = edit_distance(k, name)
    if #k >= 4 and name:sub(1, #k) == k then dd = math.min(dd, 1) end
    if dd < bd then best, bd = name, dd end
  end
  return best
end

local PRECISION = {auto = "auto", half = "float16", float16 = "float16", bfloat16 = "bfloat16",
                   full = "float32", float32 = "float32"}

local function where_prefix()
  local w = util.caller_where()
  return w and (w .. ": ") or ""
end

--- Parse and check the arguments; returns a table with defaults filled.
function M.parse_args(args)
  if type(args) ~= "table" then error("llmc.oneshot: expected a table of arguments", 3) end
  local a = {}
  for k, v in pairs(args) do
    if type(k) ~= "string" or LC_ARGS[k] == nil then
      local s = type(k) == "string" and suggest(k)
      error(where_prefix() .. "llmc.oneshot: unknown argument '" .. tostring(k) .. "'" ..
            (s and (" (did you mean '" .. s .. "'?)") or ""), 0)
    end
    a[k] = v
  end
  for k, d in pairs(LC_ARGS) do
    if a[k] == nil and d ~= false then a[k] = d end
  end
  if a.model == nil then error(where_prefix() .. "llmc.oneshot: `model` is required (a model directory or a loaded model)", 0) end
  if a.recipe == nil then error(where_prefix() .. "llmc.oneshot: `recipe` is required", 0) end
  if a.dtype then a.precision = a.dtype end
  if not PRECISION[a.precision] then
    error(where_prefix() .. "llmc.oneshot: precision must be auto, half, float16, bfloat16, full or float32 (got " ..
          tostring(a.precision) .. ")", 0)
  end
  if a.tokenizer and a.processor then
    error(where_prefix() .. "llmc.oneshot: give either tokenizer or processor, not both", 0)
  end
  if a.tokenizer then a.processor, a.tokenizer = a.tokenizer, nil end
  return a
end

-- calibration data from the dataset arguments (only when a modifier needs it)
local function build_data(a, model)
  if not a.dataset and not a.dataset_path then return nil end
  local ds = a.dataset
  if type(ds) == "table" and ds.batches then return ds end
  local datasets = require "llmc.datasets"
  local tok = a.processor
  if tok == nil and model.tokenizer then tok = model:tokenizer() end
  return datasets.load{
    dataset = type(ds) == "string" and ds or nil, data = type(ds) == "table" and ds or nil,
    dataset_path = a.dataset_path, tokenizer = tok, text_column = a.text_column,
    preprocessing_func = a.preprocessing_func or nil, splits = a.splits or nil,
    num_calibration_samples = a.num_calibration_samples, shuffle_calibration_samples = a.shuffle_calibration_samples,
    max_seq_length = a.max_seq_length or nil, pad_to_max_length = a.pad_to_max_length,
    concatenate_data = a.concatenate_data, batch_size = a.batch_size, data_collator = a.data_collator,
    raw_kwargs = a.raw_kwargs or nil,
  }
end

local PIPELINES = {datafree = "llmc.pipelines.data_free", sequential = "llmc.pipelines.sequential",
                   basic = "llmc.pipelines.basic"}

local function load_pipeline(p)
  local modname = PIPELINES[p]
  if not modname then error("llmc.oneshot: unknown pipeline '" .. tostring(p) .. "' (independent, datafree, basic, sequential)", 0) end
  if not package.searchpath(modname, package.path) then
    error("llmc.oneshot: the '" .. p .. "' calibration pipeline is not part of this llmc build", 0)
  end
  return require(modname)
end

-- llm-compressor's inferred pipeline for a list of modifiers (algorithms.md §2.1)
local function inferred(modifiers)
  for _, m in ipairs(modifiers) do if m.requires_calibration_data then return "sequential" end end
  return "datafree"
end

--- The calibration runs of a recipe: a list of {pipeline = name, modifiers = {...}}.
--- "independent" (the default, algorithms.md §2.1): one run per modifier, in
--- recipe order, each with only that modifier and its own inferred pipeline
--- (sequential when it needs calibration data, else datafree), over the
--- whole model; later modifiers calibrate the model the earlier ones
--- transformed.  An explicit pipeline: one run with every modifier.
function M.plan(pipeline, modifiers)
  if pipeline == nil or pipeline == "independent" then
    local runs = {}
    for _, m in ipairs(modifiers) do runs[#runs + 1] = {pipeline = inferred({m}), modifiers = {m}} end
    return runs
  end
  load_pipeline(pipeline)   -- unknown names fail before any work
  return {{pipeline = pipeline, modifiers = modifiers}}
end

--- Summary of a run: per-module records -> totals and per-kind errors.
function M.summarize(state, t0)
  local s = {modules = 0, bytes_before = 0, bytes_after = 0, kinds = {}, kind_order = {}}
  for _, r in ipairs(state.quantized or {}) do
    s.modules = s.modules + 1
    s.bytes_before = s.bytes_before + r.bytes_before
    s.bytes_after = s.bytes_after + r.bytes_after
    local k = s.kinds[r.kind]
    if not k then
      k = {n = 0, sum = 0, max = 0, format = r.format}
      s.kinds[r.kind] = k
      s.kind_order[#s.kind_order + 1] = r.kind
    end
    k.n = k.n + 1
    k.sum = k.sum + r.rel_err
    if r.rel_err > k.max then k.max = r.rel_err end
  end
  s.seconds = util.now() - t0
  local T = require "llmc._tensor"
  s.peak_host = T.memory().host_peak
  s.peak_rss = util.fs and util.fs.peak_rss() or nil
  return s
end

--- The summary as text lines.
function M.format_summary(s)
  local L = {}
  L[#L + 1] = string.format("quantized %d modules: %s -> %s (%.2fx smaller) in %s; peak memory %s tensors, %s RSS",
    s.modules, util.fmt_bytes(s.bytes_before), util.fmt_bytes(s.bytes_after),
    s.bytes_after > 0 and s.bytes_before / s.bytes_after or 0, util.fmt_time(s.seconds),
    util.fmt_bytes(s.peak_host or 0), s.peak_rss and util.fmt_bytes(s.peak_rss) or "?")
  if #s.kind_order > 0 then
    L[#L + 1] = string.format("  %-16s %3s  %-22s %12s %12s", "module kind", "n", "format", "mean rel err", "max rel err")
    for _, k in ipairs(s.kind_order) do
      local e = s.kinds[k]
      L[#L + 1] = string.format("  %-16s %3d  %-22s %12.5f %12.5f", k, e.n, e.format, e.sum / e.n, e.max)
    end
  end
  if s.moe_routing then
    local names = {}
    for name in pairs(s.moe_routing) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      local c = s.moe_routing[name]
      local lo, hi, zero = math.huge, 0, 0
      for _, v in ipairs(c) do
        if v < lo then lo = v end
        if v > hi then hi = v end
        if v == 0 then zero = zero + 1 end
      end
      L[#L + 1] = string.format("  routed tokens per expert, %s: min %d, max %d, %d of %d experts with none",
        name, lo, hi, zero, #c)
    end
  end
  if s.output_dir then L[#L + 1] = "  saved to " .. s.output_dir .. " (" .. table.concat(s.files or {}, ", ") .. ")" end
  return table.concat(L, "\n")
end

--- llmc.oneshot{...}: see the header.  Returns model, summary.
function M.oneshot(args)
  local t0 = util.now()
  local a = M.parse_args(args)
  local T = require "llmc._tensor"
  if util.fs then util.fs.tune_malloc() end
  T.reset_peak_memory()
  local recipe = require("llmc.recipe").load(a.recipe, {stage = a.stage or nil})
  local modifiers = recipe.modifiers
  if a.output_dir then require("llmc.save").check_output_dir(a.output_dir, a.overwrite) end

  -- fail before loading anything when a modifier needs data that is missing
  if not a.dataset and not a.dataset_path then
    for _, m in ipairs(modifiers) do
      if m.requires_calibration_data then
        local why = m.calibration_reason and m:calibration_reason() or "it requires calibration data"
        m:error(why .. ". Pass dataset = ... to llmc.oneshot, or choose a scheme with dynamic activations.")
      end
    end
  end

  local model = a.model
  if type(model) == "string" then
    local prec = PRECISION[a.precision]
    model = require("llmc.models").load(model, {dtype = prec})
  elseif type(model) ~= "table" or not model.modules then
    error("llmc.oneshot: `model` must be a model directory or a model from llmc.load", 0)
  end
  if a.tie_word_embeddings == false and model.untie_embeddings then model:untie_embeddings() end

  local state = {model = model, quantized = {}, recipe = recipe, quiet = a.quiet, args = a}
  local needs = false
  for _, m in ipairs(modifiers) do if m.requires_calibration_data then needs = true end end
  if needs then state.data = build_data(a, model) end

  for _, m in ipairs(modifiers) do m:initialize(state) end
  for _, run in ipairs(M.plan(a.pipeline, modifiers)) do
    load_pipeline(run.pipeline).run(state, run.modifiers, state.data)
  end
  for _, m in ipairs(modifiers) do m:finalize(state) end
  -- every quantized module keeps its compressed tensors only, whichever
  -- pipeline ran (llm-compressor's model is compressed in place at save)
  local quant = require "llmc.quant"
  for _, m in state.model:modules() do quant.compact(m) end

  local kv = nil
  for _, m in ipairs(modifiers) do
    if m._resolved and m._resolved.kv_cache_scheme then kv = m._resolved.kv_cache_scheme end
  end
  local saved
  if a.output_dir then
    if a.save_compressed == false then
      error("llmc.oneshot: save_compressed = false (the dense debugging format) is not supported; " ..
            "llmc writes compressed checkpoints", 0)
    end
    saved = require("llmc.save").save(model, a.output_dir, {
      quantized = state.quantized, recipe = recipe, overwrite = a.overwrite, kv_cache_scheme = kv,
      max_shard_size = a.max_shard_size or nil,
    })
  end
  local summary = M.summarize(state, t0)
  if saved then summary.output_dir, summary.files = saved.output_dir, saved.files end
  summary.records = state.quantized
  summary.moe_routing = state.moe_routing
  model.quantization_summary = summary
  if not a.quiet then io.stdout:write(M.format_summary(summary), "\n") end
  return model, summary
end

return M
