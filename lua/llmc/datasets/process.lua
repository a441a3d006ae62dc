--[[
llmc.datasets.process — rows -> text -> token ids -> samples -> batches.

The steps of llm-compressor's TextGenerationDataset and its calibration
DataLoader (algorithms.md sec. 10.3-10.4), one function each:

  prepare(rows, sources, cfg)   preprocessing function or preset template,
                                text_column -> text, chat messages -> text
  tokenize(tok, text, cfg)      ids (special tokens added by default),
                                truncation to max_seq_length the way HF
                                truncates (specials kept), optional padding
  concatenate(samples, L)       concatenate_data: L-token chunks per block of
                                1000 rows (HF map's batch), remainder dropped
  sample_indices(n, N, ...)     shuffle: seeded SplitMix64 + Fisher-Yates;
                                otherwise the N longest (stable order)
  collate(samples, opts)        "truncation" (cut to the batch's shortest)
                                or "padding" (right-pad to the longest)

The seeded generator is SplitMix64 (Steele, Lea, Flood 2014) on Lua 5.4's
wrapping 64-bit integers: state += 0x9E3779B97F4A7C15; z = state;
z = (z ~ z>>30) * 0xBF58476D1CE4E5B9; z = (z ~ z>>27) * 0x94D049BB133111EB;
z ~ z>>31.  A draw in [0, m) takes the top 53 bits and rejects values at or
above the largest multiple of m (unbiased).  Shuffling is a forward partial
Fisher-Yates over 1..n: for i = 1..N, j = i + draw(n - i + 1), swap(i, j); the
first N entries are the sample.  Pure integer arithmetic, so the order is the
same on every machine.

  local P = require "llmc.datasets.process"
  local idx = P.sample_indices(512, 4, true, 42)      -- 4 distinct row numbers
  local ids, mask, cut = P.tokenize(tok, "some text", {max_seq_length = 8})
  local batch = P.collate({{input_ids = {1, 5, 6}}, {input_ids = {1, 7}}},
                          {data_collator = "padding", pad_id = 0})
  -- batch.input_ids = {{1,5,6},{1,7,0}}, batch.attention_mask = {{1,1,1},{1,1,0}}
]]
local M = {}

local function fail(fmt, ...)
  error("llmc.datasets: " .. string.format(fmt, ...), 0)
end

---------------------------------------------------------------------------
-- Seeded generator
---------------------------------------------------------------------------

local Rng = {}
Rng.__index = Rng

--- A SplitMix64 generator seeded with an integer.
function M.rng(seed)
  local s = math.tointeger(seed)
  if not s then fail("seed must be an integer (got %s)", tostring(seed)) end
  return setmetatable({ state = s }, Rng)
end

--- Next raw 64-bit value (a Lua integer, any sign).
function Rng:next64()
  self.state = self.state + 0x9E3779B97F4A7C15
  local z = self.state
  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * 0x94D049BB133111EB
  return z ~ (z >> 31)
end

local TWO53 = 1 << 53

--- Uniform integer in [0, m), 1 <= m <= 2^53.
function Rng:below(m)
  local limit = (TWO53 // m) * m
  while true do
    local v = self:next64() >> 11
    if v < limit then return v % m end
  end
end

---------------------------------------------------------------------------
-- Sampling
---------------------------------------------------------------------------

--- Row numbers (1-based) of the N samples drawn from n rows.
-- shuffle: seeded partial Fisher-Yates (distinct rows, random order).
-- not shuffle: llm-compressor's LengthAwareSampler: the N longest by
-- lengths[i], longest first; ties keep row order.
function M.sample_indices(n, N, shuffle, seed, lengths)
  N = math.min(N, n)
  if shuffle then
    local idx = {}
    for i = 1, n do idx[i] = i end
    local r = M.rng(seed)
    for i = 1, N do
      local j = i + r:below(n - i + 1)
      idx[i], idx[j] = idx[j], idx[i]
    end
    for i = n, N + 1, -1 do idx[i] = nil end
    return idx
  end
  local order = {}
  for i = 1, n do order[i] = i end
  table.sort(order, function(a, b)
    local la, lb = lengths[a], lengths[b]
    if la ~= lb then return la > lb end
    return a < b
  end)
  for i = n, N + 1, -1 do order[i] = nil end
  return order
end

---------------------------------------------------------------------------
-- Tokenizer access
---------------------------------------------------------------------------

--- A data attribute of a tokenizer object: a field, or a method with no
-- arguments (C userdata may expose either); nil when absent.
function M.tokattr(tok, key)
  if tok == nil then return nil end
  local ok, v = pcall(function() return tok[key] end)
  if not ok then return nil end
  if type(v) == "function" then
    local ok2, r = pcall(v, tok)
    return ok2 and r or nil
  end
  return v
end

local function encode(tok, text, add_special, source)
  local ok, ids = pcall(tok.encode, tok, text, { add_special_tokens = add_special })
  if not ok then fail("%s: tokenizer failed: %s", source or "?", tostring(ids)) end
  if type(ids) ~= "table" then
    fail("tokenizer:encode must return a Lua array of token ids (got %s)", type(ids))
  end
  return ids
end

--- Tokenize one text.  cfg: max_seq_length (nil: no limit), add_special_tokens
-- (default true), pad_to_max_length, pad_id, source (for errors).
-- Returns input_ids, attention_mask, truncated (bool).
--
-- Truncation is Hugging Face's (`truncation=True, max_length=L`): the content
-- is cut so that content + the special tokens the post-processor adds fit in
-- L, and the specials stay (a BOS-only tokenizer keeps BOS + L-1 tokens; one
-- that also appends EOS keeps BOS + L-2 tokens + EOS).  The specials are found
-- by encoding once more without them, only for texts that are too long.
function M.tokenize(tok, text, cfg)
  local L = cfg.max_seq_length
  local add = cfg.add_special_tokens ~= false
  local ids = encode(tok, text, add, cfg.source)
  local truncated = false
  if L and #ids > L then
    truncated = true
    local out = {}
    local plain = add and encode(tok, text, false, cfg.source) or ids
    local extra = #ids - #plain
    local p                                           -- specials in front
    if add and extra >= 0 then
      for off = 0, extra do
        local same = true
        for k = 1, #plain do
          if ids[off + k] ~= plain[k] then same = false; break end
        end
        if same then p = off; break end
      end
    end
    if p then
      local s = extra - p                             -- specials at the end
      local keep = math.max(0, L - p - s)
      for k = 1, p do out[#out + 1] = ids[k] end
      for k = 1, keep do out[#out + 1] = plain[k] end
      for k = #ids - s + 1, #ids do out[#out + 1] = ids[k] end
      for k = #out, L + 1, -1 do out[k] = nil end     -- specials alone longer than L
    else
      for k = 1, L do out[k] = ids[k] end             -- ids not content + specials: plain cut
    end
    ids = out
  end
  local mask = {}
  for k = 1, #ids do mask[k] = 1 end
  if cfg.pad_to_max_length and L then
    if cfg.pad_id == nil then
      fail("pad_to_max_length needs a pad id: the tokenizer has no pad_token_id or eos_token_id; pass pad_id = ...")
    end
    for k = #ids + 1, L do ids[k], mask[k] = cfg.pad_id, 0 end
  end
  return ids, mask, truncated
end

---------------------------------------------------------------------------
-- Rows -> text
---------------------------------------------------------------------------

local function fields_of(row)
  local ks = {}
  for k in pairs(row) do ks[#ks + 1] = tostring(k) end
  table.sort(ks)
  return #ks > 0 and table.concat(ks, ", ") or "(none)"
end

-- A list of chat messages: an array whose entries are tables with a role.
local function is_messages(v)
  return type(v) == "table" and type(v[1]) == "table" and v[1].role ~= nil
end
M.is_messages = is_messages

--- Render a message list with cfg.chat_template: a Jinja string (rendered
-- by llmc.chat) or a Lua function(messages, opts) -> string.
function M.render_chat(messages, cfg, source)
  for i, m in ipairs(messages) do
    if type(m) ~= "table" or type(m.role) ~= "string" then
      fail("%s: message %d has no string 'role'", source or "?", i)
    end
    if m.content == nil then fail("%s: message %d has no 'content'", source or "?", i) end
  end
  local tmpl = cfg.chat_template
  if tmpl == nil then                                  -- the tokenizer has none: llmc.chat's default
    local okc, chat = pcall(require, "llmc.chat")
    if not okc then fail("rendering chat messages needs llmc.chat: %s", tostring(chat)) end
    tmpl = chat.DEFAULT_TEMPLATE
  end
  local opts = { add_generation_prompt = false, eos_token = cfg.eos_token, bos_token = cfg.bos_token }
  local ok, out
  if type(tmpl) == "function" then
    ok, out = pcall(tmpl, messages, opts)
  elseif type(tmpl) == "string" then
    local okc, chat = pcall(require, "llmc.chat")
    if not okc then fail("rendering chat messages needs llmc.chat: %s", tostring(chat)) end
    local conf = { chat_template = tmpl, eos_token = cfg.eos_token, bos_token = cfg.bos_token }
    ok, out = pcall(chat.apply_chat_template, conf, messages, { add_generation_prompt = false })
  else
    fail("%s: chat messages but no chat template: the tokenizer has none; pass chat_template = ...",
      source or "?")
  end
  if not ok then fail("%s: chat template failed: %s", source or "?", tostring(out)) end
  if type(out) ~= "string" then fail("%s: chat template returned %s, not a string", source or "?", type(out)) end
  return out
end

-- The ctx object handed to preset templates.
local Ctx = {}
Ctx.__index = Ctx

function Ctx:error(_, msg) fail("%s: %s", self.source, msg) end

function Ctx:field(row, name, optional)
  local v = row[name]
  if v == nil or (v ~= v) then
    if optional then return nil end
    fail("%s: no field '%s' (the %s preset reads it); the row has: %s",
      self.source, name, self.preset, fields_of(row))
  end
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(math.tointeger(v) or v) end
  if optional and t == "userdata" then return nil end   -- JSON null
  fail("%s: field '%s' is %s, expected a string", self.source, name, t == "userdata" and "null" or t)
end

function Ctx:messages(row, name)
  local v = row[name]
  if not is_messages(v) then
    fail("%s: field '%s' must be a non-empty list of {role, content} messages; the row has: %s",
      self.source, name, fields_of(row))
  end
  local copy = {}
  for i, m in ipairs(v) do copy[i] = m end
  return copy
end

function Ctx:chat(messages) return M.render_chat(messages, self.cfg, self.source) end

--- Turn raw rows into prepared items {text=, source=} (or {input_ids=,
-- attention_mask=, source=} for pre-tokenized rows).
-- cfg: preprocess (function(row) -> row | string | false), preset,
-- text_column, chat_template, eos_token, bos_token.
-- A preprocess result of `false` drops the row; nil is an error.
function M.prepare(rows, sources, cfg)
  local out = {}
  local preset = cfg.preset
  local template = cfg.preprocess or (preset and preset.template)
  local text_column = cfg.text_column or "text"
  local ctx = setmetatable({ cfg = cfg, preset = preset and preset.name or "?" }, Ctx)
  for i, row in ipairs(rows) do
    local src = sources[i]
    if row.input_ids ~= nil then                        -- already tokenized: used as is
      if type(row.input_ids) ~= "table" or #row.input_ids == 0 then
        fail("%s: input_ids must be a non-empty list of token ids", src)
      end
      local mask = row.attention_mask
      if mask == nil then
        mask = {}
        for k = 1, #row.input_ids do mask[k] = 1 end
      elseif type(mask) ~= "table" or #mask ~= #row.input_ids then
        fail("%s: attention_mask must have as many entries as input_ids", src)
      end
      out[#out + 1] = { input_ids = row.input_ids, attention_mask = mask, source = src }
      goto next_row
    end
    do
      local r = row
      if template then
        ctx.source = src
        if cfg.preprocess then
          local ok, res = pcall(template, row)
          if not ok then fail("%s: preprocess failed: %s", src, tostring(res)) end
          r = res
        else
          r = template(row, ctx)
        end
        if r == false then goto next_row end
        if type(r) == "string" then r = { text = r } end
        if type(r) ~= "table" then
          fail("%s: preprocess must return a table (or a string, or false to drop the row), got %s",
            src, type(r))
        end
      end
      local text = r.text
      if text == nil then text = r[text_column] end
      if text == nil then
        if text_column ~= "text" then
          fail("%s: no field '%s' (text_column = %q); the row has: %s", src, text_column, text_column, fields_of(r))
        end
        fail("%s: no field 'text'; the row has: %s (set text_column = \"<field>\" or pass preprocess = ...)",
          src, fields_of(r))
      end
      if is_messages(text) then
        text = M.render_chat(text, cfg, src)
      elseif type(text) ~= "string" then
        fail("%s: field '%s' is %s; expected a string or a list of chat messages", src,
          r.text ~= nil and "text" or text_column, type(text) == "userdata" and "null" or type(text))
      end
      out[#out + 1] = { text = text, source = src }
    end
    ::next_row::
  end
  return out
end

---------------------------------------------------------------------------
-- Concatenation and collation
---------------------------------------------------------------------------

--- concatenate_data: per block of `block` samples (HF map's batch, 1000),
-- join the ids and cut L-token chunks, dropping each block's remainder.
function M.concatenate(samples, L, block)
  block = block or 1000
  local chunks = {}
  for b = 1, #samples, block do
    local ids, mask = {}, {}
    local first = samples[b].source
    for s = b, math.min(b + block - 1, #samples) do
      local x = samples[s]
      for k = 1, #x.input_ids do
        ids[#ids + 1] = x.input_ids[k]
        mask[#mask + 1] = x.attention_mask[k]
      end
    end
    for start = 1, #ids - L + 1, L do
      local ci, cm = table.move(ids, start, start + L - 1, 1, {}), table.move(mask, start, start + L - 1, 1, {})
      chunks[#chunks + 1] = { input_ids = ci, attention_mask = cm,
        source = string.format("%s (chunk %d of rows %d-%d)", first, (start - 1) // L + 1, b,
          math.min(b + block - 1, #samples)) }
    end
  end
  return chunks
end

--- Collate samples into a batch {input_ids = {{...}}, attention_mask = {{...}}}.
-- opts.data_collator: "truncation" (default, llm-compressor's: every row cut
-- to the batch's shortest row and to max_seq_length), "padding" (right-pad to
-- the longest row with pad_id, mask 0) or a function(samples) -> batch.
function M.collate(samples, opts)
  opts = opts or {}
  local how = opts.data_collator or "truncation"
  if type(how) == "function" then return how(samples) end
  local ids, masks = {}, {}
  if how == "truncation" then
    local n = math.huge
    for _, s in ipairs(samples) do n = math.min(n, #s.input_ids) end
    if opts.max_seq_length then n = math.min(n, opts.max_seq_length) end
    for i, s in ipairs(samples) do
      ids[i] = table.move(s.input_ids, 1, n, 1, {})
      masks[i] = table.move(s.attention_mask, 1, n, 1, {})
    end
  elseif how == "padding" then
    local pad = opts.pad_id
    local n = 0
    for _, s in ipairs(samples) do n = math.max(n, #s.input_ids) end
    for i, s in ipairs(samples) do
      local m = #s.input_ids
      if m < n and pad == nil then
        fail("data_collator = \"padding\" needs a pad id: the tokenizer has no pad_token_id " ..
          "or eos_token_id; pass {pad_id = ...}")
      end
      local r, k = table.move(s.input_ids, 1, m, 1, {}), table.move(s.attention_mask, 1, m, 1, {})
      for j = m + 1, n do r[j], k[j] = pad, 0 end
      ids[i], masks[i] = r, k
    end
  else
    fail("data_collator = %q: expected \"truncation\", \"padding\" or a function", tostring(how))
  end
  return { input_ids = ids, attention_mask = masks }
end

return M
