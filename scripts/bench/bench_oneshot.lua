--[[
bench_oneshot.lua — end-to-end GPTQ W4A16 oneshot: wall time, peak RSS of
the llmc process and llmc's own peak tensor memory, for the sequential and
the basic calibration pipeline.

  llmc scripts/bench/bench_oneshot.lua                       -- tiny-llama and the 0.5B model, 3 runs each
  llmc scripts/bench/bench_oneshot.lua --models big --runs 5 --big-samples 16
  llmc scripts/bench/bench_oneshot.lua --models tiny --pipelines basic

Each run is a fresh llmc process (this script run with --child), because
peak RSS (VmHWM) only ever grows within a process.  The child does what
recipes/w4a16_gptq.lua does — GPTQModifier{targets = "Linear", scheme =
"W4A16", ignore = {"lm_head"}}, calibration data the first (longest, no
shuffle) rows of fixtures/datasets/calib_text.jsonl truncated to seq_len
tokens, batch size 1, checkpoint written to a scratch directory (deleted
afterwards) — and prints one result line:
  tokenize        seconds to tokenize the calibration set (before oneshot)
  oneshot         seconds inside llmc.oneshot (load, calibrate, solve, save)
  peak RSS        VmHWM of the child at the end (/proc/self/status): all of
                  it, the mapped checkpoint pages read included
  peak tensors    llmc's host tensor bytes high-water mark (oneshot's
                  summary); it does not count the Hessians and the solve's
                  work buffers (plain malloc in src/gptq.c) nor mapped
                  weights
The parent prints the median of --runs runs of each figure, the per-run
oneshot times and peak RSS, the calibration token count, OMP_NUM_THREADS
and the 1-minute load average before each run (and after each case).
Child stdout/stderr (per-layer progress lines with their peak memory) go
to --log.

--pipelines takes sequential, basic and sequential-disk (the sequential
pipeline with sequential_offload_device = "disk": hidden states in a
temporary folder instead of memory).

The 0.5B model (llama, hidden 1024, 24 layers, 16/8 heads, intermediate
4608, vocab 32000, untied, bf16: 0.48 B parameters) is written with
scripts/make_random_model.lua to --big when missing (~1 GB; the same
directory bench_forward.lua uses).  It has no tokenizer: tiny-llama's (same
32000 vocabulary) tokenizes its calibration data.
]]
local llmc = require "llmc"
local util = require "llmc.util"

local args = {
  models = "tiny,big", pipelines = "sequential,basic", runs = "3",
  big = "/tmp/llmc-bench-llama-0.5b",
  ["tiny-samples"] = "256", ["tiny-seq-len"] = "512",     -- recipes/w4a16_gptq.lua defaults
  ["big-samples"] = "32", ["big-seq-len"] = "512",
  save = "1", log = "/tmp/llmc-bench-oneshot.log",
  -- child mode
  child = "", model = "", pipeline = "", samples = "", ["seq-len"] = "", out = "",
}
do
  local i = 1
  while arg[i] do
    local k = arg[i]:match("^%-%-(.+)$")
    if not k or args[k] == nil or arg[i + 1] == nil then error("bench_oneshot: bad argument " .. arg[i], 0) end
    args[k] = arg[i + 1]
    i = i + 2
  end
end

local function median(t)
  local s = {table.unpack(t)}
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function calib_path() return llmc.bundled("datasets/calib_text.jsonl") end

-- ---- child: one oneshot, one result line ------------------------------------
if args.child == "1" then
  local model_dir = args.model
  local tok
  if util.exists(model_dir .. "/tokenizer.json") then
    tok = require("llmc.tokenizer").load(model_dir)
  else
    tok = require("llmc.tokenizer").load(llmc.default_model())
  end
  local t0 = util.now()
  -- the dataset exactly as oneshot builds it from the recipe's arguments
  local ds = require("llmc.datasets").load{
    dataset = "json", dataset_path = calib_path(), tokenizer = tok, text_column = "text",
    num_calibration_samples = math.min(tonumber(args.samples), 480), shuffle_calibration_samples = false,
    max_seq_length = tonumber(args["seq-len"]), pad_to_max_length = false, concatenate_data = false,
    batch_size = 1, data_collator = "truncation",
  }
  local ntok = 0
  for i = 1, ds.n do ntok = ntok + #ds[i].input_ids end
  local t1 = util.now()
  local out = args.out ~= "" and args.out or nil
  -- "sequential-disk": the sequential pipeline with its kept hidden states
  -- in files (sequential_offload_device = "disk", a temporary folder)
  local pipeline, offload = args.pipeline, nil
  if pipeline == "sequential-disk" then pipeline, offload = "sequential", "disk" end
  local _, summary = llmc.oneshot{
    model = model_dir,
    recipe = llmc.modifiers.GPTQModifier{targets = "Linear", scheme = "W4A16", ignore = {"lm_head"}},
    dataset = ds, pipeline = pipeline, sequential_offload_device = offload, output_dir = out, overwrite = true,
  }
  local t2 = util.now()
  print(string.format("BENCH_RESULT tokenize_s=%.3f oneshot_s=%.3f peak_rss=%d peak_tensors=%d samples=%d tokens=%d modules=%d",
    t1 - t0, t2 - t1, util.fs.peak_rss() or -1, summary.peak_host or -1, ds.n, ntok, summary.modules))
  return
end

-- ---- parent -----------------------------------------------------------------
local exe
do
  local i = -1
  while arg[i - 1] do i = i - 1 end
  exe = arg[i]
end
if not exe then error("bench_oneshot: cannot tell which llmc executable runs this script (arg[-1] is missing)", 0) end
local script = arg[0]
local RUNS = tonumber(args.runs)

local function loadavg()
  local f = io.open("/proc/loadavg")
  if not f then return "?" end
  local l = f:read("l")
  f:close()
  return l:match("^(%S+ %S+ %S+)") or l
end

local function want(list, x)
  for v in list:gmatch("[^,]+") do if v == x then return true end end
  return false
end

local cases = {}
if want(args.models, "tiny") then
  cases[#cases + 1] = {label = "tiny-llama", dir = llmc.default_model(),
    samples = args["tiny-samples"], seq_len = args["tiny-seq-len"]}
end
if want(args.models, "big") then
  if not util.exists(args.big .. "/config.json") then
    print("writing the 0.5B random model to " .. args.big .. " ...")
    local R = dofile(llmc.root() .. "/scripts/make_random_model.lua")
    R.write("llama", args.big, {preset = "bench-0.5b"})
  end
  cases[#cases + 1] = {label = "llama-0.5b", dir = args.big, samples = args["big-samples"], seq_len = args["big-seq-len"]}
end

local function mib(b) return b / 1048576 end

print(string.format("llmc bench_oneshot: GPTQ W4A16 (group 128, actorder static, block 128), OMP_NUM_THREADS=%s, " ..
  "median of %d runs, one process per run; child logs in %s", os.getenv("OMP_NUM_THREADS") or "(unset)", RUNS, args.log))
print(string.format("%-11s %-15s %9s %7s %9s %9s %10s %10s %9s  %s", "model", "pipeline", "samples", "tokens",
  "tokenize", "oneshot", "peak RSS", "peak tens", "wall", "load avg"))
local lf = assert(io.open(args.log, "a"))
for _, c in ipairs(cases) do
  for pl in args.pipelines:gmatch("[^,]+") do
    local res = {tok = {}, os = {}, rss = {}, ten = {}, wall = {}, load = {}}
    local info
    for r = 1, RUNS do
      local out = args.save == "1" and string.format("/tmp/llmc-bench-oneshot-out-%d", util.fs.getpid()) or ""
      local cmd = string.format("%s %s --child 1 --model %s --pipeline %s --samples %s --seq-len %s --out %s 2>>%s",
        sh_quote(exe), sh_quote(script), sh_quote(c.dir), pl, c.samples, c.seq_len, sh_quote(out), sh_quote(args.log))
      lf:write(string.format("==== %s %s run %d: %s\n", c.label, pl, r, cmd))
      lf:flush()
      res.load[r] = loadavg():match("^%S+")
      local t0 = util.now()
      local p = assert(io.popen(cmd))
      local line
      for l in p:lines() do
        if l:match("^BENCH_RESULT") then line = l else lf:write(l, "\n") end
      end
      local ok = p:close()
      local wall = util.now() - t0
      lf:flush()
      if out ~= "" then os.execute("rm -rf " .. sh_quote(out)) end
      if not ok or not line then error(string.format("bench_oneshot: %s %s run %d failed (see %s)", c.label, pl, r, args.log), 0) end
      local v = {}
      for k, x in line:gmatch("([%w_]+)=(%-?[%d.]+)") do v[k] = tonumber(x) end
      res.tok[r], res.os[r], res.rss[r], res.ten[r], res.wall[r] = v.tokenize_s, v.oneshot_s, v.peak_rss, v.peak_tensors, wall
      info = v
    end
    print(string.format("%-11s %-15s %9s %7d %8.2fs %8.2fs %7.0f MiB %6.0f MiB %8.2fs  %s",
      c.label, pl, string.format("%dx%s", info.samples, c.seq_len), info.tokens, median(res.tok), median(res.os),
      mib(median(res.rss)), mib(median(res.ten)), median(res.wall), loadavg()))
    print(string.format("%-11s %-15s   oneshot runs: %s s; peak RSS runs: %s MiB; 1-min load before each run: %s",
      "", "",
      table.concat((function() local t = {} for i, x in ipairs(res.os) do t[i] = string.format("%.2f", x) end return t end)(), " "),
      table.concat((function() local t = {} for i, x in ipairs(res.rss) do t[i] = string.format("%.0f", mib(x)) end return t end)(), " "),
      table.concat(res.load, " ")))
    io.stdout:flush()
  end
end
lf:close()
