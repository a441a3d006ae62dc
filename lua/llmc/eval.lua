--[[
llmc.eval — perplexity of a model on a text, the figure later steps use to
measure what compression cost.

  local ppl, info = llmc.eval.perplexity(model, text, {seq_len = 256})
  print(ppl, info.tokens, info.nll_mean, info.tokens_per_s)
  -- a dataset (llmc.datasets.load{...}) or a list of strings / rows works too:
  local ppl2 = llmc.eval.perplexity(model, ds, {seq_len = 256, join = "\n\n"})

Protocol (the fixtures' dev_perplexity, golden.json): the text is tokenized as
one string without special tokens; windows of seq_len tokens are
BOS + (seq_len - 1) text tokens (add_bos = true, the default) or seq_len text
tokens (add_bos = false); consecutive windows start `stride` text tokens apart
(default: seq_len - 1 with BOS, seq_len without: no overlap); a trailing
window shorter than a full one is dropped (drop_last = true).  Every text
token is predicted once: in an overlapping window only the tokens past the
previous window's end count (the Hugging Face sliding-window recipe).
perplexity = exp(mean NLL), accumulated in f64.

opts: seq_len (default 256), stride, add_bos (true), drop_last (true),
batch_size (windows per forward, default 4), join (separator of a list of
texts, default "\n\n"), text_field ("text"), max_windows (nil = all),
progress (function(done, total) called after every batch).
info: tokens (predicted), windows, nll_mean, seconds, tokens_per_s (tokens
fed through the model per second, BOS included).
]]
local T = require "llmc._tensor"
local N = require "llmc._nn"
local module = require "llmc.module"

local M = {}

local HEAD_ROWS = 256   -- rows of logits alive at once (256 x vocab f32)

local OPTS = {seq_len = true, stride = true, add_bos = true, drop_last = true, batch_size = true, join = true,
  text_field = true, max_windows = true, progress = true}

local function source_text(src, opts)
  if type(src) == "string" then return src end
  if type(src) ~= "table" and type(src) ~= "userdata" then
    error("perplexity: expected a text, a list of texts/rows, or a dataset", 3)
  end
  local field = opts.text_field or "text"
  local parts = {}
  for i = 1, #src do
    local r = src[i]
    if type(r) == "table" then r = r[field] end
    if type(r) ~= "string" then error(string.format("perplexity: item %d has no string '%s'", i, field), 3) end
    parts[#parts + 1] = r
  end
  return table.concat(parts, opts.join or "\n\n")
end

--- The held-out split the calibration recipes report on: the lines after
--- the first 480 of the bundled fixtures/datasets/calib_text.jsonl, which
--- their calibration (the first lines, unshuffled, at most 480) never sees.
--- Returns a function model -> perplexity (256-token windows, 8 per batch)
--- and the texts.
---   local heldout_ppl = llmc.eval.heldout_perplexity()
---   print(heldout_ppl(model))
function M.heldout_perplexity()
  local util = require "llmc.util"
  local path = require("llmc").bundled("datasets/calib_text.jsonl")
  local texts, i = {}, 0
  for line in io.lines(path) do
    i = i + 1
    if i > 480 then texts[#texts + 1] = util.json.decode(line).text end
  end
  return function(model) return (M.perplexity(model, texts, {seq_len = 256, batch_size = 8})) end, texts
end

--- Perplexity of `model` on `text_or_dataset` (see the header).  Returns ppl, info.
function M.perplexity(model, src, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not OPTS[k] then error("perplexity: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local tok = model:tokenizer()
  local ids = tok:encode(source_text(src, opts), {add_special_tokens = false})
  local seq_len = opts.seq_len or 256
  local add_bos = opts.add_bos ~= false
  local bos = tok.bos_token_id
  if add_bos and not bos then error("perplexity: add_bos but the tokenizer has no bos token", 2) end
  local L = add_bos and seq_len - 1 or seq_len   -- text tokens per window
  if L < 1 then error("perplexity: seq_len too small", 2) end
  local stride = opts.stride or L
  if stride < 1 or stride > L then error("perplexity: stride must be in [1, " .. L .. "]", 2) end
  local drop_last = opts.drop_last ~= false
  local n = #ids

  -- windows: start s (0-based into ids), length len, first counted target
  local windows = {}
  local counted_to = 0   -- targets below this index were counted already
  local s = 0
  while s < n do
    local len = math.min(L, n - s)
    if len < L and drop_last then break end
    if not add_bos and len < 2 then break end
    windows[#windows + 1] = {s = s, len = len, from = math.max(counted_to, add_bos and s or s + 1)}
    counted_to = s + len
    if s + len >= n then break end
    s = s + stride
    if opts.max_windows and #windows >= opts.max_windows then break end
  end
  if #windows == 0 then error(string.format("perplexity: the text has %d tokens, fewer than one window of %d", n, L), 2) end

  local bsz = opts.batch_size or 4
  local nll_sum, count, fed = 0.0, 0, 0
  local t0 = N.now()
  for w0 = 1, #windows, bsz do
    local batch, targets = {}, {}
    local wlen = 0
    for w = w0, math.min(w0 + bsz - 1, #windows) do wlen = math.max(wlen, windows[w].len + (add_bos and 1 or 0)) end
    local ragged = false
    for w = w0, math.min(w0 + bsz - 1, #windows) do
      local win = windows[w]
      local row = {}
      if add_bos then row[1] = bos end
      for i = 0, win.len - 1 do row[#row + 1] = ids[win.s + i + 1] end
      if #row ~= wlen then ragged = true end
      -- target of position p is the token at p + 1; -100 = not counted
      local first_tok = add_bos and win.s - 1 or win.s   -- id index (0-based) of position 0
      for p = 0, wlen - 1 do
        local tgt_idx = first_tok + p + 1                 -- 0-based index into ids of the target
        local ok = p + 1 < #row and tgt_idx >= win.from and tgt_idx < win.s + win.len
        targets[#targets + 1] = ok and ids[tgt_idx + 1] or -100
      end
      batch[#batch + 1] = row
      fed = fed + #row
    end
    -- the last layer's output, then norm + lm_head + cross entropy on slices
    -- of rows: the full [B, T, vocab] logits never exist at once
    local h = model:forward(ragged and {input_ids = batch} or batch, {skip_head = true})
    local sh = h:shape()
    local rows = sh[1] * sh[2]
    local flat = h:view{rows, sh[3]}
    local tgt = T.tensor(targets, "int64")
    for r0 = 0, rows - 1, HEAD_ROWS do
      local n = math.min(HEAD_ROWS, rows - r0)
      local part = flat:narrow(0, r0, n)
      local part3 = part:view{1, n, sh[3]}
      local logits = model:head(part3)
      local l2 = logits:view{n, logits:shape()[3]}
      local tpart = tgt:narrow(0, r0, n)
      local nll = N.cross_entropy(l2, tpart)
      for i = 0, n - 1 do
        if targets[r0 + i + 1] >= 0 then
          nll_sum = nll_sum + nll:get(i)
          count = count + 1
        end
      end
      nll:release(); l2:release(); tpart:release(); part3:release(); part:release()
      module.free(logits)
    end
    tgt:release(); flat:release()
    module.free(h)
    if opts.progress then opts.progress(math.min(w0 + bsz - 1, #windows), #windows) end
  end
  local secs = N.now() - t0
  local mean = nll_sum / count
  return math.exp(mean), {tokens = count, windows = #windows, nll_mean = mean, seconds = secs,
    tokens_per_s = fed / secs, text_tokens = n}
end

return M
