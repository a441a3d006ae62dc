-- test_oneshot_errors.lua — bad input to llmc.oneshot gives a clear error
-- (naming the argument, scheme, module or file) and never a partial output
-- directory: unknown scheme / argument, group sizes that do not divide,
-- targets that match nothing, an existing output_dir, schemes that need
-- calibration data, fused NVFP4 layers quantized unevenly, and a full disk
-- (simulated with a file-size limit, ulimit -f, in a child process).
local llmc = require "llmc"
local util = llmc.util

local passed, failed = 0, 0
local function check(cond, msg)
  if cond then passed = passed + 1 else failed = failed + 1; io.stderr:write("FAIL: ", msg, "\n") end
end
local function errors(fn, pattern, msg)
  local ok, err = pcall(fn)
  check(not ok and tostring(err):find(pattern, 1, true) ~= nil,
        msg .. ": expected an error containing '" .. pattern .. "', got " .. tostring(ok and "success" or err))
  return err
end
if not util.fs then print("SKIP: needs the llmc executable"); os.exit(77) end
local F = util.fs
local QM = llmc.modifiers.QuantizationModifier
local tmp = string.format("%s/llmc_test_oneshot_err_%d", os.getenv("TMPDIR") or "/tmp", F.getpid())
F.mkdir_p(tmp)
local function leftovers()
  local n = {}
  for _, f in ipairs(F.listdir(tmp)) do if f:find("%.tmp%.") or f:find("%.old%.") then n[#n + 1] = f end end
  return #n
end

-- unknown scheme: the error names the recipe line
local line = debug.getinfo(1, "l").currentline + 1
local err = errors(function() local m = QM{targets = "Linear", scheme = "FP8_BLOK"}; return m end, "unknown scheme 'FP8_BLOK'", "unknown scheme")
check(tostring(err):find("test_oneshot_errors.lua:" .. line, 1, true) ~= nil, "unknown scheme error points at the recipe line: " .. tostring(err))

-- unknown oneshot argument, with a suggestion
errors(function() llmc.oneshot{model = llmc.default_model(), recipe = QM{scheme = "W4A16"}, output = tmp .. "/x"} end,
       "unknown argument 'output' (did you mean 'output_dir'?)", "unknown oneshot argument")
errors(function() llmc.oneshot{recipe = QM{scheme = "W4A16"}} end, "`model` is required", "model required")

-- a group size that does not divide the columns (hidden 256, intermediate 768)
local out = tmp .. "/gs"
errors(function()
  llmc.oneshot{model = llmc.default_model(), quiet = true, output_dir = out, recipe = QM{ignore = {"lm_head"},
    config_groups = {g = {targets = {"Linear"}, weights = {num_bits = 4, group_size = 100}}}}}
end, "not divisible by the group size 100: model.layers.0.self_attn.q_proj (in_features 256)", "group size must divide")
check(not F.exists(out) and leftovers() == 0, "no output after a group-size error")

-- targets that match nothing
errors(function()
  llmc.oneshot{model = llmc.default_model(), quiet = true, recipe = QM{targets = "re:.*qproj$", scheme = "W4A16"}}
end, "target 're:.*qproj$' (group group_0) matches no module of the model", "target matching nothing")
errors(function()
  llmc.oneshot{model = llmc.default_model(), quiet = true, recipe = QM{targets = "model.layers.0.input_layernorm", scheme = "W4A16"}}
end, "matches only modules whose weights cannot be quantized", "target matching a norm")
errors(function()
  llmc.oneshot{model = llmc.default_model(), quiet = true, recipe = QM{targets = "lm_head", scheme = "W4A16", ignore = {"lm_head"}}}
end, "no module left to quantize", "everything ignored")

-- schemes that need calibration data fail before the model is loaded
errors(function()
  llmc.oneshot{model = "/nonexistent/model", recipe = QM{targets = "Linear", scheme = "FP8", ignore = {"lm_head"}}}
end, "scheme FP8 needs calibration data: its input activations are static", "static FP8 without data")
errors(function()
  llmc.oneshot{model = "/nonexistent/model", recipe = QM{targets = "Linear", scheme = "NVFP4"}}
end, "NVFP4A16 needs no data", "NVFP4 hint")
errors(function()
  llmc.oneshot{model = llmc.default_model(), recipe = QM{scheme = "W4A16", kv_cache_scheme = {num_bits = 8, type = "float"}}}
end, "kv_cache_scheme (fp8 sym tensor) needs calibration data", "kv cache scheme needs data")

-- NVFP4: fused q/k/v share a global scale, so ignoring one of them is refused
errors(function()
  llmc.oneshot{model = llmc.default_model(), quiet = true,
    recipe = QM{targets = "Linear", scheme = "NVFP4A16", ignore = {"lm_head", "model.layers.1.self_attn.k_proj"}}}
end, "fused layers model.layers.1.self_attn.q_proj, model.layers.1.self_attn.k_proj, model.layers.1.self_attn.v_proj share one NVFP4 global scale",
  "partially ignored fused set")

-- an existing output_dir is refused unless overwrite = true (and then replaced)
out = tmp .. "/exists"
F.mkdir(out)
util.write_file(out .. "/keep.txt", "precious")
errors(function()
  llmc.oneshot{model = llmc.default_model(), quiet = true, output_dir = out, recipe = QM{scheme = "W8A16", ignore = {"lm_head"}}}
end, "output_dir " .. out .. " already exists: refusing to overwrite it", "existing output_dir")
check(util.read_file(out .. "/keep.txt") == "precious", "refused output_dir untouched")
llmc.oneshot{model = llmc.default_model(), quiet = true, output_dir = out, overwrite = true,
             recipe = QM{scheme = "W8A16", ignore = {"lm_head"}}}
check(not F.exists(out .. "/keep.txt") and F.exists(out .. "/model.safetensors") and leftovers() == 0,
      "overwrite = true replaces the directory atomically")
errors(function()
  llmc.oneshot{model = llmc.default_model(), quiet = true, output_dir = out, overwrite = true, save_compressed = false,
               recipe = QM{scheme = "W8A16", ignore = {"lm_head"}}}
end, "save_compressed = false", "dense save refused")

-- a full disk: a 2 MB file-size limit stops the 11 MB checkpoint; the error
-- is clear and no directory (final or temporary) is left behind
local exe = F.realpath("/proc/self/exe")
local script = tmp .. "/full.lua"
out = tmp .. "/full"
util.write_file(script, string.format([[
local llmc = require "llmc"
llmc.oneshot{model = llmc.default_model(), quiet = true, output_dir = %q,
  recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = "W4A16", ignore = {"lm_head"}}}
]], out))
local p = io.popen(string.format("ulimit -f 2048; %q %q 2>&1; echo \"rc=$?\"", exe, script))
local text = p:read("a")
p:close()
check(text:find("rc=1", 1, true) ~= nil and text:find("saving " .. out, 1, true) ~= nil
      and text:find("File too large", 1, true) ~= nil and text:find("nothing was written to", 1, true) ~= nil,
      "full disk: clear error, got:\n" .. text)
check(not F.exists(out) and leftovers() == 0, "full disk: no partial output directory")

F.rmtree(tmp)
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
