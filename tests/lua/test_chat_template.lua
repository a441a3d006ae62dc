-- Tests for llmc.chat.apply_chat_template.
-- 1. Every case of fixtures/tokenizers/{llama3,qwen3}/chat_cases.jsonl (rendered by the
--    reference transformers.js tokenizers) must be reproduced byte for byte.
-- 2. Qwen3 paths the fixture cases do not reach (tools, tool calls, tool responses,
--    reasoning_content, enable_thinking, continue_final_message): expected text worked out by
--    hand from the template source and cross-checked with Python jinja2 3.1.6 configured as
--    transformers does.
-- 3. The API contract: missing template error, default templates, named templates, batches,
--    special tokens, raise_exception and syntax-error positions, strftime_now clock.
-- Fixtures: the bundled copy (LLMC_BUNDLED or LLMC_ROOT/fixtures) is preferred, then
-- LLMC_FIXTURES or LLMC_ROOT/../shared/fixtures; exits 77 (skip) when none is present.

local chat = require "llmc.chat"
local jinja = require "llmc.jinja"

local passed, failed = 0, 0
local function check(cond, what, detail)
  if cond then
    passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. what .. (detail and ("\n  " .. detail) or ""))
  end
end
local function check_eq(got, want, what)
  check(got == want, what, string.format("got  %q\n  want %q", tostring(got), tostring(want)))
end
local function check_err(fn, pattern, what)
  local ok, err = pcall(fn)
  check(not ok and tostring(err):find(pattern, 1, true) ~= nil, what,
    ok and "no error raised" or ("error was: " .. tostring(err)))
end

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

local root = os.getenv("LLMC_ROOT") or "."
local candidates = {}
if os.getenv("LLMC_BUNDLED") then candidates[#candidates + 1] = os.getenv("LLMC_BUNDLED") end
candidates[#candidates + 1] = root .. "/fixtures"
candidates[#candidates + 1] = os.getenv("LLMC_FIXTURES") or (root .. "/../shared/fixtures")
local fixtures
for _, dir in ipairs(candidates) do
  if exists(dir .. "/tokenizers/llama3/chat_cases.jsonl") and exists(dir .. "/tokenizers/qwen3/chat_cases.jsonl") then
    fixtures = dir
    break
  end
end
if not fixtures then
  print("SKIP: no fixtures/tokenizers/{llama3,qwen3}/chat_cases.jsonl in: " .. table.concat(candidates, ", "))
  os.exit(77)
end
print("fixtures: " .. fixtures)

-- 1. reference chat cases ------------------------------------------------------------------

local configs = {}
for _, name in ipairs { "llama3", "qwen3" } do
  local dir = fixtures .. "/tokenizers/" .. name
  -- one loaded by directory, one by file path: both forms are part of the API
  local cfg = chat.load_tokenizer_config(name == "llama3" and dir or (dir .. "/tokenizer_config.json"))
  configs[name] = cfg
  local n, ok = 0, 0
  for line in io.lines(dir .. "/chat_cases.jsonl") do
    if line:find("%S") then
      local case = jinja.json_decode(line)
      n = n + 1
      local opts = { add_generation_prompt = case.add_generation_prompt == true }
      if type(case.options) == "table" then for k, v in pairs(case.options) do opts[k] = v end end
      if case.tools ~= nil and case.tools ~= jinja.none then opts.tools = case.tools end
      local good, out = pcall(chat.apply_chat_template, cfg, case.messages, opts)
      if not good then
        check(false, string.format("%s case %d renders", name, n), tostring(out))
      else
        check_eq(out, case.rendered, string.format("%s case %d", name, n))
        if out == case.rendered then ok = ok + 1 end
      end
    end
  end
  check(n > 0, name .. " has chat cases")
  print(string.format("%s: %d/%d chat cases byte-identical", name, ok, n))
end

local qwen, llama = configs.qwen3, configs.llama3

-- 2. Qwen3 template paths beyond the fixture cases ------------------------------------------

local hi = { { role = "user", content = "Hi" } }
check_eq(chat.apply_chat_template(qwen, hi, { add_generation_prompt = true, enable_thinking = false }),
  "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
  "qwen3 enable_thinking=false adds an empty think block")
check_eq(chat.apply_chat_template(qwen, hi, { add_generation_prompt = true, enable_thinking = true }),
  "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
  "qwen3 enable_thinking=true adds nothing")

local tools = chat.decode_json([[
[{"type": "function", "function": {"name": "get_weather", "description": "Get weather",
  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
]])
check_eq(chat.apply_chat_template(qwen, { { role = "user", content = "What's the weather in Paris?" } },
    { add_generation_prompt = true, tools = tools }),
  "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
  .. "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
  .. '{"type": "function", "function": {"name": "get_weather", "description": "Get weather", '
  .. '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}'
  .. "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
  .. "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
  .. "<args-json-object>}\n</tool_call><|im_end|>\n"
  .. "<|im_start|>user\nWhat's the weather in Paris?<|im_end|>\n<|im_start|>assistant\n",
  "qwen3 tools: system block with tojson'd schema, key order kept")

local convo = chat.decode_json([[
[{"role": "user", "content": "Weather?"},
 {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
   "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "°C"}}}]},
 {"role": "tool", "content": "22"},
 {"role": "assistant", "content": "It is 22 °C.", "reasoning_content": "Tool said 22."}]
]])
check_eq(chat.apply_chat_template(qwen, convo, {}),
  "<|im_start|>user\nWeather?<|im_end|>\n"
  .. "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"°C\"}}"
  .. "\n</tool_call><|im_end|>\n"
  .. "<|im_start|>user\n<tool_response>\n22\n</tool_response><|im_end|>\n"
  .. "<|im_start|>assistant\n<think>\nTool said 22.\n</think>\n\nIt is 22 °C.<|im_end|>\n",
  "qwen3 tool call (dict arguments), tool response, reasoning_content")

convo[2].tool_calls[1]["function"].arguments = '{"city": "Oslo"}'
convo[2].content = "Let me check."
check_eq(chat.apply_chat_template(qwen, { convo[1], convo[2] }, {}),
  "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nLet me check.\n"
  .. "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call><|im_end|>\n",
  "qwen3 tool call with string arguments after content")

check_eq(chat.apply_chat_template(qwen, { { role = "user", content = "Hi" }, { role = "assistant", content = "Partial answer" } },
    { continue_final_message = true }),
  "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nPartial answer",
  "continue_final_message cuts after the final message")
check_err(function() chat.apply_chat_template(qwen, hi, { continue_final_message = true, add_generation_prompt = true }) end,
  "mutually exclusive", "continue_final_message + add_generation_prompt is an error")

-- 3. API contract ----------------------------------------------------------------------------

-- special tokens may be AddedToken tables
local llama_tbl = {}
for k, v in pairs(llama) do llama_tbl[k] = v end
llama_tbl.bos_token = { content = "<|begin_of_text|>", lstrip = false }
check_eq(chat.apply_chat_template(llama_tbl, hi, {}),
  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
  "bos_token given as {content=...}")
check_eq(chat.apply_chat_template(llama, hi, { bos_token = "<BOS>" }):sub(1, 5), "<BOS>", "opts override config tokens")
check_eq(chat.apply_chat_template(qwen, hi, { chat_template = "{{ additional_special_tokens[0] }}|{{ eos_token }}|{{ bos_token is defined }}" }),
  "<|im_start|>|<|im_end|>|False", "additional_special_tokens, eos_token, null bos_token -> undefined")

-- no template: a clear error, never a silent default
check_err(function() chat.apply_chat_template({ bos_token = "<s>", eos_token = "</s>" }, hi, {}) end,
  "does not have a chat template", "config without chat_template raises")
local tiny = (os.getenv("LLMC_BUNDLED") or (root .. "/fixtures")) .. "/models/tiny-llama/tokenizer_config.json"
if exists(tiny) then
  local tcfg = chat.load_tokenizer_config(tiny)
  check_err(function() chat.apply_chat_template(tcfg, hi, {}) end, "does not have a chat template",
    "tiny-llama fixture (no chat_template) raises")
  check_eq(chat.apply_chat_template(tcfg, hi, { chat_template = chat.DEFAULT_TEMPLATE, add_generation_prompt = true }),
    "<s><|user|>\nHi</s>\n<|assistant|>\n", "DEFAULT_TEMPLATE with tiny-llama's bos/eos")
end

local two = { { role = "system", content = "Be brief." }, { role = "user", content = "Hi" }, { role = "assistant", content = "Hello" } }
check_eq(chat.apply_chat_template(chat.DEFAULT_TEMPLATE, two, { bos_token = "<s>", eos_token = "</s>" }),
  "<s><|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello</s>\n", "DEFAULT_TEMPLATE")
check_eq(chat.apply_chat_template(chat.DEFAULT_TEMPLATE, hi, {}), "<|user|>\nHi\n", "DEFAULT_TEMPLATE without special tokens")
check_eq(chat.apply_chat_template(chat.CHATML_TEMPLATE, two, { add_generation_prompt = true }),
  "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
  .. "<|im_start|>assistant\n", "CHATML_TEMPLATE")

-- the calibration chat set through DEFAULT_TEMPLATE, against a plain Lua reconstruction
local calib = (os.getenv("LLMC_BUNDLED") or (root .. "/fixtures")) .. "/datasets/calib_chat.jsonl"
if exists(calib) then
  local n, same = 0, 0
  for line in io.lines(calib) do
    local row = chat.decode_json(line)
    local want = { "<s>" }
    for _, m in ipairs(row.messages) do want[#want + 1] = "<|" .. m.role .. "|>\n" .. m.content .. "</s>\n" end
    n = n + 1
    if chat.apply_chat_template(chat.DEFAULT_TEMPLATE, row.messages, { bos_token = "<s>", eos_token = "</s>" })
        == table.concat(want) then
      same = same + 1
    end
  end
  check(n > 0 and same == n, "DEFAULT_TEMPLATE on calib_chat.jsonl", string.format("%d/%d identical", same, n))
end

-- named templates (transformers' dict-of-templates configs)
local named = { chat_template = {
  { name = "default", template = "D{{ messages|length }}" },
  { name = "tool_use", template = "T{{ tools is none }}" } } }
check_eq(chat.apply_chat_template(named, hi, {}), "D1", "named templates: default")
check_eq(chat.apply_chat_template(named, hi, { tools = tools }), "TFalse", "named templates: tool_use when tools are given")
check_eq(chat.apply_chat_template(named, hi, { chat_template = "tool_use" }), "TTrue", "named templates: chosen by name")
check_err(function() chat.apply_chat_template({ chat_template = { { name = "a", template = "" } } }, hi, {}) end,
  "no 'default'", "named templates without default")

-- variables the template sees
check_eq(chat.apply_chat_template("{{ tools is none }}|{{ documents is none }}|{{ add_generation_prompt }}|{{ foo }}", hi, { foo = "bar" }),
  "True|True|False|bar", "tools/documents default to none; extra opts are variables")

-- batches
local batch = chat.apply_chat_template(chat.CHATML_TEMPLATE, { hi, { { role = "user", content = "Yo" } } }, {})
check(type(batch) == "table" and #batch == 2 and batch[1] == "<|im_start|>user\nHi<|im_end|>\n"
  and batch[2] == "<|im_start|>user\nYo<|im_end|>\n", "a list of conversations renders a list of strings")

-- errors
check_err(function() chat.apply_chat_template("{{ raise_exception('bad role: ' ~ messages[0].role) }}", { { role = "robot", content = "" } }, {}) end,
  "chat_template:1:19: bad role: robot", "raise_exception propagates the template's message with its position")
check_err(function() chat.apply_chat_template("line one\n{% if x %}\n{{ 1 + }}\n{% endif %}", hi, {}) end,
  "chat_template:3:8: TemplateSyntaxError: unexpected end of print statement", "syntax error names line and column")
check_err(function() chat.apply_chat_template("{{ messages[0].content.upper( }}", hi, { template_name = "mine" }) end,
  "mine:1:", "template_name used in errors")
check_err(function() chat.load_tokenizer_config(root .. "/no/such/dir") end, "cannot open", "missing tokenizer config")
check_err(function() chat.apply_chat_template(42, hi, {}) end, "template string or a tokenizer config", "bad source type")

-- strftime_now with a fixed clock (2024-07-05 12:00:00 UTC)
check_eq(chat.apply_chat_template("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%-d %B') }}", hi, { now = 1720180800, utc = true }),
  "05 Jul 2024|5 July", "strftime_now uses the given clock")

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
