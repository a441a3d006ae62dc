-- llama (llama3 rope scaling), mistral (sliding window), qwen2 (q/k/v biases, dynamic
-- rope), qwen3 (q_norm/k_norm, yarn rope), qwen3_moe (MoE + a dense layer) and
-- mixtral (block_sparse_moe) on small random checkpoints written by
-- scripts/make_random_model.lua (deterministic for a seed), against the reference
-- numbers Hugging Face transformers computed from the same checkpoints
-- (fixtures/models/random/<arch>.safetensors, made by scripts/hf_reference.py):
-- logits of one sequence and of a left-padded batch, MoE router logits, greedy
-- tokens; module names and classes against transformers' named_modules (dense
-- architectures; the MoE ones are checked through their checkpoint names, which
-- transformers itself wrote back: the same files load there with no missing or
-- unexpected key).  Plus: KV-cache decoding equals full recompute, and llama and
-- mistral (no window) give identical logits on one checkpoint.

local llmc = require "llmc"
local S = require "llmc._safetensors"
local util = require "llmc.util"

local passed, failed = 0, 0
local function check(cond, what, detail)
  if cond then passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. what .. (detail and ("\n  " .. tostring(detail)) or ""))
  end
end
local function rel(a, b) return (a - b):abs():max() / b:abs():max() end
local function list_eq(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local R = dofile(llmc.root() .. "/scripts/make_random_model.lua")
local tmp = os.tmpname()
os.remove(tmp)
local base = tmp .. "-llmc-random"

for _, arch in ipairs{"llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "mixtral"} do
  local dir = base .. "/" .. arch
  R.write(arch, dir)
  local G = S.open(llmc.root() .. "/fixtures/models/random/" .. arch .. ".safetensors")
  local model = llmc.load(dir, {dtype = "float32"})
  check(#model.unused_tensors == 0, arch .. ": every checkpoint tensor used")

  -- names and classes (dense architectures: transformers' own list)
  local hf = util.json.decode(G:metadata().modules)
  if arch ~= "qwen3_moe" and arch ~= "mixtral" then
    local mine = {}
    for name, m in model:modules() do mine[#mine + 1] = name .. " " .. m.class_name end
    local want = {}
    for _, e in ipairs(hf) do want[#want + 1] = e[1] .. " " .. e[2] end
    check(list_eq(mine, want), arch .. ": named_modules and classes equal transformers'",
      #mine .. " vs " .. #want)
  end

  -- one sequence, and a batch whose second row is left-padded by 4
  local ids = G:get("input_ids.a")
  local logits, _, router = model:forward(ids, {output_router_logits = true})
  local e = rel(logits, G:get("logits.a"))
  check(e < 1e-5, string.format("%s: logits within 1e-5 (%.1e)", arch, e))
  local lb = model:forward({input_ids = G:get("input_ids.b"), attention_mask = G:get("attention_mask.b")})
  local rb = G:get("logits.b")
  local e0 = rel(lb[0], rb[0])
  local e1 = rel(lb[1]:narrow(0, 4, 8), rb[1]:narrow(0, 4, 8))
  check(e0 < 1e-5 and e1 < 1e-5, string.format("%s: padded batch logits (%.1e, %.1e)", arch, e0, e1))
  for l = 0, 1 do
    local name = "router_logits.a.layer." .. l
    if G:has(name) then
      local er = rel(router[l].logits, G:get(name))
      check(er < 1e-5, string.format("%s: router logits layer %d (%.1e)", arch, l, er))
    end
  end
  if arch == "qwen3_moe" then
    check(router[1] == nil and model:get("model.layers.1.mlp").kind == "MLP", "qwen3_moe: mlp_only_layers gives a dense layer")
  end

  -- greedy: HF's tokens, with the KV cache and by full recompute
  local prompt = ids:totable()[1]
  local want = G:get("greedy.a"):totable()
  local cached = select(2, llmc.generate(model, prompt, {max_new_tokens = 8, stop_at_eos = false}))
  local full = select(2, llmc.generate(model, prompt, {max_new_tokens = 8, stop_at_eos = false, use_cache = false}))
  check(list_eq(cached, want), arch .. ": greedy tokens with the KV cache = transformers'", table.concat(cached, ","))
  check(list_eq(full, want), arch .. ": greedy tokens by full recompute = transformers'")

  -- KV cache step by step equals the full forward pass at every position
  local cache = require("llmc.models").new_cache(model, 1, 4)   -- small: forces the cache to grow
  local seq = prompt
  local first = model:forward({input_ids = {{table.unpack(seq, 1, 5)}}}, {cache = cache})
  local worst = rel(first[0], logits[0]:narrow(0, 0, 5))
  for t = 6, #seq do
    local step = model:forward({input_ids = {{seq[t]}}}, {cache = cache})
    worst = math.max(worst, rel(step[0][0], logits[0][t - 1]))
  end
  if model.model.rotary_emb.rope_type == "dynamic" then
    -- dynamic NTK rotates the cached keys with the tables of the shorter
    -- sequence they came with (as transformers does): not equal by design
    check(cache.len == #seq and worst > 1e-4, arch .. ": dynamic rope differs once the sequence outgrows the cache")
  else
    check(worst < 1e-5 and cache.len == #seq, string.format("%s: cached decoding = full forward (%.1e)", arch, worst))
  end
end

-- llama and mistral share the decoder: one checkpoint, two model types
local ldir = base .. "/llama-as-mistral"
R.write("mistral", ldir, {sliding_window = util.json.null, seed = 9})
local ms = llmc.load(ldir)
local cfg = util.json.read_file(ldir .. "/config.json")
cfg.model_type = "llama"
cfg.architectures = {"LlamaForCausalLM"}
util.write_file(ldir .. "/config.json", util.json.encode(cfg, {indent = 2}))
local ll = llmc.load(ldir)
local ids = {{1, 5, 9, 200, 17, 3, 3, 80, 41}}
check(ll.class_name == "LlamaForCausalLM" and ms.class_name == "MistralForCausalLM", "two model types")
check((ll:forward(ids) - ms:forward(ids)):abs():max() == 0, "llama and mistral (no window) agree exactly")

os.execute("rm -rf '" .. base .. "'")
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
