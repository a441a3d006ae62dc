--[[
llmc.datasets — calibration data for oneshot: local files or named presets,
tokenized, sampled and batched the way llm-compressor does it.

  local datasets = require "llmc.datasets"
  local ds = datasets.load{
    name = "open_platypus",                         -- a preset (optional)
    path = "fixtures/datasets/calib_instruct.jsonl", -- file, folder or list of files
    tokenizer = tok,                                 -- object with :encode(text, {add_special_tokens=})
    num_calibration_samples = 256, max_seq_length = 512, shuffle = true, seed = 42,
  }
  print(#ds, ds[1].text, #ds[1].input_ids)          -- samples are 1-based
  for batch in ds:batches(4, {pad_id = 0}) do       -- right-padded batches of 4
    -- batch.input_ids = {{...}, ...}, batch.attention_mask = {{...}, ...}
  end

Options of load{} (llm-compressor's DatasetArguments names are accepted too):
  path | dataset_path     local file, folder, or list of files
  data                     in-memory rows instead of a path ({{text=...}, ...})
  name | dataset           preset name (datasets.names()); "json"/"csv"/"custom" = none
  split | splits           "train", "train[:10%]", "test[5:20]"; a list takes its first
                           element, {calibration = s} its calibration entry (deprecated forms)
  text_column              column used as the text ("text")
  preprocess | preprocessing_func  function(row) -> row | string | false (drop);
                           replaces the preset's template, as upstream
  chat_template            Jinja string (rendered by llmc.chat) or function(messages, opts)
  tokenizer_config         table with chat_template / eos_token / bos_token (e.g. the
                           decoded tokenizer_config.json), used when the tokenizer lacks them
  tokenizer | processor    tokenizer object; without one, samples hold text only
  num_calibration_samples  512 (clamped, with a warning, to the rows available)
  shuffle | shuffle_calibration_samples  true: seeded random draw; false: the longest rows
  seed                     42 (deterministic; upstream uses the unseeded global RNG)
  max_seq_length           nil = the tokenizer's model_max_length (no limit if it has none)
  pad_to_max_length        false; true pads every sample to max_seq_length
  concatenate_data         false; true packs all rows into max_seq_length chunks
  add_special_tokens       true (upstream tokenizes with the tokenizer's specials)
  batch_size, data_collator defaults for ds:batches ("truncation" | "padding" | function)
  pad_id                   pad token id (default: tokenizer pad_token_id, else eos_token_id)
  field, sample_by, keep_linebreaks, format, delimiter  file reading (see loaders.lua);
  raw_kwargs               {field=, sample_by=, ...} as upstream passes to load_dataset
  dataset_config_name, preprocessing_num_workers, overwrite_cache, remove_columns,
  streaming                accepted and ignored (hub / multiprocess settings)
  warn                     function(msg) for warnings (default: stderr)

Errors name the file and line of the row at fault.  docs/datasets.md has the
details: what each step does, and where llmc differs from llm-compressor.
]]
local loaders = require "llmc.datasets.loaders"
local presets = require "llmc.datasets.presets"
local process = require "llmc.datasets.process"

local M = {
  loaders = loaders,
  presets = presets,
  process = process,
  DEFAULT_NUM_CALIBRATION_SAMPLES = 512,
  DEFAULT_SEED = 42,
}

local fail = loaders.fail

--- Where warnings go (replace to silence or capture them).
function M.warn(msg)
  io.stderr:write("llmc.datasets: warning: ", msg, "\n")
end

--- Register a preset (see presets.lua for its fields).
M.register = presets.register
--- Sorted preset names and aliases.
M.names = presets.names

---------------------------------------------------------------------------
-- Dataset object
---------------------------------------------------------------------------

local Dataset = {}
Dataset.__index = Dataset
M.Dataset = Dataset

Dataset.__len = function(self) return self.n end

--- Texts of the samples, in sample order.
function Dataset:texts()
  local out = {}
  for i = 1, self.n do
    local t = self[i].text
    if t == nil then
      fail("sample %d has no text (%s)", i, self.concatenate_data and
        "concatenate_data makes token chunks" or "the rows were pre-tokenized")
    end
    out[i] = t
  end
  return out
end

--- Iterator over batches of `batch_size` samples, in sample order (the last
-- batch may be smaller).  opts: data_collator ("truncation" | "padding" |
-- function), pad_id.  Giving pad_id without a collator selects "padding".
--   for batch in ds:batches(8, {pad_id = 0}) do ... end
function Dataset:batches(batch_size, opts)
  opts = opts or {}
  batch_size = batch_size or self.batch_size or 1
  if not math.tointeger(batch_size) or batch_size < 1 then
    fail("batches: batch_size must be a positive integer (got %s)", tostring(batch_size))
  end
  if self.n > 0 and self[1].input_ids == nil then
    fail("batches: the dataset has no token ids; load it with a tokenizer")
  end
  local collator = opts.data_collator or (opts.pad_id ~= nil and "padding") or self.data_collator
  local copts = {
    data_collator = collator,
    pad_id = opts.pad_id ~= nil and opts.pad_id or self.pad_id,
    max_seq_length = self.max_seq_length,
  }
  local i = 1
  return function()
    if i > self.n then return nil end
    local rows = {}
    for k = i, math.min(i + batch_size - 1, self.n) do rows[#rows + 1] = self[k] end
    i = i + batch_size
    return process.collate(rows, copts)
  end
end

--- Number of tokens over all samples (attention_mask ones).
function Dataset:num_tokens()
  local t = 0
  for i = 1, self.n do
    local m = self[i].attention_mask
    if m then for k = 1, #m do t = t + m[k] end end
  end
  return t
end

--- One-line description.
function Dataset:summary()
  local what = self.name and (self.name .. " from ") or ""
  local s = string.format("Dataset: %d samples of %d rows, %s%s", self.n, self.num_rows, what,
    tostring(self.path or "memory"))
  if self.split then s = s .. " [" .. self.split .. "]" end
  if self.n > 0 and self[1].input_ids then
    local lo, hi = math.huge, 0
    for i = 1, self.n do
      local l = #self[i].input_ids
      lo, hi = math.min(lo, l), math.max(hi, l)
    end
    s = s .. string.format(", %d tokens (%d-%d per sample)", self:num_tokens(), lo, hi)
    if self.max_seq_length then s = s .. string.format(", max_seq_length %d", self.max_seq_length) end
    if self.num_truncated > 0 then s = s .. string.format(", %d truncated", self.num_truncated) end
  end
  s = s .. (self.shuffle and (", shuffled (seed " .. self.seed .. ")") or ", longest first")
  return s
end
Dataset.__tostring = Dataset.summary

---------------------------------------------------------------------------
-- load{}
---------------------------------------------------------------------------

-- option -> canonical name (upstream aliases map onto llmc names)
local OPTIONS = {
  path = "path", dataset_path = "path", data = "data",
  name = "name", dataset = "name",
  split = "split", splits = "split",
  text_column = "text_column",
  preprocess = "preprocess", preprocessing_func = "preprocess",
  chat_template = "chat_template", tokenizer_config = "tokenizer_config",
  tokenizer = "tokenizer", processor = "tokenizer",
  num_calibration_samples = "num_calibration_samples",
  shuffle = "shuffle", shuffle_calibration_samples = "shuffle",
  seed = "seed", max_seq_length = "max_seq_length",
  pad_to_max_length = "pad_to_max_length", concatenate_data = "concatenate_data",
  add_special_tokens = "add_special_tokens",
  batch_size = "batch_size", data_collator = "data_collator", pad_id = "pad_id",
  field = "field", sample_by = "sample_by", keep_linebreaks = "keep_linebreaks",
  format = "format", delimiter = "delimiter", raw_kwargs = "raw_kwargs",
  warn = "warn",
  dataset_config_name = false, preprocessing_num_workers = false, overwrite_cache = false,
  remove_columns = false, streaming = false,
}

local function canonical(args)
  if type(args) ~= "table" then fail("load expects a table of options, got %s", type(args)) end
  local o = {}
  for k, v in pairs(args) do
    local c = OPTIONS[k]
    if c == nil then
      local names = {}
      for n in pairs(OPTIONS) do names[#names + 1] = n end
      table.sort(names)
      fail("load: unknown option '%s' (known: %s)", tostring(k), table.concat(names, ", "))
    end
    if c then
      if o[c] ~= nil and o[c] ~= v then fail("load: '%s' given twice (under two names)", c) end
      o[c] = v
    end
  end
  return o
end

local function positive_int(v, what)
  local n = math.tointeger(v)
  if not n or n < 1 then fail("%s must be a positive integer (got %s)", what, tostring(v)) end
  return n
end

-- The effective sequence length: min(max_seq_length, model_max_length).
local function seq_length(o, tok, warn)
  local mml = process.tokattr(tok, "model_max_length")
  if type(mml) ~= "number" or mml >= 2 ^ 53 then mml = nil end   -- HF's "no limit" is 1e30
  mml = mml and math.tointeger(mml)
  if o.max_seq_length == nil then return mml end
  local L = positive_int(o.max_seq_length, "max_seq_length")
  if mml and L > mml then
    warn(string.format("max_seq_length %d is larger than the tokenizer's model_max_length %d; using %d",
      L, mml, mml))
    return mml
  end
  return L
end

--- Load a calibration dataset (options above).  Returns a Dataset.
function M.load(args)
  local o = canonical(args)
  local warn = o.warn or M.warn

  -- preset
  local preset
  if o.name ~= nil then
    if type(o.name) ~= "string" then fail("name must be a preset name (string)") end
    preset = presets.lookup(o.name)
    if not preset then
      fail("unknown dataset preset '%s' (known: %s); for other data pass path = ... only",
        o.name, table.concat(presets.names(), ", "))
    end
    if preset.unsupported then fail("preset '%s' is not supported: %s", preset.name, preset.unsupported) end
    if preset.name == "custom" then preset = nil end
  end

  -- file reading options (raw_kwargs is upstream's pass-through to load_dataset)
  local ropts = {}
  for k, v in pairs(o.raw_kwargs or {}) do ropts[k] = v end
  for _, k in ipairs({ "field", "sample_by", "keep_linebreaks", "format", "delimiter" }) do
    if o[k] ~= nil then ropts[k] = o[k] end
  end

  -- split (deprecated dict / list forms as upstream)
  local split = o.split
  if type(split) == "table" then
    if split.calibration then
      warn("split as a table is deprecated; using its 'calibration' entry")
      split = split.calibration
    elseif split[1] then
      warn("split as a list is deprecated; using its first element")
      split = split[1]
    else
      fail("split table must hold a 'calibration' entry or be a list")
    end
  end
  if split ~= nil and type(split) ~= "string" then fail("split must be a string") end

  -- rows
  local rows, sources, split_name, what
  if o.data ~= nil then
    if o.path ~= nil then fail("pass either path or data, not both") end
    if type(o.data) ~= "table" then fail("data must be a list of rows") end
    rows, sources = {}, {}
    for i, r in ipairs(o.data) do
      if type(r) == "string" then r = { text = r } end
      if type(r) ~= "table" then fail("data[%d] must be a table or a string", i) end
      rows[i], sources[i] = r, "data[" .. i .. "]"
    end
    what = "data"
  elseif o.path ~= nil then
    what = type(o.path) == "table" and table.concat(o.path, ", ") or o.path
    local splits = loaders.read_path(o.path, ropts)
    if split and preset and preset.split_map then
      local base, rest = split:match("^%s*([%w_%-%.]+)(.*)$")
      local mapped = base and preset.split_map[base]
      if mapped and splits[mapped] then split = mapped .. rest end
    end
    rows, sources, split_name = loaders.select_split(splits, split, what, ropts,
      preset and preset.split_map and preset.split_map.train)
  else
    fail("load needs path = <file or folder> (or data = {...})")
  end
  if #rows == 0 then
    fail("%s%s is empty (0 rows)", what, split_name and (" [split " .. split_name .. "]") or "")
  end

  -- text
  local tok = o.tokenizer
  if tok ~= nil then
    local ok, enc = pcall(function() return tok.encode end)
    if not ok or enc == nil then fail("tokenizer must have an :encode(text, opts) method") end
  end
  local tconf = o.tokenizer_config or {}
  local function special(name)
    local v = process.tokattr(tok, name)
    if v == nil then v = tconf[name] end
    if type(v) == "table" then v = v.content end      -- AddedToken form {content = "</s>", ...}
    return v
  end
  if o.preprocess ~= nil and type(o.preprocess) ~= "function" then
    fail("preprocess must be a Lua function(row) -> row")
  end
  local chat_template = o.chat_template or process.tokattr(tok, "chat_template") or tconf.chat_template
  if chat_template == nil and preset and preset.chat_fallback then
    chat_template = preset.chat_fallback
    warn("the tokenizer has no chat_template; using " .. preset.name .. "'s default chat template")
  end
  local cfg = {
    preset = preset,
    preprocess = o.preprocess,
    text_column = (preset and preset.text_column) or o.text_column or "text",
    chat_template = chat_template,
    eos_token = special("eos_token"),
    bos_token = special("bos_token"),
  }
  local items = process.prepare(rows, sources, cfg)
  if #items == 0 then fail("%s: every row was dropped by preprocess; nothing left to calibrate on", what) end

  -- sampling and tokenizing
  local shuffle = o.shuffle ~= false
  local seed = o.seed == nil and M.DEFAULT_SEED or o.seed
  if shuffle then process.rng(seed) end                -- validates the seed early
  local N = positive_int(o.num_calibration_samples or M.DEFAULT_NUM_CALIBRATION_SAMPLES,
    "num_calibration_samples")
  local L = tok and seq_length(o, tok, warn) or (o.max_seq_length and positive_int(o.max_seq_length, "max_seq_length"))
  local pad_id = o.pad_id
  if pad_id == nil then pad_id = process.tokattr(tok, "pad_token_id") end
  if pad_id == nil then pad_id = process.tokattr(tok, "eos_token_id") end
  if o.concatenate_data and not L then
    fail("concatenate_data needs max_seq_length (the tokenizer has no model_max_length)")
  end
  local tcfg = {
    max_seq_length = L,
    add_special_tokens = o.add_special_tokens,
    pad_to_max_length = o.pad_to_max_length and not o.concatenate_data,
    pad_id = pad_id,
  }

  local function tok_item(it)
    if it.input_ids or not tok then return it end
    tcfg.source = it.source
    local ids, mask, cut = process.tokenize(tok, it.text, tcfg)
    if #ids == 0 then
      fail("%s: the text tokenizes to 0 tokens; drop such rows with preprocess (return false)", it.source)
    end
    return { input_ids = ids, attention_mask = mask, text = it.text, source = it.source, truncated = cut }
  end

  local pool = items
  local pick
  if shuffle and not o.concatenate_data then
    -- The draw does not depend on the texts, so only the drawn rows are tokenized.
    if N > #pool then
      warn(string.format("num_calibration_samples = %d but %s has only %d rows; using %d", N, what, #pool, #pool))
    end
    pick = process.sample_indices(#pool, N, true, seed)
    local chosen = {}
    for k, i in ipairs(pick) do chosen[k] = tok_item(pool[i]) end
    pool, pick = chosen, nil
  else
    for i = 1, #pool do pool[i] = tok_item(pool[i]) end
    if o.concatenate_data then
      if not pool[1].input_ids then fail("concatenate_data needs a tokenizer") end
      pool = process.concatenate(pool, L)
      if #pool == 0 then
        fail("concatenate_data: %s holds fewer than max_seq_length = %d tokens per 1000-row block; no chunk left",
          what, L)
      end
    end
    if N > #pool then
      warn(string.format("num_calibration_samples = %d but %s has only %d %s; using %d", N, what, #pool,
        o.concatenate_data and "chunks" or "rows", #pool))
    end
    local lengths = {}
    for i, it in ipairs(pool) do lengths[i] = it.input_ids and #it.input_ids or #it.text end
    pick = process.sample_indices(#pool, N, shuffle, seed, lengths)
  end

  local ds = setmetatable({
    n = 0, num_rows = #rows, name = preset and preset.name, path = o.path, split = split_name,
    max_seq_length = L, pad_id = pad_id, num_truncated = 0,
    shuffle = shuffle, seed = seed, concatenate_data = o.concatenate_data or false,
    tokenizer = tok, batch_size = o.batch_size or 1, data_collator = o.data_collator or "truncation",
  }, Dataset)
  if pick then
    for k, i in ipairs(pick) do ds[k] = pool[i] end
    ds.n = #pick
  else
    for k, it in ipairs(pool) do ds[k] = it end
    ds.n = #pool
  end
  local num_truncated = 0
  for i = 1, ds.n do if ds[i].truncated then num_truncated = num_truncated + 1 end end
  ds.num_truncated = num_truncated
  if num_truncated > 0 then
    warn(string.format("%d of %d samples were longer than max_seq_length = %d tokens and were truncated",
      num_truncated, ds.n, L))
  end
  return ds
end

return M
