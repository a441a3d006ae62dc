-- test_compact.lua — after oneshot, quantized modules keep only their
-- compressed tensors (llmc.quant.compact) and decompress the weight when it
-- is read.  For data-free presets of every format family the weight read
-- back must equal an independent fake quantization of the original weight
-- (llmc.quant.compress on the checkpoint's tensor), the shape / dtype must be
-- known without decompressing, and the tensor memory held after oneshot must
-- be the compressed bytes, not a full-size copy per module.
local llmc = require "llmc"
local quant = require "llmc.quant"
local T = require "llmc._tensor"

local passed, failed = 0, 0
local function check(cond, what, detail)
  if cond then passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. what .. (detail ~= nil and ("\n  " .. tostring(detail)) or ""))
  end
end

local orig = llmc.load(llmc.default_model())
-- pack-quantized int4, int-quantized int8, float-quantized fp8 block,
-- mxfp4-pack-quantized (per-module scales only: NVFP4's fused global
-- scales would need the siblings' weights in the reference)
for _, preset in ipairs{"W4A16_ASYM", "W8A8", "FP8_BLOCK", "MXFP4A16"} do
  collectgarbage()
  local before = T.memory().host_in_use
  local model, summary = llmc.oneshot{model = llmc.default_model(), quiet = true,
    recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = preset, ignore = {"lm_head"}}}
  collectgarbage()
  local held = T.memory().host_in_use - before
  local n, lazy, info_ok, equal, full = 0, 0, 0, 0, 0
  for name, m in model:modules("Linear") do
    if m.compressed then
      n = n + 1
      if rawget(m, "weight") == nil then lazy = lazy + 1 end
      local info = m:param_info("weight")
      local o = orig:get(name).weight
      if info.shape[1] == o:shape()[1] and info.shape[2] == o:shape()[2] and info.dtype == o:dtype()
         and rawget(m, "weight") == nil then
        info_ok = info_ok + 1
      end
      full = full + o:nbytes()
    end
  end
  check(n == 28 and lazy == 28, preset .. ": all 28 quantized Linears hold codes only", lazy .. " of " .. n)
  check(info_ok == 28, preset .. ": param_info gives shape and dtype without decompressing", info_ok)
  -- tensors held: the compressed bytes, well below one full-size copy
  check(held < full / 1.5 and held >= summary.bytes_after * 0.9, preset .. ": memory held after oneshot",
        string.format("%d bytes held, compressed %d, full %d", held, summary.bytes_after, full))
  print(string.format("%s: %d bytes of tensors held after oneshot; compressed %d, full-size weights %d", preset, held,
    summary.bytes_after, full))
  for name, m in model:modules("Linear") do
    if m.compressed then
      local ref = quant.compress(orig:get(name).weight, preset, {fake = true, force_zero_point = true}).fake
      local d = (ref:to("float32") - m.weight:to("float32")):abs():max()
      if type(d) ~= "number" then d = d:item() end
      if d == 0 and m.weight:dtype() == ref:dtype() then equal = equal + 1 end
      check(rawget(m, "weight") ~= nil, preset .. ": a read weight is kept")
    end
  end
  check(equal == 28, preset .. ": decompressed weights equal the fake-quantized originals", equal .. " of 28")
end

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
