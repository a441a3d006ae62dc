/*
** lua_registry.c — opens the libraries of an llmc Lua state (lua_llmc.h).
**
** Search order for lua/llmc/ (the first that holds llmc/init.lua wins):
**   $LLMC_PATH, the source tree the binary was built from, <prefix>/share/llmc/lua
**   next to the executable (../share/llmc/lua), the configured install prefix.
** The standard package.path/cpath stay behind it, so `require "cjson"`
** finds Debian's lua-cjson.
*/
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lua_llmc.h"

static const luaL_Reg c_modules[] = {
  {"llmc._quant", luaopen_llmc_quant},
  {"llmc._gptq", luaopen_llmc_gptq},
  {"llmc._stwriter", luaopen_llmc_stwriter},
  {"llmc._tensor", luaopen_llmc_tensor},
  {"llmc._nn", luaopen_llmc_nn},
  {"llmc._regex", luaopen_llmc_regex},
  {"llmc._safetensors", luaopen_llmc_safetensors},
  {"llmc._tokenizer", luaopen_llmc_tokenizer},
  {"llmc._observer", luaopen_llmc_observer},
  {"llmc._sparsegpt", luaopen_llmc_sparsegpt},
  {NULL, NULL}};

static int has_init(const char *dir) {
  char p[4096];
  snprintf(p, sizeof p, "%s/llmc/init.lua", dir);
  return access(p, R_OK) == 0;
}

static const char *find_lua_dir(char *buf, size_t n) {
  const char *env = getenv("LLMC_PATH");
  if (env && *env) return env;
#ifdef LLMC_SOURCE_LUA_DIR
  if (has_init(LLMC_SOURCE_LUA_DIR)) return LLMC_SOURCE_LUA_DIR;
#endif
  char exe[4096];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len > 0) {
    exe[len] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = 0;
      snprintf(buf, n, "%s/../share/llmc/lua", exe);
      if (has_init(buf)) return buf;
    }
  }
#ifdef LLMC_INSTALL_LUA_DIR
  return LLMC_INSTALL_LUA_DIR;
#else
  return ".";
#endif
}

int llmc_lua_openlibs(lua_State *L) {
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *m = c_modules; m->name; m++) {
    lua_pushcfunction(L, m->func);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
  char buf[4096];
  const char *dir = find_lua_dir(buf, sizeof buf);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
  return 0;
}
