-- test_sparsity.lua — SparseGPTModifier and WandaPruningModifier (algorithms.md §6)
-- against llm-compressor (tests/lua/data/sparsity_ref.json, made by
-- scripts/lc_sparsity_reference.py: tiny-llama in float32, 8 samples x 64
-- tokens of the bundled calib_text.jsonl, the same token ids as here,
-- ignore = {"re:.*lm_head"}); per pruned Linear the reference holds the zero
-- count, an FNV-1a hash of the zero mask, zeros of the first 4 rows and
-- weight sums.  Measured agreement (scripts/lc_sparsity_reference.py --compare):
--   Wanda 50 %:      all 28 masks and weights bit-identical;
--   SparseGPT 50 %:  layer 0 masks identical (weights within 1e-5 relative),
--                    477 of 3.1M mask entries differ over the model (0.015 %);
--   SparseGPT 2:4:   layer 0: 62 entries differ in up/down_proj (one fp32 near
--                    tie flips a group, the OBS update then carries the change
--                    along the row), which changes layer 1's inputs: 2.4 % of
--                    the model's entries differ (same count, same structure);
--                    with OpenBLAS's AVX-512 kernels q_proj flips a group too.
-- So: Wanda exact; SparseGPT exact masks where they are, zero counts exact,
-- 2:4 structure exact, weight sums within the stated tolerances.  Also the
-- saved config.json (no quantization_config for pruning alone, as
-- llm-compressor), the 2:4 + FP8_DYNAMIC config block, recipe.yaml, and errors.
local llmc = require "llmc"
local cjson = require "cjson"
local S = require "llmc._sparsegpt"
local util = require "llmc.util"

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

local root = os.getenv("LLMC_ROOT") or "."
local ref = cjson.decode(util.read_file(root .. "/tests/lua/data/sparsity_ref.json"))
local M = llmc.modifiers

local function run(recipe, out)
  return llmc.oneshot{model = llmc.default_model(), recipe = recipe, precision = "float32", dataset = "json",
    dataset_path = llmc.bundled("datasets/calib_text.jsonl"), num_calibration_samples = 8, max_seq_length = 64,
    shuffle_calibration_samples = false, quiet = true, output_dir = out, overwrite = true}
end

local tmp = os.tmpname()
os.remove(tmp)

local function compare(key, recipe, opts)
  local model = run(recipe, opts.save and (tmp .. "_" .. key) or nil)
  local R = ref.recipes[key].modules
  local n, same_hash, same_zeros, worst_abs, l0_bad = 0, 0, 0, 0, 0
  local total_ref, total = 0, 0
  for name, r in pairs(R) do
    n = n + 1
    local w = model:get(name).weight
    local i = S.mask_info(w, 4)
    total_ref, total = total_ref + r.zeros, total + i.zeros
    if i.hash == r.hash then same_hash = same_hash + 1 end
    if i.zeros == r.zeros then same_zeros = same_zeros + 1 end
    local rel = math.abs(i.abs_sum - r.abs_sum) / r.abs_sum
    if rel > worst_abs then worst_abs = rel end
    if name:find("layers%.0%.") and opts.layer0_exact[name:match("[%w_]+$")] then
      if i.hash ~= r.hash or math.abs(i.sq_sum - r.sq_sum) > 1e-4 * r.sq_sum then l0_bad = l0_bad + 1 end
    end
    if opts.structure then
      -- every group of M consecutive weights of a row holds >= N zeros
      local shape = w:shape()
      local bytes = w:bytes()
      local cols = shape[2]
      local bad = 0
      for row = 0, 3 do
        for g = 0, cols - 1, 4 do
          local z = 0
          for j = 0, 3 do
            if string.unpack("<f", bytes, 1 + 4 * (row * cols + g + j)) == 0 then z = z + 1 end
          end
          if z < 2 then bad = bad + 1 end
        end
      end
      if bad > 0 then l0_bad = l0_bad + 1 end
    end
  end
  check(n == 28, key .. ": 28 pruned Linears in the reference", n)
  check(same_hash >= opts.min_hash, key .. ": identical masks", same_hash .. " of " .. n)
  check(same_zeros >= opts.min_zeros, key .. ": identical zero counts", same_zeros .. " of " .. n)
  check(math.abs(total - total_ref) <= opts.total_tol, key .. ": total zeros", total .. " vs " .. total_ref)
  check(worst_abs <= opts.abs_tol, key .. ": sum |W| per module within " .. opts.abs_tol, worst_abs)
  check(l0_bad == 0, key .. ": layer-0 masks / weights (or the N:M structure)", l0_bad)
  print(string.format("%s: %d of %d masks identical to llm-compressor, %d zero counts, total zeros %d (lc %d), " ..
    "worst sum|W| rel diff %.2e", key, same_hash, n, same_zeros, total, total_ref, worst_abs))
  return model
end

-- Wanda 50 %: bit-exact
compare("wanda_50", M.WandaPruningModifier{sparsity = 0.5, ignore = {"re:.*lm_head"}},
  {min_hash = 28, min_zeros = 28, total_tol = 0, abs_tol = 0,
   layer0_exact = {q_proj = 1, k_proj = 1, v_proj = 1, o_proj = 1, gate_proj = 1, up_proj = 1, down_proj = 1}})

-- SparseGPT 50 % unstructured
compare("sgpt_50", M.SparseGPTModifier{sparsity = 0.5, ignore = {"re:.*lm_head"}},
  {min_hash = 7, min_zeros = 20, total_tol = 40, abs_tol = 2e-3,
   layer0_exact = {q_proj = 1, k_proj = 1, v_proj = 1, o_proj = 1, gate_proj = 1, up_proj = 1, down_proj = 1}})

-- SparseGPT 2:4, saved: the checkpoint is the plain dense one
-- Which 2:4 groups sit on an fp32 near-tie depends on OpenBLAS's kernels:
-- with its AVX2 (Haswell) kernels layer 0's q_proj mask equals
-- llm-compressor's and 5 of 28 masks do; with its AVX-512 (Cooperlake)
-- kernels q_proj flips a group as well and 4 of 28 do.  Both are asserted
-- as the weaker figure; k/v/o/gate are identical with either.
local m24 = compare("sgpt_24", M.SparseGPTModifier{sparsity = 0.5, mask_structure = "2:4", ignore = {"re:.*lm_head"}},
  {min_hash = 4, min_zeros = 28, total_tol = 0, abs_tol = 2e-2, structure = true, save = true,
   layer0_exact = {k_proj = 1, v_proj = 1, o_proj = 1, gate_proj = 1}})
do
  local dir = tmp .. "_sgpt_24"
  local cfg = cjson.decode(util.read_file(dir .. "/config.json"))
  check(cfg.quantization_config == nil, "pruning alone: no quantization_config in config.json (llm-compressor writes none)",
        cfg.quantization_config and cjson.encode(cfg.quantization_config))
  check(ref.recipes.sgpt_24.quantization_config == cjson.null, "reference: llm-compressor wrote no quantization_config")
  local st = require("llmc._safetensors").open(dir .. "/model.safetensors")
  local w = st:get("model.layers.2.mlp.down_proj.weight")
  check(w:dtype() == "float32" and S.mask_info(w).zeros == 98304, "saved weight: the pruned fp32 matrix",
        w:dtype() .. " " .. S.mask_info(w).zeros)
  check(S.mask_info(w).hash == S.mask_info(m24:get("model.layers.2.mlp.down_proj").weight).hash, "saved = in memory")
  local y = util.read_file(dir .. "/recipe.yaml")
  check(y:find("SparseGPTModifier:") and y:find("mask_structure: ", 1, true) and y:find("sparsity: 0.5", 1, true),
        "recipe.yaml names the modifier and its fields", y)
  require("llmc.util").fs.rmtree(dir)
end

-- 2:4 then FP8_DYNAMIC (llm-compressor's example): the plain FP8 block
do
  local r = {M.SparseGPTModifier{sparsity = 0.5, mask_structure = "2:4", targets = {"re:model.layers.\\d*$"}},
             M.QuantizationModifier{targets = "Linear", ignore = {"lm_head"}, scheme = "FP8_DYNAMIC"}}
  local dir = tmp .. "_fp8"
  local model = run(r, dir)
  local cfg = cjson.decode(util.read_file(dir .. "/config.json"))
  local want = ref.recipes.sgpt_24_fp8.quantization_config
  local function canon(v)
    if type(v) ~= "table" then return tostring(v) end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. canon(v[k] ~= nil and v[k] or v[tonumber(k)]) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  check(canon(cfg.quantization_config) == canon(want), "2:4 + FP8_DYNAMIC: quantization_config equals llm-compressor's",
        cjson.encode(cfg.quantization_config))
  local st = require("llmc._safetensors").open(dir .. "/model.safetensors")
  local w = st:get("model.layers.0.mlp.up_proj.weight")
  check(w:dtype() == "float8_e4m3fn", "fp8 weight", w:dtype())
  local zeros = S.mask_info(w:to("float32")).zeros
  check(zeros >= 98304, "the fp8 weight keeps 2 zeros in every 4", zeros)
  local q = model:get("model.layers.0.mlp.up_proj")
  check(q.compressed ~= nil, "in memory: quantized after pruning")
  require("llmc.util").fs.rmtree(dir)
end

-- errors
local function where(f) return err_of(f) end
check(where(function() return M.SparseGPTModifier{} end):find("sparsity: required"), "missing sparsity",
      where(function() return M.SparseGPTModifier{} end))
check(where(function() return M.WandaPruningModifier{sparsity = 0.5, mask_structure = "2-4"} end):find("mask_structure"),
      "bad mask_structure", where(function() return M.WandaPruningModifier{sparsity = 0.5, mask_structure = "2-4"} end))
check(where(function() return M.SparseGPTModifier{sparsity = 0.5, mask_structure = "4:2"} end):find("at most M"),
      "N > M", where(function() return M.SparseGPTModifier{sparsity = 0.5, mask_structure = "4:2"} end))
check(where(function() return M.SparseGPTModifier{sparsity = 0.5, mask_structure = "2:4", block_size = 126} end)
      :find("multiple of M"), "block_size not a multiple of M")
check(where(function() return M.SparseGPTModifier{sparsity = 1.5} end):find("%[0, 1%]"), "sparsity out of range")
check(where(function() return M.SparseGPTModifier{sparsity = 0.5, sparsity_profile = "owl"} end):find("owl_m"),
      "owl without owl_m / owl_lmbda")
check(where(function() return M.SparseGPTModifier{sparsity = 0.5, sparsity_profile = "owl", owl_m = 5, owl_lmbda = 0.08} end)
      :find("not available"), "owl refused with a reason")
local e = err_of(run, M.SparseGPTModifier{sparsity = {0.5, 0.5, 0.5}, targets = {"re:model.layers.\\d+$"}})
check(e:find("sparsity has 3 values but the model has 4 target layers"), "sparsity list of the wrong length", e)
e = err_of(llmc.oneshot, {model = llmc.default_model(), recipe = M.WandaPruningModifier{sparsity = 0.5}, quiet = true})
check(e:find("needs calibration data"), "no data", e)
e = err_of(M.SparseGPTModifier, {sparsity = 0.5, bogus = 1})
check(e:find("unknown argument"), "unknown field", e)

-- a per-layer sparsity list: layer i gets sparsity[i]
do
  local model = run(M.WandaPruningModifier{sparsity = {0.25, 0.5, 0.75, 0.0}, targets = {"re:model.layers.\\d+$"}})
  local want = {0.25, 0.5, 0.75, 0.0}
  local ok = true
  for i = 0, 3 do
    local w = model:get("model.layers." .. i .. ".self_attn.q_proj").weight
    local z = S.mask_info(w).zeros
    if z ~= math.floor(256 * want[i + 1]) * 256 then ok = false; print(i, z) end
  end
  check(ok, "sparsity list: q_proj zeros = int(256 * s_i) per row")
  check(S.mask_info(model:get("lm_head").weight).zeros == 0, "decoder-layer targets leave lm_head dense")
end

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
