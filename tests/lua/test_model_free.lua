-- test_model_free.lua — llmc.model_free_ptq: for every data-free preset the
-- output (model.safetensors, config.json, model.safetensors.index.json) is
-- byte-identical to llm-compressor 0.14.0.1's model_free_ptq on the same
-- tiny-llama files (SHA-256 below; ignore = lm_head, model.embed_tokens;
-- device cpu); quantized tensors equal the oneshot path's; a sharded
-- checkpoint with NVFP4 partners split across shards gives the same tensors
-- as the single file; fused 3-D MoE tensors are split per expert; constant
-- memory; and bad input fails clearly.
local llmc = require "llmc"
local util = llmc.util
local json = util.json

local passed, failed = 0, 0
local function check(cond, msg)
  if cond then passed = passed + 1 else failed = failed + 1; io.stderr:write("FAIL: ", msg, "\n") end
end
local function errors(fn, pattern, msg)
  local ok, err = pcall(fn)
  check(not ok and tostring(err):find(pattern, 1, true) ~= nil,
        msg .. ": expected an error containing '" .. pattern .. "', got " .. tostring(ok and "success" or err))
end
if not util.fs then print("SKIP: needs the llmc executable"); os.exit(77) end
local F = util.fs
local ST = require "llmc._safetensors"
local W = require "llmc._stwriter"
local function sha256(path)
  local p = io.popen("sha256sum '" .. path .. "' 2>/dev/null")
  local s = p and p:read("a") or ""
  if p then p:close() end
  return s:match("^(%x+)")
end
if not sha256(llmc.bundled("models/tiny-llama/config.json")) then print("SKIP: sha256sum not found"); os.exit(77) end

local LC = {
  ["FP8_BLOCK"] = {"9b1e5dd3cb49ac0623862d527489e1b4054b0e1cd78ea3f1e753d7ed2355d2fa",
    "1eba0669de239005c74c3232629650381163f8d371231e0e236f08bcb1470df6",
    "97572872ce6b626644d0f51b7a81061b57d14a9f65a637dcc137b94d46618f52"},
  ["FP8_DYNAMIC"] = {"d07bfd129eaa21123dfa5ae71fcaf03f5a8b0fa09531a7f00359225bf19966ad",
    "24ce021f684bb06cb4712fe9c4f017a69153f7b118b33536c42db9fbb71f3812",
    "823eb251d3f70a9810f6a8bf447ae506fe40641798b6fb7e7f5b28e7d5c1d653"},
  ["INT8"] = {"951cf442971b6b745dec0dff660dcd204e74e577956be92f1f17bdedb93da78e",
    "3b5cefe494f4a30620c313bcf5869614f8487795fffbe8ee897cb2c26f9a4160",
    "823eb251d3f70a9810f6a8bf447ae506fe40641798b6fb7e7f5b28e7d5c1d653"},
  ["MXFP4"] = {"8378b3688eb143434b1dbcc4ca6bfa90c231ecb9c9f5f9872a6bbd93a1933ec3",
    "1f387dccac58af22b791f4e0e2849b8755622dbfc0fe2be6fff160cf60fccaca",
    "e915ae80ae2cd1ab3175de70acf69394ea61937a6fa670b795586afcd25b2c90"},
  ["MXFP4A16"] = {"8378b3688eb143434b1dbcc4ca6bfa90c231ecb9c9f5f9872a6bbd93a1933ec3",
    "7106e57350c97bdea0c305b86d269d84ee29ed5de8cf51a01988a52622ce1fac",
    "e915ae80ae2cd1ab3175de70acf69394ea61937a6fa670b795586afcd25b2c90"},
  ["MXFP8"] = {"a573d9561990c5ff0afc9ebacccbe96bd36a02206b25edbeffaae070260ad8e6",
    "b9bc1770551ffd366de156c0f45902901635d5a4f05f17ffa727c78a6b5bfcbe",
    "6c3f03e7a09518d21e68f2bfd9c7ba41fb0a9ea66618327587a50b8f9c4ddff1"},
  ["MXFP8A16"] = {"a573d9561990c5ff0afc9ebacccbe96bd36a02206b25edbeffaae070260ad8e6",
    "281891c545e66c79f3d385147e0eb5d3c546c76cf685646e015e60bea91fee35",
    "6c3f03e7a09518d21e68f2bfd9c7ba41fb0a9ea66618327587a50b8f9c4ddff1"},
  ["NVFP4A16"] = {"0eac391fc1c41bd4d8ee8f34365a7621c2eda1122663bbe29716ef4820708cbd",
    "ee20e15af1fb914e840c977597de3c7dd5945e00ba63e7293791130a9eef1213",
    "539646a91f3ecfd2cefa4235738e56344ea9ce203ee6af6ecec8de9bdf4743da"},
  ["W2A16"] = {"831afacd89c343583a33c70645778f7ac1b495bff9a9a4f02b76ad3c170d453c",
    "06d753ff6eb381b582831e97a1917b7ba65775620a5368a8d0034acacbe0c869",
    "6d6765968eec03441ee741966d6055cfbd965a4cd84a8820541a7b08b43c124d"},
  ["W2A4"] = {"5de0a1780f1ddea104bde8d2648cd180da41967663d011c5f37056f04929079c",
    "e79c31aa9ab4a946b32eb8b6066ad7c9788308052655edf5615b8b282d24795e",
    "b025ed4536ca3b1081889aeb58b1bf314d41aebc16429d46af46c82dd957ffa4"},
  ["W3A16"] = {"a991e0c2d0a3717660426d203629fb6a88a7b79a5a6daea6e6d45b2366bfd1ea",
    "37ad843b2ef840130281bb5c5f0ca549b6d3cd3956efec872afe79470dfcdb7f",
    "2d06f0decd3fdf5b6c549ceadb48f94ce71e8956858b8d15c99912c57cbc101f"},
  ["W3A8"] = {"039e21f75ca6328a962fd76503442f288a4ea030e562e41449c46daca7cb0b58",
    "eade98dc2fd7237bf5047e4a5f767b957f86e10b0744ae03e961f8413c47904f",
    "b025ed4536ca3b1081889aeb58b1bf314d41aebc16429d46af46c82dd957ffa4"},
  ["W4A16"] = {"8f70ccd53ae965db886dfb3c33da7b0015c38e4675e0d72f04177a240c445d63",
    "78962237bdbd644582313af141db104cd9b7f3368eb8c400894558fc987c37e8",
    "91d958be7a873623a70a8de7bd82acf5d382b16590f6c11139cae28dd51ed528"},
  ["W4A16_ASYM"] = {"bddd687ebe52915d92f8b8010e952f8bfd0caf289bac1bd21b38aae535452c06",
    "ea6e9acd5eeaca77a20533884295066dc1ae9a214f93a7d713f2832c4c88348b",
    "a1515a2cf5d786162c9a8852ec5aee65669e5529f1c871987bad2c4689580d99"},
  ["W4A4"] = {"227294bb856196b08ef462a2b2915333ccff8128db1442719980b622779a1bbe",
    "dbfa0145abbded6517a2245860852250b8115ec4f3405c992d308a46d19c8b98",
    "b025ed4536ca3b1081889aeb58b1bf314d41aebc16429d46af46c82dd957ffa4"},
  ["W4A8"] = {"227294bb856196b08ef462a2b2915333ccff8128db1442719980b622779a1bbe",
    "8fcb227e10dd3a2545ebe41eb776b742366a8100b8e1e4dd6f1c6b2bb0c63629",
    "b025ed4536ca3b1081889aeb58b1bf314d41aebc16429d46af46c82dd957ffa4"},
  ["W4AFP8"] = {"227294bb856196b08ef462a2b2915333ccff8128db1442719980b622779a1bbe",
    "56e314b609b0b0f7833874f9d60eaf965bc2b94f18d4cbfe0f20dfa818335a2b",
    "b025ed4536ca3b1081889aeb58b1bf314d41aebc16429d46af46c82dd957ffa4"},
  ["W5A16"] = {"403ad107a9e295bcf23896770fb70b56bae9c9b578653c39338f60a2d7d93880",
    "1225465ac0562491468adef208aac1f75069ae772538c706526685aea47dccd5",
    "c3ec4e1ae1db7873395e4f58486b7866dc9257071dc28d20ab5e794f65efc447"},
  ["W6A16"] = {"46091a160e486275e6e801122b22bc0d550b4811a2e508284f69c5245d16528b",
    "66bd82e8f2023e62f17a6c129171ffd2d6610c79163242d9110f40a248545a47",
    "910bde7b709e8b417e148cdd8ac2b07c875a3a4fa88b6be55cee44ddfe393db7"},
  ["W7A16"] = {"d9b07793c267f9c1cc085fde1dcbf497711f630b9c650049cff65fb489df6197",
    "fcedfe601de3faed628620977effa44d83e9fa0285b16aa056cf0c4cca4227e5",
    "2460e8b8f2eb9aa102e9c91933345caa9cb7cbc868fa9aa9e95379a18a92363e"},
  ["W8A16"] = {"b253559af9233ea2e003d4818cd50e88855fff35a5c94cf33065df341216cbbc",
    "a13299e4abb7fa4d56556f5833992df92a5dc4b738ad90854079fede35b6a17f",
    "30163353f958ecc6a15990e97120d3dc7915dafa84f02a55f0d9c4fb74863cf0"},
  ["W8A8"] = {"951cf442971b6b745dec0dff660dcd204e74e577956be92f1f17bdedb93da78e",
    "6730ed0c39537c8afdffc7ac4efe03ae5003e9cf7e1e5a170fc33bf71d5d6280",
    "823eb251d3f70a9810f6a8bf447ae506fe40641798b6fb7e7f5b28e7d5c1d653"},
}

local tmp = string.format("%s/llmc_test_model_free_%d", os.getenv("TMPDIR") or "/tmp", F.getpid())
F.mkdir_p(tmp)
local src = llmc.default_model()
local IGN = {"lm_head", "model.embed_tokens"}

local names = {}
for k in pairs(LC) do names[#names + 1] = k end
table.sort(names)
for _, name in ipairs(names) do
  local out = tmp .. "/" .. name
  local ok, s = pcall(llmc.model_free_ptq, {model = src, output_dir = out, scheme = name, ignore = IGN, quiet = true})
  if not ok then check(false, name .. ": " .. tostring(s)) else
    check(sha256(out .. "/model.safetensors") == LC[name][1], name .. ": model.safetensors equals llm-compressor's")
    check(sha256(out .. "/config.json") == LC[name][2], name .. ": config.json equals llm-compressor's")
    check(sha256(out .. "/model.safetensors.index.json") == LC[name][3], name .. ": index equals llm-compressor's")
    check(not F.exists(out .. "/golden.safetensors") and F.exists(out .. "/tokenizer.json"),
          name .. ": non-checkpoint safetensors skipped, other files copied")
    -- the same tensors as the oneshot path (no -0.0 weights in this fixture)
    if name == "FP8_BLOCK" or name == "W4A16" or name == "NVFP4A16" or name == "W4A16_ASYM" then
      local m = llmc.oneshot{model = src, quiet = true,
        recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = name, ignore = {"lm_head"}}}
      local f = ST.open(out)
      local bad, n = 0, 0
      for _, rec in ipairs(m.quantization_summary.records) do
        for _, t in ipairs(rec.tensors) do
          n = n + 1
          if f:get(rec.name .. "." .. t.name):bytes() ~= t.tensor:bytes() then bad = bad + 1 end
        end
      end
      f:close()
      check(n > 28 and bad == 0, string.format("%s: %d of %d tensors differ from oneshot", name, bad, n))
    end
    if name == "FP8_BLOCK" then
      -- streaming: host tensors stay at a few weights (largest quantized: 768x256 bf16 = 384 KiB)
      check(s.peak_host < 4 * 1024 * 1024, string.format("constant memory: peak host tensors %d bytes", s.peak_host))
    end
  end
end

-- a sharded copy: layer 1's q_proj alone in shard 1, k/v in shard 2, the rest in 3
local shard_dir = tmp .. "/sharded"
F.mkdir_p(shard_dir)
for _, f in ipairs({"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"}) do
  F.copy_file(src .. "/" .. f, shard_dir .. "/" .. f)
end
local base = ST.open(src .. "/model.safetensors")
local function which(n)
  if n == "model.layers.1.self_attn.q_proj.weight" then return 1 end
  if n:find("^model%.layers%.1%.self_attn%.[kv]_proj") then return 2 end
  return 3
end
local shards = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"}
local wm = json.object({})
local total = 0
for i, sn in ipairs(shards) do
  local w = W.writer(shard_dir .. "/" .. sn)
  local mine = {}
  for _, n in ipairs(base:names()) do
    if which(n) == i then
      local info = base:info(n)
      w:declare(n, info.dtype, info.shape)
      mine[#mine + 1] = n
      wm[n] = sn
      total = total + info.nbytes
    end
  end
  w:begin()
  for _, n in ipairs(mine) do w:write(n, base:get(n)) end
  w:finish()
end
util.write_file(shard_dir .. "/model.safetensors.index.json",
  json.encode({metadata = {total_size = total}, weight_map = wm}, {indent = 2}))
local s = llmc.model_free_ptq{model = shard_dir, output_dir = tmp .. "/sharded-out", scheme = "NVFP4A16", ignore = IGN, quiet = true}
local single = ST.open(tmp .. "/NVFP4A16")
local multi = ST.open(tmp .. "/sharded-out")
local same, n = true, 0
for _, name in ipairs(single:names()) do
  n = n + 1
  if not multi:has(name) or multi:get(name):bytes() ~= single:get(name):bytes() then same = false end
end
check(same and n == #multi:names(), "sharded NVFP4A16 (partners across shards) = single-file result")
local idx = json.read_file(tmp .. "/sharded-out/model.safetensors.index.json")
check(idx.weight_map["model.layers.1.self_attn.k_proj.weight_global_scale"] == shards[1] and
      idx.weight_map["model.layers.1.self_attn.q_proj.weight_packed"] == shards[1] and
      idx.weight_map["model.layers.0.self_attn.k_proj.weight_packed"] == shards[3],
      "partners are written into the shard of the primary (q_proj)")
local sum = 0
for _, sn in ipairs(shards) do
  local f = ST.open(tmp .. "/sharded-out/" .. sn)
  for _, name in ipairs(f:names()) do
    sum = sum + f:info(name).nbytes
    check(idx.weight_map[name] == sn, "index lists " .. name .. " in " .. sn)
  end
  f:close()
end
check(sum == idx.metadata.total_size and s.output_bytes == sum, "index total_size = sum of tensor bytes")
single:close(); multi:close(); base:close()

-- fused 3-D MoE experts are split per expert, then quantized
local moe = tmp .. "/moe"
F.mkdir_p(moe)
util.write_file(moe .. "/config.json", '{"model_type": "toy"}')
local gu = llmc.randn({2, 128, 64}, {seed = 1, dtype = "bfloat16"})
local dn = llmc.randn({2, 64, 64}, {seed = 2, dtype = "bfloat16"})
local norm = llmc.ones({64}, {dtype = "bfloat16"})
ST.save(moe .. "/model.safetensors", {["model.layers.0.mlp.experts.gate_up_proj"] = gu,
  ["model.layers.0.mlp.experts.down_proj"] = dn, ["model.layers.0.post_attention_layernorm.weight"] = norm})
llmc.model_free_ptq{model = moe, output_dir = moe .. "-out", scheme = "FP8_DYNAMIC", quiet = true}
local mo = ST.open(moe .. "-out")
local up1 = llmc.quant.compress(gu:select(0, 1):narrow(0, 64, 64), "FP8_DYNAMIC", {fake = false, error = false})
check(mo:has("model.layers.0.mlp.experts.0.gate_proj.weight") and mo:has("model.layers.0.mlp.experts.1.down_proj.weight_scale")
      and mo:get("model.layers.0.mlp.experts.1.up_proj.weight"):bytes() == up1.tensors[1].tensor:bytes()
      and mo:get("model.layers.0.post_attention_layernorm.weight"):bytes() == norm:bytes(),
      "gate_up_proj [2,128,64] -> experts.{0,1}.{gate,up}_proj, down_proj per expert, norms untouched")
mo:close()

-- bad input
errors(function() llmc.model_free_ptq{model = src, output_dir = tmp .. "/x", scheme = "NVFP4"} end,
       "cannot calibrate activations", "NVFP4 refused")
errors(function() llmc.model_free_ptq{model = src, output_dir = tmp .. "/x", scheme = "W4A16", config = {}} end,
       "either `scheme` or `config`", "scheme and config")
errors(function() llmc.model_free_ptq{model = src, output_dir = tmp .. "/x", scheme = "W4A16", workers = 2} end,
       "unknown argument 'workers'", "unknown key")
-- as upstream, embeddings are 2-D "weight"s of a module not ending in "norm": quantized unless ignored
llmc.model_free_ptq{model = src, output_dir = tmp .. "/emb", scheme = "W8A16", ignore = {"lm_head"}, quiet = true}
local ef = ST.open(tmp .. "/emb")
check(ef:has("model.embed_tokens.weight_packed") and not ef:has("model.embed_tokens.weight")
      and json.read_file(tmp .. "/emb/config.json").quantization_config.ignore[1] == "lm_head",
      "model_free quantizes the embedding unless ignored; ignore is the user's list")
ef:close()
errors(function() llmc.model_free_ptq{model = src, output_dir = tmp .. "/x", scheme = "MXFP4A16",
       config = nil, ignore = {"lm_head", "model.embed_tokens", "re:.*mlp.*"}, max_workers = 0} end,
       "max_workers must be a positive integer", "max_workers")
errors(function() llmc.model_free_ptq{model = src, output_dir = tmp .. "/W4A16", scheme = "W4A16", ignore = IGN} end,
       "already exists", "existing output_dir")
local toy = tmp .. "/toy"
F.mkdir_p(toy)
util.write_file(toy .. "/config.json", "{}")
ST.save(toy .. "/model.safetensors", {["ln_f.weight"] = norm, ["proj.weight"] = llmc.randn({8, 100}, {dtype = "bfloat16"})})
errors(function() llmc.model_free_ptq{model = toy, output_dir = toy .. "-a", scheme = "FP8_DYNAMIC"} end,
       "tensor ln_f.weight has shape [64]: only 2-D weights can be quantized; add 'ln_f' to ignore", "1-D weight")
errors(function() llmc.model_free_ptq{model = toy, output_dir = toy .. "-b", scheme = "W4A16", ignore = {"ln_f"}} end,
       "tensor proj.weight [8, 100]: 100 columns are not divisible by group_size 128; add 'proj' to ignore", "group size")
check(not F.exists(toy .. "-a") and not F.exists(toy .. "-b"), "no output after errors")

F.rmtree(tmp)
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)

