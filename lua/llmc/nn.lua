--[[
llmc.nn — layers of a decoder-only transformer, as modules (llmc.module)
whose forward passes call the fused C ops of "llmc._nn", plus the builder
that assembles a Hugging Face *ForCausalLM tree from a config and a small
architecture spec (lua/llmc/models/<arch>.lua).

Activations are f32 [B, T, H] tensors whatever the weight dtype (bf16 /
f16 weights are upcast exactly inside the ops), which is how the golden
numbers of the fixtures were computed.

  local nn = require "llmc.nn"
  local y = nn.linear(x, w)                       -- the functional ops of llmc._nn
  local model = nn.build_causal_lm(config, spec)  -- what llmc.load does per architecture

Layer kinds (module.kind): Linear, Embedding, RMSNorm, SiLU, RotaryEmbedding, Attention,
MLP, SparseMoeBlock, DecoderLayer, ModuleList, Model, CausalLM.  Forward contracts:
  Linear:forward(x) -> x @ W^T (+ b); `input_transform` (a function x -> x), when set,
    is applied to the input after the pre-hooks and before the matmul;
    `output_transform` likewise to the output (static activation quantization).
  Attention:forward(h, ctx): `kv_observer(attn, k, v)` (when set) sees the key and
    value states the KV cache stores ([B, T, kv_heads, head_dim], keys after RoPE);
    `kv_transform(attn, k, v) -> k', v'` (when set) replaces them (a quantized KV cache).
  MLP:forward(h), SparseMoeBlock:forward(h, ctx) (adds its top-k choices per expert
    into `block.routed_tokens` when that array is set: the calibration pipelines do),
  DecoderLayer:forward(h, ctx) -> new hidden states.
  ctx (from model:embed / model:context): positions, cos/sin (rotary tables), key_mask
    (padding), q_offset (tokens already in the KV cache), cache, router_logits (a table
    to fill, or nil), moe_all_experts (run every expert on every token, e.g. for
    calibration; the output still uses only the routed tokens).
]]
local N = require "llmc._nn"
local T = require "llmc._tensor"
local module = require "llmc.module"

local nn = {}
for k, v in pairs(N) do nn[k] = v end

local keep, free = module.keep, module.free
nn.keep, nn.free = keep, free

--- Wall-clock seconds (monotonic).
nn.now = N.now

local JSON_NULL = require("llmc.util").json.null

-- values of a decoded config.json: JSON null reads as nil
local function cv(x)
  if x == JSON_NULL then return nil end
  return x
end
nn.cv = cv

local function toint(x, what)
  local i = math.tointeger(x)
  if i == nil then error(string.format("config: %s must be an integer, got %s", what, tostring(x)), 0) end
  return i
end
nn.toint = toint

---------------------------------------------------------------------------
-- leaf layers
---------------------------------------------------------------------------

nn.Linear = module.class()

function nn.new_linear(name, in_features, out_features, bias)
  local m = module.new(nn.Linear, name, "Linear", "Linear")
  m.in_features, m.out_features, m.has_bias = in_features, out_features, bias and true or false
  return m
end

function nn.Linear:extra_repr()
  return string.format("in_features=%d, out_features=%d, bias=%s", self.in_features, self.out_features,
    self.has_bias and "True" or "False")
end

-- Parameters of a disk-offloaded module are mapped for one forward and
-- released right after it.
-- (a weight assigned since, e.g. by a modifier, lives in memory and is kept).
local function on_disk(m)
  local tied = rawget(m, "_tied")
  if tied then m = tied end
  return rawget(m, "device") == "disk" and rawget(m, "weight") == nil
end

function nn.Linear:_forward(x)
  local xin = x
  local tf = self.input_transform
  if tf then xin = tf(x) end
  local w, b = self.weight, self.has_bias and self.bias or nil
  local y = N.linear(xin, w, b)
  if xin ~= x then free(xin) end
  if on_disk(self) then
    w:release()
    if b then b:release() end
  end
  local otf = self.output_transform
  if otf then
    local yq = otf(y)
    if yq ~= y then free(y) end
    y = yq
  end
  return y
end

nn.Embedding = module.class()

function nn.new_embedding(name, num, dim)
  local m = module.new(nn.Embedding, name, "Embedding", "Embedding")
  m.num_embeddings, m.embedding_dim = num, dim
  return m
end

function nn.Embedding:extra_repr() return string.format("%d, %d", self.num_embeddings, self.embedding_dim) end
function nn.Embedding:_forward(ids)
  local w = self.weight
  local y = N.embedding(w, ids)
  if on_disk(self) then w:release() end
  return y
end

nn.RMSNorm = module.class()

function nn.new_rmsnorm(name, dim, eps, class_name)
  local m = module.new(nn.RMSNorm, name, "RMSNorm", class_name or "RMSNorm")
  m.dim, m.eps = dim, eps
  return m
end

function nn.RMSNorm:extra_repr() return string.format("(%d,), eps=%g", self.dim, self.eps) end
function nn.RMSNorm:_forward(x)
  local w = self.weight
  local y = N.rmsnorm(x, w, self.eps)
  if on_disk(self) then w:release() end
  return y
end

nn.SiLU = module.class()
function nn.SiLU:_forward(x) return x:silu() end

---------------------------------------------------------------------------
-- rotary embeddings
---------------------------------------------------------------------------

-- round a Lua number to the nearest f32 (the inv_freq tables are f32 in HF)
local function f32(x) return (string.unpack("<f", string.pack("<f", x))) end

nn.RotaryEmbedding = module.class()

--- The rotary settings of a config: head_dim, theta, scaling (rope_scaling or
--- transformers 5's rope_parameters), partial_rotary_factor.
function nn.new_rotary(name, config, head_dim, class_name)
  local m = module.new(nn.RotaryEmbedding, name, "RotaryEmbedding", class_name or "RotaryEmbedding")
  local params = cv(config.rope_parameters)
  local scaling = cv(config.rope_scaling) or params or {}
  m.base = cv(config.rope_theta) or (params and cv(params.rope_theta)) or 10000.0
  local partial = cv(config.partial_rotary_factor) or 1.0
  m.dim = math.floor(head_dim * partial)
  m.max_position_embeddings = cv(config.max_position_embeddings) or 2048
  m.rope_type = cv(scaling.rope_type) or cv(scaling.type) or "default"
  m.scaling = scaling
  local known = {default = true, linear = true, dynamic = true, llama3 = true, yarn = true}
  if not known[m.rope_type] then
    error(string.format("rotary embeddings: rope type '%s' is not supported (supported: default, linear, " ..
      "dynamic, llama3, yarn)", tostring(m.rope_type)), 0)
  end
  return m
end

function nn.RotaryEmbedding:extra_repr() return "rope_type=" .. self.rope_type end

-- 1 / base^(2i/dim) with HF's f32 roundings
local function base_inv_freq(base, dim)
  local out = {}
  for i = 0, dim - 1, 2 do
    local e = f32(f32(i) / dim)
    out[#out + 1] = f32(1.0 / f32(base ^ e))
  end
  return out
end

local function get_mscale(scale, mscale)
  mscale = mscale or 1
  if scale <= 1 then return 1.0 end
  return 0.1 * mscale * math.log(scale) + 1.0
end

--- inv_freq (a Lua array of dim/2 f32 values) and the attention scaling for
--- a forward pass whose longest sequence is seq_len (used by "dynamic").
function nn.RotaryEmbedding:inv_freq(seq_len)
  local s, dim, base, t = self.scaling, self.dim, self.base, self.rope_type
  if t == "default" then return base_inv_freq(base, dim), 1.0 end
  local factor = cv(s.factor) or 1.0
  if t == "linear" then
    local f = base_inv_freq(base, dim)
    for i = 1, #f do f[i] = f32(f[i] / factor) end
    return f, 1.0
  elseif t == "dynamic" then
    local maxp = self.max_position_embeddings
    local L = (seq_len and seq_len > maxp) and seq_len or maxp
    local b = base * ((factor * L / maxp) - (factor - 1)) ^ (dim / (dim - 2))
    return base_inv_freq(b, dim), 1.0
  elseif t == "llama3" then
    local f = base_inv_freq(base, dim)
    local low, high = cv(s.low_freq_factor) or 1.0, cv(s.high_freq_factor) or 4.0
    local old = cv(s.original_max_position_embeddings) or 8192
    local low_wavelen, high_wavelen = old / low, old / high
    for i = 1, #f do
      local wavelen = 2 * math.pi / f[i]
      local v = f[i]
      if wavelen > low_wavelen then v = f[i] / factor end
      if not (wavelen < high_wavelen) and not (wavelen > low_wavelen) then
        local smooth = (old / wavelen - low) / (high - low)
        v = (1 - smooth) * v / factor + smooth * v
      end
      f[i] = f32(v)
    end
    return f, 1.0
  else -- yarn
    local old = cv(s.original_max_position_embeddings)
    if old then factor = self.max_position_embeddings / old else old = self.max_position_embeddings end
    local attn = cv(s.attention_factor)
    local mscale, mscale_all = cv(s.mscale), cv(s.mscale_all_dim)
    if attn == nil then
      if mscale and mscale_all and mscale ~= 0 and mscale_all ~= 0 then
        attn = get_mscale(factor, mscale) / get_mscale(factor, mscale_all)
      else
        attn = get_mscale(factor)
      end
    end
    local beta_fast, beta_slow = cv(s.beta_fast) or 32, cv(s.beta_slow) or 1
    local truncate = cv(s.truncate)
    if truncate == nil then truncate = true end
    local function corr_dim(rot) return (dim * math.log(old / (rot * 2 * math.pi))) / (2 * math.log(base)) end
    local lo, hi = corr_dim(beta_fast), corr_dim(beta_slow)
    if truncate then lo, hi = math.floor(lo), math.ceil(hi) end
    lo, hi = math.max(lo, 0), math.min(hi, dim - 1)
    if lo == hi then hi = hi + 0.001 end
    local f = {}
    for k = 0, dim // 2 - 1 do
      local pos_freq = f32(base ^ f32(f32(2 * k) / dim))
      local extrap = f32(1.0 / pos_freq)
      local interp = f32(1.0 / f32(factor * pos_freq))
      local ramp = f32((k - lo) / (hi - lo))
      ramp = math.min(math.max(ramp, 0), 1)
      local ext_factor = f32(1 - ramp)
      f[k + 1] = f32(f32(interp * f32(1 - ext_factor)) + f32(extrap * ext_factor))
    end
    return f, attn
  end
end

--- cos, sin tables [B, T, dim] for positions (an int64 Tensor [B, T]).
function nn.RotaryEmbedding:tables(positions)
  local seq_len
  if self.rope_type == "dynamic" then seq_len = math.tointeger(positions:max()) + 1 end
  local key = self.rope_type == "dynamic" and seq_len or 0
  local cache = rawget(self, "_inv_cache")
  if not cache or cache.key ~= key then
    local f, scale = self:inv_freq(seq_len)
    cache = {key = key, t = T.tensor(f, "float32"), scale = scale}
    rawset(self, "_inv_cache", cache)
  end
  return N.rope_tables(cache.t, positions, cache.scale)
end

---------------------------------------------------------------------------
-- attention, MLP, MoE
---------------------------------------------------------------------------

local function tmp_list()
  local l = {}
  return function(t)
    l[#l + 1] = t
    return t
  end, function()
    for i = #l, 1, -1 do free(l[i]) end
  end
end

nn.Attention = module.class()

function nn.Attention:extra_repr()
  return string.format("heads=%d, kv_heads=%d, head_dim=%d%s", self.num_heads, self.num_kv_heads, self.head_dim,
    self.window > 0 and (", sliding_window=" .. self.window) or "")
end

function nn.Attention:_forward(x, ctx)
  local shp = x:shape()
  local B, L = shp[1], shp[2]
  local nh, nkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
  local track, release = tmp_list()
  local q = track(self.q_proj:forward(x))
  local k = track(self.k_proj:forward(x))
  local v = track(self.v_proj:forward(x))
  q, k, v = track(q:view{B, L, nh, hd}), track(k:view{B, L, nkv, hd}), track(v:view{B, L, nkv, hd})
  if self.q_norm then
    q = track(self.q_norm:forward(q))
    k = track(self.k_norm:forward(k))
  end
  q = track(N.rope(q, ctx.cos, ctx.sin))
  k = track(N.rope(k, ctx.cos, ctx.sin))
  -- the states the KV cache would store (post-RoPE keys): KV-cache
  -- calibration observes them, a quantized KV cache fake-quantizes them
  local kv_observer, kv_transform = self.kv_observer, self.kv_transform
  if kv_observer then kv_observer(self, k, v) end
  if kv_transform then k, v = kv_transform(self, k, v); track(k); track(v) end
  local kk, vv = k, v
  if ctx.cache then
    kk, vv = ctx.cache:update(self.layer_idx, k, v, ctx.q_offset)
    track(kk); track(vv)
  end
  local o = track(N.attention(q, kk, vv, {scale = self.scaling, q_offset = ctx.q_offset, key_mask = ctx.key_mask,
    window = self.window}))
  local y = self.o_proj:forward(o)
  release()
  return y
end

nn.MLP = module.class()

function nn.MLP:_forward(x)
  local n = self.proj_names
  local g = self[n.gate]:forward(x)
  local u = self[n.up]:forward(x)
  local a
  if self.act_fn:hooked() then
    local s = self.act_fn:forward(g)
    a = s * u
    free(s)
  else
    a = N.silu_mul(g, u)
  end
  free(g); free(u)
  local y = self[n.down]:forward(a)
  free(a)
  return y
end

nn.SparseMoeBlock = module.class()

function nn.SparseMoeBlock:extra_repr()
  return string.format("experts=%d, top_k=%d, norm_topk_prob=%s", self.num_experts, self.top_k,
    self.norm_topk_prob and "True" or "False")
end

-- Tokens routed to each expert (its top-k choices; padding positions
-- included, the router sees them too) are added into block.routed_tokens,
-- an array over experts 1..E, when someone asked for them by setting that
-- field: the calibration pipelines do for their calibration pass only
-- (not for the propagation pass, nor for plain inference).
local function count_routed(block, groups)
  local c = rawget(block, "routed_tokens")
  for e = 1, block.num_experts do
    local g = groups[e]
    c[e] = (c[e] or 0) + (g and g.count or 0)
  end
end

function nn.SparseMoeBlock:_forward(x, ctx)
  local shp = x:shape()
  local H = shp[#shp]
  local n = x:numel() // H
  local flat = x:view{n, H}
  local logits = self.gate:forward(flat)
  local ids, w = N.moe_route(logits, self.top_k, self.norm_topk_prob)
  local out = T.zeros({n, H})
  local groups = N.moe_dispatch(ids, self.num_experts, w)
  if rawget(self, "routed_tokens") then count_routed(self, groups) end
  local all = ctx and ctx.moe_all_experts
  for e = 1, self.num_experts do
    local g = groups[e]
    local expert = self.experts.children[e]
    if all then
      local y = expert:forward(flat)
      if g then
        local rows = N.gather_rows(y, g.tokens)
        N.index_add_rows_(out, g.tokens, rows, g.weights)
        free(rows)
      end
      free(y)
    elseif g then
      local rows = N.gather_rows(flat, g.tokens)
      local y = expert:forward(rows)
      N.index_add_rows_(out, g.tokens, y, g.weights)
      free(rows); free(y)
    end
  end
  if ctx and ctx.router_logits then
    ctx.router_logits[self.layer_idx] = {logits = keep(logits), ids = keep(ids), weights = keep(w)}
  else
    free(logits); free(ids); free(w)
  end
  free(flat)
  local res = out:view(shp)
  free(out)
  return res
end

nn.DecoderLayer = module.class()

function nn.DecoderLayer:_forward(x, ctx)
  local h = self.input_layernorm:forward(x)
  local a = self.self_attn:forward(h, ctx)
  free(h)
  local h1 = x + a
  free(a)
  local h2 = self.post_attention_layernorm:forward(h1)
  local m = self[self.mlp_attr]:forward(h2, ctx)
  free(h2)
  local out = h1 + m
  free(h1); free(m)
  return out
end

---------------------------------------------------------------------------
-- building a tree from a config
---------------------------------------------------------------------------

local function list(name)
  return module.new(module.Base, name, "ModuleList", "ModuleList")
end
nn.new_list = list

local function join(a, b) return a == "" and b or (a .. "." .. b) end
nn.join = join

--- Dense SiLU-gated MLP with the given projection names (HF order: gate, up,
--- down, act_fn for Llama; w1, w2, w3, act_fn for Mixtral's experts).
function nn.new_mlp(name, hidden, inter, bias, class_name, names)
  names = names or {gate = "gate_proj", up = "up_proj", down = "down_proj", order = {"gate", "up", "down"}}
  local m = module.new(nn.MLP, name, "MLP", class_name)
  m.proj_names = names
  m.hidden_size, m.intermediate_size = hidden, inter
  for _, role in ipairs(names.order) do
    local attr = names[role]
    if role == "down" then
      m:add(attr, nn.new_linear(join(name, attr), inter, hidden, bias))
    else
      m:add(attr, nn.new_linear(join(name, attr), hidden, inter, bias))
    end
  end
  m:add("act_fn", module.new(nn.SiLU, join(name, "act_fn"), "SiLU", "SiLUActivation"))
  return m
end

--- Sparse MoE block: router `gate` [E, hidden] and `experts` (a ModuleList
--- of MLPs).  spec: num_experts, top_k, norm_topk_prob, moe_intermediate,
--- class_name, expert_class, expert_names.
function nn.new_moe(name, hidden, spec)
  local m = module.new(nn.SparseMoeBlock, name, "SparseMoeBlock", spec.class_name)
  m.num_experts, m.top_k, m.norm_topk_prob = spec.num_experts, spec.top_k, spec.norm_topk_prob
  m:add("gate", nn.new_linear(join(name, "gate"), hidden, spec.num_experts, false))
  local experts = m:add("experts", list(join(name, "experts")))
  for e = 0, spec.num_experts - 1 do
    experts:add(tostring(e), nn.new_mlp(join(experts.name, tostring(e)), hidden, spec.moe_intermediate, false,
      spec.expert_class, spec.expert_names))
  end
  return m
end

--- Common config fields, checked.
function nn.dims(config)
  local H = toint(cv(config.hidden_size), "hidden_size")
  local nh = toint(cv(config.num_attention_heads), "num_attention_heads")
  local nkv = toint(cv(config.num_key_value_heads) or nh, "num_key_value_heads")
  local hd = cv(config.head_dim) and toint(config.head_dim, "head_dim") or H // nh
  local d = {
    hidden = H, heads = nh, kv_heads = nkv, head_dim = hd,
    layers = toint(cv(config.num_hidden_layers), "num_hidden_layers"),
    vocab = toint(cv(config.vocab_size), "vocab_size"),
    intermediate = cv(config.intermediate_size) and toint(config.intermediate_size, "intermediate_size") or nil,
    eps = cv(config.rms_norm_eps) or 1e-6,
    tie = cv(config.tie_word_embeddings),
  }
  if d.tie == nil then d.tie = true end   -- PretrainedConfig's default
  if nh % nkv ~= 0 then
    error(string.format("config: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)", nh, nkv), 0)
  end
  return d
end

--- Sliding window of layer i (0 = none): config.layer_types when present,
--- else the architecture's rule (spec.sliding_window(config, i)).
local function layer_window(config, spec, i)
  local types = cv(config.layer_types)
  local sw = cv(config.sliding_window)
  if types and types[i + 1] then
    if types[i + 1] == "sliding_attention" and sw then return toint(sw, "sliding_window") end
    return 0
  end
  if spec.sliding_window then return spec.sliding_window(config, i) or 0 end
  return 0
end

--- Build `<Prefix>ForCausalLM` for a decoder-only config.  spec:
---   prefix          "Llama", "Qwen3", ... (transformers class names)
---   qkv_bias, o_bias  biases of the attention projections (default config.attention_bias)
---   qk_norm         Qwen3's per-head RMSNorm of q and k
---   mlp(layer_name, i, config, dims) -> attr, module   (default: dense MLP "mlp")
---   sliding_window(config, i) -> window or 0
function nn.build_causal_lm(config, spec)
  local d = nn.dims(config)
  local P = spec.prefix
  local root = module.new(spec.model_class or nn.CausalLM, "", "CausalLM", P .. "ForCausalLM")
  local inner = root:add("model", module.new(module.Base, "model", "Model", P .. "Model"))
  inner:add("embed_tokens", nn.new_embedding("model.embed_tokens", d.vocab, d.hidden))
  local layers = inner:add("layers", list("model.layers"))
  local attn_bias = cv(config.attention_bias) or false
  local qkv_bias = spec.qkv_bias
  if qkv_bias == nil then qkv_bias = attn_bias end
  local o_bias = spec.o_bias
  if o_bias == nil then o_bias = attn_bias end
  root.layers = {}
  for i = 0, d.layers - 1 do
    local ln = "model.layers." .. i
    local layer = layers:add(tostring(i), module.new(nn.DecoderLayer, ln, "DecoderLayer", P .. "DecoderLayer"))
    layer.layer_idx = i
    local an = ln .. ".self_attn"
    local attn = layer:add("self_attn", module.new(nn.Attention, an, "Attention", P .. "Attention"))
    attn.layer_idx, attn.num_heads, attn.num_kv_heads, attn.head_dim = i, d.heads, d.kv_heads, d.head_dim
    attn.scaling = d.head_dim ^ -0.5
    attn.window = layer_window(config, spec, i)
    attn:add("q_proj", nn.new_linear(an .. ".q_proj", d.hidden, d.heads * d.head_dim, qkv_bias))
    attn:add("k_proj", nn.new_linear(an .. ".k_proj", d.hidden, d.kv_heads * d.head_dim, qkv_bias))
    attn:add("v_proj", nn.new_linear(an .. ".v_proj", d.hidden, d.kv_heads * d.head_dim, qkv_bias))
    attn:add("o_proj", nn.new_linear(an .. ".o_proj", d.heads * d.head_dim, d.hidden, o_bias))
    if spec.qk_norm then
      attn:add("q_norm", nn.new_rmsnorm(an .. ".q_norm", d.head_dim, d.eps, P .. "RMSNorm"))
      attn:add("k_norm", nn.new_rmsnorm(an .. ".k_norm", d.head_dim, d.eps, P .. "RMSNorm"))
    end
    local attr, mlp
    if spec.mlp then
      attr, mlp = spec.mlp(ln, i, config, d)
    else
      attr, mlp = "mlp", nn.new_mlp(ln .. ".mlp", d.hidden, d.intermediate, cv(config.mlp_bias) or false, P .. "MLP")
    end
    layer:add(attr, mlp)
    mlp.layer_idx = i
    layer.mlp_attr = attr
    layer:add("input_layernorm", nn.new_rmsnorm(ln .. ".input_layernorm", d.hidden, d.eps, P .. "RMSNorm"))
    layer:add("post_attention_layernorm",
      nn.new_rmsnorm(ln .. ".post_attention_layernorm", d.hidden, d.eps, P .. "RMSNorm"))
    root.layers[i + 1] = layer
  end
  inner:add("norm", nn.new_rmsnorm("model.norm", d.hidden, d.eps, P .. "RMSNorm"))
  inner:add("rotary_emb", nn.new_rotary("model.rotary_emb", config, d.head_dim, P .. "RotaryEmbedding"))
  root:add("lm_head", nn.new_linear("lm_head", d.hidden, d.vocab, false))
  root.dims = d
  return root
end

--- Expected parameter shapes of every Linear / Embedding / RMSNorm (for
--- checking a checkpoint): iterator of (full name, module, pname, shape).
function nn.expected_params(root)
  local out = {}
  for name, m in root:named_modules() do
    if m.kind == "Linear" then
      out[#out + 1] = {name .. ".weight", m, "weight", {m.out_features, m.in_features}}
      if m.has_bias then out[#out + 1] = {name .. ".bias", m, "bias", {m.out_features}} end
    elseif m.kind == "Embedding" then
      out[#out + 1] = {name .. ".weight", m, "weight", {m.num_embeddings, m.embedding_dim}}
    elseif m.kind == "RMSNorm" then
      out[#out + 1] = {name .. ".weight", m, "weight", {m.dim}}
    end
  end
  return out
end

-- the CausalLM class (model-level methods) lives in llmc.models
nn.CausalLM = module.class()

return nn
