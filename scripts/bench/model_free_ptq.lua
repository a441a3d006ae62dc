--[[
scripts/bench/model_free_ptq.lua — llmc.model_free_ptq on a generated ~2 GB
bf16 checkpoint against `cp -r` of the same files: wall time and peak RSS,
medians of N runs (page cache warm for both).

  llmc scripts/bench/model_free_ptq.lua [--dir /tmp/llmc-bench] [--runs 5] [--scheme FP8_BLOCK] [--errors]

The checkpoint (4 shards, 16 layers x 4 Linear [4096, 4096] bf16 + norms,
2.0 GiB) is generated once into --dir.  Each measurement runs in a child
process under /usr/bin/time -f "%e %M" (wall seconds, max RSS KiB).
]]
local llmc = require "llmc"
local util = llmc.util
local W = require "llmc._stwriter"

local a = llmc.args{dir = "/tmp/llmc-bench", runs = 5, scheme = "FP8_BLOCK", errors = false}
local F = util.fs
local ckpt = a.dir .. "/ckpt"

local function generate()
  F.mkdir_p(ckpt)
  util.write_file(ckpt .. "/config.json", '{"model_type": "llama", "torch_dtype": "bfloat16"}')
  local wm, total = util.json.object({}), 0
  local layers, per_shard = 16, 4
  for s = 1, layers // per_shard do
    local sn = string.format("model-%05d-of-%05d.safetensors", s, layers // per_shard)
    local w = W.writer(ckpt .. "/" .. sn)
    local names = {}
    for l = (s - 1) * per_shard, s * per_shard - 1 do
      for _, p in ipairs({"self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"}) do
        names[#names + 1] = {string.format("model.layers.%d.%s.weight", l, p), {4096, 4096}}
      end
      names[#names + 1] = {string.format("model.layers.%d.input_layernorm.weight", l), {4096}}
    end
    for _, e in ipairs(names) do w:declare(e[1], "bfloat16", e[2]) end
    w:begin()
    for i, e in ipairs(names) do
      local t = (llmc.randn(e[2], {seed = s * 1000 + i}) * 0.02):to("bfloat16")
      w:write(e[1], t)
      wm[e[1]] = sn
      total = total + t:nbytes()
      t:release()
    end
    w:finish()
  end
  util.write_file(ckpt .. "/model.safetensors.index.json",
    util.json.encode({metadata = {total_size = total}, weight_map = wm}, {indent = 2}))
end

if not F.exists(ckpt .. "/model.safetensors.index.json") then
  io.stderr:write("generating ", ckpt, " ...\n")
  generate()
end

local function timed(cmd)
  local p = io.popen("/usr/bin/time -f '@@ %e %M' " .. cmd .. " 2>&1 >/dev/null")
  local out = p:read("a")
  p:close()
  local s, kb = out:match("@@ ([%d.]+) (%d+)")
  if not s then error("measurement failed: " .. cmd .. "\n" .. out, 0) end
  return tonumber(s), tonumber(kb) * 1024
end

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

local exe = F.realpath("/proc/self/exe")
local script = a.dir .. "/run_model_free.lua"
util.write_file(script, string.format([[
local llmc = require "llmc"
llmc.model_free_ptq{model = %q, output_dir = %q, scheme = %q, overwrite = true, quiet = true, errors = %s}
]], ckpt, a.dir .. "/out", a.scheme, tostring(a.errors)))
os.execute("cat " .. ckpt .. "/* > /dev/null")   -- warm the page cache
local ct, mt, mr = {}, {}, {}
for i = 1, a.runs do
  os.execute("rm -rf " .. a.dir .. "/cp-out")
  ct[#ct + 1] = timed(string.format("cp -rL %q %q", ckpt, a.dir .. "/cp-out"))
  os.execute("sync")
  local s, rss = timed(string.format("%q %q", exe, script))
  mt[#mt + 1], mr[#mr + 1] = s, rss
  os.execute("sync")
end
local bytes = 0
for _, f in ipairs(F.listdir(ckpt)) do bytes = bytes + F.file_size(ckpt .. "/" .. f) end
local c, m = median(ct), median(mt)
print(string.format("checkpoint %s in %s; %d runs, medians:", util.fmt_bytes(bytes), ckpt, a.runs))
print(string.format("  cp -r                  %7.2f s  (%.2f GB/s)", c, bytes / c / 1e9))
print(string.format("  model_free_ptq %-8s %6.2f s  (%.2f GB/s)  = %.2fx cp;  peak RSS %s%s", a.scheme, m,
  bytes / m / 1e9, m / c, util.fmt_bytes(median(mr)), a.errors and "  (with error statistics)" or ""))
os.execute("rm -rf " .. a.dir .. "/cp-out " .. a.dir .. "/out")
