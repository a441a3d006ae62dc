-- tiny-llama (the bundled fixture) against its golden numbers: logits of the four
-- prompts at every position, hidden states after each layer, the long sequence's
-- NLL / logsumexp / argmax, the greedy continuations token for token (KV cache and
-- full recompute, single and batched with left padding), and the module API
-- (names and order as transformers' named_modules, patterns, hooks, weight
-- replacement, input_transform, untie_embeddings, layer-by-layer pipeline).
-- References: fixtures/models/tiny-llama/golden.{json,safetensors} (computed in fp32
-- by a reimplementation of the Hugging Face code and checked against transformers).

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
local function check_err(fn, pattern, what)
  local ok, err = pcall(fn)
  check(not ok and tostring(err):find(pattern, 1, true) ~= nil, what, ok and "no error" or tostring(err))
end
-- max over rows of max|a - b| / max|b| (per row: "1e-4 relative at every position")
local function row_rel(a, b)
  local worst = 0
  local n = b:shape()[1]
  for i = 0, n - 1 do
    local ra, rb = a[i], b[i]
    local d = (ra - rb):abs():max() / rb:abs():max()
    if d > worst or d ~= d then worst = d end
  end
  return worst
end
local function list_eq(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local dir = llmc.bundled("models/tiny-llama")
local golden = util.json.read_file(dir .. "/golden.json")
local G = S.open(dir .. "/golden.safetensors")
local model = llmc.load(dir)

-- ---- the tree -----------------------------------------------------------------------
check(model.arch == "llama" and model.dtype == "bfloat16", "arch and dtype", model.arch .. " " .. model.dtype)
check(model:num_parameters() == 11340032, "parameter count (README: 11,340,032)", model:num_parameters())
check(#model.layers == 4, "4 decoder layers")
-- transformers 5.23 LlamaForCausalLM.named_modules(), first 18 entries, with classes
local hf_first = {
  {"", "LlamaForCausalLM"}, {"model", "LlamaModel"}, {"model.embed_tokens", "Embedding"},
  {"model.layers", "ModuleList"}, {"model.layers.0", "LlamaDecoderLayer"},
  {"model.layers.0.self_attn", "LlamaAttention"}, {"model.layers.0.self_attn.q_proj", "Linear"},
  {"model.layers.0.self_attn.k_proj", "Linear"}, {"model.layers.0.self_attn.v_proj", "Linear"},
  {"model.layers.0.self_attn.o_proj", "Linear"}, {"model.layers.0.mlp", "LlamaMLP"},
  {"model.layers.0.mlp.gate_proj", "Linear"}, {"model.layers.0.mlp.up_proj", "Linear"},
  {"model.layers.0.mlp.down_proj", "Linear"}, {"model.layers.0.mlp.act_fn", "SiLUActivation"},
  {"model.layers.0.input_layernorm", "LlamaRMSNorm"}, {"model.layers.0.post_attention_layernorm", "LlamaRMSNorm"},
  {"model.layers.1", "LlamaDecoderLayer"},
}
local names = {}
for name, m in model:modules() do names[#names + 1] = {name, m.class_name} end
local ok = true
for i, e in ipairs(hf_first) do ok = ok and names[i][1] == e[1] and names[i][2] == e[2] end
check(ok, "named_modules order and classes match transformers")
check(#names == 59 and names[57][1] == "model.norm" and names[58][1] == "model.rotary_emb" and names[59][1] == "lm_head",
  "59 modules ending with norm, rotary_emb, lm_head", #names)
local lin = 0
for _, m in model:modules("Linear") do lin = lin + 1; check(m.kind == "Linear", "kind filter") end
check(lin == 29, "29 Linear modules (7 per layer + lm_head)", lin)
local qkv = {}
for name in model:modules("re:.*(q|k|v)_proj$") do qkv[#qkv + 1] = name end
check(#qkv == 12 and qkv[1] == "model.layers.0.self_attn.q_proj" and qkv[3] == "model.layers.0.self_attn.v_proj",
  "re: pattern (fullmatch)", #qkv)
local none = 0
for _ in model:modules("re:q_proj") do none = none + 1 end
check(none == 0, "re: must match the whole name")
local n_dec = 0
for _ in model:modules("LlamaDecoderLayer") do n_dec = n_dec + 1 end
check(n_dec == 4, "class-name pattern")
local both = 0
for _ in model:modules({"lm_head", "re:.*down_proj$"}) do both = both + 1 end
check(both == 5, "list pattern", both)
local q = model:get("model.layers.2.self_attn.q_proj")
check(q and q.in_features == 256 and q.out_features == 256 and q.kind == "Linear", "get + Linear fields")
check(model:get("nope") == nil, "get of a missing name is nil")
check(model.lm_head.weight == nil or model:tied(), "lm_head tied")
-- named_parameters: HF names, the checkpoint's tensors exactly (tied lm_head excluded)
local st = S.open(dir .. "/model.safetensors")
local pn = {}
for name, t in model:named_parameters() do
  pn[#pn + 1] = name
  local info = st:info(name)
  check(info ~= nil and list_eq(info.shape, t:shape()), "parameter " .. name .. " shape")
end
local stn = st:names()
table.sort(stn)
local sorted = {table.unpack(pn)}
table.sort(sorted)
check(list_eq(sorted, stn), "named_parameters = checkpoint tensor names")
check(pn[1] == "model.embed_tokens.weight" and pn[2] == "model.layers.0.self_attn.q_proj.weight", "parameter order")
local lp = {}
for name in model.layers[1]:named_parameters() do lp[#lp + 1] = name end
check(lp[1] == "self_attn.q_proj.weight" and #lp == 9, "module-relative parameter names", lp[1])
local tree = model:tree()
check(tree:find("(q_proj): Linear(in_features=256, out_features=256, bias=False, weight=[256, 256] bfloat16)", 1, true)
  ~= nil, "tree printing", tree:sub(1, 200))
check(tostring(q):find("model.layers.2.self_attn.q_proj", 1, true) ~= nil, "module tostring")

-- ---- logits and hidden states against golden -------------------------------------------
local tok = model:tokenizer()
for p = 0, 3 do
  local want = G:get("input_ids." .. p):totable()
  local ids = tok:encode(golden.prompts[p + 1].text)
  check(list_eq(ids, want), "tokenizer ids of prompt " .. p)
  local logits = model:forward({input_ids = {want}})
  local e = row_rel(logits[0], G:get("logits." .. p))
  check(e < 1e-4, string.format("logits of prompt %d within 1e-4 (got %.2e)", p, e))
end
local ids0 = G:get("input_ids.0"):totable()
local _, hs = model:forward({input_ids = {ids0}}, {output_hidden_states = true})
check(#hs == 6, "embed + 4 layers + final norm")
local hname = {"hidden.embed", "hidden.layer.0", "hidden.layer.1", "hidden.layer.2", "hidden.layer.3", "hidden.final_norm"}
for i, n in ipairs(hname) do
  local e = row_rel(hs[i][0], G:get(n))
  check(e < 1e-4, string.format("%s within 1e-4 (got %.2e)", n, e))
end
-- layer by layer: embed, layers, head equal forward
local h, ctx = model:embed({input_ids = {ids0}})
for _, layer in ipairs(model.layers) do h = layer:forward(h, ctx) end
local lg = model:head(h)
check(row_rel(lg[0], G:get("logits.0")) < 1e-4, "embed + layer:forward + head reproduce the logits")
-- the long sequence: per-position NLL, logsumexp, argmax
local long = G:get("long.input_ids")
local ll = model:forward(long)
local nn = require "llmc.nn"
local T = llmc.tensor
local flat = ll[0]
local tg = {}
local lids = long:totable()
for i = 2, #lids do tg[#tg + 1] = lids[i] end
tg[#tg + 1] = -100
local nll, lse = nn.cross_entropy(flat, T(tg, "int64"))
local gn, gl, ga = G:get("long.nll"), G:get("long.logsumexp"), G:get("long.argmax")
local worst_n, worst_l, arg_ok, mean = 0, 0, true, 0
local am = flat:argmax(1)
for i = 0, 58 do
  worst_n = math.max(worst_n, math.abs(nll:get(i) - gn:get(i)) / math.abs(gn:get(i)))
  mean = mean + nll:get(i)
end
for i = 0, 59 do
  worst_l = math.max(worst_l, math.abs(lse:get(i) - gl:get(i)) / math.abs(gl:get(i)))
  arg_ok = arg_ok and am:get(i) == ga:get(i)
end
check(worst_n < 1e-4 and worst_l < 1e-5, string.format("long NLL / logsumexp (%.1e, %.1e)", worst_n, worst_l))
check(arg_ok, "long argmax at every position")
check(math.abs(mean / 59 - golden.long.mean_nll) < 1e-4, "long mean NLL", mean / 59)

-- ---- generation -----------------------------------------------------------------------
for p = 0, 3 do
  local want = G:get("greedy_ids." .. p):totable()
  local text, new = llmc.generate(model, golden.prompts[p + 1].text, {max_new_tokens = 24})
  check(list_eq(new, want), "greedy continuation (KV cache) of prompt " .. p, table.concat(new, ","))
  check(text == golden.greedy[p + 1].new_text, "decoded continuation of prompt " .. p, text)
end
local _, full = llmc.generate(model, G:get("input_ids.1"):totable(), {max_new_tokens = 24, use_cache = false})
check(list_eq(full, G:get("greedy_ids.1"):totable()), "greedy continuation by full recompute")
-- a batch: prompts of different lengths, left padded, same tokens as one by one
local texts, news = llmc.generate(model, {golden.prompts[1].text, golden.prompts[3].text, golden.prompts[2].text},
  {max_new_tokens = 24})
check(list_eq(news[1], G:get("greedy_ids.0"):totable()) and list_eq(news[2], G:get("greedy_ids.2"):totable()) and
  list_eq(news[3], G:get("greedy_ids.1"):totable()), "batched greedy generation with left padding")
check(texts[2] == golden.greedy[3].new_text, "batched text")
-- sampling: deterministic per seed, different across seeds, top_k = 1 is greedy
local s1 = select(2, llmc.generate(model, "The kernel", {max_new_tokens = 12, temperature = 1.0, seed = 5}))
local s2 = select(2, llmc.generate(model, "The kernel", {max_new_tokens = 12, temperature = 1.0, seed = 5}))
local s3 = select(2, llmc.generate(model, "The kernel", {max_new_tokens = 12, temperature = 1.0, seed = 6}))
check(list_eq(s1, s2) and not list_eq(s1, s3), "sampling reproducible per seed")
local k1 = select(2, llmc.generate(model, "The kernel", {max_new_tokens = 12, temperature = 0.7, top_k = 1, seed = 3}))
check(list_eq(k1, {table.unpack(G:get("greedy_ids.2"):totable(), 1, 12)}), "top_k = 1 sampling is greedy")
local _, e_ids, e_info = llmc.generate(model, "The kernel", {max_new_tokens = 5, eos_token_id = 349})
check(#e_ids == 1 and e_ids[1] == 349 and e_info.stopped_at_eos, "stops at a given eos id")

-- ---- hooks, weight replacement, input_transform ------------------------------------------
local seen = {}
local h1 = model:get("model.layers.1.mlp.down_proj"):register_forward_hook(function(m, x, y)
  seen[#seen + 1] = {m.name, x:shape()[3], y:shape()[3]}
end)
local h2 = model.layers[1]:register_forward_pre_hook(function(m, x) seen.pre = m.name end)
local base = model:forward({input_ids = {ids0}})
check(#seen == 1 and seen[1][2] == 768 and seen[1][3] == 256 and seen.pre == "model.layers.0",
  "forward hook and pre-hook see module, input, output")
h1:remove(); h2:remove()
model:forward({input_ids = {ids0}})
check(#seen == 1, "removed hooks do not run")
-- a hook replacing the output changes the logits
local hz = model:get("model.layers.3.mlp"):register_forward_hook(function(_, _, y) return y * 0 end)
local changed = model:forward({input_ids = {ids0}})
hz:remove()
check((changed - base):abs():max() > 1e-2, "a forward hook's return value replaces the output")
-- assigning a weight is honoured by the forward pass, and restoring it restores the logits
local o = model:get("model.layers.0.self_attn.o_proj")
local orig = o.weight
o.weight = orig:to("float32") * 0.5
local half = model:forward({input_ids = {ids0}})
check((half - base):abs():max() > 1e-2, "replaced weight used")
o.weight = orig
check((model:forward({input_ids = {ids0}}) - base):abs():max() == 0, "restored weight gives the same logits")
local calls = 0
o.input_transform = function(x) calls = calls + 1; return x * 0 end
local zeroed = model:forward({input_ids = {ids0}})
o.input_transform = nil
check(calls == 1 and (zeroed - base):abs():max() > 1e-2, "input_transform applied before the matmul")

-- ---- dtype, untie, errors ---------------------------------------------------------------
local m32 = llmc.load(dir, {dtype = "float32"})
check(m32.dtype == "float32" and m32.model.embed_tokens.weight:dtype() == "float32", "dtype = float32")
check(row_rel(m32:forward({input_ids = {ids0}})[0], G:get("logits.0")) < 1e-4, "float32 weights give the same logits")
check(m32:untie_embeddings() and not m32:tied(), "untie_embeddings")
local head_w, emb_w = m32.lm_head.weight, m32.model.embed_tokens.weight
check((head_w - emb_w):abs():max() == 0, "untied lm_head starts equal to the embedding")
emb_w:set(5, 3, 123.0)
check(head_w:get(5, 3) ~= 123.0, "untied lm_head has its own storage")
local pcount = 0
for name in m32:named_parameters() do if name == "lm_head.weight" then pcount = pcount + 1 end end
check(pcount == 1 and m32.config.tie_word_embeddings == false, "lm_head.weight is a parameter after untying")
check_err(function() llmc.load(dir, {device_map = "cuda"}) end, "device_map 'cuda'", "cuda device_map errors clearly")
check_err(function() llmc.load(dir, {dtpye = "auto"}) end, "unknown option 'dtpye'", "unknown load option")
check_err(function() llmc.load("/nonexistent") end, "config.json not found", "missing directory")
check_err(function() model:forward({input_ids = {{1, 40000}}}) end, "token id 40000", "id out of vocabulary")

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
