--[[
scripts/dump_calib_ids.lua — print the token ids llmc calibrates on, as JSON
(a list of lists), so that a reference run of llm-compressor
(scripts/lc_static_reference.py) sees exactly the same tokens.

  build/llmc scripts/dump_calib_ids.lua [samples=16] [max_seq_length=64] [dataset=bundled calib_text.jsonl]
]]
local llmc = require "llmc"
local model = llmc.load(llmc.default_model())
local ds = require("llmc.datasets").load{
  path = arg[3] or llmc.bundled("datasets/calib_text.jsonl"), tokenizer = model:tokenizer(),
  num_calibration_samples = tonumber(arg[1]) or 16, max_seq_length = tonumber(arg[2]) or 64, shuffle = false,
  warn = function() end}
local out = {}
for i = 1, #ds do out[i] = ds[i].input_ids end
print(require("cjson").encode(out))
