/*
** lua_llmc.h — the C modules of the llmc executable.
**
** Each binding file src/lua_<name>.c defines luaopen_llmc_<name>, which
** returns its module table.  llmc_lua_openlibs() (lua_registry.c) opens the
** standard libraries and puts every C module in package.preload under
** "llmc._<name>", and sets package.path so that require "llmc" finds
** lua/llmc/ (LLMC_PATH, else the source tree, else the install prefix).
** The Lua modules in lua/llmc/ wrap the C modules; user code requires
** "llmc", never the "_" modules directly.
*/
#ifndef LLMC_LUA_LLMC_H
#define LLMC_LUA_LLMC_H

#include <lua.h>

int luaopen_llmc_tensor(lua_State *L);        /* lua_tensor.c:      "llmc._tensor" */
int luaopen_llmc_safetensors(lua_State *L);   /* lua_safetensors.c: "llmc._safetensors" */
int luaopen_llmc_tokenizer(lua_State *L);     /* lua_tokenizer.c:   "llmc._tokenizer" */
int luaopen_llmc_quant(lua_State *L);         /* lua_quant.c:       "llmc._quant" */
int luaopen_llmc_stwriter(lua_State *L);      /* lua_stwriter.c:    "llmc._stwriter" */
int luaopen_llmc_nn(lua_State *L);            /* lua_nn.c:          "llmc._nn" */
int luaopen_llmc_regex(lua_State *L);         /* lua_regex.c:       "llmc._regex" */
int luaopen_llmc_gptq(lua_State *L);          /* lua_gptq.c:        "llmc._gptq" */
int luaopen_llmc_observer(lua_State *L);      /* lua_observer.c:    "llmc._observer" */
int luaopen_llmc_sparsegpt(lua_State *L);     /* lua_sparsegpt.c:   "llmc._sparsegpt" */

/* Open the standard libraries and preload the modules above.
** Returns 0, or -1 with a message on the Lua stack. */
int llmc_lua_openlibs(lua_State *L);

#endif
