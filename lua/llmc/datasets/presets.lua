--[[
llmc.datasets.presets — the named datasets of llm-compressor's registry.

Each preset gives the columns it reads and the per-row template that
llm-compressor's TextGenerationDataset subclass applies (algorithms.md
sec. 10.2), so a local copy of the data gives the same calibration text as
`oneshot(dataset="open_platypus", ...)` does with the hub copy.  There is no
hub here: the rows come from the local `path` given to llmc.datasets.load.

A preset is a table:
  name          registry name (looked up normalised: lower case, "_" == "-")
  aliases       other names
  source        the Hugging Face dataset it mirrors (documentation only)
  config        the HF config name upstream uses or needs (documentation only)
  text_column   column renamed to `text` when the template leaves no `text`
                (it overrides the user's text_column, as upstream does)
  split_map     split names upstream rewrites (ultrachat: train -> train_sft)
  chat_fallback Jinja template installed when the tokenizer has none
  template      function(row, ctx) -> new row with `text` (and `prompt`);
                ctx:field(row, name [, optional]) returns a string field or
                raises an error naming the file:line; ctx:chat(messages)
                renders a message list with the chat template
  unsupported   reason the preset cannot run in llmc (multimodal data)

  local presets = require "llmc.datasets.presets"
  local p = presets.lookup("Open_Platypus")
  print(p.template({instruction = "Add 2 and 3.", input = "", output = "5"}, ctx).text)
]]
local M = {}

local ALPACA_INPUT = "Below is an instruction that describes a task, paired with an input that " ..
  "provides further context. Write a response that appropriately completes the request.\n\n" ..
  "### Instruction:\n"
local ALPACA_NO_INPUT = "Below is an instruction that describes a task. Write a response that " ..
  "appropriately completes the request.\n\n### Instruction:\n"
local EVOL_PREFIX = "Below is an instruction that describes a programming task. Write a program " ..
  "that appropriately completes the request.\n\n### Instruction:\n"

-- llm-compressor's fallback for chat datasets whose tokenizer has no template.
-- With HF's trim_blocks/lstrip_blocks it renders every message as
-- "<|role|>\n" .. content .. eos .. "\n", and the generation prompt as "<|assistant|>\n".
M.FALLBACK_CHAT_TEMPLATE =
  "{% for message in messages %}\n" ..
  "{% if message['role'] == 'user' %}\n" ..
  "{{ '<|user|>\n' + message['content'] + eos_token }}\n" ..
  "{% elif message['role'] == 'system' %}\n" ..
  "{{ '<|system|>\n' + message['content'] + eos_token }}\n" ..
  "{% elif message['role'] == 'assistant' %}\n" ..
  "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n" ..
  "{% endif %}\n" ..
  "{% if loop.last and add_generation_prompt %}\n" ..
  "{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"

local list = {
  {
    name = "open_platypus", source = "garage-bAInd/Open-Platypus", text_column = "text",
    -- Alpaca prompt (with the input paragraph only when input is non-empty) + output.
    template = function(row, ctx)
      local instruction = ctx:field(row, "instruction")
      local input = ctx:field(row, "input", true)
      local prompt
      if input and input ~= "" then
        prompt = ALPACA_INPUT .. instruction .. "\n\n### Input:\n" .. input .. "\n\n### Response:\n"
      else
        prompt = ALPACA_NO_INPUT .. instruction .. "\n\n### Response:\n"
      end
      local output = ctx:field(row, "output", true)
      return { text = prompt .. (output or ""), prompt = prompt }
    end,
  },
  {
    name = "ultrachat_200k", aliases = { "ultrachat" }, source = "HuggingFaceH4/ultrachat_200k",
    text_column = "messages", split_map = { train = "train_sft", test = "test_sft" },
    chat_fallback = M.FALLBACK_CHAT_TEMPLATE,
    -- An empty system message goes first when the conversation has none.
    template = function(row, ctx)
      local msgs = ctx:messages(row, "messages")
      if msgs[1].role ~= "system" then
        local m2 = { { role = "system", content = "" } }
        for i = 1, #msgs do m2[i + 1] = msgs[i] end
        msgs = m2
      end
      return { text = ctx:chat(msgs) }
    end,
  },
  {
    name = "gsm8k", source = "openai/gsm8k", config = "main", text_column = "text",
    template = function(row, ctx)
      local prompt = "Question: " .. ctx:field(row, "question") .. "\nAnswer:"
      local answer = ctx:field(row, "answer", true)
      return { text = answer and (prompt .. " " .. answer) or prompt, prompt = prompt }
    end,
  },
  { name = "wikitext", source = "Salesforce/wikitext", config = "wikitext-2-raw-v1", text_column = "text" },
  { name = "c4", source = "allenai/c4", text_column = "text" },
  {
    name = "cnn_dailymail", source = "cnn_dailymail", config = "3.0.0", text_column = "text",
    template = function(row, ctx)
      return { text = "Article:\n" .. ctx:field(row, "article") .. "\n\n### Summarization:\n" ..
        ctx:field(row, "highlights") .. "\n" }
    end,
  },
  {
    name = "evolcodealpaca", source = "theblackcat102/evol-codealpaca-v1", text_column = "text",
    -- Upstream appends the output only when the literal word "output" occurs in
    -- the prompt (it tests the prompt, not the row).  Mirrored on purpose so the
    -- calibration text is upstream's; pass `preprocess` for prompt + output.
    template = function(row, ctx)
      local prompt = EVOL_PREFIX .. ctx:field(row, "instruction") .. "\n\n### Response:\n"
      local text = prompt
      if text:find("output", 1, true) then text = text .. (ctx:field(row, "output", true) or "") end
      return { text = text, prompt = prompt }
    end,
  },
  {
    name = "perfectblend", source = "mlabonne/open-perfectblend", text_column = "conversations",
    chat_fallback = M.FALLBACK_CHAT_TEMPLATE,
    -- ShareGPT turns {from, value}; human -> user, gpt -> assistant.
    template = function(row, ctx)
      local conv = row.conversations
      if type(conv) ~= "table" or #conv == 0 then
        ctx:error(row, "field 'conversations' must be a non-empty list of {from, value}")
      end
      local map = { human = "user", gpt = "assistant" }
      local msgs = {}
      for i, t in ipairs(conv) do
        if type(t) ~= "table" or type(t.from) ~= "string" or type(t.value) ~= "string" then
          ctx:error(row, string.format("conversations[%d] must have string 'from' and 'value'", i))
        end
        msgs[i] = { role = map[t.from] or t.from, content = t.value }
      end
      return { text = ctx:chat(msgs) }
    end,
  },
  { name = "flickr", aliases = { "flickr30k" }, source = "lmms-lab/flickr30k",
    unsupported = "it is an image-caption dataset (images + captions); llmc's datasets are text only" },
  { name = "peoples_speech", source = "MLCommons/peoples_speech", config = "test",
    unsupported = "it is a speech dataset (audio); llmc's datasets are text only" },
  { name = "custom", aliases = { "json", "csv" }, text_column = nil },
}

--- Registry key of a name: lower case, "_" -> "-" (upstream's standardize_name).
function M.normalize(name)
  return (tostring(name):lower():gsub("_", "-"))
end

M.registry = {}

--- Register a preset (a table as described above; `name` required).
-- Later registrations replace earlier ones of the same name.
function M.register(p)
  assert(type(p) == "table" and type(p.name) == "string", "preset needs a name")
  M.registry[M.normalize(p.name)] = p
  for _, a in ipairs(p.aliases or {}) do M.registry[M.normalize(a)] = p end
  return p
end

for _, p in ipairs(list) do M.register(p) end

--- The preset for a name or alias, or nil.
function M.lookup(name)
  return M.registry[M.normalize(name)]
end

--- Sorted list of registered names (aliases included).
function M.names()
  local seen, out = {}, {}
  for _, p in pairs(M.registry) do
    if not seen[p] then
      seen[p] = true
      out[#out + 1] = p.name
      for _, a in ipairs(p.aliases or {}) do out[#out + 1] = a end
    end
  end
  table.sort(out)
  return out
end

return M
