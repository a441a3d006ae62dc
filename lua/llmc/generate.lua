--[[
llmc.generate — text generation with a KV cache: greedy by default, or
sampling (temperature, top-k, top-p, seed).

  local text, ids, info = llmc.generate(model, "Debian is", {max_new_tokens = 24})
  local texts = llmc.generate(model, {"The kernel", "Free software"}, {temperature = 0.8, seed = 1})
  local text2 = llmc.generate(model, {1, 10562, 753, 349})             -- token ids

prompt: a string (encoded with the model's tokenizer, special tokens added), a
list of token ids, or a list of either (a batch: left-padded, returns lists).
opts:
  max_new_tokens   default 32
  temperature      nil or 0 = greedy (argmax, first index on ties); > 0 samples
  top_k, top_p     filters applied after the temperature (HF's order)
  seed             sampling seed (default 0); the same seed gives the same tokens
  eos_token_id     a number or a list (default: the tokenizer's eos ids, else config)
  stop_at_eos      default true
  use_cache        default true; false recomputes the whole sequence every step
                   (the golden protocol of the fixtures)
  skip_special_tokens  for the returned text (default true)
Returns text (of the new tokens), ids (the new token ids; an eos that stopped
generation is included, as in HF), info {prompt_ids, new_tokens,
stopped_at_eos, prefill_s, decode_s, tokens_per_s}; lists of each for a batch.
Sampling draws come from llmc's own generator (splitmix64), so sampled text
differs from PyTorch's for the same seed; greedy output is the same.
]]
local N = require "llmc._nn"
local models = require "llmc.models"
local module = require "llmc.module"

local M = {}

local OPTS = {max_new_tokens = true, temperature = true, top_k = true, top_p = true, seed = true,
  eos_token_id = true, stop_at_eos = true, use_cache = true, skip_special_tokens = true, do_sample = true}

local function eos_set(model, opts)
  local ids = opts.eos_token_id
  if ids == nil then
    local ok, tok = pcall(model.tokenizer, model)
    if ok and tok.eos_token_ids and #tok.eos_token_ids > 0 then ids = tok.eos_token_ids
    else ids = model.config.eos_token_id end
  end
  local set = {}
  if type(ids) == "table" then for _, v in ipairs(ids) do set[math.tointeger(v)] = true end
  elseif ids ~= nil and ids ~= require("llmc.util").json.null then set[math.tointeger(ids)] = true end
  return set
end

local function to_ids(model, p)
  if type(p) == "string" then return model:tokenizer():encode(p) end
  if type(p) == "table" then
    local out = {}
    for i, v in ipairs(p) do
      local n = math.tointeger(v)
      if not n then error("generate: token ids must be integers", 3) end
      out[i] = n
    end
    if #out == 0 then error("generate: empty prompt", 3) end
    return out
  end
  error("generate: prompt must be a string, a list of token ids, or a list of those", 3)
end

--- Generate from a prompt or a batch of prompts (see the header).
function M.generate(model, prompt, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not OPTS[k] then error("generate: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local batched = type(prompt) == "table" and (type(prompt[1]) == "table" or type(prompt[1]) == "string")
  local prompts = batched and prompt or {prompt}
  local rows = {}
  for i, p in ipairs(prompts) do rows[i] = to_ids(model, p) end
  local B = #rows
  local max_new = opts.max_new_tokens or 32
  local greedy = not opts.temperature or opts.temperature <= 0 or opts.do_sample == false
  local sample_opts = {temperature = opts.temperature, top_k = opts.top_k, top_p = opts.top_p}
  local state = opts.seed or 0
  local eos = eos_set(model, opts)
  local stop_at_eos = opts.stop_at_eos ~= false
  local use_cache = opts.use_cache ~= false

  -- left padding: every row ends at the same column, so the last logits are
  -- every row's next-token logits
  local L = 0
  for _, r in ipairs(rows) do L = math.max(L, #r) end
  local pad_id = 0
  local okt, tok = pcall(model.tokenizer, model)
  if okt and tok.pad_token_id then pad_id = tok.pad_token_id elseif next(eos) then pad_id = next(eos) end
  local ids, mask, pos = {}, {}, {}
  local padded = false
  for b, r in ipairs(rows) do
    local off = L - #r
    ids[b], mask[b], pos[b] = {}, {}, {}
    for t = 1, L do
      local real = t > off
      ids[b][t] = real and r[t - off] or pad_id
      mask[b][t] = real and 1 or 0
      pos[b][t] = real and (t - off - 1) or 1   -- HF: cumsum(mask) - 1, pads -> 1
      if not real then padded = true end
    end
  end

  local cache = use_cache and models.new_cache(model, B, L + max_new) or nil
  local new, done, stopped = {}, {}, {}
  for b = 1, B do new[b], done[b], stopped[b] = {}, false, false end
  local t0 = N.now()
  local step_input = {input_ids = ids, attention_mask = padded and mask or nil, position_ids = pos}
  local prefill_s
  for step = 1, max_new do
    local logits = model:forward(step_input, {cache = cache, last_only = true})
    if step == 1 then prefill_s = N.now() - t0 end
    local nxt, nmask, npos = {}, {}, {}
    local all_done = true
    for b = 1, B do
      local row = logits[b - 1][0]
      local id
      if done[b] then
        id = pad_id
      elseif greedy then
        id = N.sample(row, {temperature = 0})
      else
        id, state = N.sample(row, sample_opts, state)
      end
      row:release()
      if not done[b] then
        new[b][#new[b] + 1] = id
        if stop_at_eos and eos[id] then done[b], stopped[b] = true, true end
      end
      all_done = all_done and done[b]
      nxt[b], nmask[b] = {id}, {1}
      local last = pos[b][#pos[b]]
      npos[b] = {last + 1}
    end
    module.free(logits)
    if all_done then break end
    for b = 1, B do
      ids[b][#ids[b] + 1] = nxt[b][1]
      mask[b][#mask[b] + 1] = 1
      pos[b][#pos[b] + 1] = npos[b][1]
    end
    if use_cache then
      step_input = {input_ids = nxt, attention_mask = padded and nmask or nil, position_ids = npos}
    else
      step_input = {input_ids = ids, attention_mask = padded and mask or nil, position_ids = pos}
    end
  end
  local total = N.now() - t0
  local texts, infos = {}, {}
  local skip = opts.skip_special_tokens ~= false
  for b = 1, B do
    texts[b] = okt and tok:decode(new[b], {skip_special_tokens = skip}) or nil
    infos[b] = {prompt_ids = rows[b], new_tokens = #new[b], stopped_at_eos = stopped[b], prefill_s = prefill_s,
      decode_s = total - (prefill_s or 0),
      tokens_per_s = #new[b] > 1 and (#new[b] - 1) / math.max(total - (prefill_s or 0), 1e-9) or 0}
  end
  if batched then return texts, new, infos end
  return texts[1], new[1], infos[1]
end

return M
