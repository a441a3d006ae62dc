-- test_tensor.lua — the Tensor binding: constructors, views, indexing,
-- arithmetic metamethods, reductions, conversions, stats, errors.
-- Expected values are closed forms or hand-computed bit patterns.
local llmc = require "llmc"

local passed, failed = 0, 0
local function check(cond, msg)
  if cond then passed = passed + 1 else failed = failed + 1; io.stderr:write("FAIL: ", msg, "\n") end
end
local function near(a, b, tol) return math.abs(a - b) <= (tol or 0) end

-- constructors
local z = llmc.zeros({2, 3})
check(z:dtype() == "float32" and #z == 2 and z:numel() == 6, "zeros shape/dtype")
local o = llmc.ones({2, 2}, {dtype = "bfloat16"})
check(o:dtype() == "bfloat16" and o:sum() == 4, "ones bf16 sum")
local a = llmc.arange(12)
check(a:dtype() == "int64" and a:numel() == 12 and a:get(11) == 11, "arange ints")
local f = llmc.full({3}, 2.5)
check(f:get(2) == 2.5, "full")
local t = llmc.tensor({{1, 2, 3}, {4, 5, 6}})
check(t:shape()[1] == 2 and t:shape()[2] == 3, "nested table shape")
local ok, err = pcall(llmc.tensor, {{1, 2}, {3}})
check(not ok and err:find("ragged"), "ragged table rejected: " .. tostring(err))

-- deterministic random
local r1, r2 = llmc.randn({64}, {seed = 5}), llmc.randn({64}, {seed = 5})
check(r1:bytes() == r2:bytes(), "randn is deterministic for a seed")
check(llmc.randn({64}, {seed = 6}):bytes() ~= r1:bytes(), "different seeds differ")
local u = llmc.rand({10000}, {seed = 1})
local s = u:stats()
check(s.min >= 0 and s.max < 1 and near(s.mean, 0.5, 0.02), "rand in [0,1), mean ~0.5")

-- indexing (0-based) and views
check(t[1][2]:item() == 6, "t[1][2] = 6 (0-based)")
check(t:get(-1, -1) == 6, "negative indices count from the end")
local tr = t:transpose(0, 1)
check(not tr:is_contiguous() and tr:get(2, 1) == 6 and tr:shape()[1] == 3, "transpose view")
local sl = t:slice(1, 1, 3)
check(sl:shape()[2] == 2 and sl:get(0, 0) == 2, "slice(dim, start, stop)")
local nv = t:narrow(1, 0, 2)
nv:set(0, 0, 100)
check(t:get(0, 0) == 100, "narrow is a view: writes are visible")
local rs = t:reshape({3, -1})
check(rs:shape()[1] == 3 and rs:shape()[2] == 2, "reshape with -1")
t[1] = 7
check(t:get(1, 2) == 7, "row assignment broadcasts a number")
ok, err = pcall(function() return t[5] end)
check(not ok and err:find("out of range"), "out-of-range index: " .. tostring(err))

-- arithmetic and promotion (PyTorch semantics)
local b = llmc.full({2}, 1.5, "bfloat16")
local sc = llmc.full({2}, 0.2001953125, "bfloat16")
local q = b / sc
check(q:dtype() == "bfloat16" and q:get(0) == 7.5, "bf16 / bf16 rounds the quotient to bf16 (spec 3.4)")
local q32 = b / llmc.full({2}, 0.2001953125)
check(q32:dtype() == "float32" and q32:get(0) ~= 7.5, "bf16 / f32 stays f32")
check((b * 2):dtype() == "bfloat16", "a number never widens")
check((-b):get(0) == -1.5 and (b + b):get(1) == 3 and (2 - b):get(0) == 0.5, "metamethods")
check(llmc.full({1}, 2.5):round():get(0) == 2 and llmc.full({1}, -7.5):round():get(0) == -8, "round half to even")
check(llmc.tensor({-3, 2}):abs():sum() == 5, "abs")
check(llmc.tensor({-3, 2, 9}):clamp(-1, 4):totable()[3] == 4, "clamp")

-- reductions
local m = llmc.tensor({{1, -5, 2}, {3, 4, -1}})
check(m:sum() == 4, "sum all")
check(m:amax() == 5, "amax all")
local rowmax = m:amax(1, true)
check(rowmax:shape()[2] == 1 and rowmax:get(0, 0) == 5 and rowmax:get(1, 0) == 4, "amax keepdim")
check(m:argmax(1):get(0) == 2 and m:argmax(1):dtype() == "int64", "argmax")
check(m:mean(0):get(1) == -0.5, "mean over dim 0")
check(m:min() == -5 and m:max() == 4, "min/max")

-- matmul / linear against hand-computed products
local x = llmc.tensor({{1, 2}, {3, 4}})
local w = llmc.tensor({{5, 6}, {7, 8}})
local y = x:matmul(w)
check(y:get(0, 0) == 19 and y:get(1, 1) == 50, "matmul")
local l = llmc.linear(x, w)
check(l:get(0, 1) == 23 and l:get(1, 0) == 39, "linear = x @ w^T")

-- conversions: bit patterns
local bf = llmc.tensor({1.0, 100.6, -0.0}):to("bfloat16")
local bytes = bf:bytes()
check(bytes == string.char(0x80, 0x3F, 0xC9, 0x42, 0x00, 0x80), "bf16 bytes (little endian)")
local e4 = llmc.tensor({448, 464, 1.0625, -0.0}):to("float8_e4m3fn")
check(e4:bytes() == string.char(0x7E, 0x7E, 0x38, 0x80), "fp8 e4m3 bytes")
local fb = llmc.from_bytes(string.char(0x5E), "float8_e4m3fn")
check(fb:get(0) == 28, "from_bytes fp8 0x5E = 28")

-- stats, tostring, memory accounting
local st = llmc.tensor({1, 2, 3, 4}):stats()
check(st.mean == 2.5 and near(st.std, math.sqrt(5 / 3), 1e-12) and st.absmax == 4 and st.nan == 0, "stats")
check(tostring(llmc.zeros({2, 3})):find("Tensor%[2, 3%] float32 cpu"), "tostring: " .. tostring(llmc.zeros({2, 3})))
local mem = llmc.memory()
check(mem.host_in_use > 0 and mem.host_peak >= mem.host_in_use, "memory accounting")
do
  local big <close> = llmc.zeros({1024, 1024})
  check(llmc.memory().host_in_use >= 4 * 1024 * 1024, "a 4 MB tensor is counted")
end

-- errors name the problem
ok, err = pcall(function() return llmc.zeros({2, 3}) + llmc.zeros({4}) end)
check(not ok and err:find("do not broadcast"), "broadcast error: " .. tostring(err))
ok, err = pcall(function() return llmc.zeros({2}):to("float7") end)
check(not ok and err:find("unknown dtype 'float7'"), "dtype error: " .. tostring(err))

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
