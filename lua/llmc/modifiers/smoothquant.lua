--[[
llmc.modifiers.smoothquant — SmoothQuantModifier: migrate activation
outliers into the following weights (SmoothQuant, arXiv 2211.10438;
llm-compressor's transform/smoothquant, algorithms.md §7).

  local m = llmc.modifiers.SmoothQuantModifier{smoothing_strength = 0.8}
  llmc.oneshot{model = model, recipe = {m, llmc.modifiers.GPTQModifier{scheme = "W8A8", ignore = {"lm_head"}}},
               dataset = "json", dataset_path = llmc.bundled("datasets/calib_text.jsonl")}

Arguments (llm-compressor's names and order): smoothing_strength (alpha,
0.5; must lie in [0, 1]), mappings (nil: inferred from the model class, see
SQ.MAPPINGS), ignore, num_calibration_steps and calibration_function
(accepted, unused, as upstream), algorithm ("smoothquant" or
"log_equalization"); start / end must be nil, 0 or -1 (upstream tests their
truthiness).  requires_calibration_data is true.

A mapping is {{balance patterns...}, smooth pattern}: the smooth layer (an
RMSNorm) feeds every balance layer (Linears).  Patterns are module names,
class names or "re:" regexes (Python re.match, anchored at the start).
Matches are grouped by parent scope, one set per decoder layer, exactly as
compressed-tensors' match_modules_set; a set must hold one smooth layer; sets
whose smooth and balance layers are all ignored are skipped with a warning.

Lifecycle:
  initialize            infer / resolve the mappings (errors name the recipe field)
  calibration_start     a forward hook on every smooth layer: its output, as
                        [tokens, hidden], goes into a per-channel running
                        min / max (llmc._observer, "static_minmax", in the
                        smooth layer's weight dtype D: llm-compressor observes
                        the bf16 outputs of a bf16 model); skipped while
                        state.hooks_disabled (the sequential pipeline's
                        propagation pass)
  sequential_epoch_end  every mapping with statistics is smoothed (then its
                        statistics are freed):
                          a_j = max_j - min_j                               (in D)
                          w_j = 2 * max over balance layers of max_i |W[i, j]|   (in D)
                          smoothquant:      s_j = a_j^alpha / w_j^(1-alpha), s_j = a_j where w_j == 0
                          log_equalization: s_j = a_j / log2(2 + a_j)
                          s_j = max(s_j, 1e-5)                              (promotes to fp32)
                          balance W[:, j] *= s_j; norm w_j /= s_j (2-D: W[j, :]; bias_j /= s_j)
                        every op rounds to D as PyTorch does on a D tensor; the
                        pow exponent is itself rounded to D first (PyTorch's
                        bf16 / f16 pow kernels convert the scalar exponent to
                        the tensor dtype: 0.8 -> 0.80078125 in bf16); rescaled
                        weights are computed in fp32 and rounded to their dtype
  calibration_end       remove the hooks
  finalize              error if statistics were gathered but never applied
self.smoothed_[smooth name] = {scale = s (D, before the clamp), range = a (D),
balance = {names}} records what was applied (tests, reports).
]]
local util = require "llmc.util"
local json = util.json
local base = require "llmc.modifiers.base"
local modifiers = require "llmc.modifiers"

local check = base.check

local function where_of(where)
  return type(where) == "function" and where() or where
end

local function check_strength(v, where)
  v = check.number(v, where)
  if not (v >= 0 and v <= 1) then
    error(where_of(where) .. ": smoothing_strength (alpha) must be in [0, 1], got " .. tostring(v), 0)
  end
  return v
end

local function check_algorithm(v, where)
  if v ~= "smoothquant" and v ~= "log_equalization" then
    error(where_of(where) .. ": algorithm must be \"smoothquant\" or \"log_equalization\", got " .. tostring(v), 0)
  end
  return v
end

-- the leaves of a nested list of strings (torch's tree_leaves), in order
local function leaves(v, out, where, path)
  if type(v) == "string" then
    out[#out + 1] = v
  elseif type(v) == "table" and not util.is_omap(v) then
    for i = 1, #v do leaves(v[i], out, where, path .. "[" .. i .. "]") end
  else
    error(where_of(where) .. ": " .. path .. " must be a pattern string or a list of them, got " .. tostring(v), 0)
  end
  return out
end

-- mappings: a list of {{balance...}, smooth}; kept as given (recipe.yaml
-- writes them back), each flattened to balance patterns + one smooth pattern
local function check_mappings(v, where)
  if type(v) ~= "table" or util.is_omap(v) or #v == 0 then
    error(where_of(where) .. ": mappings must be a non-empty list of {{balance layers...}, smooth layer}", 0)
  end
  for i = 1, #v do
    local m = v[i]
    if type(m) == "table" and not util.is_omap(m) and m.balance_layers then
      m = {m.balance_layers, m.smooth_layers}   -- LayerMap-style keys
      v[i] = m
    end
    local l = leaves(m, {}, where, "mappings[" .. i .. "]")
    if #l < 2 then
      error(where_of(where) .. ": mappings[" .. i .. "] needs balance layers and a smooth layer " ..
            "({{\"re:.*q_proj\", ...}, \"re:.*input_layernorm\"})", 0)
    end
  end
  return v
end

local function pass(v) return v end

local SQ = modifiers.define("SmoothQuantModifier", {
  fields = {
    {"requires_calibration_data", true, check.boolean},
    {"index", nil, check.integer},
    {"group", nil, check.string},
    {"start", nil, check.number},
    {"end", nil, check.number},
    {"update", nil, check.number},
    {"smoothing_strength", 0.5, check_strength},
    {"mappings", nil, check_mappings},
    {"ignore", nil, check.targets},
    {"num_calibration_steps", nil, check.integer},
    {"calibration_function", nil, pass},
    {"algorithm", "smoothquant", check_algorithm},
  },
})

--- Smallest smoothing scale (llm-compressor's MINIMUM_SMOOTHING_SCALE).
SQ.MINIMUM_SCALE = 1e-5

local function mapping(balance, smooth) return json.array({json.array(balance), smooth}) end
local DEFAULT = {
  mapping({"re:.*q_proj", "re:.*k_proj", "re:.*v_proj"}, "re:.*input_layernorm"),
  mapping({"re:.*gate_proj", "re:.*up_proj"}, "re:.*post_attention_layernorm"),
}
local MIXTRAL = {mapping({"re:.*q_proj", "re:.*k_proj", "re:.*v_proj"}, "re:.*input_layernorm")}
-- MLP smoothing across experts hurts accuracy upstream: attention only
local QWEN_MOE = {mapping({"re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$"}, "re:.*input_layernorm$")}

--- Default mappings by model class (llm-compressor's MAPPINGS_REGISTRY, for
--- the architectures llmc loads); any other class gets SQ.DEFAULT_MAPPINGS.
SQ.DEFAULT_MAPPINGS = DEFAULT
SQ.MAPPINGS = {
  LlamaForCausalLM = DEFAULT, MistralForCausalLM = DEFAULT, Qwen2ForCausalLM = DEFAULT,
  Qwen3ForCausalLM = DEFAULT, MixtralForCausalLM = MIXTRAL, Qwen2MoeForCausalLM = QWEN_MOE,
  Qwen3MoeForCausalLM = QWEN_MOE,
}

function SQ.validate(self, where)
  -- upstream: `if self.end and self.end != -1: raise` (0 is falsy, so it passes too)
  for _, k in ipairs({"start", "end"}) do
    local v = self[k]
    if v ~= nil and v ~= 0 and v ~= -1 then
      local loc = type(where) == "function" and where(k) or
                  ((where and (where .. ": ") or "") .. "SmoothQuantModifier." .. k)
      error(loc .. ": SmoothQuantModifier can only be applied during one-shot: " .. k ..
            " must be nil or -1, got " .. tostring(v), 0)
    end
  end
end

function SQ:calibration_reason()
  return "SmoothQuant needs calibration data: its smoothing scales come from the activation ranges " ..
         "of the smooth layers on calibration batches"
end

-- recipe.yaml: a function cannot be written; everything else as given
function SQ:dump_field(k, v)
  if k == "calibration_function" then return nil end
  return v
end

local function warn(state, msg)
  if not state.quiet then io.stderr:write("SmoothQuant: ", msg, "\n") end
end

-- compressed-tensors' get_lowest_common_ancestor_name of two names (b may be nil)
local function common_ancestor(a, b)
  if b == nil then
    -- a single name: the name itself
    return a
  end
  local s1, s2 = "." .. a .. ".", "." .. b .. "."
  if s1 > s2 then s1, s2 = s2, s1 end
  local n = 0
  for i = 1, math.min(#s1, #s2) do
    if s1:sub(i, i) ~= s2:sub(i, i) then break end
    n = i
  end
  local prefix = s1:sub(1, n)
  local last = prefix:match(".*()%.")   -- position of the rightmost dot
  return last and prefix:sub(2, last - 1) or ""
end

SQ.common_ancestor = common_ancestor   -- shared with AWQModifier (parent resolution)

--- compressed-tensors' match_modules_set: sets of modules matching every
--- target, grouped by parent scope, in named_modules order.  Returns a
--- list of sets; a set is a list (per target, in order) of module lists.
function SQ.match_modules_set(model, targets)
  local sets = {}
  local matches, parent = {}, nil
  local unmatched, n_unmatched = {}, 0
  local function reset()
    matches, unmatched, n_unmatched = {}, {}, 0
    for _, t in ipairs(targets) do
      if not unmatched[t] then unmatched[t] = true; n_unmatched = n_unmatched + 1 end
      matches[t] = {}
    end
  end
  reset()
  local total = n_unmatched
  for name, m in model:named_modules() do
    local hit = {}
    local nhit = 0
    for _, t in ipairs(targets) do
      if base.matches(t, name, m) then
        local newp = common_ancestor(name, parent)
        if n_unmatched == 0 and newp ~= parent then
          local set = {}
          for i, tt in ipairs(targets) do set[i] = matches[tt] end
          sets[#sets + 1] = set
          reset()
          newp = name
        end
        local list = matches[t]
        list[#list + 1] = {name = name, module = m}
        parent = newp
        if unmatched[t] then unmatched[t] = nil; n_unmatched = n_unmatched - 1 end
        if not hit[t] then hit[t] = true; nhit = nhit + 1 end
      end
    end
    if nhit > 1 then
      local ts = {}
      for t in pairs(hit) do ts[#ts + 1] = t end
      table.sort(ts)
      error(string.format("module %s was matched by several patterns of one mapping (%s)", name,
        table.concat(ts, ", ")), 0)
    end
  end
  if n_unmatched == total then return sets end
  if n_unmatched == 0 then
    local set = {}
    for i, tt in ipairs(targets) do set[i] = matches[tt] end
    sets[#sets + 1] = set
    return sets
  end
  local found, missing = {}, {}
  for _, t in ipairs(targets) do
    if unmatched[t] then missing[#missing + 1] = t else found[#found + 1] = t end
  end
  error(string.format("a final incomplete set: patterns %s matched but %s did not",
    table.concat(found, ", "), table.concat(missing, ", ")), 0)
end

function SQ:on_initialize(state)
  local model = state.model
  self.ignore = self.ignore or json.array({})
  if self.mappings == nil then
    local maps = SQ.MAPPINGS[model.class_name] or DEFAULT
    self.mappings = util.deepcopy(maps)
  end
  local ignored = {}
  if #self.ignore > 0 then
    for name, m in model:named_modules() do
      if base.any_match(self.ignore, name, m) then ignored[name] = true end
    end
  end
  local resolved = {}
  for i, mp in ipairs(self.mappings) do
    local targets = leaves(mp, {}, self:location("mappings"), "mappings[" .. i .. "]")
    local ok, sets = pcall(SQ.match_modules_set, model, targets)
    if not ok then self:error(string.format("mappings[%d]: %s", i, tostring(sets)), "mappings") end
    for _, set in ipairs(sets) do
      local smooth = set[#set]
      if #smooth ~= 1 then
        local names = {}
        for _, s in ipairs(smooth) do names[#names + 1] = s.name end
        self:error(string.format("mappings[%d]: SmoothQuant must match a single smooth layer per set, got %s",
          i, table.concat(names, ", ")), "mappings")
      end
      smooth = smooth[1]
      local balance = {}
      for k = 1, #set - 1 do
        for _, b in ipairs(set[k]) do balance[#balance + 1] = b end
      end
      local any = not ignored[smooth.name]
      for _, b in ipairs(balance) do if not ignored[b.name] then any = true end end
      if not any then
        warn(state, "skipping " .. smooth.name .. ": every layer of the mapping is ignored")
      elseif #balance == 0 then
        warn(state, "skipping " .. smooth.name .. ": no balance layer found")
      else
        -- the shapes the transform needs (upstream would fail inside torch)
        local sw = smooth.module:has_param("weight") and smooth.module:param_info("weight")
        if not sw then
          self:error(string.format("mappings[%d]: smooth layer %s has no weight to rescale", i, smooth.name), "mappings")
        end
        local dim = sw.shape[1]
        for _, b in ipairs(balance) do
          local bw = b.module:has_param("weight") and b.module:param_info("weight")
          if not bw or #bw.shape ~= 2 then
            self:error(string.format("mappings[%d]: balance layer %s has no 2-D weight", i, b.name), "mappings")
          end
          if bw.shape[2] ~= dim then
            self:error(string.format("mappings[%d]: balance layer %s has %d input features, the smooth layer %s " ..
              "has %d channels", i, b.name, bw.shape[2], smooth.name, dim), "mappings")
          end
        end
        resolved[#resolved + 1] = {smooth_name = smooth.name, smooth = smooth.module, balance = balance,
                                   dim = dim, dtype = sw.dtype}
      end
    end
  end
  if #resolved == 0 then
    warn(state, "no mapping matched the model: nothing will be smoothed")
  end
  self._resolved_mappings = resolved
  self._stats = {}
  self._hooks = {}
  self.smoothed_ = {}
  return true
end

function SQ:on_calibration_start(state)
  local O = require "llmc._observer"
  for _, mp in ipairs(self._resolved_mappings) do
    local name = mp.smooth_name
    self._hooks[#self._hooks + 1] = mp.smooth:register_forward_hook(function(_, _, y)
      if state.hooks_disabled then return end
      if type(y) == "table" then y = y[1] end   -- a tuple output: its first element
      local obs = self._stats[name]
      if not obs then
        obs = O.new{reduce = "channel", cols = mp.dim, update = "static_minmax", dtype = mp.dtype}
        self._stats[name] = obs
      end
      obs:observe(y)
    end)
  end
end

-- round a Lua number to f32, then to the float dtype D (RNE), in plain Lua
local function f32(v) return (string.unpack("<f", string.pack("<f", v))) end
local function round_to(v, D)
  v = f32(v)
  if D == "float32" or v ~= v then return v end
  local T = require "llmc._tensor"
  return T.full({1}, v, D):get(0)
end
SQ.round_to = round_to

--- Smoothing scales of one mapping (see the header): `weights` the balance
--- layers' weights, mn / mx the per-channel statistics (f32 tensors holding
--- D values), D the statistics dtype.  Returns s (D, before the clamp) and
--- a (the activation ranges, D).
function SQ.smoothing_scales(weights, mn, mx, alpha, algorithm, D)
  local a = mx:to(D) - mn:to(D)
  if algorithm == "log_equalization" then
    -- a / log2(2 + a), each op rounded to D (torch's log2 of a D tensor)
    local t = (a + 2):totable()
    local lg = {}
    for j, v in ipairs(t) do lg[j] = round_to(math.log(v, 2), D) end
    local T = require "llmc._tensor"
    return a / T.tensor(lg):to(D), a
  end
  -- max_i |W[i, j]| = max(-min_j, max_j): the column min / max come from a
  -- channel observer (exact: the values are already the weight's); the
  -- generic amax over dim 0 walks the weight with strides and is ~1000x slower
  local O = require "llmc._observer"
  local w
  for _, W in ipairs(weights) do
    local o = O.new{reduce = "channel", cols = W:shape()[2], dtype = W:dtype()}
    o:observe(W)
    local lo, hi = o:minmax()
    o:free()
    local c = (-lo):maximum(hi):to(D)
    w = w and w:maximum(c) or c
  end
  w = w * 2.0
  -- PyTorch's bf16 / f16 pow converts the exponent to the tensor dtype
  local s = a:pow(round_to(alpha, D)) / w:pow(round_to(1 - alpha, D))
  local T = require "llmc._tensor"
  s = T.where(w:gt(0), s, a)
  return s, a
end

--- Apply the scales s (D) to a mapping: returns nothing, rewrites the weights.
function SQ.apply_scales(mp, s)
  local s32 = s:to("float32"):maximum(SQ.MINIMUM_SCALE)
  local n = s32:numel()
  local row = s32:reshape({1, n})
  for _, b in ipairs(mp.balance) do
    local m = b.module
    local W = m.weight
    m.weight = (W * row):to(W:dtype())
  end
  local sm = mp.smooth
  local w = sm.weight
  if w:dim() == 1 then
    sm.weight = (w / s32):to(w:dtype())
  else
    sm.weight = (w / s32:reshape({n, 1})):to(w:dtype())
  end
  if sm:has_param("bias") and sm.bias ~= nil then
    local bb = sm.bias
    sm.bias = (bb / s32):to(bb:dtype())
  end
end

--- Smooth every mapping whose statistics exist, then free them.
function SQ:apply_smoothing(state)
  for _, mp in ipairs(self._resolved_mappings) do
    local obs = self._stats[mp.smooth_name]
    if obs then
      local mn, mx = obs:minmax()
      local ws = {}
      for _, b in ipairs(mp.balance) do ws[#ws + 1] = b.module.weight end
      local s, a = SQ.smoothing_scales(ws, mn, mx, self.smoothing_strength, self.algorithm, mp.dtype)
      SQ.apply_scales(mp, s)
      local names = {}
      for _, b in ipairs(mp.balance) do names[#names + 1] = b.name end
      self.smoothed_[mp.smooth_name] = {scale = s, range = a, balance = names}
      if not state.quiet then
        local st = s:stats()
        io.stderr:write(string.format("SmoothQuant %s -> %s: scales %.4g .. %.4g (%d tokens)\n", mp.smooth_name,
          table.concat(names, ", "):gsub("model%.layers%.%d+%.", ""), st.min, st.max, select(2, obs:count())))
      end
      obs:free()
      self._stats[mp.smooth_name] = nil
    end
  end
end

function SQ:on_sequential_epoch_end(state)
  self:apply_smoothing(state)
end

function SQ:on_calibration_end()
  for _, h in ipairs(self._hooks or {}) do h:remove() end
  self._hooks = {}
end

function SQ:on_finalize()
  if not self.ended_ then self:on_calibration_end() end
  local left = {}
  for name in pairs(self._stats or {}) do left[#left + 1] = name end
  if #left > 0 then
    table.sort(left)
    self:error(string.format("failed to smooth %d modules (statistics never applied: %s)", #left,
      table.concat(left, ", ")))
  end
  self._resolved_mappings = {}
  return true
end

return SQ
