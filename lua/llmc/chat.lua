--[[
llmc.chat -- apply a Hugging Face chat template to a conversation (transformers'
tokenizer.apply_chat_template(..., tokenize=False)), using llmc.jinja.

Usage:

    local chat = require "llmc.chat"
    local cfg = chat.load_tokenizer_config("models/qwen3")      -- dir or tokenizer_config.json
    local text = chat.apply_chat_template(cfg, {
      { role = "system", content = "You are helpful." },
      { role = "user", content = "Hi!" },
    }, { add_generation_prompt = true, enable_thinking = false })

    -- A tokenizer without a chat_template (the tiny-llama fixture) raises an error; pass one:
    local text2 = chat.apply_chat_template(chat.DEFAULT_TEMPLATE, messages, { bos_token = "<s>", eos_token = "</s>" })

apply_chat_template(source, messages, opts) -> string
  source   : a template string, or a tokenizer config table (its `chat_template`, a string or
             a list of {name=, template=}; its bos/eos/unk/pad/sep/cls/mask tokens, strings or
             {content=...} tables, and additional_special_tokens become template variables).
  messages : a list of message tables ({role=, content=, ...}); a list of such lists renders
             a batch and returns a list of strings.
  opts     : add_generation_prompt (default false), continue_final_message (default false),
             tools, documents (lists; `none` in the template when absent, as transformers),
             chat_template (a template string, or the name of one of the config's named
             templates), now / utc (clock for strftime_now: epoch seconds or a function; UTC
             formatting), template_name (used in error messages; default "chat_template").
             Every other key (enable_thinking, bos_token, date_string, ...) is passed to the
             template as a variable, overriding the config's special tokens.
Errors: no template -> error naming the fix; template syntax errors name line and column;
raise_exception(msg) in the template -> a Lua error whose message ends with msg.
Message/tool tables built in Lua are dicts whose keys iterate sorted (Lua forgets key order);
decode JSON with chat.decode_json / llmc.jinja.json_decode to keep the source order (this
matters for `tojson` of tool schemas and arguments).
]]

local jinja = require "llmc.jinja"

local M = {}

--- Zephyr-style default: "<|role|>\ncontent" + eos_token + "\n" per message, bos_token first,
--- "<|assistant|>\n" as generation prompt.  Not applied implicitly: pass it explicitly.
M.DEFAULT_TEMPLATE = table.concat({
  "{{- bos_token if bos_token is defined and bos_token is not none else '' }}",
  "{%- for message in messages %}",
  "    {{- '<|' ~ message['role'] ~ '|>\\n' ~ message['content'] ~ (eos_token if eos_token is defined and eos_token is not none else '') ~ '\\n' }}",
  "{%- endfor %}",
  "{%- if add_generation_prompt %}",
  "    {{- '<|assistant|>\\n' }}",
  "{%- endif %}",
}, "\n")

--- ChatML: "<|im_start|>role\ncontent<|im_end|>\n" per message; "<|im_start|>assistant\n" as
--- generation prompt.  No BOS.
M.CHATML_TEMPLATE = table.concat({
  "{%- for message in messages %}",
  "    {{- '<|im_start|>' ~ message['role'] ~ '\\n' ~ message['content'] ~ '<|im_end|>\\n' }}",
  "{%- endfor %}",
  "{%- if add_generation_prompt %}",
  "    {{- '<|im_start|>assistant\\n' }}",
  "{%- endif %}",
}, "\n")

local NO_TEMPLATE_MSG = "Cannot use apply_chat_template because this tokenizer does not have a chat template "
  .. "(no 'chat_template' in its tokenizer config) and no template was passed. Pass one as the first "
  .. "argument or as opts.chat_template, e.g. llmc.chat.DEFAULT_TEMPLATE or llmc.chat.CHATML_TEMPLATE."

local OPTION_KEYS = { add_generation_prompt = true, continue_final_message = true, tools = true,
  documents = true, chat_template = true, now = true, utc = true, template_name = true }

local SPECIAL_TOKENS = { "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token" }

--- Decode JSON keeping object key order (see llmc.jinja.json_decode).
M.decode_json = jinja.json_decode

--- Read a tokenizer_config.json (path to the file or to its directory) into an ordered table.
function M.load_tokenizer_config(path)
  if type(path) ~= "string" then error("load_tokenizer_config: path must be a string", 2) end
  local f = io.open(path, "rb")
  if f then
    -- a directory opens on Linux but cannot be read; fall through to dir/tokenizer_config.json
    local ok, text = pcall(f.read, f, "a")
    f:close()
    if ok and text then
      local dok, cfg = pcall(jinja.json_decode, text)
      if not dok then error(path .. ": " .. tostring(cfg), 2) end
      return cfg
    end
  end
  local file = path:gsub("/+$", "") .. "/tokenizer_config.json"
  f = io.open(file, "rb")
  if not f then error("load_tokenizer_config: cannot open " .. path .. " or " .. file, 2) end
  local text = f:read("a")
  f:close()
  local dok, cfg = pcall(jinja.json_decode, text)
  if not dok then error(file .. ": " .. tostring(cfg), 2) end
  return cfg
end

-- A special token in a tokenizer config: a string, an AddedToken table {content=...}, or null.
local function token_string(v)
  if type(v) == "string" then return v end
  if type(v) == "table" and type(v.content) == "string" then return v.content end
  return nil
end

-- Pick the template string (transformers' get_chat_template).
local function select_template(source, opts)
  local override = opts.chat_template
  if type(source) == "string" then
    if override ~= nil then error("apply_chat_template: pass the template either as source or as opts.chat_template, not both", 3) end
    return source
  end
  if type(source) ~= "table" then
    error("apply_chat_template: source must be a template string or a tokenizer config table, got " .. type(source), 3)
  end
  local ct = source.chat_template
  if type(ct) == "table" then
    local named = {}
    for _, entry in ipairs(ct) do
      if type(entry) == "table" and type(entry.name) == "string" and type(entry.template) == "string" then
        named[entry.name] = entry.template
      end
    end
    if override ~= nil then
      if type(override) ~= "string" then error("apply_chat_template: opts.chat_template must be a string", 3) end
      return named[override] or override
    end
    if opts.tools ~= nil and named.tool_use then return named.tool_use end
    if named.default then return named.default end
    error("apply_chat_template: this tokenizer has several chat templates and no 'default' one; "
      .. "choose one with opts.chat_template (a template name)", 3)
  end
  if override ~= nil then
    if type(override) ~= "string" then error("apply_chat_template: opts.chat_template must be a string", 3) end
    return override
  end
  if type(ct) == "string" then return ct end
  error(NO_TEMPLATE_MSG, 3)
end

local cache, cache_n = {}, 0
local function compiled(src, name)
  local key = name .. "\0" .. src
  local t = cache[key]
  if not t then
    if cache_n >= 32 then cache, cache_n = {}, 0 end
    t = jinja.compile(src, { name = name })
    cache[key] = t
    cache_n = cache_n + 1
  end
  return t
end

-- The text of a message's content for continue_final_message (string, or the last text part).
local function final_text(msg)
  local c = type(msg) == "table" and msg.content or nil
  if type(c) == "string" then return c end
  if type(c) == "table" then
    for i = #c, 1, -1 do
      local part = c[i]
      if type(part) == "table" and part.type == "text" and type(part.text) == "string" then return part.text end
    end
  end
  error("apply_chat_template: continue_final_message needs a final message with text content", 3)
end

local function render_one(template, vars, conversation, opts, name)
  vars.messages = conversation
  local text = template:render(vars, { now = opts.now, utc = opts.utc })
  if opts.continue_final_message then
    local final = final_text(conversation[#conversation])
    local stripped = jinja.py_strip(final, "b")
    -- cut after the last occurrence of the final message (its stripped form if the template trimmed it)
    local function rfind(s, sub)
      local last, pos = nil, 1
      while true do
        local a = s:find(sub, pos, true)
        if not a then return last end
        last, pos = a, a + 1
      end
    end
    local at = rfind(text, final)
    if at then
      text = text:sub(1, at + #final - 1)
    else
      at = rfind(text, stripped)
      if not at then
        error("apply_chat_template: continue_final_message is set but the final message does not appear "
          .. "in the chat after applying the chat template (" .. name .. ")", 3)
      end
      text = text:sub(1, at + #stripped - 1)
    end
  end
  return text
end

--- Render a conversation (or a batch of conversations) with a chat template.
function M.apply_chat_template(source, messages, opts)
  opts = opts or {}
  if type(messages) ~= "table" then error("apply_chat_template: messages must be a list of message tables", 2) end
  if opts.add_generation_prompt and opts.continue_final_message then
    error("apply_chat_template: add_generation_prompt and continue_final_message are mutually exclusive", 2)
  end
  local src = select_template(source, opts)
  local name = opts.template_name or "chat_template"
  local template = compiled(src, name)

  local vars = {}
  if type(source) == "table" then
    for _, k in ipairs(SPECIAL_TOKENS) do vars[k] = token_string(source[k]) end
    local extra = source.additional_special_tokens
    if type(extra) == "table" and #extra > 0 then
      local list = jinja.list()
      for i, v in ipairs(extra) do list[i] = token_string(v) or v end
      vars.additional_special_tokens = list
    end
  end
  for k, v in pairs(opts) do
    if not OPTION_KEYS[k] then vars[k] = v end
  end
  vars.add_generation_prompt = opts.add_generation_prompt and true or false
  vars.tools = opts.tools == nil and jinja.none or opts.tools
  vars.documents = opts.documents == nil and jinja.none or opts.documents

  local first = messages[1]
  local batched = type(first) == "table" and jinja.kind(first) == "list" and not first.role
  if not batched then return render_one(template, vars, messages, opts, name) end
  local out = {}
  for i, conversation in ipairs(messages) do out[i] = render_one(template, vars, conversation, opts, name) end
  return out
end

return M
