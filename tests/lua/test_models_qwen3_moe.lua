-- tiny-qwen3-moe against its golden numbers: logits of every prompt at every
-- position, hidden states after each layer, the router (logits, top-2 expert ids
-- and renormalised weights, token order) of both MoE layers, the long sequence's
-- NLL, and the greedy continuations.  Also the MoE module layout (router
-- mlp.gate, experts mlp.experts.<e>.{gate,up,down}_proj, the checkpoint's
-- names) and the moe_all_experts calibration mode.
-- Fixture: fixtures/models/tiny-qwen3-moe (bundled), else
-- ${LLMC_FIXTURES:-$LLMC_ROOT/../shared/fixtures}/models/tiny-qwen3-moe; skips (77) when absent.

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
local function row_rel(a, b)
  local worst = 0
  for i = 0, b:shape()[1] - 1 do
    local d = (a[i] - b[i]):abs():max() / b[i]:abs():max()
    if d > worst or d ~= d then worst = d end
  end
  return worst
end
local function list_eq(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local dir
for _, d in ipairs{llmc.bundled("models/tiny-qwen3-moe"), llmc.fixtures("models/tiny-qwen3-moe")} do
  if util.exists(d .. "/config.json") then dir = d break end
end
if not dir then
  print("SKIP: tiny-qwen3-moe fixture not found (bundled or LLMC_FIXTURES)")
  os.exit(77)
end

local golden = util.json.read_file(dir .. "/golden.json")
local G = S.open(dir .. "/golden.safetensors")
local model = llmc.load(dir)

check(model.arch == "qwen3_moe" and model:num_parameters() == 5016448, "arch and parameter count (README: 5,016,448)",
  model:num_parameters())
local moe = model:get("model.layers.0.mlp")
check(moe.kind == "SparseMoeBlock" and moe.class_name == "Qwen3MoeSparseMoeBlock" and moe.num_experts == 8 and
  moe.top_k == 2 and moe.norm_topk_prob, "MoE block fields")
local names = {}
for name in model:modules("re:model\\.layers\\.0\\.mlp.*") do names[#names + 1] = name end
check(names[1] == "model.layers.0.mlp" and names[2] == "model.layers.0.mlp.gate" and
  names[3] == "model.layers.0.mlp.experts" and names[4] == "model.layers.0.mlp.experts.0" and
  names[5] == "model.layers.0.mlp.experts.0.gate_proj" and names[8] == "model.layers.0.mlp.experts.0.act_fn",
  "MoE module order: gate, experts, expert MLPs", table.concat(names, " ", 1, 8))
local gates = 0
for _ in model:modules("re:.*mlp\\.gate$") do gates = gates + 1 end
check(gates == 2, "routers matched by re:.*mlp\\.gate$")
local st = S.open(dir .. "/model.safetensors")
local pn = {}
for name in model:named_parameters() do pn[#pn + 1] = name end
local stn = st:names()
table.sort(pn); table.sort(stn)
check(list_eq(pn, stn), "named_parameters = checkpoint tensor names")

local q_norm = model:get("model.layers.1.self_attn.q_norm")
check(q_norm and q_norm.kind == "RMSNorm" and q_norm.dim == 64, "Qwen3 q_norm over head_dim")

for p = 0, 3 do
  local ids = G:get("input_ids." .. p):totable()
  local logits = model:forward({input_ids = {ids}})
  local e = row_rel(logits[0], G:get("logits." .. p))
  check(e < 1e-4, string.format("logits of prompt %d within 1e-4 (got %.2e)", p, e))
end
local ids0 = G:get("input_ids.0"):totable()
local _, hs, router = model:forward({input_ids = {ids0}}, {output_hidden_states = true, output_router_logits = true})
local hname = {"hidden.embed", "hidden.layer.0", "hidden.layer.1", "hidden.final_norm"}
for i, n in ipairs(hname) do
  local e = row_rel(hs[i][0], G:get(n))
  check(e < 1e-4, string.format("%s within 1e-4 (got %.2e)", n, e))
end
for l = 0, 1 do
  local r = router[l]
  local gl = G:get("router_logits.layer." .. l)
  local e = row_rel(r.logits, gl)
  check(e < 1e-4, string.format("router logits of layer %d (got %.2e)", l, e))
  local ids_ok = list_eq(r.ids:flatten():totable(), G:get("router_topk_ids.layer." .. l):flatten():totable())
  check(ids_ok, "top-2 expert ids of layer " .. l)
  local w, gw = r.weights, G:get("router_topk_weights.layer." .. l)
  check((w - gw):abs():max() < 1e-5, "renormalised top-2 weights of layer " .. l, (w - gw):abs():max())
end

local long = G:get("long.input_ids")
local ll = model:forward(long)
local tg = long:totable()
table.remove(tg, 1)
tg[#tg + 1] = -100
local nll = llmc.nn.cross_entropy(ll[0], llmc.tensor(tg, "int64"))
local gn = G:get("long.nll")
local worst = 0
for i = 0, 58 do worst = math.max(worst, math.abs(nll:get(i) - gn:get(i)) / gn:get(i)) end
check(worst < 1e-4, string.format("long NLL per position (%.1e)", worst))

for p = 0, 3 do
  local _, new = llmc.generate(model, golden.prompts[p + 1].text, {max_new_tokens = 24})
  check(list_eq(new, G:get("greedy_ids." .. p):totable()), "greedy continuation of prompt " .. p)
end

-- calibration mode: every expert sees every token (hooks count rows), output unchanged
local rows = {}
local handles = {}
for name, m in model:modules("re:model\\.layers\\.0\\.mlp\\.experts\\.\\d+\\.down_proj") do
  handles[#handles + 1] = m:register_forward_hook(function(_, x) rows[name] = (rows[name] or 0) + x:shape()[1] end)
end
local base = model:forward({input_ids = {ids0}})
local routed = 0
for _, n in pairs(rows) do routed = routed + n end
check(routed == 7 * 2, "routed mode: 7 tokens x top-2 expert rows", routed)
rows = {}
local all = model:forward({input_ids = {ids0}}, {moe_all_experts = true})
local every = true
for e = 0, 7 do every = every and rows["model.layers.0.mlp.experts." .. e .. ".down_proj"] == 7 end
check(every, "moe_all_experts: every expert runs on all 7 tokens")
check((all - base):abs():max() < 1e-5, "moe_all_experts leaves the output unchanged")
for _, h in ipairs(handles) do h:remove() end

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
