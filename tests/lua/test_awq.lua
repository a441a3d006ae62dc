-- llmc-test: slow
-- test_awq.lua — AWQModifier (algorithms.md §8):
--  * closed forms: the grid for duo_scaling true / false / "both", the scale
--    formula (duo: f32 x^r over f64 w^(1-r) + 1e-4; plain: f32) and its
--    sqrt(max * min) normalisation with inf / nan -> 1, the normalised weight
--    means per group / channel / tensor / block, the f32-accumulated MSE, the
--    rescaling of balance and smooth layers (1-D norm; 2-D: last rows; bias);
--  * llm-compressor reference (tests/lua/data/awq_ref.json, made by
--    scripts/lc_awq_reference.py: AWQModifier + QuantizationModifier W4A16_ASYM
--    on tiny-llama in float32, 8 samples x 64 tokens, the same token ids):
--    the same grid point for all 12 mappings, scales within 1e-5 relative
--    (measured 1.8e-7), every grid loss within 1% (measured 0.34% at most:
--    one grid point whose int4 codes flip), parents and balance layers as
--    upstream, the 4 GQA v_proj -> o_proj mappings skipped, norm weights and
--    the final weight_scale sums as upstream;
--  * a chosen point is the first minimum of its losses;
--  * mappings inferred per model class; errors: no quantization config, a
--    mapping pattern matching nothing, bad duo_scaling / n_grid / mapping keys,
--    TENSOR weights with duo scaling, static activations, no data;
--  * recipes/w4a16_awq.lua writes a checkpoint that reloads.
local llmc = require "llmc"
local cjson = require "cjson"
local T = require "llmc._tensor"

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
local function f32(v) return (string.unpack("<f", string.pack("<f", v))) end
local function rel(a, b) return math.abs(a - b) / math.max(math.abs(b), 1e-30) end

local AWQ = llmc.modifiers.AWQModifier

---------------------------------------------------------------------------
-- closed forms
---------------------------------------------------------------------------
do
  local g = AWQ.grid(true, 20)
  check(#g == 20 and g[1][1] == 0 and g[1][2] == false and g[2][1] == 0 and g[2][2] == true and
        g[20][1] == 1 and g[11][1] == 9 / 18, "grid duo=true: (0, plain) + k/18 duo")
  g = AWQ.grid(false, 5)
  check(#g == 5 and g[2][1] == 0.25 and g[5][1] == 1 and not g[3][2], "grid duo=false: k/(n-1)")
  g = AWQ.grid("both", 7)
  check(#g == 6 and g[1][1] == 0 and not g[1][2] and g[2][2] and g[3][1] == 0.5 and g[6][1] == 1,
        "grid both: n//2 ratios x (plain, duo)")
  check(AWQ.grid(true, 2) == nil and AWQ.grid(false, 1) == nil and AWQ.grid("both", 3) == nil, "too small grids")
end

do
  -- duo: s = max(x^r / (w^(1-r) + 1e-4), 1e-4), x^r in f32, the rest f64; / sqrt(max*min)
  local xs, ws = {0.5, 2.0, 0.0, 3.25}, {0.25, 0.75, 0.5, 1.0}
  local x = T.tensor(xs):to("float32")
  local w = T.tensor(ws):to("float64")
  local r = 1 / 3
  local s = AWQ.grid_scales(x, w, r, true)
  check(s:dtype() == "float64", "duo scales are f64", s:dtype())
  local e = {}
  for j = 1, 4 do e[j] = math.max(f32(xs[j] ^ f32(r)) / (ws[j] ^ (1 - r) + 1e-4), 1e-4) end
  local mx, mn = math.max(table.unpack(e)), math.min(table.unpack(e))
  local c = math.sqrt(mx * mn)
  local got = s:totable()
  local worst = 0
  for j = 1, 4 do worst = math.max(worst, rel(got[j], e[j] / c)) end
  check(worst < 1e-12, "duo scale closed form", worst)
  -- plain: f32 throughout; ratio 0 gives ones
  local p = AWQ.grid_scales(x, nil, 0.0, false)
  check(p:dtype() == "float32" and p:min() == 1 and p:max() == 1, "plain ratio 0 -> ones")
  p = AWQ.grid_scales(x, nil, 1.0, false):totable()
  local cp = f32(math.sqrt(f32(3.25 * 1e-4 > 0 and f32(3.25) * f32(1e-4) or 0)))
  check(p[2] == f32(2.0 / cp) and p[3] == f32(f32(1e-4) / cp), "plain ratio 1: clamp 1e-4, f32 normalisation",
        table.concat(p, ", "))
  -- inf -> normalisation by inf: finite -> 0, inf / inf = nan -> 1
  local q = AWQ.grid_scales(T.tensor({1, 4, math.huge}):to("float32"), nil, 1.0, false):totable()
  check(q[1] == 0 and q[2] == 0 and q[3] == 1, "inf / nan scales -> 1", table.concat(q, ", "))
end

do
  -- normalised weight means: |W| / (chunk max + 1e-6), summed over rows / rows
  local W = T.tensor({{1, -2, 4, 0}, {-3, 3, 1, -1}}):to("float32")
  local function means(args) return AWQ.layer_means({W}, {args}):totable() end
  local function near(a, b)
    for j = 1, #b do if math.abs(a[j] - b[j]) > 1e-6 then return false end end
    return true
  end
  local d = 1e-6
  local grp = means({strategy = "group", group_size = 2})
  check(near(grp, {(1 / (2 + d) + 3 / (3 + d)) / 2, (2 / (2 + d) + 3 / (3 + d)) / 2, (4 / (4 + d) + 1 / (1 + d)) / 2,
                   (0 + 1 / (1 + d)) / 2}), "layer means, group 2", table.concat(grp, ", "))
  local ch = means({strategy = "channel"})
  check(near(ch, {(1 / 4 + 3 / 3) / 2, (2 / 4 + 1) / 2, (1 + 1 / 3) / 2, (0 + 1 / 3) / 2}), "layer means, channel")
  local tn = means({strategy = "tensor"})
  check(near(tn, {(1 + 3) / 8, (2 + 3) / 8, (4 + 1) / 8, 1 / 8}), "layer means, tensor")
  local bl = means({strategy = "block", block_structure = {2, 2}})
  check(near(bl, {(1 + 3) / 6, (2 + 3) / 6, (4 + 1) / 8, 1 / 8}), "layer means, 2x2 blocks", table.concat(bl, ", "))
  -- several layers: sum over all rows / total rows; f64 result
  local two = AWQ.layer_means({W, W}, {{strategy = "channel"}, {strategy = "channel"}})
  check(two:dtype() == "float64" and near(two:totable(), ch), "layer means over two layers")
end

do
  -- loss: sum of squared differences over batches / elements, f32
  local a = {T.tensor({{1, 2}, {3, 4}}):to("float32"), T.tensor({{0.5, 0.5}}):to("float32")}
  local b = {T.tensor({{1, 1}, {3, 2}}):to("float32"), T.tensor({{0, 1.5}}):to("float32")}
  check(AWQ.loss(a, b) == f32((1 + 4 + 0.25 + 1) / 6), "loss closed form", AWQ.loss(a, b))
end

do
  -- apply: balance W[:, j] *= s_j from the originals; norm /= s; 2-D smooth: last rows and bias
  local nn = require "llmc.nn"
  local norm = nn.new_rmsnorm("n", 2, 1e-6)
  norm:param("weight", T.tensor({2, 3}):to("float32"))
  local b1 = nn.new_linear("b1", 2, 2, false)
  b1:param("weight", T.tensor({{1, 2}, {3, 4}}):to("float32"))
  local s = T.tensor({2, 0.5}):to("float64")
  AWQ.apply_scales({balance = {{module = b1}}, smooth = norm}, s, {b1.weight})
  local w = b1.weight:totable()
  check(b1.weight:dtype() == "float32" and w[1][1] == 2 and w[1][2] == 1 and w[2][1] == 6 and w[2][2] == 2,
        "balance columns scaled")
  local nw = norm.weight:totable()
  check(norm.weight:dtype() == "float32" and nw[1] == 1 and nw[2] == 6, "norm weight divided")
  local up = nn.new_linear("up", 2, 3, true)
  up:param("weight", T.tensor({{1, 1}, {4, 4}, {8, 8}}):to("float32"))
  up:param("bias", T.tensor({1, 4, 8}):to("float32"))
  local b2 = nn.new_linear("down", 2, 1, false)
  b2:param("weight", T.tensor({{1, 1}}):to("float32"))
  AWQ.apply_scales({balance = {{module = b2}}, smooth = up}, T.tensor({2, 4}):to("float32"), {b2.weight})
  local uw, ub = up.weight:totable(), up.bias:totable()
  check(uw[1][1] == 1 and uw[2][1] == 2 and uw[3][2] == 2 and ub[1] == 1 and ub[2] == 2 and ub[3] == 2,
        "2-D smooth layer: last rows and bias divided")
  -- rounding of a rescaled bf16 weight: the f64 product is cast to bf16 through
  -- f32 as PyTorch's cast does (c10::BFloat16 is built from a float):
  -- 1.003906251 -> f32 1.00390625 (a bf16 midpoint) -> RNE 1.0, not 1.0078125
  local lb = nn.new_linear("lb", 1, 1, false)
  lb:param("weight", T.tensor({{1.0}}):to("bfloat16"))
  local nb = nn.new_rmsnorm("nb", 1, 1e-6)
  nb:param("weight", T.tensor({1.0}):to("bfloat16"))
  AWQ.apply_scales({balance = {{module = lb}}, smooth = nb}, T.tensor({1.00390625 + 1e-9}, "float64"), {lb.weight})
  check(lb.weight:dtype() == "bfloat16" and lb.weight:totable()[1][1] == 1.0, "bf16 weight rounded via f32 (RNE)",
        lb.weight:totable()[1][1])
end

---------------------------------------------------------------------------
-- llm-compressor reference
---------------------------------------------------------------------------
local root = os.getenv("LLMC_ROOT") or llmc.root()
local ref = cjson.decode(io.open(root .. "/tests/lua/data/awq_ref.json"):read("a"))
local calib = llmc.bundled("datasets/calib_text.jsonl")

local function run(mod, extra)
  local args = {model = llmc.bundled("models/tiny-llama"), precision = "float32", recipe = mod,
    dataset = "json", dataset_path = calib, num_calibration_samples = ref.samples, max_seq_length = ref.seq_len,
    shuffle_calibration_samples = false, quiet = true}
  for k, v in pairs(extra or {}) do args[k] = v end
  return llmc.oneshot(args)
end

do
  local m = AWQ{scheme = "W4A16_ASYM", targets = "Linear", ignore = {"lm_head"}}
  local t0 = llmc.util.now()
  local model, summary = run(m)
  io.stderr:write(string.format("AWQ on tiny-llama (8 x 64 tokens): %.1f s\n", llmc.util.now() - t0))
  check(m.skipped_incompatible_ == 4, "4 GQA v_proj -> o_proj mappings skipped", m.skipped_incompatible_)
  local n, same, worst_s, worst_l = 0, 0, 0, 0
  for name, r in pairs(ref.mappings) do
    n = n + 1
    local s = m.smoothed_[name]
    if not s then
      check(false, "mapping " .. name .. " smoothed")
    else
      if s.index == r.best + 1 then same = same + 1
      else print(string.format("grid point differs for %s: llmc %d, llm-compressor %d", name, s.index, r.best + 1)) end
      check(s.parent == r.parent, name .. ": parent " .. tostring(s.parent), r.parent)
      check(table.concat(s.balance, ",") == table.concat(r.balance, ","), name .. ": balance layers")
      local mine = s.scales:totable()
      check(#mine == #r.scales, name .. ": scale count")
      for j, v in ipairs(r.scales) do worst_s = math.max(worst_s, rel(mine[j], v)) end
      for j, v in ipairs(r.losses) do worst_l = math.max(worst_l, rel(s.losses[j], v)) end
      -- the chosen point is the first minimum
      local first = 1
      for j, v in ipairs(s.losses) do if v < s.losses[first] then first = j end end
      check(first == s.index and s.best_error == s.losses[s.index] and s.initial_error == s.losses[1],
            name .. ": first minimum chosen")
    end
  end
  check(n == 12, "12 reference mappings", n)
  check(same == n, string.format("same grid point as llm-compressor for %d of %d mappings", same, n))
  check(worst_s < 1e-5, "scales within 1e-5 of llm-compressor's", worst_s)
  check(worst_l < 1e-2, "grid losses within 1% of llm-compressor's", worst_l)
  io.stderr:write(string.format("agreement: %d/%d grid points, scales max rel %.3g, losses max rel %.3g\n",
    same, n, worst_s, worst_l))
  -- weights after AWQ: norms exactly rescaled; qparams of the quantized layers
  local recs = {}
  for _, r in ipairs(summary.records) do recs[r.name] = r end
  local wn, wsc, nq = 0, 0, 0
  for name, r in pairs(ref.weights) do
    if name:match("layernorm$") then
      local sum = 0
      for _, v in ipairs(model:get(name).weight:totable()) do sum = sum + v end
      wn = math.max(wn, rel(sum, r.sum))
    else
      nq = nq + 1
      local rec = recs[name]
      local ssum = 0
      for _, t in ipairs(rec and rec.tensors or {}) do
        if t.name == "weight_scale" then ssum = t.tensor:to("float64"):sum()
        end
      end
      wsc = math.max(wsc, rel(ssum, r.scale_sum))
    end
  end
  check(nq == 28, "28 quantized Linears in the reference", nq)
  check(wn < 1e-6, "rescaled norm weights as llm-compressor's", wn)
  check(wsc < 1e-5, "weight_scale sums as llm-compressor's", wsc)
  io.stderr:write(string.format("weights: norm sums rel %.3g, weight_scale sums rel %.3g\n", wn, wsc))
  -- every Linear but lm_head quantized after smoothing
  check(#summary.records == 28 and recs["lm_head"] == nil, "28 modules quantized, lm_head ignored", #summary.records)
  model = nil
  collectgarbage()
end

---------------------------------------------------------------------------
-- mappings and errors
---------------------------------------------------------------------------
do
  check(AWQ.MAPPINGS.LlamaForCausalLM == AWQ.DEFAULT_MAPPINGS and AWQ.MAPPINGS.Qwen3ForCausalLM ==
        AWQ.DEFAULT_MAPPINGS, "llama / qwen3: default mappings")
  local moe = AWQ.MAPPINGS.Qwen3MoeForCausalLM
  check(#moe == 4 and moe[3].balance_layers[1] == "re:.*mlp.gate$" and moe[3].balance_layers[3] ==
        "re:.*mlp.experts.*.up_proj$", "qwen3_moe: router + experts balanced")
  check(AWQ.MAPPINGS.MixtralForCausalLM[3].balance_layers[1] == "re:.*experts.*.w1$", "mixtral: w1 / w3 experts")
  local d = AWQ.DEFAULT_MAPPINGS
  check(d[2].smooth_layer == "re:.*v_proj$" and d[2].balance_layers[1] == "re:.*o_proj$" and
        d[4].smooth_layer == "re:.*up_proj$", "default: v -> o and up -> down")
  -- field checks
  check(err_of(AWQ, {scheme = "W4A16", duo_scaling = "yes"}):find("duo_scaling must be true, false or \"both\"", 1, true),
        "bad duo_scaling")
  check(err_of(AWQ, {scheme = "W4A16", n_grid = 2}):find("n_grid = 2 is too small", 1, true), "n_grid too small")
  check(err_of(AWQ, {scheme = "W4A16", mappings = {{smooth = "x", balance_layers = {"y"}}}}):find("unknown key 'smooth'", 1, true),
        "unknown mapping key")
  check(err_of(AWQ, {scheme = "W4A16", offload_device = "cuda:0"}):find("offload_device", 1, true), "offload device")
  local m = AWQ{scheme = "W4A16", mappings = {{"re:.*input_layernorm$", {"re:.*q_proj$"}}}}
  check(m.mappings[1].smooth_layer == "re:.*input_layernorm$", "positional mapping accepted")
  check(AWQ{scheme = "W4A16"}:dump():get("duo_scaling") == true, "recipe.yaml lists duo_scaling")
  -- errors at run time
  local e = err_of(run, AWQ{})
  check(e:find("requires a quantization config", 1, true), "no scheme -> error", e)
  e = err_of(run, AWQ{scheme = "W4A16", ignore = {"lm_head"},
    mappings = {{smooth_layer = "re:.*input_layernorm$", balance_layers = {"re:.*qq_proj$"}}}})
  check(e:find("mappings[1]", 1, true) and e:find("re:.*qq_proj$", 1, true), "balance pattern matching nothing", e)
  e = err_of(run, AWQ{scheme = "W4A16", ignore = {"lm_head"},
    mappings = {{smooth_layer = "re:.*input_layernorm$", balance_layers = {"re:.*q_proj$", "re:.*down_proj$"}}}})
  check(e:find("different input widths", 1, true) or e:find("output channels", 1, true), "mismatched balance widths", e)
  e = err_of(run, AWQ{ignore = {"lm_head"}, config_groups = {group_0 = {targets = {"Linear"},
    weights = {num_bits = 8, type = "int", symmetric = true, strategy = "tensor"}}}})
  check(e:find("duo_scaling is only supported", 1, true), "TENSOR weights with duo scaling", e)
  e = err_of(run, AWQ{scheme = "FP8", ignore = {"lm_head"}})
  check(e:find("static input", 1, true), "static activations rejected", e)
  e = err_of(llmc.oneshot, {model = llmc.bundled("models/tiny-llama"), quiet = true,
    recipe = AWQ{scheme = "W4A16", ignore = {"lm_head"}}})
  check(e:find("calibration data", 1, true), "no data -> error", e)
end

---------------------------------------------------------------------------
-- the recipe
---------------------------------------------------------------------------
do
  local util = llmc.util
  if util.fs then
    local out = string.format("%s/llmc_test_awq_%d", os.getenv("TMPDIR") or "/tmp", util.fs.getpid())
    local saved = _G.arg
    _G.arg = {[0] = root .. "/recipes/w4a16_awq.lua", "--output", out, "--overwrite", "--samples", "4",
              "--seq-len", "32", "--no-compare", "--max-new-tokens", "2"}
    local ok, err = pcall(dofile, root .. "/recipes/w4a16_awq.lua")
    _G.arg = saved
    check(ok, "recipes/w4a16_awq.lua runs", err)
    if ok then
      local cfg = util.json.decode(util.read_file(out .. "/config.json")).quantization_config
      check(cfg.format == "pack-quantized" and cfg.config_groups.group_0.weights.symmetric == false,
            "recipe checkpoint: pack-quantized, asymmetric")
      local back = llmc.quant.load(out)
      local lg = back:forward({{1, 415, 2936, 9060}})
      check(lg:shape()[3] == 32000 and lg:stats().nan == 0, "recipe checkpoint reloads")
    end
    util.fs.rmtree(out)
  end
end

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
