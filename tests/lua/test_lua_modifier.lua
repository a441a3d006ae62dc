-- test_lua_modifier.lua — a modifier written only in Lua (what a researcher
-- does to prototype an algorithm without touching C), run by llmc.oneshot
-- through the sequential and basic calibration pipelines:
--  * lifecycle: initialize, calibration_start, one sequential_epoch_end per
--    decoder layer carrying exactly that layer's modules (basic: one with
--    every module), calibration_end, finalize — in that order;
--  * Lua forward hooks see every calibration batch of every targeted Linear,
--    never during the sequential pipeline's propagation pass
--    (state.hooks_disabled);
--  * the per-column abs-max the hook computes with tensor ops in Lua equals the
--    C accumulator's (llmc._observer, reduce = "channel") exactly, and both equal
--    the abs-max of the inputs obtained independently by running the model
--    with a plain hook outside any pipeline;
--  * the modifier edits weights at sequential_epoch_end (scales down_proj's
--    columns by 1/2 and marks them), and the propagation pass sees the edit.
local llmc = require "llmc"
local modifiers = llmc.modifiers
local check_field = modifiers.check

local passed, failed = 0, 0
local function check(cond, msg)
  if cond then passed = passed + 1 else failed = failed + 1; io.stderr:write("FAIL: ", msg, "\n") end
end

local O = require "llmc._observer"

local InputRange = modifiers.define("InputRangeModifier", {
  fields = {{"targets", {"re:.*mlp\\.down_proj$"}, check_field.targets}},
  on_initialize = function(self, state)
    self.events = {"initialize"}
    self.mods = {}
    for name, m in state.model:modules(self.targets) do self.mods[#self.mods + 1] = {name = name, m = m} end
    return #self.mods > 0
  end,
  on_calibration_start = function(self, state)
    self.events[#self.events + 1] = "calibration_start"
    self.hooks = {}
    for _, r in ipairs(self.mods) do
      r.obs = O.new{reduce = "channel", cols = r.m.in_features, update = "static_minmax", dtype = "f32"}
      r.batches = 0
      self.hooks[#self.hooks + 1] = r.m:register_forward_pre_hook(function(m, x)
        if state.hooks_disabled then
          r.disabled_calls = (r.disabled_calls or 0) + 1
          -- an edit made at this layer's epoch end is visible in the propagation pass
          if m.halved then r.saw_halved = true end
          return
        end
        r.batches = r.batches + 1
        local H = x:shape()[#x:shape()]
        local amax = x:reshape({-1, H}):abs():amax(0)        -- [H], in Lua tensor ops
        r.lua_amax = r.lua_amax and r.lua_amax:maximum(amax) or amax
        r.obs:observe(x)                                      -- the same in the C accumulator
      end)
    end
  end,
  on_sequential_epoch_end = function(self, state, event, modules)
    local set = {}
    for _, m in ipairs(modules) do set[m] = true end
    local hit = {}
    for _, r in ipairs(self.mods) do
      if set[r.m] then
        hit[#hit + 1] = r.name
        r.m.weight = r.m.weight * 0.5
        r.m.halved = true
      end
    end
    self.events[#self.events + 1] = "epoch_end:" .. table.concat(hit, ",")
  end,
  on_calibration_end = function(self, state)
    self.events[#self.events + 1] = "calibration_end"
    for _, h in ipairs(self.hooks) do h:remove() end
  end,
  on_finalize = function(self, state)
    self.events[#self.events + 1] = "finalize"
    return true
  end,
})

local DATA = {dataset = "json", dataset_path = llmc.bundled("datasets/calib_text.jsonl"),
              num_calibration_samples = 4, max_seq_length = 32, shuffle_calibration_samples = false}

-- the reference: down_proj inputs of the unmodified model, one sample at a time
local ref = {}
do
  local model = llmc.load(llmc.default_model())
  local ds = require("llmc.datasets").load{path = DATA.dataset_path, tokenizer = model:tokenizer(),
    num_calibration_samples = 4, max_seq_length = 32, shuffle = false, warn = function() end}
  for name, m in model:modules("re:.*mlp\\.down_proj$") do
    m:register_forward_pre_hook(function(_, x)
      local H = x:shape()[#x:shape()]
      local a = x:reshape({-1, H}):abs():amax(0)
      ref[name] = ref[name] and ref[name]:maximum(a) or a
    end)
  end
  for i = 1, #ds do model:forward({ds[i].input_ids}):release() end
end

for _, pipeline in ipairs({"sequential", "basic"}) do
  local mod = InputRange{requires_calibration_data = true}
  local args = {model = llmc.default_model(), recipe = mod, quiet = true, pipeline = pipeline}
  for k, v in pairs(DATA) do args[k] = v end
  llmc.oneshot(args)
  local ev = table.concat(mod.events, " ")
  local want
  if pipeline == "sequential" then
    local parts = {"initialize", "calibration_start"}
    for i = 0, 3 do parts[#parts + 1] = "epoch_end:model.layers." .. i .. ".mlp.down_proj" end
    parts[#parts + 1] = "calibration_end"
    parts[#parts + 1] = "finalize"
    want = table.concat(parts, " ")
  else
    want = "initialize calibration_start epoch_end:model.layers.0.mlp.down_proj,model.layers.1.mlp.down_proj," ..
           "model.layers.2.mlp.down_proj,model.layers.3.mlp.down_proj calibration_end finalize"
  end
  check(ev == want, pipeline .. ": lifecycle events in order:\n  " .. ev .. "\n  want " .. want)
  for _, r in ipairs(mod.mods) do
    check(r.batches == 4, string.format("%s %s: hook saw 4 calibration batches (%d)", pipeline, r.name, r.batches))
    local b, tok = r.obs:count()
    check(b == 4 and tok == 4 * 32, string.format("%s %s: observer counted %s batches, %s tokens", pipeline, r.name, b, tok))
    local mn, mx = r.obs:minmax()
    local c_amax = mn:abs():maximum(mx:abs())
    local d1 = (c_amax - r.lua_amax):abs():max()
    check(d1 == 0, string.format("%s %s: C observer abs-max == Lua hook abs-max (max diff %g)", pipeline, r.name, d1))
    local d2 = (r.lua_amax - ref[r.name]):abs():max()
    local scale = ref[r.name]:max()
    -- every layer sees the unmodified model's inputs: the halving of a
    -- down_proj only changes the residual stream after it
    if pipeline == "basic" or r.name:find("layers%.0%.") then
      check(d2 <= 1e-6 * scale, string.format("%s %s: abs-max equals the plain forward's (diff %g)", pipeline, r.name, d2))
    else
      check(d2 > 1e-4 * scale, string.format("%s %s: later layers see the halved predecessors (diff %g)", pipeline, r.name, d2))
    end
    if pipeline == "sequential" then
      check(r.disabled_calls == 4 and r.saw_halved, pipeline .. " " .. r.name ..
            ": the propagation pass ran with hooks disabled and the edited weight")
    end
    r.obs:free()
  end
end

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
