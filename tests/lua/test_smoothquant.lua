-- test_smoothquant.lua — SmoothQuantModifier (algorithms.md §7) and the
-- "independent" oneshot pipeline (§2.1):
--  * closed forms: the scale formula in f32 and bf16 (the pow exponent is
--    rounded to bf16 first, as PyTorch's bf16 pow kernel does), the w_j == 0
--    rule, the 1e-5 clamp, log_equalization, the weight rescaling roundings;
--  * llm-compressor reference (tests/lua/data/smoothquant_ref.json, made by
--    scripts/lc_smoothquant_reference.py: SmoothQuantModifier(0.8) on tiny-llama,
--    8 samples x 64 tokens, the same token ids):
--      - bit-exact: layer 0's q/k/v <- input_layernorm scales and rescaled
--        weights when the statistics are taken on the norm output rounded as
--        HF's bf16 LlamaRMSNorm rounds it (twice: normalised, then times the weight);
--      - llmc's own run (fp32 activations, one rounding): the share of
--        bit-identical scales, every scale within 4 bf16 ulps, weight
--        statistics within the stated tolerances;
--  * the smoothed model computes the same function (logits within 1% of their range);
--  * mappings: default / Mixtral / Qwen3-MoE resolution, ignore, errors;
--    recipe.yaml fields; start / end checks;
--  * the independent pipeline: SmoothQuant then GPTQ in one oneshot equals the
--    two run one after the other, and differs from one shared sequential pass.
local llmc = require "llmc"
local cjson = require "cjson"
local O = require "llmc._observer"
local N = require "llmc._nn"
local datasets = require "llmc.datasets"
local oneshot = require "llmc.oneshot"

local passed, failed = 0, 0
local function check(cond, what, detail)
  if cond then passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. what .. (detail ~= nil and ("\n  " .. tostring(detail)) or ""))
  end
end
local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  return ok and "" or tostring(e)
end

local SQ = llmc.modifiers.SmoothQuantModifier

-- plain-Lua roundings: f32 and bf16 (round half to even)
local function f32(v) return (string.unpack("<f", string.pack("<f", v))) end
local function bf16_bits(v) return (string.unpack("<I4", string.pack("<f", v))) >> 16 end
local function bf16(v)
  v = f32(v)
  local u = string.unpack("<I4", string.pack("<f", v))
  u = ((u + 0x7fff + ((u >> 16) & 1)) >> 16) << 16
  return (string.unpack("<f", string.pack("<I4", u & 0xffffffff)))
end
local function ulps(a, b) return math.abs(bf16_bits(a) - bf16_bits(b)) end

---------------------------------------------------------------------------
-- closed forms
---------------------------------------------------------------------------
do
  -- f32, alpha 0.5: a = max - min, w = 2 max|W|, s = sqrt(a) / sqrt(w); w == 0 -> s = a
  local mn = llmc.tensor({-1, 0, 0, -4, 0.5}):to("float32")
  local mx = llmc.tensor({3, 1, 0, 5, 2.5}):to("float32")
  local W1 = llmc.tensor({{1, -2, 0, 3, 0}, {0.5, 0.25, 0, -1, 0}}):to("float32")
  local W2 = llmc.tensor({{-1.5, 0.5, 0, 1, 0}}):to("float32")
  local s, a = SQ.smoothing_scales({W1, W2}, mn, mx, 0.5, "smoothquant", "float32")
  local av = {4, 1, 0, 9, 2}
  local wv = {3, 4, 0, 6, 0}   -- 2 * column absmax over both weights
  local ok = true
  for j = 1, 5 do
    local want = wv[j] > 0 and f32(f32(math.sqrt(av[j])) / f32(math.sqrt(wv[j]))) or av[j]
    if math.abs(s:get(j - 1) - want) > 1e-7 * math.max(1, want) or a:get(j - 1) ~= av[j] then ok = false end
  end
  check(ok, "f32 scales = sqrt(a)/sqrt(w), a where w == 0", cjson.encode(s:totable()))
  check(s:dtype() == "float32" and a:dtype() == "float32", "f32 statistics give f32 scales")

  -- apply: balance columns times s (fp32, then the weight dtype), norm / s,
  -- clamp 1e-5 (channel 3: a = 0 -> s = 0 -> 1e-5 in fp32)
  local model = {
    balance = {{name = "b", module = {weight = llmc.tensor({{1, -2, 0.5, 3, 7}}):to("bfloat16")}}},
    smooth = {weight = llmc.tensor({1, 1, 0.001, 2, 0.5}):to("bfloat16"),
              has_param = function() return false end},
  }
  local sb = llmc.tensor({2, 0.5, 0, 0.3, 3}):to("bfloat16")
  SQ.apply_scales(model, sb)
  local s32 = {2, 0.5, f32(1e-5), bf16(0.3), 3}
  local Wn, wn = model.balance[1].module.weight, model.smooth.weight
  local W0, w0 = {1, -2, 0.5, 3, 7}, {1, 1, bf16(0.001), 2, 0.5}
  ok = Wn:dtype() == "bfloat16" and wn:dtype() == "bfloat16"
  for j = 1, 5 do
    if Wn:get(0, j - 1) ~= bf16(f32(W0[j] * s32[j])) then ok = false end
    if wn:get(j - 1) ~= bf16(f32(w0[j] / s32[j])) then ok = false end
  end
  check(ok, "rescaled weights: bf16(fp32(W * s)), bf16(fp32(w / max(s, 1e-5)))",
        cjson.encode(Wn:to("float32"):totable()) .. " " .. cjson.encode(wn:to("float32"):totable()))
  check(wn:get(2) == bf16(f32(bf16(0.001) / f32(1e-5))), "a zero scale is clamped to fp32(1e-5)", wn:get(2))

  -- bf16, alpha 0.8: the exponents are bf16(0.8) = 0.80078125 and bf16(0.2) = 0.2001953125
  local av2, wv2 = {}, {}
  for j = 1, 24 do av2[j] = bf16(0.37 * j + 0.11); wv2[j] = bf16(0.021 * j) end
  local half = {}
  for j = 1, 24 do half[j] = wv2[j] / 2 end
  local Wb = llmc.tensor({half}):to("bfloat16")
  local zero = llmc.zeros({24})
  local sbf = SQ.smoothing_scales({Wb}, zero, llmc.tensor(av2):to("float32"), 0.8, "smoothquant", "bfloat16")
  local exact, plain = 0, 0
  for j = 1, 24 do
    local want = bf16(bf16(av2[j] ^ 0.80078125) / bf16(wv2[j] ^ 0.2001953125))
    local naive = bf16(bf16(av2[j] ^ 0.8) / bf16(wv2[j] ^ 0.2))
    if sbf:get(j - 1) == want then exact = exact + 1 end
    if naive ~= want then plain = plain + 1 end
  end
  check(sbf:dtype() == "bfloat16" and exact == 24, "bf16 scales: every op rounded to bf16, exponents rounded to bf16", exact)
  check(plain > 0, "the exponent rounding matters on these inputs (else the check above proves nothing)", plain)

  -- log_equalization: s = a / log2(2 + a): a = 2 -> 1, a = 6 -> 2, a = 14 -> 3.5
  local sl = SQ.smoothing_scales({}, llmc.zeros({3}), llmc.tensor({2, 6, 14}):to("float32"), 0.5, "log_equalization", "bfloat16")
  check(sl:get(0) == 1 and sl:get(1) == 2 and sl:get(2) == 3.5, "log_equalization closed form",
        cjson.encode(sl:to("float32"):totable()))
end

---------------------------------------------------------------------------
-- llm-compressor reference on tiny-llama
---------------------------------------------------------------------------
local ref = cjson.decode(assert(io.open(llmc.root() .. "/tests/lua/data/smoothquant_ref.json")):read("a"))
local function calib(model, n, len)
  return datasets.load{path = llmc.bundled("datasets/calib_text.jsonl"), tokenizer = model:tokenizer(),
    num_calibration_samples = n, max_seq_length = len, shuffle = false, warn = function() end}
end

local function tensor_matches(t, r, rel_sumsq, rel_sample)
  local w = t:to("float64")
  local sum, sumsq = w:sum(), (w * w):sum()
  local flat = w:reshape({-1})
  local worst = 0
  for i, idx in ipairs(r.index) do
    local v = flat:get(idx)
    worst = math.max(worst, math.abs(v - r.values[i]) / math.max(math.abs(r.values[i]), 1e-30))
  end
  local es = math.abs(sumsq - r.sumsq) / r.sumsq
  local e1 = math.abs(sum - r.sum) / math.sqrt(r.sumsq)
  return es <= rel_sumsq and e1 <= rel_sumsq * 50 and worst <= rel_sample, string.format(
    "sumsq rel %.2e, sum / rms %.2e, worst sampled value rel %.2e", es, e1, worst)
end

-- (1) bit-exact formula and rescaling: statistics on the norm output with
-- HF's two bf16 roundings, q/k/v of layer 0
do
  local model = llmc.load(llmc.default_model())
  local ds = calib(model, ref.samples, ref.seq_len)
  local norm = model:get("model.layers.0.input_layernorm")
  local w = norm.weight
  local ones = llmc.ones({w:numel()})
  local obs = O.new{reduce = "channel", cols = w:numel(), update = "static_minmax", dtype = "bfloat16"}
  local h = norm:register_forward_hook(function(_, x)
    obs:observe(N.rmsnorm(x, ones, norm.eps):to("bfloat16") * w)   -- bf16 * bf16 -> bf16
  end)
  for b in ds:batches(1) do model:forward(b):release() end
  h:remove()
  local balance = {}
  for _, p in ipairs({"q_proj", "k_proj", "v_proj"}) do
    local name = "model.layers.0.self_attn." .. p
    balance[#balance + 1] = {name = name, module = model:get(name)}
  end
  local ws = {}
  for i, b in ipairs(balance) do ws[i] = b.module.weight end
  local mn, mx = obs:minmax()
  local s, a = SQ.smoothing_scales(ws, mn, mx, ref.smoothing_strength, "smoothquant", "bfloat16")
  local rs = ref.scales["model.layers.0.input_layernorm"]
  local ds_, da = 0, 0
  for j = 1, #rs.scale do
    if s:get(j - 1) ~= rs.scale[j] then ds_ = ds_ + 1 end
    if a:get(j - 1) ~= rs.range[j] then da = da + 1 end
  end
  check(da == 0, "layer 0 activation ranges bit-exact with HF's bf16 norm rounding", da .. " of 256 differ")
  check(ds_ == 0, "layer 0 q/k/v scales bit-exact", ds_ .. " of 256 differ")
  SQ.apply_scales({balance = balance, smooth = norm}, s)
  for _, n in ipairs({"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                      "model.layers.0.self_attn.v_proj", "model.layers.0.input_layernorm"}) do
    local ok, detail = tensor_matches(model:get(n).weight, ref.tensors[n .. ".weight"], 1e-12, 0)
    check(ok, n .. ": rescaled weight bit-exact (sum, sum of squares, sampled values)", detail)
  end
end

-- (2) llmc's run: fp32 activations (one rounding of the norm output)
local smoothed_model
do
  local model = llmc.load(llmc.default_model())
  local ds = calib(model, ref.samples, ref.seq_len)
  local batch
  for b in ds:batches(1) do batch = batch or b end
  local before = model:forward(batch)
  local sq = SQ{smoothing_strength = ref.smoothing_strength}
  llmc.oneshot{model = model, recipe = sq, dataset = ds, quiet = true}
  smoothed_model = model
  local after = model:forward(batch)
  local d = (after - before):abs():max()
  local range = before:abs():max()
  check(d <= 0.01 * range, "the smoothed model computes the same function (logits within 1% of their range)",
        string.format("%.4g of %.4g", d, range))

  local hist, total, per = {}, 0, {}
  for name, r in pairs(ref.scales) do
    local got = sq.smoothed_[name]
    check(got ~= nil, name .. " smoothed")
    if got then
      local s = got.scale:totable()
      local same = 0
      for j = 1, #r.scale do
        local u = ulps(s[j], r.scale[j])
        hist[u] = (hist[u] or 0) + 1
        total = total + 1
        if u == 0 then same = same + 1 end
      end
      per[#per + 1] = string.format("%s %d/%d", name:gsub("^model%.layers%.", ""), same, #r.scale)
    end
  end
  table.sort(per)
  local worst = 0
  for u in pairs(hist) do worst = math.max(worst, u) end
  print(string.format("llmc vs llm-compressor scales: %d of %d bit-identical, %d one bf16 ulp apart, %d two, %d more (max %d)",
    hist[0] or 0, total, hist[1] or 0, hist[2] or 0, total - (hist[0] or 0) - (hist[1] or 0) - (hist[2] or 0), worst))
  print("  identical per mapping: " .. table.concat(per, ", "))
  -- measured: 1591 / 2048 identical, 367 at 1 ulp, 83 at 2, 7 at 3
  check(total == 2048 and (hist[0] or 0) >= 0.7 * total, "at least 70% of the scales bit-identical", hist[0])
  check(worst <= 4, "every scale within 4 bf16 ulps of llm-compressor's", worst)
  -- weights: sum of squares within 3e-3 relative (measured <= 1.2e-3), sampled
  -- values within 4% (measured <= 1.5%: a couple of ulps of the scale)
  local nt = 0
  for k, r in pairs(ref.tensors) do
    local ok, detail = tensor_matches(model:get((k:gsub("%.weight$", ""))).weight, r, 3e-3, 0.04)
    check(ok, k .. " close to llm-compressor's", detail)
    nt = nt + 1
  end
  check(nt == 28, "28 smoothed tensors compared", nt)
  -- recipe.yaml fields, in llm-compressor's order, with the inferred mappings
  local keys = sq:dump():keys()
  check(table.concat(keys, ",") == "requires_calibration_data,smoothing_strength,mappings,ignore,algorithm",
        "recipe.yaml fields", table.concat(keys, ","))
  local yaml = ref.recipe_yaml
  check(yaml:find("smoothing_strength: 0.8", 1, true) and yaml:find("ignore: []", 1, true), "reference recipe.yaml fields")
  check(#sq:dump():get("mappings") == 2 and sq:dump():get("mappings")[2][2] == "re:.*post_attention_layernorm",
        "inferred mappings written back")
end

---------------------------------------------------------------------------
-- mappings and errors
---------------------------------------------------------------------------
do
  local model = llmc.load(llmc.default_model())
  local function init(args)
    local m = SQ(args)
    m:initialize({model = model, quiet = true})
    return m
  end
  local m = init{}
  check(#m._resolved_mappings == 8, "tiny-llama: 2 mappings x 4 layers", #m._resolved_mappings)
  local r1 = m._resolved_mappings[1]
  check(r1.smooth_name == "model.layers.0.input_layernorm" and #r1.balance == 3 and
        r1.balance[1].name == "model.layers.0.self_attn.q_proj" and r1.dtype == "bfloat16",
        "first mapping: layer 0 q/k/v <- input_layernorm", r1.smooth_name)
  local r2 = m._resolved_mappings[2]
  check(r2.smooth_name == "model.layers.1.input_layernorm", "mappings are resolved in recipe order, then layer order",
        r2.smooth_name)
  -- ignore: a mapping is skipped only when its smooth and every balance layer are ignored
  m = init{ignore = {"re:.*input_layernorm", "re:.*q_proj", "re:.*k_proj", "re:.*v_proj"}}
  check(#m._resolved_mappings == 4 and m._resolved_mappings[1].smooth_name:find("post_attention"),
        "fully ignored attention mappings skipped", #m._resolved_mappings)
  m = init{ignore = {"re:.*input_layernorm"}}
  check(#m._resolved_mappings == 8, "an ignored smooth layer alone does not skip its mapping", #m._resolved_mappings)
  -- errors naming the field
  local e = err_of(init, {mappings = {{{"re:.*q_proj"}, "re:.*layernorm"}}})
  check(e:find("mappings") and e:find("single smooth layer"), "two smooth layers in one set", e)
  e = err_of(init, {mappings = {{{"re:.*down_proj"}, "re:.*post_attention_layernorm"}}})
  check(e:find("768 input features") and e:find("256 channels"), "balance width must equal the smooth width", e)
  e = err_of(SQ, {start = 1})
  check(e:find("SmoothQuantModifier.start") and e:find("one%-shot"), "start = 1 rejected", e)
  e = err_of(SQ, {["end"] = 5})
  check(e:find("SmoothQuantModifier.end"), "end = 5 rejected", e)
  check(err_of(SQ, {start = -1, ["end"] = -1}) == "", "start = end = -1 accepted")
  e = err_of(SQ, {smoothing_strength = 1.5})
  check(e:find("smoothing_strength"), "alpha outside [0, 1] rejected", e)
  e = err_of(SQ, {algorithm = "awq"})
  check(e:find("algorithm"), "unknown algorithm rejected", e)
  e = err_of(SQ, {mappings = "re:.*q_proj"})
  check(e:find("mappings"), "mappings must be a list", e)
  e = err_of(SQ, {mappings = {{"re:.*input_layernorm"}}})
  check(e:find("mappings%[1%]"), "a mapping needs balance and smooth layers", e)
  e = err_of(SQ, {nonsense = 1})
  check(e:find("unknown argument"), "unknown argument", e)
  check(SQ{num_calibration_steps = 4, calibration_function = function() end}.num_calibration_steps == 4,
        "num_calibration_steps / calibration_function accepted")
  e = err_of(llmc.oneshot, {model = model, recipe = SQ{}, quiet = true})
  check(e:find("SmoothQuant needs calibration data"), "no dataset: clear error", e)
end

-- MoE: Mixtral and Qwen3-MoE smooth attention only (random tiny checkpoints)
do
  local R = dofile(llmc.root() .. "/scripts/make_random_model.lua")
  local tmp = os.tmpname()
  os.remove(tmp)
  local rows = {}
  for i = 1, 2 do
    local ids, mask = {}, {}
    for t = 1, 12 do ids[t] = (i * 37 + t * 11) % 250 + 3; mask[t] = 1 end
    rows[i] = {input_ids = ids, attention_mask = mask}
  end
  rows.n = 2
  local ds = setmetatable(rows, datasets.Dataset)
  for _, arch in ipairs({"mixtral", "qwen3_moe"}) do
    local dir = tmp .. "-sq-" .. arch
    R.write(arch, dir)
    local model = llmc.load(dir)
    local sq = SQ{}
    llmc.oneshot{model = model, recipe = sq, dataset = ds, quiet = true}
    local names = {}
    for n in pairs(sq.smoothed_) do names[#names + 1] = n end
    table.sort(names)
    check(#names == 2 and names[1]:find("input_layernorm$") and names[2]:find("input_layernorm$"),
          arch .. ": only the attention mappings are smoothed", table.concat(names, ", "))
    os.execute("rm -rf '" .. dir .. "'")
  end
end

---------------------------------------------------------------------------
-- the independent pipeline
---------------------------------------------------------------------------
do
  local QM, G = llmc.modifiers.QuantizationModifier, llmc.modifiers.GPTQModifier
  local plan = oneshot.plan(nil, {SQ{}, QM{scheme = "W4A16", ignore = {"lm_head"}}, G{scheme = "W8A8"}})
  check(#plan == 3 and plan[1].pipeline == "sequential" and plan[2].pipeline == "datafree" and
        plan[3].pipeline == "sequential" and #plan[2].modifiers == 1, "independent: one run per modifier, own pipeline")
  plan = oneshot.plan("basic", {SQ{}, G{scheme = "W8A8"}})
  check(#plan == 1 and plan[1].pipeline == "basic" and #plan[1].modifiers == 2, "explicit pipeline: one run")
  check(err_of(oneshot.plan, "fancy", {}):find("unknown pipeline 'fancy'"), "unknown pipeline named")

  local model = llmc.load(llmc.default_model())
  local ds = calib(model, 2, 32)
  local function gptq() return G{targets = "Linear", scheme = "W8A8", ignore = {"lm_head"}} end
  local function weights(m)
    local w = {}
    for name, mod in m:modules("Linear") do w[name] = mod.weight:bytes() end
    return w
  end
  local a = llmc.oneshot{model = llmc.load(llmc.default_model()), recipe = {SQ{smoothing_strength = 0.8}, gptq()},
                         dataset = ds, quiet = true}
  local b = llmc.oneshot{model = llmc.load(llmc.default_model()), recipe = SQ{smoothing_strength = 0.8},
                         dataset = ds, quiet = true}
  b = llmc.oneshot{model = b, recipe = gptq(), dataset = ds, quiet = true}
  local c = llmc.oneshot{model = llmc.load(llmc.default_model()), recipe = {SQ{smoothing_strength = 0.8}, gptq()},
                         dataset = ds, quiet = true, pipeline = "sequential"}
  local wa, wb, wc = weights(a), weights(b), weights(c)
  local same_ab, diff_ac, n = 0, 0, 0
  for name, v in pairs(wa) do
    n = n + 1
    if v == wb[name] then same_ab = same_ab + 1 end
    if name:find("q_proj") and v ~= wc[name] then diff_ac = diff_ac + 1 end
  end
  check(n == 29 and same_ab == 29, "independent = SmoothQuant run, then GPTQ run on the smoothed model (bit-identical)",
        same_ab .. " of " .. n)
  check(diff_ac == 4, "one shared sequential pass differs (GPTQ's Hessians then see unsmoothed inputs)", diff_ac)
end

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
