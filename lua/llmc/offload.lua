--[[
llmc.offload — where a loaded model's parameters live: "cpu" (held in memory:
mapped from the checkpoint, or converted to the model dtype on first use) or
"disk" (written to the offload folder, mapped again each time their module
runs and dropped afterwards).

  local model = llmc.load(path, {device_map = "auto_offload", max_memory = {cpu = "20MB"},
                                 offload_folder = "/tmp/offload"})
  for name, m in model:modules() do if m.device == "disk" then print(name) end end

Policy (accelerate's sequential fill): walk the parameter-holding units in
named_modules order — embed_tokens, each decoder layer as a whole (so a
layer never straddles the two), the final norm, an untied lm_head — and
put each on the CPU while max_memory.cpu (bytes in the model dtype) allows;
from the first unit that does not fit, everything goes to disk.  Without
max_memory everything stays on the CPU.  device_map "auto" and
"auto_offload" both follow this policy on a CPU-only machine.

Disk files: <offload_folder>/<module name>.safetensors holding the module's
"weight" (and "bias"), in the model dtype.
]]
local S = require "llmc._safetensors"

local M = {}

local UNITS = {K = 1e3, KB = 1e3, M = 1e6, MB = 1e6, G = 1e9, GB = 1e9, T = 1e12, TB = 1e12,
  KIB = 1024, MIB = 1024 ^ 2, GIB = 1024 ^ 3, TIB = 1024 ^ 4, B = 1}

--- "2GB", "512MiB", 1e9 -> bytes
function M.parse_bytes(v)
  if type(v) == "number" then return v end
  if type(v) ~= "string" then error("max_memory: expected bytes (a number or a string like '2GB')", 3) end
  local num, unit = v:upper():gsub("%s", ""):match("^([%d%.]+)(%a*)$")
  if not num then error("max_memory: cannot parse '" .. v .. "'", 3) end
  local mul = unit == "" and 1 or UNITS[unit]
  if not mul then error("max_memory: unknown unit '" .. unit .. "' in '" .. v .. "'", 3) end
  return math.floor(tonumber(num) * mul)
end

local SIZES = {bfloat16 = 2, float16 = 2, float32 = 4}

local function param_bytes(m, dtype)
  local n = 0
  for _, p in ipairs(m._pnames) do
    if not (p == "weight" and rawget(m, "_tied")) then
      local info = m:param_info(p)
      local c = SIZES[dtype] or 4
      for _, d in ipairs(info.shape) do c = c * d end
      n = n + c
    end
  end
  return n
end

-- the placement units: lists of parameter-holding modules
local function own_params(m)
  for _, p in ipairs(m._pnames) do
    if not (p == "weight" and rawget(m, "_tied")) then return true end
  end
  return false
end

local function units(model)
  local out = {}
  local layer_of = {}
  for i, layer in ipairs(model.layers) do layer_of[layer] = i end
  local current_layer, cur
  for _, m in model:named_modules() do
    if layer_of[m] then
      current_layer = m
      cur = {name = m.name, modules = {}, root = m}
      out[#out + 1] = cur
    elseif current_layer and m.name:sub(1, #current_layer.name + 1) ~= current_layer.name .. "." then
      current_layer, cur = nil, nil
    end
    if own_params(m) then
      if cur then cur.modules[#cur.modules + 1] = m
      else out[#out + 1] = {name = m.name, modules = {m}} end
    end
  end
  return out
end

local function offload_module(m, folder, dtype)
  local file = folder .. "/" .. m.name .. ".safetensors"
  local tensors = {}
  local owned = {}
  for _, p in ipairs(m._pnames) do
    if not (p == "weight" and rawget(m, "_tied")) then
      local t = m[p]
      if t:dtype() ~= dtype then t = t:to(dtype); owned[#owned + 1] = t end
      tensors[p] = t
    end
  end
  S.save(file, tensors)
  for _, t in ipairs(owned) do t:release() end
  -- drop the in-memory copies; from now on each access maps the file
  local handle
  for p in pairs(tensors) do
    local cached = rawget(m, p)
    if cached then rawset(m, p, nil) end
    m:param(p, function(self, k)
      if not handle then handle = S.open(file) end
      return handle:get(k)
    end)
  end
  m.device = "disk"
  m.offload_file = file
end

--- Place the parameters of a freshly loaded model (see the header).
function M.place(model, opts)
  for _, m in model:named_modules() do m.device = "cpu" end
  if not opts.max_memory then return end
  if type(opts.max_memory) ~= "table" then error("llmc.load: max_memory must be a table like {cpu = '2GB'}", 3) end
  for k in pairs(opts.max_memory) do
    if k ~= "cpu" and k ~= "disk" then
      error("llmc.load: max_memory." .. tostring(k) .. ": this build places parameters on cpu and disk only", 3)
    end
  end
  local budget = opts.max_memory.cpu and M.parse_bytes(opts.max_memory.cpu) or math.huge
  local used, spill = 0, false
  local plan = {}
  for _, u in ipairs(units(model)) do
    local bytes = 0
    for _, m in ipairs(u.modules) do bytes = bytes + param_bytes(m, model.dtype) end
    if not spill and used + bytes <= budget then
      used = used + bytes
    else
      spill = true
      for _, m in ipairs(u.modules) do plan[#plan + 1] = m end
      if u.root then
        for _, m in u.root:named_modules() do m.device = "disk" end
      end
    end
  end
  model.cpu_bytes = used
  if #plan == 0 then return end
  local folder = opts.offload_folder
  if not folder then
    error(string.format("llmc.load: the parameters need more than max_memory.cpu = %d bytes; " ..
      "give offload_folder to put the rest on disk", budget), 3)
  end
  os.execute("mkdir -p '" .. folder:gsub("'", "'\\''") .. "'")
  for _, m in ipairs(plan) do offload_module(m, folder, model.dtype) end
  model.offload_folder = folder
end

--- Bytes of parameters per device: {cpu = n, disk = n}.
function M.footprint(model)
  local out = {cpu = 0, disk = 0}
  for _, m in model:named_modules() do
    local dev = m.device or "cpu"
    out[dev] = (out[dev] or 0) + param_bytes(m, model.dtype)
  end
  return out
end

return M
