/*
** lua_safetensors.c — the "llmc._safetensors" module: open checkpoints
** lazily, save tensors atomically (safetensors.h).
**
**   local st = require "llmc._safetensors"
**   local f <close> = st.open("fixtures/models/tiny-llama")  -- file, dir or index.json
**   print(#f, f:info("model.norm.weight").dtype)             -- 38  bfloat16
**   local w = f:get("model.norm.weight")     -- Tensor viewing the mapped bytes
**   f:drop_pages("model.layers.0.mlp.up_proj.weight")   -- done with it: out of RSS
**   st.save("out.safetensors", {w = w}, {metadata = {note = "x"}})
**   st.save("out-dir", tensors, {max_shard_size = "2GB"})    -- a directory
**
** A SafetensorsFile (metatable "llmc.SafetensorsFile") owns an llmc_st_set;
** :close(), __close and __gc free it (idempotent).  Tensors from :get hold
** their own reference on the mapping, so they outlive the file object.
** Errors are Lua errors carrying the core's message (file and tensor named).
*/
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "lua_llmc.h"
#include "lua_tensor.h"
#include "safetensors.h"

#define ST_FILE_MT "llmc.SafetensorsFile"
#define ST_WRITER_MT "llmc.SafetensorsWriter"

typedef struct { llmc_st_set *s; } st_box;
typedef struct { llmc_st_writer *w; } wr_box;

static llmc_st_set *check_open(lua_State *L) {
  st_box *b = luaL_checkudata(L, 1, ST_FILE_MT);
  if (!b->s) luaL_error(L, "SafetensorsFile is closed");
  return b->s;
}

/* ---- open ------------------------------------------------------------------ */

static int st_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  st_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->s = NULL;
  luaL_setmetatable(L, ST_FILE_MT);
  b->s = llmc_st_set_open(path);
  if (!b->s) return llmc_lua_error(L, NULL);
  return 1;
}

static int f_names(lua_State *L) {
  llmc_st_set *s = check_open(L);
  size_t n = llmc_st_set_count(s);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, llmc_st_set_info_at(s, i, NULL)->name);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static const llmc_st_info *check_entry(lua_State *L, llmc_st_set *s, llmc_st_file **f) {
  const char *name = luaL_checkstring(L, 2);
  const llmc_st_info *e = llmc_st_set_find(s, name, f);
  if (!e) luaL_error(L, "%s: no tensor named '%s'", llmc_st_set_path(s), name);
  return e;
}

static int f_info(lua_State *L) {
  llmc_st_set *s = check_open(L);
  llmc_st_file *f;
  const llmc_st_info *e = check_entry(L, s, &f);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, llmc_dtype_name(e->dtype));
  lua_setfield(L, -2, "dtype");
  lua_createtable(L, e->ndim, 0);
  for (int i = 0; i < e->ndim; i++) {
    lua_pushinteger(L, e->shape[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "shape");
  lua_pushinteger(L, (lua_Integer)e->nbytes);
  lua_setfield(L, -2, "nbytes");
  lua_pushstring(L, llmc_st_path(f));
  lua_setfield(L, -2, "file");
  return 1;
}

static int f_get(lua_State *L) {
  llmc_st_set *s = check_open(L);
  const char *name = luaL_checkstring(L, 2);
  llmc_lua_pushtensor(L, llmc_st_set_get(s, name));   /* NULL raises the error */
  return 1;
}

static int f_has(lua_State *L) {
  llmc_st_set *s = check_open(L);
  lua_pushboolean(L, llmc_st_set_find(s, luaL_checkstring(L, 2), NULL) != NULL);
  return 1;
}

/* st:drop_pages(name) -> bytes: the tensor's mapped pages leave the resident
** set (see llmc_st_set_drop_pages); its data stays readable */
static int f_drop_pages(lua_State *L) {
  llmc_st_set *s = check_open(L);
  lua_pushinteger(L, (lua_Integer)llmc_st_set_drop_pages(s, luaL_checkstring(L, 2)));
  return 1;
}

static int f_metadata(lua_State *L) {
  llmc_st_set *s = check_open(L);
  size_t n;
  const llmc_st_kv *kv = llmc_st_set_metadata(s, &n);
  lua_createtable(L, 0, (int)n);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, kv[i].value);
    lua_setfield(L, -2, kv[i].key);
  }
  return 1;
}

static int f_files(lua_State *L) {
  llmc_st_set *s = check_open(L);
  size_t n = llmc_st_set_nfiles(s);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, llmc_st_path(llmc_st_set_file(s, i)));
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int f_close(lua_State *L) {
  st_box *b = luaL_checkudata(L, 1, ST_FILE_MT);
  llmc_st_set_free(b->s);
  b->s = NULL;
  return 0;
}

static int f_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)llmc_st_set_count(check_open(L)));
  return 1;
}

static int f_tostring(lua_State *L) {
  st_box *b = luaL_checkudata(L, 1, ST_FILE_MT);
  if (!b->s) {
    lua_pushliteral(L, "SafetensorsFile(closed)");
    return 1;
  }
  size_t nf = llmc_st_set_nfiles(b->s);
  lua_pushfstring(L, "SafetensorsFile(%s, %d tensors, %d file%s)", llmc_st_set_path(b->s),
                  (int)llmc_st_set_count(b->s), (int)nf, nf == 1 ? "" : "s");
  return 1;
}

/* ---- save -------------------------------------------------------------------- */

static int w_gc(lua_State *L) {
  wr_box *b = luaL_checkudata(L, 1, ST_WRITER_MT);
  llmc_st_writer_free(b->w);   /* removes temporaries when a Lua error cut the save short */
  b->w = NULL;
  return 0;
}

/* max_shard_size: an integer of bytes or a string "5GB" (10^9), "2GiB" (2^30), ... */
static uint64_t check_size(lua_State *L, int idx) {
  if (lua_isinteger(L, idx)) {
    lua_Integer v = lua_tointeger(L, idx);
    if (v <= 0) luaL_error(L, "max_shard_size must be positive, got %I", v);
    return (uint64_t)v;
  }
  const char *s = lua_tostring(L, idx);
  if (!s || lua_type(L, idx) != LUA_TSTRING) luaL_error(L, "max_shard_size must be an integer or a string like \"5GB\"");
  char *end;
  double v = strtod(s, &end);
  while (*end == ' ') end++;
  static const struct { const char *u; double m; } units[] = {
    {"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
    {"KIB", 1024.0}, {"MIB", 1048576.0}, {"GIB", 1073741824.0}, {"TIB", 1099511627776.0}};
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (strcasecmp(end, units[i].u) == 0 && end != s) {
      double b = v * units[i].m;
      if (!(b >= 1 && b < 9.2e18)) break;
      return (uint64_t)b;
    }
  luaL_error(L, "max_shard_size: cannot read '%s' (expected e.g. 5GB, 500MB, 2GiB)", s);
  return 0;
}

typedef struct { const char *name; llmc_tensor *t; } named;

static int cmp_named(const void *a, const void *b) {
  return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

/* save(path, {name = Tensor, ...}, {metadata = {k = v}, max_shard_size = N}) -> {files} */
static int st_save(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int has_opts = !lua_isnoneornil(L, 3);
  if (has_opts) luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);

  /* reject unknown options: a typo must not silently write one huge file */
  if (has_opts) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
      if (!k || (strcmp(k, "metadata") && strcmp(k, "max_shard_size")))
        return luaL_error(L, "save: unknown option '%s' (metadata, max_shard_size)", k ? k : luaL_typename(L, -2));
      lua_pop(L, 1);
    }
  }
  uint64_t max_shard = 0;
  if (has_opts && lua_getfield(L, 3, "max_shard_size") != LUA_TNIL) max_shard = check_size(L, -1);
  lua_settop(L, 3);

  /* tensors, sorted by name: a deterministic declaration (and shard) order */
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    if (lua_type(L, -2) != LUA_TSTRING) return luaL_error(L, "save: tensor names must be strings");
    if (!llmc_lua_totensor(L, -1))
      return luaL_error(L, "save: value of '%s' is a %s, not a Tensor", lua_tostring(L, -2), luaL_typename(L, -1));
    n++;
    lua_pop(L, 1);
  }
  named *list = lua_newuserdatauv(L, (n ? n : 1) * sizeof *list, 0);   /* index 4, GC-owned */
  size_t i = 0;
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    list[i].name = lua_tostring(L, -2);   /* anchored by the table */
    list[i].t = llmc_lua_checktensor(L, -1);
    i++;
    lua_pop(L, 1);
  }
  qsort(list, n, sizeof *list, cmp_named);

  wr_box *b = lua_newuserdatauv(L, sizeof *b, 0);   /* index 5 */
  b->w = NULL;
  luaL_setmetatable(L, ST_WRITER_MT);
  b->w = llmc_st_writer_new(path, max_shard);
  if (!b->w) return llmc_lua_error(L, NULL);

  int has_format = 0;
  if (has_opts && lua_getfield(L, 3, "metadata") != LUA_TNIL) {
    if (!lua_istable(L, -1)) return luaL_error(L, "save: metadata must be a table of strings");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "save: metadata keys and values must be strings");
      const char *k = lua_tostring(L, -2);
      has_format |= strcmp(k, "format") == 0;
      if (llmc_st_writer_set_metadata(b->w, k, lua_tostring(L, -1)) < 0) return llmc_lua_error(L, NULL);
      lua_pop(L, 1);
    }
  }
  lua_settop(L, 5);
  /* transformers refuses a checkpoint whose metadata lacks a known format */
  if (!has_format && llmc_st_writer_set_metadata(b->w, "format", "pt") < 0) return llmc_lua_error(L, NULL);

  for (i = 0; i < n; i++)
    if (llmc_st_writer_declare(b->w, list[i].name, list[i].t->dtype, list[i].t->ndim, list[i].t->shape) < 0)
      return llmc_lua_error(L, NULL);
  if (llmc_st_writer_begin(b->w) < 0) return llmc_lua_error(L, NULL);
  for (i = 0; i < n; i++)
    if (llmc_st_writer_write_tensor(b->w, list[i].name, list[i].t) < 0) return llmc_lua_error(L, NULL);
  if (llmc_st_writer_finish(b->w) < 0) return llmc_lua_error(L, NULL);

  size_t ns = llmc_st_writer_nshards(b->w);
  lua_createtable(L, (int)ns, 0);
  for (i = 0; i < ns; i++) {
    lua_pushstring(L, llmc_st_writer_shard_path(b->w, i));
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  llmc_st_writer_free(b->w);
  b->w = NULL;
  return 1;
}

/* ---- registration ------------------------------------------------------------ */

static const luaL_Reg file_methods[] = {
  {"names", f_names}, {"info", f_info}, {"get", f_get}, {"has", f_has}, {"drop_pages", f_drop_pages},
  {"metadata", f_metadata}, {"files", f_files}, {"close", f_close}, {NULL, NULL}};

static const luaL_Reg file_meta[] = {
  {"__gc", f_close}, {"__close", f_close}, {"__len", f_len}, {"__tostring", f_tostring},
  {"__index", NULL}, {NULL, NULL}};

static const luaL_Reg funcs[] = {{"open", st_open}, {"save", st_save}, {NULL, NULL}};

int luaopen_llmc_safetensors(lua_State *L) {
  /* Tensors are pushed with the Tensor metatable: make sure it exists */
  luaL_requiref(L, "llmc._tensor", luaopen_llmc_tensor, 0);
  lua_pop(L, 1);
  luaL_newmetatable(L, ST_FILE_MT);
  luaL_setfuncs(L, file_meta, 0);
  luaL_newlib(L, file_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, ST_WRITER_MT);
  lua_pushcfunction(L, w_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
