--[[
llmc.modifiers — the modifier registry: recipes (Lua or YAML) name
modifiers by class name, llm-compressor style.

  local modifiers = require "llmc.modifiers"
  local m = modifiers.QuantizationModifier{targets = "Linear", scheme = "FP8_BLOCK", ignore = {"lm_head"}}
  local m2 = modifiers.create("QuantizationModifier", {scheme = "W4A16"})
  -- a new modifier: a class with lifecycle methods, registered under its name
  modifiers.define("PrintModifier", {
    fields = {{"message", "hi", modifiers.check.string}},
    on_initialize = function(self, state) print(self.message) return true end,
  })
  llmc.oneshot{model = model, recipe = modifiers.PrintModifier{message = "start"}}

Built-in modifiers load on first use from llmc.modifiers.<file> (the
table below); modifiers.names() lists the registered and built-in names.
]]
local base = require "llmc.modifiers.base"

local M = {}
M.base = base
M.check = base.check
M.registry = {}

--- Built-in modifier names -> the module that defines them.
M.builtin = {
  QuantizationModifier = "llmc.modifiers.quantization",
  GPTQModifier = "llmc.modifiers.gptq",
  AWQModifier = "llmc.modifiers.awq",
  SmoothQuantModifier = "llmc.modifiers.smoothquant",
  SparseGPTModifier = "llmc.modifiers.sparsegpt",
  WandaPruningModifier = "llmc.modifiers.wanda",
}

--- Register a modifier class (from base.class) under its name.
function M.register(cls, name)
  name = name or cls.name
  if type(name) ~= "string" or name == "" then error("modifiers.register: a class name is needed", 2) end
  M.registry[name] = cls
  return cls
end

--- Define and register a modifier class in one call (see base.class).
function M.define(name, def)
  return M.register(base.class(name, def), name)
end

local function module_exists(modname)
  return package.searchpath(modname, package.path) ~= nil
end

--- The class registered under `name`, loading a built-in on demand; nil
--- and a message when unknown.
function M.get(name)
  local cls = M.registry[name]
  if cls then return cls end
  local modname = M.builtin[name]
  if modname and module_exists(modname) then
    local mod = require(modname)
    cls = M.registry[name] or (type(mod) == "table" and mod.name == name and mod) or nil
    if cls then M.registry[name] = cls return cls end
  end
  return nil, "unknown modifier '" .. tostring(name) .. "' (available: " .. table.concat(M.names(), ", ") .. ")"
end

--- Names of the modifiers that can be created here, sorted.
function M.names()
  local out, seen = {}, {}
  for n in pairs(M.registry) do out[#out + 1] = n; seen[n] = true end
  for n, modname in pairs(M.builtin) do
    if not seen[n] and module_exists(modname) then out[#out + 1] = n end
  end
  table.sort(out)
  return out
end

--- Create a modifier by name from an argument table (or omap).  `where`
--- locates errors (a string or function(field)); `at` is the recipe
--- position of the modifier's own name, used for "unknown modifier".
function M.create(name, args, where, at)
  local cls, err = M.get(name)
  if not cls then
    local loc = at or (type(where) == "string" and where) or (type(where) == "function" and where(nil)) or nil
    error((loc and (loc .. ": ") or "") .. err, 0)
  end
  return base.new(cls, args, where)
end

setmetatable(M, {
  __index = function(_, k)
    if type(k) == "string" and k:match("^%u") then
      local cls = M.get(k)
      return cls
    end
    return nil
  end,
})

return M
