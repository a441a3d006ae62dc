--[[
llmc — the top-level Lua module.

Everything a recipe or the REPL needs hangs off this table.  Submodules load
lazily on first use, so `require "llmc"` is cheap and a script only pays for
what it touches.

  local llmc = require "llmc"
  local x = llmc.randn({4, 8}, {seed = 1})          -- tensor constructors
  local model = llmc.load(llmc.default_model())     -- Hugging Face model dir
  print(llmc.generate(model, "Once upon a time", {max_new_tokens = 20}))

Tensor constructors (zeros, ones, full, arange, rand, randn, tensor,
from_bytes, cat, where, matmul, linear) are re-exported from the C module
"llmc._tensor".  Dims and element indices are 0-based, as in PyTorch.
]]
local T = require "llmc._tensor"

local llmc = {
  _VERSION = "llmc 0.1.0",
  Tensor = T.methods,   -- method table of every tensor: add methods here
}

for name, fn in pairs(T) do
  if name ~= "methods" then llmc[name] = fn end
end

-- Lazily loaded submodules: llmc.<key> -> require(<module>) [field]
local lazy = {
  safetensors = {"llmc.safetensors"},
  tokenizer = {"llmc.tokenizer"},
  jinja = {"llmc.jinja"},
  chat = {"llmc.chat"},
  nn = {"llmc.nn"},
  eval = {"llmc.eval"},
  schemes = {"llmc.schemes"},
  modifiers = {"llmc.modifiers"},
  datasets = {"llmc.datasets"},
  recipe = {"llmc.recipe"},
  util = {"llmc.util"},
  load = {"llmc.models", "load"},
  models = {"llmc.models"},
  generate = {"llmc.generate", "generate"},
  oneshot = {"llmc.oneshot", "oneshot"},
  model_free_ptq = {"llmc.model_free", "model_free_ptq"},
  args = {"llmc.util", "args"},
  qerror = {"llmc.quant", "qerror"},
  quant = {"llmc.quant"},
}

setmetatable(llmc, {
  -- the REPL's tab completion lists __methods keys without running __index
  __methods = lazy,
  __index = function(t, key)
    local spec = lazy[key]
    if not spec then return nil end
    local mod = require(spec[1])
    local v = spec[2] and mod[spec[2]] or mod
    rawset(t, key, v)
    return v
  end,
})

--- Root of the llmc source tree (for bundled fixtures and recipes).
function llmc.root()
  local r = os.getenv("LLMC_ROOT")
  if r and r ~= "" then return r end
  local src = debug.getinfo(1, "S").source:match("^@(.*)/lua/llmc/init%.lua$")
  return src or "."
end

--- Directory of the bundled fixtures shipped with the repository.
function llmc.bundled(path)
  local b = os.getenv("LLMC_BUNDLED")
  if not b or b == "" then b = llmc.root() .. "/fixtures" end
  return path and (b .. "/" .. path) or b
end

--- The larger shared fixtures ($LLMC_FIXTURES, else ../shared/fixtures).
function llmc.fixtures(path)
  local f = os.getenv("LLMC_FIXTURES")
  if not f or f == "" then f = llmc.root() .. "/../shared/fixtures" end
  return path and (f .. "/" .. path) or f
end

--- The default demo model: the bundled tiny-llama.
function llmc.default_model()
  return llmc.bundled("models/tiny-llama")
end

return llmc
