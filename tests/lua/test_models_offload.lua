-- Disk offload: tiny-llama loaded with a CPU budget smaller than the model puts the
-- parameters that do not fit into the offload folder (one safetensors file per
-- module, checked on disk), keeps them out of memory between forward passes, and
-- still gives the golden logits (fixtures/models/tiny-llama/golden.safetensors).

local llmc = require "llmc"
local S = require "llmc._safetensors"
local util = require "llmc.util"
local offload = require "llmc.offload"

local passed, failed = 0, 0
local function check(cond, what, detail)
  if cond then passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. what .. (detail and ("\n  " .. tostring(detail)) or ""))
  end
end
local function check_err(fn, pattern, what)
  local ok, err = pcall(fn)
  check(not ok and tostring(err):find(pattern, 1, true) ~= nil, what, ok and "no error" or tostring(err))
end
local function row_rel(a, b)
  local worst = 0
  for i = 0, b:shape()[1] - 1 do
    local d = (a[i] - b[i]):abs():max() / b[i]:abs():max()
    if d > worst or d ~= d then worst = d end
  end
  return worst
end

local dir = llmc.bundled("models/tiny-llama")
local G = S.open(dir .. "/golden.safetensors")
local ids0 = G:get("input_ids.0"):totable()
local tmp = os.tmpname()
os.remove(tmp)
local folder = tmp .. "-llmc-offload"

check(offload.parse_bytes("20MB") == 20000000 and offload.parse_bytes("1.5GiB") == math.floor(1.5 * 1024 ^ 3) and
  offload.parse_bytes(123) == 123, "byte sizes")
check_err(function() llmc.load(dir, {device_map = "auto", max_memory = {cpu = "20MB"}}) end,
  "give offload_folder", "a budget too small without offload_folder is an error")

-- 22.7 MB of bf16 parameters; 20 MB holds the embedding (16.4 MB) and two layers (1.57 MB each)
local model = llmc.load(dir, {device_map = "auto_offload", max_memory = {cpu = "20MB"}, offload_folder = folder})
local fp = offload.footprint(model)
check(fp.cpu <= 20000000 and fp.disk > 0 and fp.cpu + fp.disk == 22680064, "footprint split cpu/disk",
  fp.cpu .. " + " .. fp.disk)
check(model.model.embed_tokens.device == "cpu" and model:get("model.layers.1.mlp.up_proj").device == "cpu",
  "embedding and first layers on the cpu")
local disk = {}
for name, m in model:modules() do if m.device == "disk" then disk[#disk + 1] = name end end
check(#disk > 0, "some modules on disk")
local files_ok = true
for _, name in ipairs(disk) do
  local m = model:get(name)
  if #m._pnames > 0 then
    local f = folder .. "/" .. name .. ".safetensors"
    files_ok = files_ok and util.exists(f) and S.open(f):has("weight")
  end
end
check(files_ok, "every disk module's parameters are in the offload folder")
check(util.exists(folder .. "/model.layers.3.mlp.down_proj.safetensors"), "the last layer's down_proj file exists")
check(not util.exists(folder .. "/model.layers.0.mlp.down_proj.safetensors"), "cpu modules are not written")
check(model:get("model.layers.2").device == "disk", "a whole decoder layer goes to disk, not half of one")

-- the offloaded file holds exactly the checkpoint's bytes
local orig = S.open(dir .. "/model.safetensors"):get("model.layers.3.mlp.down_proj.weight")
local off = S.open(folder .. "/model.layers.3.mlp.down_proj.safetensors"):get("weight")
check(off:dtype() == "bfloat16" and (off:to("float32") - orig:to("float32")):abs():max() == 0, "offloaded bytes equal")

for p = 0, 3 do
  local logits = model:forward({input_ids = {G:get("input_ids." .. p):totable()}})
  local e = row_rel(logits[0], G:get("logits." .. p))
  check(e < 1e-4, string.format("offloaded model: logits of prompt %d within 1e-4 (%.1e)", p, e))
end
local dp = model:get("model.layers.3.mlp.down_proj")
check(rawget(dp, "weight") == nil, "a disk module holds no weight between forward passes")
local _, new = llmc.generate(model, ids0, {max_new_tokens = 24})
local want = G:get("greedy_ids.0"):totable()
local same = #new == #want
for i = 1, #want do same = same and new[i] == want[i] end
check(same, "greedy generation with offloaded layers")

-- a budget below the embedding: everything on disk, still exact
local folder2 = folder .. "-all"
local m2 = llmc.load(dir, {device_map = "auto", max_memory = {cpu = 1000}, offload_folder = folder2})
check(m2.model.embed_tokens.device == "disk" and offload.footprint(m2).cpu == 0, "all parameters on disk")
check(row_rel(m2:forward({input_ids = {ids0}})[0], G:get("logits.0")) < 1e-4, "all-disk model: golden logits")
-- assigning a weight to a disk module keeps it in memory (and uses it)
local q = m2:get("model.layers.0.self_attn.q_proj")
local w = q.weight:to("float32")
q.weight = w
m2:forward({input_ids = {ids0}})
check(rawget(q, "weight") == w, "an assigned weight survives the forward pass of a disk module")

os.execute("rm -rf '" .. folder .. "' '" .. folder2 .. "'")
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
