--[[
llmc.models — llmc.load(path, opts): a Hugging Face model directory as a module tree
(llmc.module / llmc.nn) with a CPU forward pass; the architecture registry.

  local llmc = require "llmc"
  local model = llmc.load(llmc.default_model(), {dtype = "auto", device_map = "cpu"})
  print(model.arch, model.dtype, model:num_parameters())            -- llama bfloat16 11340032
  for name, m in model:modules("re:.*mlp\\.(gate|up)_proj$") do print(name, m.weight) end
  local logits = model:forward({input_ids = {{1, 415, 13653}}})      -- [1, 3, 32000] f32
  local hidden, ctx = model:embed({input_ids = ids})                  -- layer by layer:
  for _, layer in ipairs(model.layers) do hidden = layer:forward(hidden, ctx) end
  local logits2 = model:head(hidden)

load options (unknown keys are an error):
  dtype         "auto" (config torch_dtype / dtype, else the checkpoint's) | "bfloat16" | "float16"
                | "float32": the dtype parameters are held in; compute is f32 either way
  device_map    "cpu" (default) | "auto" | "auto_offload" | "cuda" (needs a GPU build: errors here)
  max_memory    {cpu = bytes or "2GB"}: parameters beyond it go to disk (needs offload_folder)
  offload_folder  where disk-placed parameters are written (one safetensors file per module)

Model fields: config (config.json, JSON nulls as util.json.null), path, arch (model_type),
dtype, layers (the DecoderLayer modules, 1-based), dims (hidden, heads, ...), unused_tensors
(checkpoint tensors no module uses).  Methods: see CausalLM below and llmc.module.
Architectures: M.architectures[model_type] = "llmc.models.<file>"; each file returns
{build = function(config) -> root module}.  M.register(model_type, module_or_name) adds one.
]]
local S = require "llmc._safetensors"
local T = require "llmc._tensor"
local nn = require "llmc.nn"
local module = require "llmc.module"
local util = require "llmc.util"

local M = {}

M.architectures = {
  llama = "llmc.models.llama",
  mistral = "llmc.models.llama",
  qwen2 = "llmc.models.qwen2",
  qwen3 = "llmc.models.qwen3",
  qwen3_moe = "llmc.models.qwen3_moe",
  mixtral = "llmc.models.mixtral",
}

--- Register an architecture: model_type -> a module name or a table with build(config).
function M.register(model_type, impl) M.architectures[model_type] = impl end

local keep, free = module.keep, module.free
local cv = nn.cv

---------------------------------------------------------------------------
-- batches
---------------------------------------------------------------------------

local function is_tensor(x) return T.is_tensor(x) end

-- input_ids / attention_mask in any accepted form -> int64 Tensors [B, T]
-- (mask nil when there is no padding)
local function batch_tensors(batch)
  local ids, mask, pos
  if is_tensor(batch) then
    ids = batch
  elseif type(batch) == "table" and (batch.input_ids ~= nil) then
    ids, mask, pos = batch.input_ids, batch.attention_mask, batch.position_ids
  elseif type(batch) == "table" then
    ids = batch
  else
    error("forward: batch must be a Tensor, a list of token ids, a list of lists, or {input_ids=..., attention_mask=...}", 3)
  end
  if not is_tensor(ids) then
    if type(ids) ~= "table" or #ids == 0 then error("forward: input_ids is empty", 3) end
    if type(ids[1]) ~= "table" then ids = {ids} end
    -- ragged rows without a mask: pad on the right (id 0) and mask the pads
    local L = 0
    for _, r in ipairs(ids) do L = math.max(L, #r) end
    local ragged = false
    for _, r in ipairs(ids) do if #r ~= L then ragged = true end end
    if ragged then
      if mask ~= nil then error("forward: rows of input_ids differ in length; pad them to match attention_mask", 3) end
      local pids, pm = {}, {}
      for b, r in ipairs(ids) do
        local row, mrow = {}, {}
        for t = 1, L do row[t] = r[t] or 0; mrow[t] = r[t] and 1 or 0 end
        pids[b], pm[b] = row, mrow
      end
      ids, mask = pids, pm
    end
    ids = T.tensor(ids, "int64")
  elseif ids:dim() == 1 then
    ids = ids:view{1, ids:numel()}
  end
  if ids:dim() ~= 2 then error("forward: input_ids must be [batch, seq]", 3) end
  if mask ~= nil then
    if not is_tensor(mask) then
      if type(mask[1]) ~= "table" then mask = {mask} end
      mask = T.tensor(mask, "int64")
    elseif mask:dim() == 1 then
      mask = mask:view{1, mask:numel()}
    end
    local ms, is = mask:shape(), ids:shape()
    if ms[1] ~= is[1] or ms[2] ~= is[2] then error("forward: attention_mask shape differs from input_ids", 3) end
  end
  if pos ~= nil and not is_tensor(pos) then
    if type(pos[1]) ~= "table" then pos = {pos} end
    pos = T.tensor(pos, "int64")
  end
  return ids, mask, pos
end
M.batch_tensors = batch_tensors

---------------------------------------------------------------------------
-- KV cache
---------------------------------------------------------------------------

local Cache = {}
Cache.__index = Cache
M.KVCache = Cache

--- A KV cache for `model` and `batch` rows with room for `capacity` tokens
--- (it grows when needed).  cache.len = tokens already processed.
function M.new_cache(model, batch, capacity)
  local d = model.dims
  return setmetatable({layers = {}, len = 0, batch = batch, capacity = math.max(capacity or 64, 1),
    kv_heads = d.kv_heads, head_dim = d.head_dim, mask = nil}, Cache)
end

local function grow(t, cap)
  local s = t:shape()
  local n = T.zeros({s[1], cap, s[3], s[4]})
  n:narrow(1, 0, s[2]):copy_(t)
  return n
end

--- Store k, v [B, T, nkv, hd] of layer `idx` at position `at`; returns views
--- of the cached keys and values [B, at + T, nkv, hd].
function Cache:update(idx, k, v, at)
  local L = k:shape()[2]
  local need = at + L
  local e = self.layers[idx + 1]
  if not e then
    local cap = math.max(self.capacity, need)
    e = {k = T.zeros({self.batch, cap, self.kv_heads, self.head_dim}),
         v = T.zeros({self.batch, cap, self.kv_heads, self.head_dim})}
    self.layers[idx + 1] = e
  elseif e.k:shape()[2] < need then
    local cap = math.max(2 * e.k:shape()[2], need)
    local nk, nv = grow(e.k, cap), grow(e.v, cap)
    e.k:release(); e.v:release()
    e.k, e.v = nk, nv
  end
  local dk, dv = e.k:narrow(1, at, L), e.v:narrow(1, at, L)
  dk:copy_(k); dv:copy_(v)
  dk:release(); dv:release()
  return e.k:narrow(1, 0, need), e.v:narrow(1, 0, need)
end

--- Record the padding mask of the new tokens; returns the key mask over
--- [0, len + T) or nil when no key is padding.
function Cache:key_mask(mask, B, L)
  local need = self.len + L
  if mask == nil and self.mask == nil then return nil end
  if self.mask == nil or self.mask:shape()[2] < need then
    local cap = math.max(need, self.capacity)
    local m = T.ones({B, cap}, "int64")
    if self.mask then m:narrow(1, 0, self.len):copy_(self.mask:narrow(1, 0, self.len)) end
    self.mask = m
  end
  if mask then self.mask:narrow(1, self.len, L):copy_(mask) end
  return self.mask:narrow(1, 0, need)
end

---------------------------------------------------------------------------
-- the model class
---------------------------------------------------------------------------

local CausalLM = nn.CausalLM
M.CausalLM = CausalLM

--- The forward context of a batch (see llmc.nn): returns ctx, ids.
--- opts: cache (a KV cache), output_router_logits, moe_all_experts.
function CausalLM:context(batch, opts)
  opts = opts or {}
  local ids, mask, pos = batch_tensors(batch)
  local s = ids:shape()
  local B, L = s[1], s[2]
  local cache = opts.cache
  local past = cache and cache.len or 0
  if mask ~= nil and mask:min() ~= 0 and not cache then mask = nil end
  local key_mask
  if cache then key_mask = cache:key_mask(mask, B, L) else key_mask = mask end
  if pos == nil then
    local row = T.arange(past, past + L, "int64")
    pos = row:view{1, L}:expand{B, L}:contiguous()
  end
  local cos, sin = self.model.rotary_emb:tables(pos)
  local ctx = {batch = B, seq = L, q_offset = past, positions = pos, key_mask = key_mask, cos = cos, sin = sin,
    cache = cache, router_logits = opts.output_router_logits and {} or nil, moe_all_experts = opts.moe_all_experts}
  return ctx, ids
end

--- Embed a batch: hidden [B, T, H] f32 and the context for the layers.
function CausalLM:embed(batch, opts)
  local ctx, ids = self:context(batch, opts)
  local h = self.model.embed_tokens:forward(ids)
  return h, ctx
end

--- Final norm and lm_head: logits [B, T, V] f32 (opts.last_only: [B, 1, V]).
function CausalLM:head(hidden, opts)
  local h = hidden
  if opts and opts.last_only then
    local L = hidden:shape()[2]
    h = hidden:narrow(1, L - 1, 1)
  end
  local n = self.model.norm:forward(h)
  if h ~= hidden then free(h) end
  local logits = self.lm_head:forward(n)
  free(n)
  return logits
end

--- Forward pass: logits [B, T, vocab] f32.
--- opts: cache (KV cache, advanced by T), last_only (logits of the last
--- position only), skip_head (return the last layer's output [B, T, H]
--- instead of logits: model:head can then run on slices), output_hidden_states (second result: {embed, layer outputs...,
--- final norm}), output_router_logits (third result: per-layer {logits, ids, weights},
--- 0-based layer index), moe_all_experts.
function CausalLM:_forward(batch, opts)
  opts = opts or {}
  local h, ctx = self:embed(batch, opts)
  local hidden_states = opts.output_hidden_states and {keep(h)} or nil
  for _, layer in ipairs(self.layers) do
    local nh = layer:forward(h, ctx)
    if hidden_states then hidden_states[#hidden_states + 1] = keep(nh) else free(h) end
    h = nh
  end
  if hidden_states then hidden_states[#hidden_states + 1] = keep(self.model.norm:forward(h)) end
  free(ctx.cos); free(ctx.sin)
  if ctx.cache then ctx.cache.len = ctx.cache.len + ctx.seq end
  if opts.skip_head then return h, hidden_states, ctx.router_logits end
  local logits = self:head(h, opts)
  if not hidden_states then free(h) end
  return logits, hidden_states, ctx.router_logits
end

function CausalLM:forward(batch, opts)
  local pre = rawget(self, "_pre_hooks")
  local post = rawget(self, "_post_hooks")
  if (pre and #pre > 0) or (post and #post > 0) then
    return module.Module.forward(self, batch, opts)
  end
  return self:_forward(batch, opts)
end

--- The tokenizer of the model directory (loaded once).
function CausalLM:tokenizer()
  local tok = rawget(self, "_tokenizer")
  if not tok then
    tok = require("llmc.tokenizer").load(self.path)
    rawset(self, "_tokenizer", tok)
  end
  return tok
end

--- Give lm_head its own copy of the embedding weight (no-op when untied).
function CausalLM:untie_embeddings()
  local head = self.lm_head
  local tied = rawget(head, "_tied")
  if not tied then return false end
  local w = tied.weight:clone()
  rawset(head, "_tied", nil)
  head.weight = w
  local meta = rawget(head, "_pmeta")
  if meta then meta.weight = nil end
  head.device = "cpu"
  if self.config.tie_word_embeddings ~= nil then self.config.tie_word_embeddings = false end
  self.dims.tie = false
  return true
end

--- Are the input and output embeddings shared?
function CausalLM:tied() return rawget(self.lm_head, "_tied") ~= nil end

function CausalLM:generate(prompt, opts) return require("llmc.generate").generate(self, prompt, opts) end

function CausalLM:summary()
  return string.format("%s (%s, %s, %d layers, %.2fM parameters) from %s", self.class_name, self.arch,
    self.dtype, #self.layers, self:num_parameters() / 1e6, tostring(self.path))
end

---------------------------------------------------------------------------
-- loading
---------------------------------------------------------------------------

local DTYPES = {bfloat16 = "bfloat16", bf16 = "bfloat16", float16 = "float16", fp16 = "float16", half = "float16",
  float32 = "float32", fp32 = "float32", float = "float32"}

local LOAD_KEYS = {dtype = true, device_map = true, max_memory = true, offload_folder = true, torch_dtype = true}

local function isdir(path)
  local f = io.open(path .. "/config.json", "rb")
  if f then f:close() return true end
  return false
end

--- Load a Hugging Face model directory (see the header for opts).
function M.load(path, opts)
  opts = opts or {}
  if type(path) ~= "string" then error("llmc.load: path must be a model directory", 2) end
  for k in pairs(opts) do
    if not LOAD_KEYS[k] then error("llmc.load: unknown option '" .. tostring(k) .. "'", 2) end
  end
  path = path:gsub("/+$", "")
  if not isdir(path) then error("llmc.load: " .. path .. "/config.json not found (not a model directory)", 2) end
  local config = util.json.read_file(path .. "/config.json")
  local arch = cv(config.model_type)
  local impl = arch and M.architectures[arch]
  if not impl then
    local names = {}
    for k in pairs(M.architectures) do names[#names + 1] = k end
    table.sort(names)
    error(string.format("llmc.load: %s: model_type '%s' is not supported (supported: %s)", path, tostring(arch),
      table.concat(names, ", ")), 2)
  end
  if type(impl) == "string" then impl = require(impl) end

  local device_map = opts.device_map or "cpu"
  local okmaps = {cpu = true, auto = true, auto_offload = true, cuda = true}
  if not okmaps[device_map] then
    error("llmc.load: device_map must be one of cpu, auto, auto_offload, cuda (got '" .. tostring(device_map) .. "')", 2)
  end
  if device_map == "cuda" then
    error("llmc.load: device_map 'cuda': the model forward pass of this llmc runs on the CPU only " ..
      "(no GPU backend for it in this build/machine); use device_map = 'cpu' or 'auto'", 2)
  end

  local root = impl.build(config)
  local st = S.open(path)

  -- dtype: the option, else config torch_dtype / dtype, else the checkpoint's
  local want = opts.dtype or opts.torch_dtype or "auto"
  local dtype
  if want == "auto" then
    local c = cv(config.torch_dtype) or cv(config.dtype)
    dtype = c and DTYPES[c]
    if not dtype then dtype = DTYPES[st:info("model.embed_tokens.weight").dtype] or "float32" end
  else
    dtype = DTYPES[want]
    if not dtype then error("llmc.load: dtype must be auto, bfloat16, float16 or float32 (got '" .. tostring(want) .. "')", 2) end
  end

  -- bind every parameter to its checkpoint tensor, lazily
  local used = {}
  local d = root.dims
  for _, e in ipairs(nn.expected_params(root)) do
    local full, m, p, shape = e[1], e[2], e[3], e[4]
    if full == "lm_head.weight" and d.tie then
      m:param("weight", nil)
      rawset(m, "_tied", root.model.embed_tokens)
      used[full] = st:has(full) or nil
    else
      if not st:has(full) then
        error(string.format("llmc.load: %s: tensor '%s' is missing from the checkpoint", path, full), 2)
      end
      used[full] = true
      local info = st:info(full)
      local ok = #info.shape == #shape
      for i = 1, #shape do ok = ok and info.shape[i] == shape[i] end
      if not ok then
        error(string.format("llmc.load: %s: tensor '%s' has shape [%s], the config implies [%s]", path, full,
          table.concat(info.shape, ", "), table.concat(shape, ", ")), 2)
      end
      m:param(p, function(self, k)
        local t = st:get(full)
        if t:dtype() ~= dtype then
          local c = t:to(dtype)
          t:release()
          t = c
        end
        rawset(self, k, t)
        rawget(self, "_lazy")[k] = nil
        return t
      end)
      local meta = rawget(m, "_pmeta") or {}
      meta[p] = {shape = info.shape, dtype = dtype}
      rawset(m, "_pmeta", meta)
    end
  end
  local unused = {}
  for _, name in ipairs(st:names()) do
    if not used[name] then unused[#unused + 1] = name end
  end

  root.config, root.path, root.arch, root.dtype = config, path, arch, dtype
  root.unused_tensors = unused
  root._st = st
  root.device_map = device_map
  require("llmc.offload").place(root, {device_map = device_map, max_memory = opts.max_memory,
    offload_folder = opts.offload_folder})
  return root
end

--- Build an architecture's tree from a config table without weights (for
--- inspection and tests of module names).
function M.build(config)
  local impl = M.architectures[cv(config.model_type)]
  if not impl then error("llmc.models.build: unsupported model_type " .. tostring(config.model_type), 2) end
  if type(impl) == "string" then impl = require(impl) end
  return impl.build(config)
end

return M
