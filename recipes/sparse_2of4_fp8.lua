--[[
recipes/sparse_2of4_fp8.lua — llm-compressor's 2:4 example: SparseGPT prunes
2 of every 4 consecutive weights of each row of every Linear in the decoder
layers (the kept ones are re-fitted from calibration data: fixtures/datasets/
calib_text.jsonl, the first `samples` lines in file order, truncated to
`seq_len` tokens, through the sequential pipeline; --dataset FILE calibrates
on a .jsonl/.json/.csv/.txt file or folder instead), then
QuantizationModifier FP8_DYNAMIC (fp8 weights with one scale per row, fp8
dynamic per-token activations; lm_head left alone).  The checkpoint is the
plain FP8_DYNAMIC one: compressed-tensors 0.19 does not encode sparsity, the
zeros live in the fp8 weight (docs/sparsity.md).  Prints a sample generation
and, unless --no-compare, the perplexity of the fp model, SparseGPT 2:4,
Wanda 50 % and SparseGPT 2:4 + FP8 on held-out lines 481-512 of the same file.

  llmc recipes/sparse_2of4_fp8.lua            # bundled tiny-llama -> out/tiny-llama-2of4-FP8-DYNAMIC
  llmc recipes/sparse_2of4_fp8.lua --quick    # 32 samples x 128 tokens
  llmc recipes/sparse_2of4_fp8.lua --model DIR --output DIR --overwrite --dataset FILE --samples 128 --seq-len 256
]]
local llmc = require "llmc"

local a = llmc.args{
  model = llmc.default_model(), output = "", overwrite = false, dataset = "", samples = 256, seq_len = 512,
  quick = false, compare = true,
  prompt = "Once upon a time", max_new_tokens = 24,
}
if a.quick then a.samples, a.seq_len = 32, 128 end
local output = a.output ~= "" and a.output or llmc.util.default_output(a.model, "2of4-FP8-DYNAMIC")
local data = a.dataset ~= "" and a.dataset or llmc.bundled("datasets/calib_text.jsonl")
local M = llmc.modifiers

local function calib(recipe, out)
  return llmc.oneshot{
    model = a.model, recipe = recipe,
    dataset = "json", dataset_path = data, shuffle_calibration_samples = false,
    num_calibration_samples = a.dataset == "" and math.min(a.samples, 480) or a.samples, max_seq_length = a.seq_len,
    output_dir = out, overwrite = a.overwrite, quiet = out == nil,
  }
end

local function sparse24() return M.SparseGPTModifier{sparsity = 0.5, mask_structure = "2:4",
                                                     targets = {"re:model.layers.\\d*$"}} end
local model = calib({sparse24(), M.QuantizationModifier{targets = "Linear", ignore = {"lm_head"}, scheme = "FP8_DYNAMIC"}},
                    output)
llmc.util.print_sample(model, a.prompt, a.max_new_tokens)

if a.compare then
  local ppl = llmc.eval.heldout_perplexity()
  local s24 = calib(sparse24())
  local wanda = calib(M.WandaPruningModifier{sparsity = 0.5, targets = {"re:model.layers.\\d*$"}})
  print(string.format("perplexity on calib_text.jsonl lines 481-512 (256-token windows): fp %.3f, SparseGPT 2:4 %.3f, " ..
    "Wanda 50%% %.3f, SparseGPT 2:4 + FP8_DYNAMIC %.3f", ppl(llmc.load(a.model)), ppl(s24), ppl(wanda), ppl(model)))
end
