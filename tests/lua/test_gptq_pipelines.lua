-- The calibration pipelines with GPTQModifier on tiny-llama (8 samples x 64
-- tokens, W4A16 group 128):
--  * basic and sequential with propagate_error = false see the same (uncompressed)
--    activations, so they give the same quantized weights within fp32 noise
--    (at most one quantization step apart on a handful of elements: the Hessian
--    sums run in a different order);
--  * sequential with propagate_error (the default) gives layer 0 the same weights
--    (same inputs) but later layers differ (they see the compressed predecessors);
--  * Hessian sharing: q/k/v and gate/up report the same sample count as the data;
--  * NVFP4A16 with lm_head targeted: the head is calibrated after the layers and
--    fused siblings share one global scale;
--  * actorder: default static, "weight" == "static", false changes the result,
--    "group" and a conflict with the scheme's actorder are errors;
--  * MoE (tiny-qwen3-moe, when present): every expert gets a Hessian;
--  * bad data: an empty dataset, rows without the text field, no dataset, and an
--    empty Dataset handed straight to a pipeline fail with clear messages;
--  * after oneshot the quantized modules hold their codes only, and the
--    weights decompressed from them have the solve's recorded errors;
--  * a Hessian that is not positive definite: rank 1 with dampening_frac = 0
--    -> the RTN fallback, which equals the solve on a diagonal Hessian (no
--    error feedback); the default dampening makes the same Hessian solvable;
--    through oneshot every module is reported and finalize warns once;
--  * llmc._gptq argument checks.
local llmc = require "llmc"

local passed, failed = 0, 0
local function check(cond, what, detail)
  if cond then passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. what .. (detail and ("\n  " .. tostring(detail)) or ""))
  end
end

local path = llmc.bundled("datasets/calib_text.jsonl")
local compacted, raw_left = 0, 0
local function run(pipeline, propagate)
  local model, summary = llmc.oneshot{model = llmc.default_model(), quiet = true,
    recipe = llmc.modifiers.GPTQModifier{scheme = "W4A16", ignore = {"lm_head"}},
    dataset = "json", dataset_path = path, num_calibration_samples = 8, max_seq_length = 64,
    shuffle_calibration_samples = false, pipeline = pipeline, propagate_error = propagate}
  local w, rec = {}, {}
  for name, m in model:modules("Linear") do
    -- oneshot leaves quantized modules with their codes only (quant.compact)
    if m.compressed then
      if rawget(m, "weight") == nil then compacted = compacted + 1 else raw_left = raw_left + 1 end
    end
    w[name] = m.weight:to("float32")
  end
  for _, r in ipairs(summary.records) do rec[r.name] = r end
  return w, rec
end

local function maxdiff(a, b)
  local d = (a - b):abs():max()
  if type(d) ~= "number" then d = d:item() end
  return d
end

local wb, rb = run("basic")
local ws = run("sequential", false)
local wp, rp = run("sequential")
check(compacted == 3 * 28 and raw_left == 0, "every quantized module dropped its fake weight", compacted .. " " .. raw_left)
-- the weights decompressed from the codes are the solver's: the same error
-- against the original weights as the solve recorded (max exactly, the
-- relative Frobenius error up to summation order)
do
  local orig = llmc.load(llmc.default_model())
  local worst = 0
  for name, r in pairs(rp) do
    local o = orig:get(name).weight:to("float32")
    local d = wp[name] - o
    local mx = d:abs():max()
    if type(mx) ~= "number" then mx = mx:item() end
    local num, den = (d * d):sum(), (o * o):sum()
    if type(num) ~= "number" then num, den = num:item(), den:item() end
    local rel = math.sqrt(num / den)
    check(mx == r.max_abs_err, name .. ": decompressed weight has the solve's max error", mx .. " vs " .. r.max_abs_err)
    local dr = math.abs(rel - r.rel_err) / r.rel_err
    if dr > worst then worst = dr end
  end
  check(worst < 1e-5, "decompressed weights have the solve's relative error", worst)
end

local n, worst_rel = 0, 0
for name, a in pairs(wb) do
  if name ~= "lm_head" then
    n = n + 1
    local d = maxdiff(a, ws[name])
    local scale = a:abs():max()
    if type(scale) ~= "number" then scale = scale:item() end
    -- one int4 step of a group is at most absmax / 7: allow a single-step flip
    if d / scale > worst_rel then worst_rel = d / scale end
    check(d <= scale / 3.5, name .. ": basic == sequential(propagate_error=false) within fp32 noise", d)
  end
end
print(string.format("basic vs sequential(propagate_error=false): worst max-abs difference %.3g of the weight absmax", worst_rel))
check(n == 28, "28 quantized Linears compared", n)
local same_l0, diff_later = 0, 0
for name, a in pairs(wb) do
  if name:match("^model%.layers%.0%.") then
    if maxdiff(a, wp[name]) <= (a:abs():max()) / 3.5 then same_l0 = same_l0 + 1 end
  elseif name:match("^model%.layers%.3%.") and maxdiff(a, wp[name]) > 0 then
    diff_later = diff_later + 1
  end
end
check(same_l0 == 7, "layer 0: sequential(propagate_error) == basic", same_l0)
check(diff_later == 7, "layer 3: propagated error changes the solution", diff_later)
-- count how many elements differ between basic and sequential(false) at all
local q = rb["model.layers.0.self_attn.q_proj"]
check(q and q.nsamples == 8, "Hessian of q_proj saw the 8 calibration samples", q and q.nsamples)
check(rb["model.layers.2.mlp.up_proj"].nsamples == 8 and rp["model.layers.2.mlp.up_proj"].nsamples == 8,
      "gate/up Hessian saw 8 samples in both pipelines")

-- NVFP4A16 with lm_head targeted: the head is calibrated as a last subgraph,
-- and fused q/k/v (gate/up) share one global scale
do
  local _, summary = llmc.oneshot{model = llmc.default_model(), quiet = true,
    recipe = llmc.modifiers.GPTQModifier{targets = "Linear", scheme = "NVFP4A16"},
    dataset = "json", dataset_path = path, num_calibration_samples = 2, max_seq_length = 32,
    shuffle_calibration_samples = false}
  local gs = {}
  for _, r in ipairs(summary.records) do
    for _, e in ipairs(r.tensors) do
      if e.name == "weight_global_scale" then gs[r.name] = e.tensor:to("float32"):get(0) end
    end
    if r.name == "lm_head" then check(r.nsamples == 2, "lm_head calibrated on the 2 samples", r.nsamples) end
  end
  check(#summary.records == 29, "28 Linears + lm_head quantized", #summary.records)
  local p = "model.layers.1.self_attn."
  check(gs[p .. "q_proj"] and gs[p .. "q_proj"] == gs[p .. "k_proj"] and gs[p .. "k_proj"] == gs[p .. "v_proj"],
        "q/k/v share one NVFP4 global scale", tostring(gs[p .. "q_proj"]) .. " " .. tostring(gs[p .. "k_proj"]))
  local m = "model.layers.1.mlp."
  check(gs[m .. "gate_proj"] == gs[m .. "up_proj"] and gs[m .. "gate_proj"] ~= gs[m .. "down_proj"],
        "gate/up share one global scale, down_proj has its own")
end

-- actorder (algorithms.md §5.1)
do
  local function try(mod_args)
    local ok, e, summary = pcall(function()
      local _, sm = llmc.oneshot{model = llmc.default_model(), quiet = true,
        recipe = llmc.modifiers.GPTQModifier(mod_args), dataset = "json", dataset_path = path,
        num_calibration_samples = 2, max_seq_length = 32, shuffle_calibration_samples = false}
      return sm
    end)
    if ok then return nil, e end
    return tostring(e), summary
  end
  local e = try{scheme = "W4A16", ignore = {"lm_head"}, actorder = "group"}
  check(e and e:find("actorder \"group\" is not supported", 1, true), "actorder group: rejected at solve time", e)
  local grp = {group_0 = {targets = {"Linear"}, weights = {num_bits = 4, type = "int", symmetric = true,
                                                            strategy = "group", group_size = 128, actorder = "static"}}}
  e = try{config_groups = grp, ignore = {"lm_head"}, actorder = false}
  check(e and e:find("conflicts with the scheme's actorder static", 1, true), "explicit actorder vs scheme: conflict", e)
  local _, s1 = try{scheme = "W4A16", ignore = {"lm_head"}}
  local _, s2 = try{scheme = "W4A16", ignore = {"lm_head"}, actorder = false}
  local _, s3 = try{config_groups = grp, ignore = {"lm_head"}, actorder = "weight"}
  local w1 = s1.records[1].module.weight:to("float32")
  local w2 = s2.records[1].module.weight:to("float32")
  local w3 = s3.records[1].module.weight:to("float32")
  check(s1.records[1].scheme.weights.actorder == "static", "default actorder: static")
  check(maxdiff(w1, w2) > 0, "actorder = false changes the solution")
  check(maxdiff(w1, w3) == 0, "\"weight\" == \"static\"")
end

-- MoE (tiny-qwen3-moe, when the shared fixture is present): every expert is
-- calibrated on every sample (moe_calibrate_all_experts), so none lacks a Hessian
do
  local dir = (os.getenv("LLMC_FIXTURES") or (os.getenv("LLMC_ROOT") or ".") .. "/../shared/fixtures") ..
              "/models/tiny-qwen3-moe"
  local f = io.open(dir .. "/config.json")
  if f then
    f:close()
    local _, sm = llmc.oneshot{model = dir, quiet = true,
      recipe = llmc.modifiers.GPTQModifier{scheme = "W4A16", ignore = {"lm_head", "re:.*mlp.gate$"}},
      dataset = "json", dataset_path = path, num_calibration_samples = 4, max_seq_length = 32,
      shuffle_calibration_samples = false}
    local all4, experts = true, 0
    for _, r in ipairs(sm.records) do
      if r.nsamples ~= 4 then all4 = false end
      if r.name:find("experts", 1, true) then experts = experts + 1 end
    end
    check(all4 and experts > 0, "MoE: every expert Linear calibrated on the 4 samples", experts)
  else
    print("note: tiny-qwen3-moe fixture absent, MoE check skipped")
  end
end

-- bad data
local function err_of(args)
  local base = {model = llmc.default_model(), quiet = true,
    recipe = llmc.modifiers.GPTQModifier{scheme = "W4A16", ignore = {"lm_head"}}, max_seq_length = 32}
  for k, v in pairs(args) do base[k] = v end
  local ok, e = pcall(llmc.oneshot, base)
  return ok and "no error" or tostring(e)
end
local e = err_of({dataset = {}})
check(e:find("empty", 1, true), "empty dataset: clear error", e)
e = err_of({dataset = {{foo = "hello world"}}})
check(e:find("no field 'text'", 1, true), "missing text field: names the field", e)
e = err_of({})
check(e:find("GPTQ needs calibration data", 1, true) and e:find("dataset =", 1, true), "no dataset: says to pass one", e)
local seq = require "llmc.pipelines.sequential"
local ok, e2 = pcall(seq.run, {model = llmc.load(llmc.default_model()), quiet = true}, {},
  {n = 0, batches = function() return function() end end})
check(not ok and tostring(e2):find("calibration dataset is empty", 1, true), "empty Dataset in the pipeline", e2)

-- llmc._gptq argument checks
local G = require "llmc._gptq"
local T = require "llmc._tensor"
local h = G.hessian(8)
ok, e2 = pcall(G.solve, T.randn({4, 8}), h, {num_bits = 4, strategy = "channel", symmetric = true})
check(not ok and tostring(e2):find("no calibration sample", 1, true), "solve before any sample: error", e2)
ok, e2 = pcall(function() h:add(T.randn({2, 3, 7})) end)
check(not ok and tostring(e2):find("7 features", 1, true), "add with the wrong width: error", e2)
h:add(T.randn({2, 3, 8}))
h:add(T.randn({5, 8}))
check(h:nsamples() == 3 and h:ntokens() == 11, "nsamples counts sequences, ntokens tokens", h:nsamples() .. " " .. h:ntokens())
local r = G.solve(T.randn({4, 8}):to("bfloat16"), h, {num_bits = 4, strategy = "channel", symmetric = true})
check(r.fake:dtype() == "bfloat16" and r.format == "pack-quantized" and #r.tensors >= 2,
      "solve returns the fake weight in the weight dtype and the packed tensors", r.format)
h:free()
ok, e2 = pcall(function() return h:nsamples() end)
check(not ok and tostring(e2):find("after free", 1, true), "use after free: error", e2)

-- not positive definite: every token the same in every column (rank 1)
do
  local h1 = G.hessian(8)
  h1:add(T.ones({3, 8}))
  local w = T.randn({4, 8}):to("bfloat16")
  local args = {num_bits = 4, strategy = "channel", symmetric = true, force_zero_point = true}
  local rf = G.solve(w, h1, args, {dampening_frac = 0})
  local hd = G.hessian(8)                       -- diagonal: columns solved independently
  local eye = T.zeros({8, 8})
  for i = 0, 7 do eye[i][i] = 1 end
  hd:add(eye)
  local rd = G.solve(w, hd, args, {dampening_frac = 0})
  check(rf.rtn_fallback and not rd.rtn_fallback, "rank-1 Hessian without dampening: RTN fallback reported")
  check(rf.fake:bytes() == rd.fake:bytes(), "RTN fallback = the solve with no error feedback")
  check(not G.solve(w, h1, args, {dampening_frac = 0.01}).rtn_fallback, "1% dampening makes it positive definite")
  h1:free(); hd:free()
  local mod = llmc.modifiers.GPTQModifier{scheme = "W4A16", ignore = {"lm_head"}, dampening_frac = 0}
  local _, summary = llmc.oneshot{model = llmc.default_model(), quiet = true, recipe = mod,
    dataset = "json", dataset_path = path, num_calibration_samples = 1, max_seq_length = 4,
    shuffle_calibration_samples = false}
  local nfb = 0
  for _, rec in ipairs(summary.records) do if rec.rtn_fallback then nfb = nfb + 1 end end
  check(nfb == #summary.records and nfb == 28, "4 tokens, no dampening: all 28 modules fall back to RTN", nfb)
  local warned, permodule = 0, 0
  for _, l in ipairs(mod._log or {}) do
    if l:find("was not positive definite", 1, true) and l:find("model.layers.1.mlp.down_proj", 1, true) then warned = warned + 1 end
    if l:find("(Cholesky failed: RTN fallback)", 1, true) then permodule = permodule + 1 end
  end
  check(warned == 1 and permodule == 28, "a log line per module and one warning at finalize naming them",
        warned .. " " .. permodule)
end

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
