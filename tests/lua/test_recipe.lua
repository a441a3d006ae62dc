-- test_recipe.lua — the YAML reader and writer, recipe loading and
-- recipe.yaml serialisation, and a fuzz test of the reader.
-- References: YAML_DOCS[k].json is PyYAML 6's yaml.safe_load of the text
-- (dates and infinities shown as JSON strings / numbers by json.dumps),
-- DUMPS[k].yaml is PyYAML's yaml.dump(sort_keys=False,
-- default_flow_style=None, width=88) of the JSON object, and the two
-- recipe.yaml texts are what llm-compressor 0.14.0.1 wrote after oneshot
-- with the same recipes on the tiny-llama fixture.
local llmc = require "llmc"
local recipe = require "llmc.recipe"
local util = require "llmc.util"
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
-- order-preserving JSON of a parsed YAML value (dates and infinities as PyYAML's json.dumps shows them)
local function as_json(v)
  return json.encode(recipe.to_yaml_value(v), {sort_keys = false, compact = true})
end
local function canon_ref(s)
  return json.encode(recipe.to_yaml_value(json.decode((s:gsub("%-Infinity", '"-inf-marker"')))), {sort_keys = false, compact = true})
end

local YAML_DOCS = {
  lc_full = {yaml = [===[
# llm-compressor §11.2 style
quant_stage:
  smoothing_modifiers:
    SmoothQuantModifier:
      smoothing_strength: 0.8
      mappings:
        - [["re:.*q_proj", "re:.*k_proj", "re:.*v_proj"], "re:.*input_layernorm"]
        - [["re:.*gate_proj", "re:.*up_proj"], "re:.*post_attention_layernorm"]
  quant_modifiers:
    GPTQModifier:
      block_size: 128
      dampening_frac: 0.01
      actorder: static
      ignore: ["lm_head"]   # keep the head in bf16
      config_groups:
        group_0:
          targets: ["Linear"]
          weights: {num_bits: 8, type: int, symmetric: true, strategy: channel}
          input_activations: {num_bits: 8, type: int, symmetric: true,
                              strategy: token, dynamic: true}
      kv_cache_scheme: {num_bits: 8, type: float, strategy: tensor,
                        dynamic: false, symmetric: true}
]===],
    json = [===[
{"quant_stage": {"smoothing_modifiers": {"SmoothQuantModifier": {"smoothing_strength": 0.8, "mappings": [[["re:.*q_proj", "re:.*k_proj", "re:.*v_proj"], "re:.*input_layernorm"], [["re:.*gate_proj", "re:.*up_proj"], "re:.*post_attention_layernorm"]]}}, "quant_modifiers": {"GPTQModifier": {"block_size": 128, "dampening_frac": 0.01, "actorder": "static", "ignore": ["lm_head"], "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "int", "symmetric": true, "strategy": "channel"}, "input_activations": {"num_bits": 8, "type": "int", "symmetric": true, "strategy": "token", "dynamic": true}}}, "kv_cache_scheme": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": false, "symmetric": true}}}}}]===]},
  scalars = {yaml = [===[
---
a: yes
b: No
c: ~
d: null
e: 1e-5
f: 1.0e-5
g: 0x1F
h: 0o17
i: 017
j: -12
k: .5
l: 1_000
m: 'it''s'
n: "tab\there \u00e9"
o: 3.
p: +7
q: -.inf
r: 2001-12-14
s: on
t: "1.5"
u: ''
v:
w: [a, 'b c', "d", 1, 2.5, true, null, ~]
x: {}
y: []
z: plain text with spaces
]===],
    json = [===[
{"a": true, "b": false, "c": null, "d": null, "e": "1e-5", "f": 1e-05, "g": 31, "h": "0o17", "i": 15, "j": -12, "k": 0.5, "l": 1000, "m": "it's", "n": "tab\there \u00e9", "o": 3.0, "p": 7, "q": -Infinity, "r": "2001-12-14", "s": true, "t": "1.5", "u": "", "v": null, "w": ["a", "b c", "d", 1, 2.5, true, null, null], "x": {}, "y": [], "z": "plain text with spaces"}]===]},
  nesting = {yaml = [===[
top:
- name: one
  value: 1
- - nested
  - [x, y]
- key: v
  list:
  - 1
  - 2
-
  indented: after dash
- {a: 1, b: [2, 3]}
empty_seq_item:
- 
- x
last: end
]===],
    json = [===[
{"top": [{"name": "one", "value": 1}, ["nested", ["x", "y"]], {"key": "v", "list": [1, 2]}, {"indented": "after dash"}, {"a": 1, "b": [2, 3]}], "empty_seq_item": [null, "x"], "last": "end"}]===]},
  indentless = {yaml = [===[
stage:
  mods:
    Q:
      targets:
      - Linear
      - re:.*mlp$
      ignore:
        - lm_head
      scheme: W4A16
]===],
    json = [===[
{"stage": {"mods": {"Q": {"targets": ["Linear", "re:.*mlp$"], "ignore": ["lm_head"], "scheme": "W4A16"}}}}]===]},
  multiline_flow = {yaml = [===[
x: [a, b,
  c, d]
y: {k: [1,
   2], j: 'q
   r'}
z: long plain
  continued here
]===],
    json = [===[
{"x": ["a", "b", "c", "d"], "y": {"k": [1, 2], "j": "q r"}, "z": "long plain continued here"}]===]},
  comments = {yaml = [===[
# leading comment
a: 1 # trailing
b: "has # inside"
c: 'also # inside'
d: a#b
# between
e:
  # inner comment
  f: 2
]===],
    json = [===[
{"a": 1, "b": "has # inside", "c": "also # inside", "d": "a#b", "e": {"f": 2}}]===]},
}
local DUMPS = {
  lc_gptq = {json = [===[
{"default_stage": {"default_modifiers": {"GPTQModifier": {"targets": ["Linear"], "ignore": ["lm_head"], "scheme": "W4A16", "bypass_divisibility_checks": false, "requires_calibration_data": true, "block_size": 128, "dampening_frac": 0.01, "actorder": "static", "batched_quantization": "auto"}}}}]===],
    yaml = [===[
default_stage:
  default_modifiers:
    GPTQModifier:
      targets: [Linear]
      ignore: [lm_head]
      scheme: W4A16
      bypass_divisibility_checks: false
      requires_calibration_data: true
      block_size: 128
      dampening_frac: 0.01
      actorder: static
      batched_quantization: auto
]===]},
  mixed = {json = [===[
{"a": [1, 2.5, 1e-05, null, true, "yes", "re:.*q_proj", "x y", ""], "b": {"c": [[1, 2], {"d": "e"}], "f": {}}, "g": [], "h": "a long sentence a long sentence a long sentence a long sentence a long sentence a long sentence a long sentence a long sentence "}]===],
    yaml = [===[
a: [1, 2.5, 1.0e-05, null, true, 'yes', 're:.*q_proj', x y, '']
b:
  c:
  - [1, 2]
  - {d: e}
  f: {}
g: []
h: 'a long sentence a long sentence a long sentence a long sentence a long sentence a long
  sentence a long sentence a long sentence '
]===]},
  smooth = {json = [===[
{"s": {"m": {"SmoothQuantModifier": {"mappings": [[["re:.*q_proj", "re:.*k_proj", "re:.*v_proj"], "re:.*input_layernorm"], [["re:.*gate_proj", "re:.*up_proj"], "re:.*post_attention_layernorm"]], "smoothing_strength": 0.8}}}}]===],
    yaml = [===[
s:
  m:
    SmoothQuantModifier:
      mappings:
      - - ['re:.*q_proj', 're:.*k_proj', 're:.*v_proj']
        - re:.*input_layernorm
      - - ['re:.*gate_proj', 're:.*up_proj']
        - re:.*post_attention_layernorm
      smoothing_strength: 0.8
]===]},
}
local LC_YAML_RECIPE_OUT = [===[
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      config_groups:
        group_0:
          targets: [Linear]
          weights:
            num_bits: 8
            type: int
            symmetric: true
            group_size: null
            strategy: channel
            block_structure: null
            dynamic: false
            actorder: null
            scale_dtype: null
            zp_dtype: null
            observer: memoryless_minmax
            observer_kwargs: {}
          input_activations:
            num_bits: 8
            type: int
            symmetric: true
            group_size: null
            strategy: token
            block_structure: null
            dynamic: true
            actorder: null
            scale_dtype: null
            zp_dtype: null
            observer: null
            observer_kwargs: {}
          output_activations: null
          format: null
      targets: [Linear]
      ignore: [lm_head, 're:.*layers.0.mlp.down_proj$']
      bypass_divisibility_checks: false
      requires_calibration_data: false
]===]
local LC_SCHEME_DICT_OUT = [===[
default_stage:
  default_modifiers:
    QuantizationModifier:
      targets: [Linear]
      ignore: [lm_head]
      scheme:
        W4A16: ['re:.*mlp.*']
        FP8_DYNAMIC: ['re:.*self_attn.*']
      bypass_divisibility_checks: false
      requires_calibration_data: false
]===]

-- the reader agrees with PyYAML
for name, d in pairs(YAML_DOCS) do
  local ok, v = pcall(recipe.parse_yaml, d.yaml, name)
  if not ok then check(false, name .. ": " .. tostring(v)) else
    local got = as_json(v):gsub('%-Infinity', '"-inf-marker"')
    local want = canon_ref(d.json)
    check(got == want, name .. " parses as PyYAML does:\n  got  " .. got .. "\n  want " .. want)
  end
end
local v = recipe.parse_yaml(YAML_DOCS.lc_full.yaml, "r.yaml")
local qm = v:get("quant_stage"):get("quant_modifiers"):get("GPTQModifier")
check(qm:line("ignore") == 14 and qm:line("kv_cache_scheme") == 21, "key lines are recorded")

-- the writer agrees with PyYAML byte for byte
for name, d in pairs(DUMPS) do
  local got = recipe.to_yaml(recipe.to_yaml_value(json.decode(d.json)))
  check(got == d.yaml, name .. " dumps as PyYAML does:\n" .. got .. "---- want\n" .. d.yaml)
  check(as_json(recipe.parse_yaml(got, name)) == as_json(recipe.to_yaml_value(json.decode(d.json))), name .. " round-trips")
end

-- llm-compressor's own GPTQ recipe.yaml (DUMPS.lc_gptq: what LC 0.14.0.1
-- wrote) loads, and llmc writes the same text for the same modifier:
-- batched_quantization is a field, offload_hessians is not (gone from LC's
-- GPTQModifier, which rejects unknown fields)
do
  local r = recipe.load(DUMPS.lc_gptq.yaml)
  check(#r.modifiers == 1 and r.modifiers[1].name == "GPTQModifier" and r.modifiers[1].batched_quantization == "auto",
        "LC's GPTQ recipe.yaml loads")
  local mine = recipe.yaml(recipe.load{llmc.modifiers.GPTQModifier{targets = "Linear", scheme = "W4A16",
                                                                   ignore = {"lm_head"}}})
  check(mine == DUMPS.lc_gptq.yaml, "GPTQ recipe.yaml as LC writes it:\n" .. mine)
  local ok, e = pcall(llmc.modifiers.GPTQModifier, {scheme = "W4A16", offload_hessians = true})
  check(not ok and tostring(e):find("offload_hessians: unknown argument", 1, true), "offload_hessians rejected", e)
  ok, e = pcall(llmc.modifiers.GPTQModifier, {scheme = "W4A16", batched_quantization = 0})
  check(not ok and tostring(e):find("positive integer", 1, true), "batched_quantization = 0 rejected", e)
end

-- reader errors name the line
local bad = {
  {"a: 1\na: 2\n", "x.yaml:2: duplicate key 'a' (first at line 1)"},
  {"a:\n\tb: 1\n", "x.yaml:2: tabs are not allowed in indentation"},
  {"a: [1, 2\nb: 3\n", "x.yaml:1: unterminated flow sequence '['"},
  {"a: [1, 2 x: {b\n", "x.yaml:1: unterminated flow mapping '{'"},
  {"a: [1 2 } 3]\n", "x.yaml:1: expected ',' or ']' in the flow sequence opened at line 1, got '}'"},
  {"a: &x 1\n", "x.yaml:1: anchors, aliases and tags are not supported"},
  {"a: |\n  text\n", "x.yaml:1: block scalars (| and >) are not supported"},
  {"a: 1\n  b: 2\n", "x.yaml:2: unexpected 'key: value' inside a multi-line value"},
  {"a:\n  - 1\n  b: 2\n", "x.yaml:3: bad indentation of a mapping entry"},
  {"a: 'open\n", "x.yaml:1: unterminated single-quoted string"},
  {"a: \"x\\q\"\n", "x.yaml:1: unknown escape \\q"},
  {"- a\nb: 1\n", "x.yaml:2: unexpected content 'b: 1'"},
  {"a: {b: 1, b: 2}\n", "x.yaml:1: duplicate key 'b'"},
}
for _, c in ipairs(bad) do errors(function() recipe.parse_yaml(c[1], "x.yaml") end, c[2], "yaml error " .. c[2]) end

-- recipes -----------------------------------------------------------------
local yaml_recipe = [[
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      ignore: ["lm_head", "re:.*layers.0.mlp.down_proj$"]
      config_groups:
        group_0:
          targets: ["Linear"]
          weights: {num_bits: 8, type: int, symmetric: true, strategy: channel}
          input_activations: {num_bits: 8, type: int, symmetric: true, strategy: token, dynamic: true}
]]
local r = recipe.load(yaml_recipe)
check(#r.modifiers == 1 and r.modifiers[1].name == "QuantizationModifier" and r.modifiers[1].group == "quant"
      and r.stage == "quant", "YAML recipe -> one modifier, group and stage from the keys")
check(recipe.yaml(r) == LC_YAML_RECIPE_OUT, "recipe.yaml equals llm-compressor's:\n" .. recipe.yaml(r))
local om = util.omap()
om:set("W4A16", {"re:.*mlp.*"})
om:set("FP8_DYNAMIC", {"re:.*self_attn.*"})
r = recipe.load(llmc.modifiers.QuantizationModifier{scheme = om, ignore = {"lm_head"}})
check(recipe.yaml(r) == LC_SCHEME_DICT_OUT, "scheme-dict recipe.yaml equals llm-compressor's:\n" .. recipe.yaml(r))
-- merged with an existing recipe.yaml: clashing stage keys get suffixes (append_recipe_dict)
local merged = recipe.yaml(r, LC_SCHEME_DICT_OUT)
local mv = recipe.parse_yaml(merged, "merged")
check(table.concat(mv:keys(), ",") == "default_stage_0,default_stage_1", "merge renames clashing stages: " .. table.concat(mv:keys(), ","))
local json_recipe = '{"s_stage": {"q_modifiers": {"QuantizationModifier": {"scheme": "W8A16", "targets": "Linear"}}}}'
r = recipe.load(json_recipe)
check(r.modifiers[1].scheme == "W8A16" and r.modifiers[1].group == "q" and r.modifiers[1].targets[1] == "Linear", "JSON recipe text")
r = recipe.load({a_stage = {b_modifiers = {QuantizationModifier = {scheme = "W4A16"}}}})
check(r.modifiers[1].group == "b" and r.stage == "a", "Lua stage-form table")
errors(function() recipe.load({a_stage = {b_modifiers = {QuantizationModifier = {scheme = "W4A16"}}}, c_stage = {}}) end,
       "exactly one stage", "a Lua table with two stages is ambiguous")
local two = recipe.load({llmc.modifiers.QuantizationModifier{scheme = "W4A16"}, {llmc.modifiers.QuantizationModifier{scheme = "W8A16"}}})
check(#two.modifiers == 2 and two.modifiers[2].scheme == "W8A16", "nested list of modifiers is flattened")
r = recipe.load("a_stage:\n  m_modifiers:\n    QuantizationModifier: {scheme: W4A16}\nb_stage:\n  m_modifiers:\n    QuantizationModifier: {scheme: W8A16}\n", {stage = "b"})
check(#r.modifiers == 1 and r.modifiers[1].scheme == "W8A16" and r.stage == "b", "stage filter")

-- recipe errors point at the YAML line
errors(function() recipe.load("s_stage:\n  m_modifiers:\n    QuantizationModifer:\n      scheme: W4A16\n", {source = "r.yaml"}) end,
       "r.yaml:3: unknown modifier 'QuantizationModifer'", "unknown modifier with line")
errors(function() recipe.load("s_stage:\n  m_modifiers:\n    QuantizationModifier:\n      targets: Linear\n      schme: W4A16\n", {source = "r.yaml"}) end,
       "r.yaml:5: QuantizationModifier.schme: unknown argument", "unknown field with line")
errors(function() recipe.load("s_stage:\n  m_modifiers:\n    QuantizationModifier:\n      targets: Linear\n      scheme: W5A5\n", {source = "r.yaml"}) end,
       "r.yaml:5: QuantizationModifier.scheme: unknown scheme 'W5A5'", "bad scheme with line")
errors(function() recipe.load([[
s_stage:
  m_modifiers:
    QuantizationModifier:
      config_groups:
        g0:
          targets: [Linear]
          weights:
            num_bits: 4
            group_size: -7
]], {source = "r.yaml"}) end, "r.yaml:9: QuantizationModifier.config_groups.g0.weights.group_size: invalid group size -7",
       "nested bad field with its own line")
errors(function() recipe.load("s_stage:\n  m_modifiers:\n    QuantizationModifier:\n      group: x\n", {source = "r.yaml"}) end,
       "r.yaml:4: QuantizationModifier: 'group' comes from", "explicit group rejected")
errors(function() recipe.load("just: text\n") end, "defines no modifiers", "no modifiers")
errors(function() recipe.load("nonexistent_file.yaml") end, "neither a file nor a YAML recipe", "missing file")

-- recipe files: .yaml, .md front matter, .json
local dir = os.getenv("TMPDIR") or "/tmp"
local p = string.format("%s/llmc_test_recipe_%d", dir, math.random(1 << 30))
util.write_file(p .. ".yaml", yaml_recipe)
util.write_file(p .. ".md", "---\n" .. yaml_recipe .. "---\n# A recipe card\n")
util.write_file(p .. ".json", json_recipe)
check(recipe.load(p .. ".yaml").source == p .. ".yaml", "yaml file")
check(recipe.load(p .. ".md").modifiers[1].group == "quant", "md front matter")
check(recipe.load(p .. ".json").modifiers[1].scheme == "W8A16", "json file")
errors(function() util.write_file(p .. ".yaml", "s_stage:\n  m_modifiers:\n    QuantizationModifier:\n      scheme: NOPE\n"); recipe.load(p .. ".yaml") end,
       p .. ".yaml:4:", "file errors carry the file name and line")
os.remove(p .. ".yaml"); os.remove(p .. ".md"); os.remove(p .. ".json")

-- fuzz: random edits of valid recipes either parse or fail with "<src>:<line>: message";
-- never a Lua runtime error, never a hang
local seeds = {}
for _, d in pairs(YAML_DOCS) do seeds[#seeds + 1] = d.yaml end
seeds[#seeds + 1] = yaml_recipe
seeds[#seeds + 1] = LC_YAML_RECIPE_OUT
local alphabet = {":", "-", " ", "  ", "\n", "[", "]", "{", "}", ",", "'", '"', "#", "\t", "|", "&", "*", "?", "x", "1", "\\", "\r"}
local rng = 12345
local function rand(n)
  rng = (rng * 1103515245 + 12345) % 2147483648
  return rng % n + 1
end
local n_ok, n_err, n_bad = 0, 0, 0
local t0 = os.clock()
for it = 1, 4000 do
  local s = seeds[rand(#seeds)]
  for _ = 1, rand(2) do
    local op, pos = rand(4), rand(#s + 1)
    if op == 1 then s = s:sub(1, pos - 1) .. alphabet[rand(#alphabet)] .. s:sub(pos)
    elseif op == 2 then s = s:sub(1, pos - 1) .. s:sub(pos + rand(5))
    elseif op == 3 then
      local a, b = rand(#s + 1), rand(#s + 1)
      if a > b then a, b = b, a end
      s = s:sub(1, pos - 1) .. s:sub(a, b) .. s:sub(pos)
    else s = s:sub(1, pos - 1) .. string.char(rand(256) - 1) .. s:sub(pos) end
  end
  local ok, err = pcall(recipe.parse_yaml, s, "fuzz")
  if ok then
    n_ok = n_ok + 1
    -- whatever parsed must also load as a recipe or fail with a plain error message
    local ok2, err2 = pcall(recipe.load, s, {source = "fuzz"})
    if not ok2 and (type(err2) ~= "string" or err2:find("attempt to", 1, true) or err2:find("%.lua:%d+:")) then
      n_bad = n_bad + 1
      if n_bad <= 3 then io.stderr:write("fuzz: recipe.load crashed: ", tostring(err2), "\n--- input:\n", s, "\n") end
    end
  elseif type(err) == "string" and err:match("^fuzz:%d+: ") and not err:find("attempt to", 1, true) then
    n_err = n_err + 1
  else
    n_bad = n_bad + 1
    if n_bad <= 3 then io.stderr:write("fuzz: unexpected error: ", tostring(err), "\n--- input:\n", s, "\n") end
  end
end
check(n_bad == 0, string.format("fuzz: %d inputs parsed, %d clean errors, %d crashes", n_ok, n_err, n_bad))
check(n_ok > 50 and n_err > 100, string.format("fuzz exercised both paths (%d ok, %d errors)", n_ok, n_err))
check(os.clock() - t0 < 60, "fuzz ran in bounded time")

-- llmc.args: the recipe scripts' command line
local A = util.args({model = "m", output = "", overwrite = false, max_workers = 2, scale = 0.5},
  {argv = {[0] = "r.lua", "--model", "/x", "--output=/y", "--overwrite", "--max-workers", "4", "pos"}})
check(A.model == "/x" and A.output == "/y" and A.overwrite == true and A.max_workers == 4 and A.scale == 0.5 and A[1] == "pos",
      "args: values, =form, flags, dashes to underscores, positionals")
check(util.args({overwrite = true}, {argv = {"--no-overwrite"}}).overwrite == false, "args: --no-flag")
errors(function() util.args({model = "m"}, {argv = {"--modle", "x"}}) end, "unknown option --modle", "args: unknown option")
errors(function() util.args({model = "m"}, {argv = {"--model"}}) end, "option --model needs a value", "args: missing value")
errors(function() util.args({n = 1}, {argv = {"--n", "1.5"}}) end, "expects an integer", "args: integer option")
local _, usage = util.args({model = "m"}, {argv = {"--help"}, no_exit = true})
check(usage:find("--model MODEL", 1, true) ~= nil, "args: --help usage")

-- JSON as Python's json.dumps writes it (reference strings from Python 3.11)
check(util.json.encode({a = 1, b = 10000.0, c = 1e-05, d = json.null, e = json.array({}), f = json.object({}),
        g = "x/y\"é\n", h = {0.1, 1e16, 123456789012345678.0, -0.0}}, {indent = 2}) ==
      '{\n  "a": 1,\n  "b": 10000.0,\n  "c": 1e-05,\n  "d": null,\n  "e": [],\n  "f": {},\n  "g": "x/y\\"\\u00e9\\n",\n' ..
      '  "h": [\n    0.1,\n    1e+16,\n    1.2345678901234568e+17,\n    -0.0\n  ]\n}', "json.encode matches Python json.dumps(indent=2, sort_keys=True)")
local d = json.decode('{"n": 256, "f": 256.0, "z": [1e-5, null], "u": "\\u00e9\\ud83d\\ude00"}', "x.json")
check(math.type(d.n) == "integer" and math.type(d.f) == "float" and d.z[2] == json.null and d.u == "é😀"
      and table.concat(json.keys(d), ",") == "n,f,z,u", "json.decode keeps ints, floats, nulls, order")
errors(function() json.decode('{"a": 1,}', "bad.json") end, "bad.json:1:9: invalid JSON", "json error position")
check(util.fmt_bytes(22684232) == "21.6 MiB" and util.fmt_time(3.5) == "3.50 s" and util.fmt_time(125) == "2 min 05 s",
      "human-readable bytes and times")

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)

