-- Sequential pipeline with the calibration activations on disk
-- (sequential_offload_device = "disk", activation_offload_folder), GPTQ W4A16
-- on the bundled tiny-llama with 32 samples x 128 tokens:
--  * the quantized checkpoint tensors (packed weights, scales, zero points)
--    and the fake-quantized weights are bit-identical to the in-memory run,
--    with propagate_error (default) and without;
--  * safetensors files appear in the given folder during the run (seen from
--    a forward hook) and none is left after it; the default folder (under
--    $TMPDIR or /tmp) exists during the run and is removed after it;
--  * the peak tensor memory of the run (llmc._tensor memory().host_peak,
--    above what was in use before it) is lower with disk offload: printed, and
--    asserted with the margin that the hidden states account for;
--  * errors: a folder that cannot be created, a folder that is not writable,
--    a path that is a file, an unsupported sequential_offload_device; and a
--    modifier error in the middle of the run leaves no file behind.
local llmc = require "llmc"
local T = require "llmc._tensor"
local W = require "llmc._stwriter"

local passed, failed = 0, 0
local function check(cond, what, detail)
  if cond then passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. what .. (detail and ("\n  " .. tostring(detail)) or ""))
  end
end

local data = llmc.bundled("datasets/calib_text.jsonl")
local scratch = (os.getenv("TMPDIR") or "/tmp") .. "/llmc-test-actoff-" .. W.getpid()
W.rmtree(scratch)
W.mkdir_p(scratch)

local function act_files(folder)
  local n = 0
  if W.is_dir(folder) then
    for _, f in ipairs(W.listdir(folder)) do if f:match("%.safetensors$") then n = n + 1 end end
  end
  return n
end

local function default_folders()
  local base = (os.getenv("TMPDIR") or "/tmp"):gsub("/+$", "")
  local prefix = "llmc-activations-" .. W.getpid() .. "-"
  local out = {}
  for _, f in ipairs(W.listdir(base)) do
    if f:sub(1, #prefix) == prefix then out[#out + 1] = base .. "/" .. f end
  end
  return out
end

-- one oneshot run; `watch(model)` may register hooks.  Returns the records
-- by name, the fake weights' bytes, and the peak tensor bytes above the
-- bytes in use before the run.
local function run(args, watch)
  collectgarbage()
  collectgarbage()
  local model = llmc.load(llmc.default_model())
  if watch then watch(model) end
  local a = {model = model, quiet = true,
    recipe = llmc.modifiers.GPTQModifier{scheme = "W4A16", ignore = {"lm_head"}},
    dataset = "json", dataset_path = data, num_calibration_samples = 32, max_seq_length = 128,
    shuffle_calibration_samples = false}
  for k, v in pairs(args) do a[k] = v end
  local base = T.memory().host_in_use
  local _, sm = llmc.oneshot(a)
  local peak = sm.peak_host - base
  local rec, fake = {}, {}
  for _, r in ipairs(sm.records) do
    local t = {}
    for _, e in ipairs(r.tensors) do t[e.name] = e.tensor:bytes() end
    rec[r.name] = t
    fake[r.name] = r.module.weight:bytes()
  end
  return rec, fake, peak
end

local function same(ra, fa, rb, fb)
  local n, bad = 0, {}
  for name, t in pairs(ra) do
    n = n + 1
    local u = rb[name]
    local ok = u ~= nil and fa[name] == fb[name]
    for k, v in pairs(t) do if not u or u[k] ~= v then ok = false end end
    if not ok then bad[#bad + 1] = name end
  end
  return n, bad
end

-- in memory
local rm, fm, peak_mem = run({})

-- on disk, in a folder that exists: files during the run, none after
local folder = scratch .. "/acts"
W.mkdir(folder)
local seen, seen_layers = 0, 0
local rd, fd, peak_disk = run({sequential_offload_device = "disk", activation_offload_folder = folder}, function(model)
  model:get("model.layers.2.self_attn.q_proj"):register_forward_pre_hook(function()
    local k = act_files(folder)
    if k > seen then seen = k end
    if k > 0 then seen_layers = seen_layers + 1 end
  end)
end)
local n, bad = same(rm, fm, rd, fd)
check(n == 28 and #bad == 0, "disk offload: 28 quantized Linears bit-identical to the in-memory run",
  n .. " compared; differ: " .. table.concat(bad, ", "))
check(seen >= 1 and seen <= 2 and seen_layers == 64,
  "activation files present in the folder while layer 2 runs (1 or 2 generations, seen by all 64 forwards)",
  seen .. " files, " .. seen_layers .. " forwards")
check(W.is_dir(folder) and #W.listdir(folder) == 0, "the given folder is kept and left empty",
  W.is_dir(folder) and table.concat(W.listdir(folder), " ") or "folder gone")
print(string.format("peak tensor memory (32 x 128 tokens, GPTQ W4A16): in memory %s, disk offload %s",
  llmc.util.fmt_bytes(peak_mem), llmc.util.fmt_bytes(peak_disk)))
-- hidden states of one generation: 32 x 128 x 256 f32 = 4 MiB; the in-memory
-- run holds two generations (inputs and outputs) plus the rotary tables
local gen = 32 * 128 * 256 * 4
check(peak_disk < peak_mem and peak_mem - peak_disk >= gen,
  "peak tensor memory lower with disk offload by at least one generation of hidden states (4 MiB)",
  string.format("%d vs %d bytes", peak_disk, peak_mem))

-- default folder, and propagate_error = false
do
  local during = {}
  local rm2, fm2 = run({propagate_error = false, num_calibration_samples = 8, max_seq_length = 32})
  local rd2, fd2 = run({propagate_error = false, num_calibration_samples = 8, max_seq_length = 32,
                        sequential_offload_device = "disk"}, function(model)
    model:get("model.layers.1.mlp.down_proj"):register_forward_pre_hook(function()
      for _, f in ipairs(default_folders()) do during[f] = act_files(f) end
    end)
  end)
  local n2, bad2 = same(rm2, fm2, rd2, fd2)
  check(n2 == 28 and #bad2 == 0, "propagate_error = false: disk == memory, bit for bit", table.concat(bad2, ", "))
  local made = 0
  for f, k in pairs(during) do
    made = made + 1
    check(k >= 1, "default folder " .. f .. " holds activation files during the run", k)
    check(not W.exists(f), "default folder " .. f .. " removed after the run")
  end
  check(made == 1, "one default folder under $TMPDIR or /tmp during the run", made)
end

-- errors
local function err_of(args)
  local ok, e = pcall(run, args)
  return ok and "no error" or tostring(e)
end
local small = {num_calibration_samples = 2, max_seq_length = 16}
local function with(t)
  local a = {}
  for k, v in pairs(small) do a[k] = v end
  for k, v in pairs(t) do a[k] = v end
  return a
end
local e = err_of(with{sequential_offload_device = "disk", activation_offload_folder = "/proc/llmc-no/such"})
check(e:find("cannot create activation_offload_folder '/proc/llmc-no/such'", 1, true), "folder that cannot be created", e)
e = err_of(with{sequential_offload_device = "disk", activation_offload_folder = "/proc"})
check(e:find("activation_offload_folder '/proc' is not writable", 1, true), "folder that is not writable", e)
local file = scratch .. "/a-file"
llmc.util.write_file(file, "x")
e = err_of(with{activation_offload_folder = file})
check(e:find("activation_offload_folder '" .. file .. "' exists and is not a folder", 1, true),
  "a file as the folder (the folder alone implies disk)", e)
e = err_of(with{sequential_offload_device = "cuda"})
check(e:find("sequential_offload_device = cuda is not supported", 1, true) and e:find("\"disk\"", 1, true),
  "unsupported sequential_offload_device", e)
e = err_of(with{activation_offload_folder = 3})
check(e:find("activation_offload_folder must be a folder path", 1, true), "activation_offload_folder of a wrong type", e)
-- a modifier error at the first layer's solve: no file left behind
local f2 = scratch .. "/acts2"
local ok, e2 = pcall(function()
  llmc.oneshot{model = llmc.default_model(), quiet = true,
    recipe = llmc.modifiers.GPTQModifier{scheme = "W4A16", ignore = {"lm_head"}, actorder = "group"},
    dataset = "json", dataset_path = data, num_calibration_samples = 2, max_seq_length = 16,
    activation_offload_folder = f2}
end)
check(not ok and tostring(e2):find("actorder", 1, true), "modifier error surfaces through the disk pipeline", e2)
check(not W.exists(f2), "the folder the pipeline created is removed after the error", f2)

W.rmtree(scratch)
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
