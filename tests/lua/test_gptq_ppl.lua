-- GPTQ end to end on tiny-llama: W3A16 (group 128) with GPTQ calibrated on 16
-- samples x 64 tokens of calib_text.jsonl must give a clearly lower perplexity
-- than round-to-nearest W3A16 on held-out texts of the same file (lines 481-512,
-- disjoint from the calibration samples), and every quantized weight must be
-- exactly representable by its saved codes: decompressing the compressed
-- tensors (in memory and from the saved checkpoint) gives the in-memory
-- fake-quantized weight bit for bit.
local llmc = require "llmc"
local quant = require "llmc.quant"

local passed, failed = 0, 0
local function check(cond, what, detail)
  if cond then passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. what .. (detail and ("\n  " .. tostring(detail)) or ""))
  end
end

local path = llmc.bundled("datasets/calib_text.jsonl")
local ppl, eval_texts = llmc.eval.heldout_perplexity()   -- lines 481-512, never calibrated on

local W3 = {group_0 = {targets = {"Linear"}, weights = {num_bits = 3, type = "int", symmetric = true,
                                                         strategy = "group", group_size = 128}}}

local outdir = os.tmpname()
os.remove(outdir)
local base = llmc.load(llmc.default_model())
local p_fp = ppl(base)

local rtn = llmc.oneshot{model = llmc.default_model(), quiet = true,
  recipe = llmc.modifiers.QuantizationModifier{config_groups = W3, ignore = {"lm_head"}}}
local p_rtn = ppl(rtn)

local gptq, summary = llmc.oneshot{model = llmc.default_model(), quiet = true,
  recipe = llmc.modifiers.GPTQModifier{config_groups = W3, ignore = {"lm_head"}},
  dataset = "json", dataset_path = path, num_calibration_samples = 16, max_seq_length = 64,
  shuffle_calibration_samples = false, output_dir = outdir, overwrite = true}
local p_gptq = ppl(gptq)
print(string.format("perplexity on lines 481-512: fp %.3f, RTN W3A16 %.3f, GPTQ W3A16 %.3f", p_fp, p_rtn, p_gptq))

check(summary.modules == 28, "GPTQ quantized the 28 Linears of the 4 layers", summary.modules)
check(p_fp < p_gptq, "quantization costs perplexity", p_fp .. " " .. p_gptq)
check(p_gptq < p_rtn, "GPTQ beats RTN at 3 bits", p_gptq .. " vs " .. p_rtn)
-- the gap must be real, not noise: GPTQ removes at least a quarter of RTN's excess perplexity
check((p_gptq - p_fp) < 0.75 * (p_rtn - p_fp), "GPTQ removes >= 25% of RTN's perplexity increase",
      string.format("fp %.3f rtn %.3f gptq %.3f", p_fp, p_rtn, p_gptq))

-- records: loss logged, no RTN fallback; saved codes reproduce the weights exactly
local n_exact = 0
for _, r in ipairs(summary.records) do
  check(type(r.gptq_loss) == "number" and r.gptq_loss > 0, r.name .. ": GPTQ loss logged", r.gptq_loss)
  check(r.rtn_fallback == false, r.name .. ": Cholesky succeeded")
  local t = {}
  for _, e in ipairs(r.tensors) do t[e.name] = e.tensor end
  local w = r.module.weight
  local shape = w:shape()
  local d = quant.decompress(function(n) return t[n:match("[^.]+$")] end, "m", r.scheme, r.format, shape[1], shape[2], w:dtype())
  local diff = (d:to("float32") - w:to("float32")):abs():max()
  if type(diff) ~= "number" then diff = diff:item() end
  if diff == 0 then n_exact = n_exact + 1 else print(r.name .. ": decompressed differs by " .. diff) end
end
check(n_exact == #summary.records, "decompressed codes == fake-quantized weight for every module",
      n_exact .. "/" .. #summary.records)

-- the checkpoint on disk decompresses to the in-memory weights, bit for bit
local dense = quant.decompress_checkpoint(outdir)
local same, total = 0, 0
for _, r in ipairs(summary.records) do
  total = total + 1
  local d = dense[r.name .. ".weight"]
  if d then
    local diff = (d:to("float32") - r.module.weight:to("float32")):abs():max()
    if type(diff) ~= "number" then diff = diff:item() end
    if diff == 0 then same = same + 1 end
  end
end
check(same == total and total == 28, "saved checkpoint == in-memory GPTQ weights", same .. "/" .. total)
os.execute("rm -rf '" .. outdir .. "'")

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
