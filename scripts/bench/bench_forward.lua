--[[
bench_forward.lua — CPU forward-pass throughput of llmc's model code, and where
the time goes (gemm share from llmc._nn's profile counters).

  llmc scripts/bench/bench_forward.lua                      -- tiny-llama + the 0.5B random model
  llmc scripts/bench/bench_forward.lua --big /tmp/llama-0.5b --runs 5 --skip-big 0

Measures, per model, the median over --runs runs (after one warm-up) of:
  prefill   one forward pass over a batch (tiny: 4 x 256 tokens; 0.5B: 1 x 512)
  decode    greedy generation with the KV cache, batch 1, --new tokens
and reports tokens/s and the share of the prefill time spent in the Linear
gemms (sgemm, bf16 weights upcast in blocks: the upcast is reported apart),
in attention, and elsewhere.  The 0.5B model (llama, hidden 1024, 24 layers,
16/8 heads, intermediate 4608, vocab 32000, untied: 0.48 B parameters, bf16)
is written with scripts/make_random_model.lua to --big when missing (~1 GB).
Threads: OMP_NUM_THREADS (OpenBLAS runs single-threaded inside llmc's OpenMP
regions).
]]
local llmc = require "llmc"
local N = require "llmc._nn"

local args = {big = "/tmp/llmc-bench-llama-0.5b", runs = "5", new = "32", ["skip-big"] = "0", dtype = "auto"}
do
  local i = 1
  while arg[i] do
    local k = arg[i]:match("^%-%-(.+)$")
    if not k or args[k] == nil or arg[i + 1] == nil then error("bench_forward: bad argument " .. arg[i], 0) end
    args[k] = arg[i + 1]
    i = i + 2
  end
end
local RUNS = tonumber(args.runs)

local function median(t)
  local s = {table.unpack(t)}
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

local function ids_batch(B, T, V)
  local ids = {}
  for b = 1, B do
    ids[b] = {1}
    for t = 2, T do ids[b][t] = (t * 7919 + b * 104729) % (V - 3) + 3 end
  end
  return ids
end

local function bench(label, model, B, T, new)
  local V = model.dims.vocab
  local ids = ids_batch(B, T, V)
  local times, shares = {}, {}
  model:forward({input_ids = ids})   -- warm-up: maps and upcasts nothing twice
  collectgarbage()
  for r = 1, RUNS do
    N.profile_reset()
    local t0 = N.now()
    local logits = model:forward({input_ids = ids})
    local dt = N.now() - t0
    logits:release()
    local p = N.profile()
    times[r] = dt
    shares[r] = {gemm = p.gemm_s / dt, attn = p.attention_s / dt, conv = p.convert_s / dt,
      gflops = p.gemm_flops / p.gemm_s / 1e9}
    collectgarbage()
  end
  local t = median(times)
  local function med(k) local v = {} for i, s in ipairs(shares) do v[i] = s[k] end return median(v) end
  print(string.format("%-24s prefill %dx%d: %8.1f tokens/s  (median %.3f s of %d runs; min %.3f s)", label, B, T,
    B * T / t, t, RUNS, math.min(table.unpack(times))))
  print(string.format("%-24s   time in Linear gemm %.0f%% (%.0f GFLOP/s), bf16->f32 upcast %.1f%%, attention %.1f%%, other %.1f%%",
    "", 100 * med("gemm"), med("gflops"), 100 * med("conv"), 100 * med("attn"),
    100 * (1 - med("gemm") - med("conv") - med("attn"))))
  local dec = {}
  for r = 1, RUNS do
    local _, _, info = llmc.generate(model, ids[1], {max_new_tokens = new, stop_at_eos = false})
    dec[r] = info.tokens_per_s
  end
  print(string.format("%-24s decode (KV cache, batch 1, %d tokens): %.1f tokens/s (median)", "", new, median(dec)))
end

print(string.format("llmc bench_forward: OMP_NUM_THREADS=%s, %d runs", os.getenv("OMP_NUM_THREADS") or "(all)", RUNS))
local tiny = llmc.load(llmc.default_model(), {dtype = args.dtype})
bench("tiny-llama (" .. tiny.dtype .. ")", tiny, 4, 256, tonumber(args.new))
local tiny32 = llmc.load(llmc.default_model(), {dtype = "float32"})
bench("tiny-llama (float32)", tiny32, 4, 256, tonumber(args.new))

if args["skip-big"] == "0" then
  local util = require "llmc.util"
  if not util.exists(args.big .. "/config.json") then
    print("writing the 0.5B random model to " .. args.big .. " ...")
    local R = dofile(llmc.root() .. "/scripts/make_random_model.lua")
    R.write("llama", args.big, {preset = "bench-0.5b"})
  end
  local big = llmc.load(args.big, {dtype = args.dtype})
  print(string.format("0.5B model: %.3f B parameters, %s", big:num_parameters() / 1e9, big.dtype))
  bench("llama-0.5b (" .. big.dtype .. ")", big, 1, 512, math.min(tonumber(args.new), 16))
end
