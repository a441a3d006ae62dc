-- llmc-test: slow  (about 30 s on 2 idle cores; left out of the sanitizer run)
-- llmc.eval.perplexity end to end: the dev_perplexity protocol of golden.json
-- (calib_text.jsonl's texts joined with "\n\n", tokenized without BOS, windows of
-- BOS + 255 tokens, trailing partial window dropped) must give the fixture's fp32
-- figure within 0.1%, with exactly its window and token counts; tiny-llama always,
-- tiny-qwen3-moe when its fixture is present.  The window arithmetic (strides,
-- add_bos = false) is checked against NLLs computed directly with cross_entropy.

local llmc = require "llmc"
local util = require "llmc.util"

local passed, failed = 0, 0
local function check(cond, what, detail)
  if cond then passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. what .. (detail and ("\n  " .. tostring(detail)) or ""))
  end
end

local texts = {}
for line in io.lines(llmc.bundled("datasets/calib_text.jsonl")) do
  texts[#texts + 1] = util.json.decode(line).text
end

local function dev(dir)
  local golden = util.json.read_file(dir .. "/golden.json").dev_perplexity
  local model = llmc.load(dir)
  local ppl, info = llmc.eval.perplexity(model, texts, {seq_len = 256, batch_size = 8})
  local name = dir:match("([^/]+)$")
  check(info.text_tokens == 113950, name .. ": 113950 text tokens", info.text_tokens)
  check(info.windows == golden.windows and info.tokens == golden.predicted_tokens,
    string.format("%s: %d windows, %d predicted tokens", name, info.windows, info.tokens))
  local r = math.abs(ppl - golden.ppl_fp32) / golden.ppl_fp32
  check(r < 1e-3, string.format("%s: dev perplexity %.4f vs %.4f (%.2e)", name, ppl, golden.ppl_fp32, r))
  print(string.format("%s: ppl %.4f (golden %.4f), %d tokens in %.1f s, %.0f tokens/s", name, ppl, golden.ppl_fp32,
    info.tokens, info.seconds, info.tokens_per_s))
  return model
end

local model = dev(llmc.bundled("models/tiny-llama"))
local moe = llmc.bundled("models/tiny-qwen3-moe")
if not util.exists(moe .. "/config.json") then moe = llmc.fixtures("models/tiny-qwen3-moe") end
if util.exists(moe .. "/config.json") then dev(moe)
else print("note: tiny-qwen3-moe not found, its perplexity check skipped") end

-- window arithmetic on a short text, against direct NLL sums
local text = table.concat(texts, "\n\n", 1, 3)
local tok = model:tokenizer()
local ids = tok:encode(text, {add_special_tokens = false})
local N = require "llmc._nn"
local function nll_of(seq, first_target)   -- sum of NLL of seq[i] for i >= first_target (1-based)
  local logits = model:forward({input_ids = {seq}})
  local tg = {}
  for i = 2, #seq do tg[#tg + 1] = i >= first_target and seq[i] or -100 end
  tg[#tg + 1] = -100
  local nll = N.cross_entropy(logits[0], llmc.tensor(tg, "int64"))
  local s, c = 0, 0
  for i = 1, #tg do if tg[i] >= 0 then s = s + nll:get(i - 1); c = c + 1 end end
  return s, c
end
local L = 32
-- stride 16 with BOS: window k covers ids[16k+1 .. 16k+31]; only new targets count
local s_sum, s_cnt = 0, 0
local counted = 0
local k = 0
while 16 * k + 31 <= #ids do
  local seq = {tok.bos_token_id}
  for i = 16 * k + 1, 16 * k + 31 do seq[#seq + 1] = ids[i] end
  -- seq[j] holds ids[16k + j - 1]; count the ids index > counted
  local first = math.max(counted - 16 * k, 0) + 2
  local s, c = nll_of(seq, first)
  s_sum, s_cnt = s_sum + s, s_cnt + c
  counted = 16 * k + 31
  k = k + 1
end
local ppl, info = llmc.eval.perplexity(model, text, {seq_len = L, stride = 16})
check(info.tokens == s_cnt and math.abs(math.log(ppl) - s_sum / s_cnt) < 1e-6,
  "overlapping windows count every token once", info.tokens .. " vs " .. s_cnt)
-- add_bos = false: windows of 32 text tokens, the first of each not predicted
local b_sum, b_cnt = 0, 0
for w = 0, #ids // L - 1 do
  local seq = {table.unpack(ids, w * L + 1, w * L + L)}
  local s, c = nll_of(seq, 2)
  b_sum, b_cnt = b_sum + s, b_cnt + c
end
local ppl2, info2 = llmc.eval.perplexity(model, text, {seq_len = L, add_bos = false, batch_size = 3})
check(info2.tokens == b_cnt and math.abs(math.log(ppl2) - b_sum / b_cnt) < 1e-6, "windows without BOS")

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
