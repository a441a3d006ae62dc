-- Per-expert routed-token counts of the calibration pipelines on tiny-qwen3-moe
-- (8 experts, top-2), against counts computed here from the fixture's golden
-- router top-2 ids of prompt 0 (golden.safetensors, router_topk_ids.layer.L):
--  * basic pipeline, and sequential with propagate_error = false (both see the
--    uncompressed model's activations): state.moe_routing of both layers equals
--    the golden counts; sum = tokens x top_k;
--  * sequential (propagate_error, the default): layer 0 equals the golden
--    counts (its inputs are not yet affected by quantization), layer 1 sums to
--    tokens x top_k; the four golden prompts together sum to 17 tokens x 2;
--  * the propagation pass and plain inference count nothing;
--  * prompt 0 leaves expert 0 of layer 0 and expert 6 of layer 1 without a
--    routed token: with moe_calibrate_all_experts (default) GPTQ still solves
--    them (Hessian of the 7 tokens, 1 sample) and the report line says so;
--    with moe_calibrate_all_experts = false the report line says they get no
--    calibration input;
--  * llmc.oneshot GPTQ W4A16 on 4 calibration-text samples calibrates all
--    48 expert Linears.
-- Fixture: fixtures/models/tiny-qwen3-moe (bundled), else
-- ${LLMC_FIXTURES:-$LLMC_ROOT/../shared/fixtures}/models/tiny-qwen3-moe; skips (77) when absent.

local llmc = require "llmc"
local S = require "llmc._safetensors"
local util = require "llmc.util"
local seq = require "llmc.pipelines.sequential"
local basic = require "llmc.pipelines.basic"

local passed, failed = 0, 0
local function check(cond, what, detail)
  if cond then passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. what .. (detail and ("\n  " .. tostring(detail)) or ""))
  end
end
local function list_eq(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end
local function str(t) return "{" .. table.concat(t, ", ") .. "}" end
local function sum(t) local s = 0 for _, v in ipairs(t) do s = s + v end return s end

local dir
for _, d in ipairs{llmc.bundled("models/tiny-qwen3-moe"), llmc.fixtures("models/tiny-qwen3-moe")} do
  if util.exists(d .. "/config.json") then dir = d break end
end
if not dir then
  print("SKIP: tiny-qwen3-moe fixture not found (bundled or LLMC_FIXTURES)")
  os.exit(77)
end

local G = S.open(dir .. "/golden.safetensors")
local prompts = {}
for p = 0, 3 do prompts[p + 1] = G:get("input_ids." .. p):totable() end
local T0 = #prompts[1]

-- expected counts from the golden top-2 ids (0-based expert ids, [T, 2])
local golden = {}
for l = 0, 1 do
  local c = {}
  for e = 1, 8 do c[e] = 0 end
  for _, id in ipairs(G:get("router_topk_ids.layer." .. l):flatten():totable()) do c[id + 1] = c[id + 1] + 1 end
  golden["model.layers." .. l .. ".mlp"] = c
end
print("golden counts of prompt 0: layer 0 " .. str(golden["model.layers.0.mlp"]) ..
      ", layer 1 " .. str(golden["model.layers.1.mlp"]))
check(golden["model.layers.0.mlp"][1] == 0 and golden["model.layers.1.mlp"][7] == 0,
  "fixture: prompt 0 routes no token to expert 0 of layer 0 nor to expert 6 of layer 1")

-- a minimal Dataset over token-id rows, one sample per batch
local function rows(list)
  return {n = #list, batches = function(_, _)
    local i = 0
    return function()
      i = i + 1
      if list[i] then return {input_ids = {list[i]}} end
    end
  end}
end

-- capture the pipelines' stderr lines
local function capture(fn)
  local lines = {}
  local real = io.stderr
  io.stderr = {write = function(self, ...)
    lines[#lines + 1] = table.concat({...})
    return self
  end}
  local ok, err = pcall(fn)
  io.stderr = real
  return ok, err, table.concat(lines)
end

local model = llmc.load(dir)
local RECIPE = {scheme = "W4A16", ignore = {"lm_head", "re:.*mlp.gate$"}}

-- run a pipeline with GPTQ, as llmc.oneshot does
local function run(pipeline, samples, args, quiet)
  model = llmc.load(dir)
  local state = {model = model, quantized = {}, quiet = quiet ~= false, args = args or {}}
  local mods = {llmc.modifiers.GPTQModifier(RECIPE)}
  for _, m in ipairs(mods) do m:initialize(state) end
  pipeline.run(state, mods, rows(samples))
  for _, m in ipairs(mods) do m:finalize(state) end
  return state
end

-- basic: the uncompressed model's routing, both layers
do
  local st = run(basic, {prompts[1]})
  for name, c in pairs(golden) do
    local got = st.moe_routing and st.moe_routing[name] or {}
    check(list_eq(got, c), "basic: " .. name .. " counts = golden top-2 counts", str(got) .. " vs " .. str(c))
    check(sum(got) == T0 * 2, "basic: " .. name .. " sums to tokens x top_k", sum(got))
  end
end

-- sequential without error propagation: same
do
  local st = run(seq, {prompts[1]}, {propagate_error = false})
  for name, c in pairs(golden) do
    local got = st.moe_routing and st.moe_routing[name] or {}
    check(list_eq(got, c), "sequential(propagate_error=false): " .. name .. " counts = golden", str(got) .. " vs " .. str(c))
  end
end

-- sequential (default): layer 0 as golden; every prompt counted once per
-- layer (the propagation pass counts nothing)
do
  local st = run(seq, {prompts[1]})
  local l0 = st.moe_routing["model.layers.0.mlp"]
  check(list_eq(l0, golden["model.layers.0.mlp"]), "sequential: layer 0 counts = golden", str(l0))
  check(sum(st.moe_routing["model.layers.1.mlp"]) == T0 * 2, "sequential: layer 1 sums to tokens x top_k",
    sum(st.moe_routing["model.layers.1.mlp"]))
  local total = 0
  for _, p in ipairs(prompts) do total = total + #p end
  st = run(seq, prompts)
  for l = 0, 1 do
    local c = st.moe_routing["model.layers." .. l .. ".mlp"]
    check(#c == 8 and sum(c) == total * 2, string.format("sequential, 4 prompts: layer %d sums to %d x 2", l, total),
      str(c))
  end
  -- counting stopped: plain inference afterwards counts nothing
  local b = model:get("model.layers.0.mlp")
  model:forward({input_ids = {prompts[1]}})
  check(rawget(b, "routed_tokens") == nil, "no counting outside the calibration pass")
  -- and counting on request: the field set by hand
  rawset(b, "routed_tokens", {})
  model:forward({input_ids = {prompts[2]}})
  check(sum(rawget(b, "routed_tokens")) == #prompts[2] * 2, "block.routed_tokens set by hand counts a forward pass")
  rawset(b, "routed_tokens", nil)
end

-- experts without a routed token (propagate_error = false: both layers see
-- the golden routing).  Golden counts: layer 0 {0,4,2,2,1,1,3,1} -> min 0,
-- median (1+2)/2, max 4; layer 1 {3,1,2,1,3,1,0,3} -> min 0, median 1.5, max 3
do
  local st
  local ok, err, text = capture(function() st = run(seq, {prompts[1]}, {propagate_error = false}, false) end)
  check(ok, "all experts: the run succeeds", err)
  check(text:find("moe: model.layers.0.mlp: 7 tokens x top-2; routed tokens per expert min 0 / median 1.5 / max 4; " ..
    "1 of 8 experts got no routed token (0): calibrated on every token anyway (moe_calibrate_all_experts)", 1, true),
    "report line of layer 0", text)
  check(text:find("moe: model.layers.1.mlp: 7 tokens x top-2; routed tokens per expert min 0 / median 1.5 / max 3; " ..
    "1 of 8 experts got no routed token (6): calibrated on every token anyway", 1, true), "report line of layer 1", text)
  local solved = {}
  for _, r in ipairs(st and st.quantized or {}) do solved[r.name] = r.nsamples end
  for _, n in ipairs{"model.layers.0.mlp.experts.0.gate_proj", "model.layers.0.mlp.experts.0.up_proj",
                     "model.layers.0.mlp.experts.0.down_proj", "model.layers.1.mlp.experts.6.down_proj"} do
    check(solved[n] == 1, n .. " (never routed) solved by GPTQ on the 1 sample", solved[n])
  end
  ok, err, text = capture(function() st = run(seq, {prompts[1]}, {moe_calibrate_all_experts = false}, false) end)
  check(text:find("1 of 8 experts got no routed token (0): they see no calibration input " ..
    "(moe_calibrate_all_experts = false)", 1, true), "moe_calibrate_all_experts = false: the report says so", text)
  -- llm-compressor would leave such an expert unsolved (no scales written);
  -- llmc rounds it to nearest and logs it, so the checkpoint is complete
  check(ok, "moe_calibrate_all_experts = false: GPTQ completes", err)
  check(text:find("GPTQ model.layers.0.mlp.experts.0.gate_proj: no calibration token was routed to this expert: " ..
    "round-to-nearest instead", 1, true), "unrouted expert: RTN fallback logged", text)
  local rtn, solved_routed = {}, 0
  for _, r in ipairs(st and st.quantized or {}) do
    if r.gptq_loss == nil then rtn[r.name] = true else solved_routed = solved_routed + 1 end
  end
  check(rtn["model.layers.0.mlp.experts.0.down_proj"] and not rtn["model.layers.0.mlp.experts.1.down_proj"],
    "unrouted expert 0 of layer 0 rounded to nearest, routed expert 1 solved by GPTQ")
end

-- oneshot: every expert of every layer calibrated
do
  local _, sm = llmc.oneshot{model = dir, quiet = true, recipe = llmc.modifiers.GPTQModifier(RECIPE),
    dataset = "json", dataset_path = llmc.bundled("datasets/calib_text.jsonl"), num_calibration_samples = 4,
    max_seq_length = 32, shuffle_calibration_samples = false}
  local experts = {}
  local n = 0
  for _, r in ipairs(sm.records) do
    local l, e, p = r.name:match("^model%.layers%.(%d)%.mlp%.experts%.(%d+)%.(%a+)_proj$")
    if l then
      n = n + 1
      check(r.nsamples == 4, r.name .. " calibrated on the 4 samples", r.nsamples)
      experts[l .. "." .. e] = true
    end
  end
  local distinct = 0
  for _ in pairs(experts) do distinct = distinct + 1 end
  check(n == 48 and distinct == 16, "oneshot: 2 layers x 8 experts x 3 projections solved", n .. " " .. distinct)
end

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
