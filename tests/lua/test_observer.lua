-- test_observer.lua — the llmc._observer binding: statistics of bf16 / f32
-- tensors against plain Lua loops, qparams against calculate_qparams
-- recomputed here with a pure-Lua bf16 rounding (compressed-tensors-format.md §3.3),
-- the EMA worked example of §7, errors.
local llmc = require "llmc"
local O = require "llmc._observer"
local quant = require "llmc.quant"
local qargs = require "llmc.qargs"
local schemes = require "llmc.schemes"

local passed, failed = 0, 0
local function check(cond, msg)
  if cond then passed = passed + 1 else failed = failed + 1; io.stderr:write("FAIL: ", msg, "\n") end
end

-- round a Lua number to fp32, then fp32 to bf16 (round half to even), in plain Lua
local function f32(v) return (string.unpack("<f", string.pack("<f", v))) end
local function bf16(v)
  v = f32(v)
  if v ~= v then return v end
  local u = string.unpack("<I4", string.pack("<f", v))
  local lsb = (u >> 16) & 1
  u = ((u + 0x7fff + lsb) >> 16) << 16
  return (string.unpack("<f", string.pack("<I4", u & 0xffffffff)))
end

-- data: [2, 5, 8] bf16, plus the same values as an f32 tensor
local x = llmc.randn({2, 5, 8}, {seed = 11}) * 3
local xb = x:to("bfloat16")
local vals = xb:reshape({10, 8}):totable()   -- exact bf16 values, rows of 8

-- channel, static: per-column min / max over the 10 rows, two batches
local ch = O.new{reduce = "channel", cols = 8, update = "static_minmax", dtype = "bf16"}
ch:observe(xb)
local y = xb * 0.5
ch:observe(y)
local mn, mx = ch:minmax()
check(mn:dtype() == "float32" and mn:shape()[1] == 8, "minmax: f32 {cols}")
local ok_mm, ok_as = true, true
local abs = ch:abs_sum()
check(abs:dtype() == "float64", "abs_sum is f64")
for j = 1, 8 do
  local lo, hi, as = math.huge, -math.huge, 0
  for r = 1, 10 do
    local v = vals[r][j]
    lo, hi = math.min(lo, v), math.max(hi, v)
    as = as + math.abs(v) + math.abs(bf16(v * 0.5))
  end
  -- the halved batch lies inside the first one's range
  if mn:get(j - 1) ~= lo or mx:get(j - 1) ~= hi then ok_mm = false end
  if math.abs(abs:get(j - 1) - as) > 1e-9 * as then ok_as = false end
end
check(ok_mm, "channel static min / max = per-column min / max")
check(ok_as, "channel abs_sum = sum |x| over both batches")
local b, t = ch:count()
check(b == 2 and t == 20, "count: 2 batches, 20 tokens, got " .. b .. ", " .. t)
check(ch.nstats == 8 and ch.cols == 8 and ch.reduce == "channel" and ch.dtype == "bfloat16", "fields")

-- f32 input into bf16 statistics: rounded per §4 (monotone rounding)
local tn = O.new{reduce = "tensor", cols = 8, dtype = "bf16"}
tn:observe(x)
local flat = x:reshape({80}):totable()
local lo, hi = math.huge, -math.huge
for _, v in ipairs(flat) do lo, hi = math.min(lo, v), math.max(hi, v) end
local tmn, tmx = tn:minmax()
check(tmn:get(0) == bf16(lo) and tmx:get(0) == bf16(hi), "tensor: bf16 of the f32 min / max")
check(tostring(tn) == "Observer(tensor, static_minmax, bf16, 1 batches, 10 tokens)", "tostring: " .. tostring(tn))

-- non-contiguous input: a transposed view observes the same values as its copy
local v = llmc.randn({8, 6}, {seed = 3})
local vt = v:transpose(0, 1)
check(not vt:is_contiguous(), "transposed view")
local o1 = O.new{reduce = "channel", cols = 8, dtype = "f32"}
local o2 = O.new{reduce = "channel", cols = 8, dtype = "f32"}
o1:observe(vt)
o2:observe(vt:clone())
local a1, b1 = o1:minmax()
local a2, b2 = o2:minmax()
check(a1:bytes() == a2:bytes() and b1:bytes() == b2:bytes(), "non-contiguous input made contiguous")

-- FP8 static per-tensor (preset FP8 input args): scale = rnd_bf16(absmax / 448)
local fp8_in = schemes.preset("FP8", {"Linear"}).input_activations
local qp = tn:qparams(quant.c_args(fp8_in))
local absmax = math.max(-bf16(lo), bf16(hi))
check(qp.scale:dtype() == "bfloat16" and qp.scale:numel() == 1, "fp8 scale: bf16 {1}")
check(qp.scale:get(0) == bf16(f32(absmax / 448)), string.format("fp8 scale %.9g vs %.9g", qp.scale:get(0), bf16(absmax / 448)))
check(qp.zero_point == nil and qp.global_scale == nil, "fp8 symmetric: no zero point")

-- int8 asymmetric per-tensor: range, scale, zero point rounded per op in bf16
local i8 = qargs.new({num_bits = 8, type = "int", symmetric = false, strategy = "tensor", dynamic = false}, "input")
local qa = tn:qparams(quant.c_args(i8))
local m, M = math.min(bf16(lo), 0), math.max(bf16(hi), 0)
local range = bf16(M - m)
local scale = bf16(range / 255)
local zp = bf16(-128 - bf16(m / scale))
local zpi = math.floor(zp + 0.5)
if zpi - zp == 0.5 and zpi % 2 == 1 then zpi = zpi - 1 end   -- half to even
zpi = math.max(-128, math.min(127, zpi))
check(qa.scale:get(0) == scale, string.format("int8 asym scale %.9g vs %.9g", qa.scale:get(0), scale))
check(qa.zero_point and qa.zero_point:dtype() == "int8" and qa.zero_point:get(0) == zpi,
      "int8 asym zero point " .. tostring(qa.zero_point and qa.zero_point:get(0)) .. " vs " .. zpi)

-- tensor_group (NVFP4 input, dynamic "local"): only G = rnd(rnd(1/absmax) * 2688)
local nv_in = schemes.preset("NVFP4", {"Linear"}).input_activations
local qg = tn:qparams(quant.c_args(nv_in))
local G = bf16(bf16(1 / absmax) * 2688)
check(qg.global_scale == G and qg.scale == nil, string.format("global scale %.9g vs %.9g", qg.global_scale or -1, G))

-- channel args need a channel observer; a group of 4 = head reduce with 2 heads
local chq = ch:qparams(quant.c_args(qargs.new({num_bits = 8, type = "int", strategy = "channel"}, "input")))
check(chq.scale:numel() == 8 and chq.scale:get(3) == bf16(math.max(-mn:get(3), mx:get(3)) / 127.5), "channel scales")
local okc, errc = pcall(tn.qparams, tn, quant.c_args(qargs.new({num_bits = 8, type = "int", strategy = "channel"}, "input")))
check(not okc and errc:find("reduce = \"channel\""), "channel args on a tensor observer: " .. tostring(errc))
local hd = O.new{reduce = "head", heads = 2, cols = 8, dtype = "bf16", update = "memoryless_minmax"}
hd:observe(xb)
local hq = hd:qparams(quant.c_args(qargs.new({num_bits = 8, type = "int", group_size = 4}, "input")))
local h0 = 0
for r = 1, 10 do for j = 1, 4 do h0 = math.max(h0, math.abs(vals[r][j])) end end
check(hq.scale:numel() == 2 and hq.scale:get(0) == bf16(h0 / 127.5), "group scales from a head observer")
check(tostring(hd) == "Observer(head x2, memoryless_minmax, bf16, 1 batches, 10 tokens)", tostring(hd))

-- EMA worked example (compressed-tensors-format.md §7): stays 3.015625
local ema = O.new{reduce = "tensor", cols = 1, update = "minmax", averaging_constant = 0.01, dtype = "bf16"}
for _, a in ipairs({3.016, 2.891, 3.563, 3.563}) do ema:observe(llmc.tensor({{a}, {-a}}):to("bfloat16")) end
local _, emx = ema:minmax()
check(emx:get(0) == 3.015625, "EMA max stays 3.015625, got " .. emx:get(0))

-- reset / free / errors
ema:reset()
local okr, errr = pcall(ema.minmax, ema)
check(not okr and errr:find("observer has no statistics"), "no statistics after reset: " .. tostring(errr))
ema:free()
ema:free()
check(tostring(ema) == "Observer(freed)", "freed tostring")
local okf, errf = pcall(ema.count, ema)
check(not okf and errf:find("after free"), "use after free: " .. tostring(errf))
local function err_of(f, ...) local ok, e = pcall(f, ...) return not ok and tostring(e) or "" end
check(err_of(O.new, {reduce = "rows", cols = 4}):find("reduce"), "bad reduce named")
check(err_of(O.new, {cols = 4, update = "ema"}):find("update"), "bad update named")
check(err_of(O.new, {cols = 0}):find("cols"), "bad cols named")
check(err_of(O.new, {reduce = "head", cols = 10, heads = 3}):find("heads %(3%) must divide cols %(10%)"), "heads must divide cols")
check(err_of(O.new, {reduce = "head", cols = 10}):find("heads"), "head needs heads")
check(err_of(O.new, {cols = 4, dtype = "int8"}):find("dtype"), "bad dtype named")
check(err_of(O.new, {cols = 4, update = "minmax", averaging_constant = 0}):find("averaging_constant"), "bad c named")
check(err_of(ch.observe, ch, llmc.zeros({3, 7})):find("7 columns"), "column mismatch names the numbers")
check(err_of(ch.observe, ch, llmc.zeros({3, 8}, {dtype = "int32"})):find("dtype"), "int tensor rejected")
check(err_of(O.new{cols = 3}.minmax, O.new{cols = 3}):find("observer has no statistics"), "empty observer")

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
