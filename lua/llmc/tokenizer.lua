--[[
llmc.tokenizer — a model directory's tokenizer: tokenizer.json (through the C
tokenizer, "llmc._tokenizer") plus what tokenizer_config.json,
special_tokens_map.json and generation_config.json say about it: the
special tokens and their ids, and the chat template (rendered by llmc.chat).

  local tok = require("llmc.tokenizer").load("fixtures/models/tiny-llama")   -- or model:tokenizer()
  local ids = tok:encode("Debian is")                 -- {1, 10562, 753, 349}: the post-processor adds BOS
  tok:encode("Debian is", {add_special_tokens = false})   -- {10562, 753, 349}
  tok:decode(ids, {skip_special_tokens = true})       -- "Debian is"
  print(tok.bos_token_id, tok.eos_token_id, tok:vocab_size())
  local text = tok:apply_chat_template(messages, {add_generation_prompt = true})
  local ids2 = tok:apply_chat_template(messages, {add_generation_prompt = true, tokenize = true})

Fields: bos_token / bos_token_id, eos_token / eos_token_id, eos_token_ids (every id
that ends generation: generation_config.json's eos_token_id, a number or a list, plus
the tokenizer's eos), pad_token / pad_token_id (nil when none), unk_token_id,
add_bos_token / add_eos_token (tokenizer_config's flags, informational: the
post-processor of tokenizer.json is what inserts them), chat_template, config
(the decoded tokenizer_config.json, {} when absent), path.
]]
local C = require "llmc._tokenizer"
local util = require "llmc.util"

local M = {}

local Tok = {}
Tok.__index = Tok
M.Tokenizer = Tok

local function read_json(path)
  if not util.exists(path) then return nil end
  return util.json.read_file(path)
end

local function is_null(v) return v == nil or v == util.json.null end

local function token_string(v)
  if is_null(v) then return nil end
  if type(v) == "table" then return v.content end
  return v
end

--- Load the tokenizer of a model directory (or a tokenizer.json path).
function M.load(path)
  if type(path) ~= "string" then error("tokenizer.load: expected a directory or a tokenizer.json path", 2) end
  local dir, file = path, path
  if path:match("%.json$") then
    dir = util.dirname(path)
  else
    dir = path:gsub("/+$", "")
    file = dir .. "/tokenizer.json"
  end
  if not util.exists(file) then error("tokenizer.load: " .. file .. " not found", 2) end
  local self = setmetatable({path = dir, core = C.load(file)}, Tok)
  local cfg = read_json(dir .. "/tokenizer_config.json") or {}
  local map = read_json(dir .. "/special_tokens_map.json") or {}
  local gen = read_json(dir .. "/generation_config.json") or {}
  self.config = cfg
  for _, which in ipairs{"bos", "eos", "pad", "unk"} do
    local s = token_string(cfg[which .. "_token"]) or token_string(map[which .. "_token"])
    self[which .. "_token"] = s
    self[which .. "_token_id"] = s and self.core:token_to_id(s) or nil
  end
  if self.pad_token_id == nil and not is_null(gen.pad_token_id) then self.pad_token_id = math.tointeger(gen.pad_token_id) end
  if self.bos_token_id == nil and not is_null(gen.bos_token_id) then self.bos_token_id = math.tointeger(gen.bos_token_id) end
  local eos = {}
  local seen = {}
  local function add(v)
    v = math.tointeger(v)
    if v and not seen[v] then seen[v] = true; eos[#eos + 1] = v end
  end
  if type(gen.eos_token_id) == "table" then for _, v in ipairs(gen.eos_token_id) do add(v) end
  elseif not is_null(gen.eos_token_id) then add(gen.eos_token_id) end
  add(self.eos_token_id)
  if self.eos_token_id == nil then self.eos_token_id = eos[1] end
  self.eos_token_ids = eos
  self.add_bos_token = cfg.add_bos_token
  self.add_eos_token = cfg.add_eos_token
  self.chat_template = not is_null(cfg.chat_template) and cfg.chat_template or nil
  return self
end

--- Token ids of `text` (a Lua array).  opts.add_special_tokens (default true).
function Tok:encode(text, opts)
  if type(text) ~= "string" then error("tokenizer:encode: text must be a string", 2) end
  local add = true
  if opts and opts.add_special_tokens == false then add = false end
  return self.core:encode(text, {add_special_tokens = add})
end

--- Several texts at once (threads in C): an array of id arrays.
function Tok:encode_batch(texts, opts)
  local add = true
  if opts and opts.add_special_tokens == false then add = false end
  return self.core:encode_batch(texts, {add_special_tokens = add})
end

--- Text of `ids` (a Lua array or an int Tensor).  opts.skip_special_tokens (default false).
function Tok:decode(ids, opts)
  if type(ids) ~= "table" then
    local ok, t = pcall(function() return ids:totable() end)
    if not ok then error("tokenizer:decode: ids must be an array of integers or a Tensor", 2) end
    ids = t
  end
  return self.core:decode(ids, {skip_special_tokens = opts and opts.skip_special_tokens or false})
end

function Tok:token_to_id(s) return self.core:token_to_id(s) end
function Tok:id_to_token(i) return self.core:id_to_token(i) end
function Tok:vocab_size() return self.core:vocab_size() end
function Tok:special_tokens() return self.core:special_tokens() end

--- Render a conversation with the tokenizer's chat template (llmc.chat).
--- opts as llmc.chat.apply_chat_template, plus tokenize (return ids, encoded
--- without adding special tokens, as transformers does).
function Tok:apply_chat_template(messages, opts)
  opts = opts or {}
  local chat = require "llmc.chat"
  local o = {}
  for k, v in pairs(opts) do if k ~= "tokenize" then o[k] = v end end
  local text = chat.apply_chat_template(self.config, messages, o)
  if opts.tokenize then return self:encode(text, {add_special_tokens = false}) end
  return text
end

function Tok:__tostring()
  return string.format("Tokenizer(%s, vocab %d, bos %s, eos %s)", self.path, self:vocab_size(),
    tostring(self.bos_token_id), tostring(self.eos_token_id))
end

return M
