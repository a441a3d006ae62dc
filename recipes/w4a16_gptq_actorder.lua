--[[
recipes/w4a16_gptq_actorder.lua — GPTQ W4A16 (int4, group 128) with
activation ordering stated explicitly: actorder = "weight" (llm-compressor's
"static", also its default) solves the columns in decreasing order of the
Hessian diagonal — the input channels with the largest activations first —
while each column keeps the scale of its own group, so the checkpoint has no
g_idx and loads like any W4A16 one (actorder "group" and g_idx were removed
from compressed-tensors: algorithms.md §5.1).  Unless --no-compare, also runs
GPTQ with actorder = false and RTN, and prints the three perplexities on
held-out lines 481-512 of calib_text.jsonl.

  llmc recipes/w4a16_gptq_actorder.lua                  # -> out/tiny-llama-W4A16-GPTQ-actorder
  llmc recipes/w4a16_gptq_actorder.lua --quick          # 32 samples x 128 tokens
  llmc recipes/w4a16_gptq_actorder.lua --model DIR --output DIR --overwrite --dataset FILE --samples 128
]]
local llmc = require "llmc"

local a = llmc.args{
  model = llmc.default_model(), output = "", overwrite = false, dataset = "", samples = 256, seq_len = 512,
  quick = false, compare = true, prompt = "Once upon a time", max_new_tokens = 24,
}
if a.quick then a.samples, a.seq_len = 32, 128 end
local output = a.output ~= "" and a.output or llmc.util.default_output(a.model, "W4A16-GPTQ-actorder")
local data = a.dataset ~= "" and a.dataset or llmc.bundled("datasets/calib_text.jsonl")

local function run(actorder, out)
  return llmc.oneshot{
    model = a.model, quiet = out == nil,
    recipe = llmc.modifiers.GPTQModifier{targets = "Linear", scheme = "W4A16", ignore = {"lm_head"},
                                         actorder = actorder},
    dataset = "json", dataset_path = data, shuffle_calibration_samples = false,
    num_calibration_samples = a.dataset == "" and math.min(a.samples, 480) or a.samples, max_seq_length = a.seq_len,
    output_dir = out, overwrite = a.overwrite,
  }
end
local model = run("weight", output)
llmc.util.print_sample(model, a.prompt, a.max_new_tokens)

if a.compare then
  local ppl = llmc.eval.heldout_perplexity()
  local rtn = llmc.oneshot{model = a.model, quiet = true,
    recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = "W4A16", ignore = {"lm_head"}}}
  local plain = run(false, nil)
  print(string.format("perplexity on calib_text.jsonl lines 481-512 (256-token windows): fp %.3f, RTN W4A16 %.3f, " ..
    "GPTQ actorder=false %.3f, GPTQ actorder=weight %.3f", ppl(llmc.load(a.model)), ppl(rtn), ppl(plain), ppl(model)))
end
