-- test_oneshot_model.lua — after llmc.oneshot the in-memory model runs
-- quantized: perplexity of FP8_BLOCK within 1% of bf16 (acceptance
-- criterion; the reference bf16 value is the fixture's golden
-- dev_perplexity protocol on the first 40 windows), dynamic activations are
-- fake-quantized at run time, the summary adds up, llmc.qerror agrees with
-- the modifier, a checkpoint loaded back with llmc.quant.load gives the
-- same logits, and targeting lm_head unties the embeddings.
local llmc = require "llmc"
local util = llmc.util
local json = util.json

local passed, failed = 0, 0
local function check(cond, msg)
  if cond then passed = passed + 1 else failed = failed + 1; io.stderr:write("FAIL: ", msg, "\n") end
end
if not util.fs then print("SKIP: needs the llmc executable"); os.exit(77) end
local F = util.fs
local QM = llmc.modifiers.QuantizationModifier
local tmp = string.format("%s/llmc_test_oneshot_model_%d", os.getenv("TMPDIR") or "/tmp", F.getpid())
F.mkdir_p(tmp)

local texts = {}
for line in io.lines(llmc.bundled("datasets/calib_text.jsonl")) do texts[#texts + 1] = json.decode(line).text end
local text = table.concat(texts, "\n\n")
local EVAL = {seq_len = 256, max_windows = 40}

local base = llmc.load(llmc.default_model())
local p0 = llmc.eval.perplexity(base, text, EVAL)

-- FP8_BLOCK: within 1% of bf16
local m, summary = llmc.oneshot{model = llmc.default_model(), quiet = true,
  recipe = QM{targets = "Linear", scheme = "FP8_BLOCK", ignore = {"lm_head"}}}
local p1 = llmc.eval.perplexity(m, text, EVAL)
check(math.abs(p1 / p0 - 1) < 0.01 and p1 ~= p0, string.format("FP8_BLOCK perplexity %.4f vs bf16 %.4f (within 1%%, not identical)", p1, p0))
-- the summary: 28 Linear modules of 4 layers, bf16 bytes before, fp8 + bf16 block scales after
check(summary.modules == 28, "28 modules quantized")
local before = 4 * 2 * (256 * 256 * 2 + 128 * 256 * 2 + 768 * 256 * 3)
local scales = 4 * 2 * (2 * 2 * 2 + 1 * 2 * 2 + 6 * 2 * 2 + 2 * 6)
check(summary.bytes_before == before and summary.bytes_after == before / 2 + scales,
      string.format("bytes before/after %d/%d (want %d/%d)", summary.bytes_before, summary.bytes_after, before, before / 2 + scales))
check(#summary.kind_order == 7 and summary.kinds.q_proj.n == 4 and summary.kinds.q_proj.max < 0.05 and summary.peak_host > 0,
      "per-kind error table")
local txt = require("llmc.oneshot").format_summary(summary)
check(txt:find("quantized 28 modules", 1, true) and txt:find("down_proj", 1, true), "summary text")
-- dynamic input activations are fake-quantized at run time (fp8 per group of 128)
local q = m:get("model.layers.0.self_attn.q_proj")
check(type(q.input_transform) == "function", "FP8_BLOCK: dynamic input transform installed")
local x = llmc.randn({1, 3, 256}, {seed = 3})
local y = q.input_transform(x)
local dq = require("llmc._quant").qdq_dynamic(x, {num_bits = 8, type = "float", strategy = "group", group_size = 128, dynamic = true})
check(y:bytes() == dq:bytes() and y:bytes() ~= x:bytes(), "input transform = dynamic fp8 group-128 fake quantization")
-- llmc.qerror on the original weight equals the modifier's record
local rec = summary.records[1]
local e = llmc.qerror(base:get(rec.name).weight, "FP8_BLOCK")
check(math.abs(e.rel - rec.rel_err) < 1e-12 and e.fake:bytes() == rec.module.weight:bytes(),
      string.format("qerror %.6f == modifier %.6f, same fake weight", e.rel, rec.rel_err))
check(llmc.generate(m, "Once upon a time", {max_new_tokens = 4}) ~= nil, "generation from the quantized model")

-- W4A16 (weight-only): the saved checkpoint loads back (decompressed) with the same logits
local out = tmp .. "/w4a16"
local m2 = llmc.oneshot{model = llmc.default_model(), quiet = true, output_dir = out,
  recipe = QM{targets = "Linear", scheme = "W4A16", ignore = {"lm_head"}}}
check(m2:get("model.layers.0.mlp.up_proj").input_transform == nil, "weight-only scheme: no input transform")
local r = llmc.quant.load(out)
local ids = {{1, 415, 13653, 302, 264, 727}}
local l1, l2 = m2:forward({input_ids = ids}), r:forward({input_ids = ids})
check(l1:bytes() == l2:bytes(), "reloaded W4A16 checkpoint gives the in-memory model's logits bit for bit")
local pw = llmc.eval.perplexity(m2, text, EVAL)
check(pw > p0 and pw / p0 < 1.02, string.format("W4A16 perplexity %.3f vs bf16 %.3f", pw, p0))

-- lm_head targeted: the tied embedding is untied, lm_head is quantized and written separately
out = tmp .. "/head"
local m3 = llmc.oneshot{model = llmc.default_model(), quiet = true, output_dir = out,
  recipe = QM{targets = "Linear", scheme = "W8A16"}}
check(not m3:tied(), "lm_head targeted: embeddings untied")
local cfg = json.read_file(out .. "/config.json")
check(cfg.tie_word_embeddings == false and #cfg.quantization_config.ignore == 0, "config: untied, nothing ignored")
local st = require("llmc._safetensors").open(out)
check(st:has("lm_head.weight_packed") and st:has("model.embed_tokens.weight") and not st:has("lm_head.weight"),
      "lm_head compressed, embedding kept in bf16")
st:close()
-- with ignore = {"lm_head"} the embedding stays tied and is written once
st = require("llmc._safetensors").open(tmp .. "/w4a16")
check(not st:has("lm_head.weight") and json.read_file(tmp .. "/w4a16/config.json").tie_word_embeddings == true,
      "ignored lm_head: tied, written once")
st:close()

F.rmtree(tmp)
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
