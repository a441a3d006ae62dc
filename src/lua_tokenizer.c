/*
** lua_tokenizer.c — the "llmc._tokenizer" module: Hugging Face
** tokenizer.json in Lua (tokenizer.h).
**
**   local T = require "llmc._tokenizer"
**   local tok = T.load("fixtures/tokenizers/mistral/tokenizer.json")
**   local ids = tok:encode("Hello world")               -- {1, 22557, 1526}
**   tok:encode("Hello", {add_special_tokens = false})   -- {22557}
**   tok:decode(ids)                                     -- "<s> Hello world"
**   tok:decode(ids, {skip_special_tokens = true})       -- "Hello world"
**   tok:encode_batch({"a", "b"})                        -- {{1, 264}, {1, 287}} (OpenMP threads)
**   tok:token_to_id("<s>"), tok:id_to_token(1)         -- 1, "<s>"
**   tok:vocab_size(), tok:special_tokens()              -- 32000, {["<s>"] = 1, ...}
**
** A Tokenizer (metatable "llmc.Tokenizer") owns an llmc_tok; __gc, __close and
** :close() free it (idempotent).  Ids are 0-based token ids, as in Hugging
** Face.  Errors (bad file, invalid UTF-8, id out of range) are Lua errors with
** the core's message; unknown option keys are errors too.
*/
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "lua_llmc.h"
#include "tokenizer.h"

#define TOK_MT "llmc.Tokenizer"

typedef struct { llmc_tok *t; } tok_box;

static llmc_tok *check_tok(lua_State *L) {
  tok_box *b = luaL_checkudata(L, 1, TOK_MT);
  if (!b->t) luaL_error(L, "Tokenizer is closed");
  return b->t;
}

static int tok_raise(lua_State *L) { return luaL_error(L, "%s", llmc_errmsg()); }

/* Read boolean options from the table at idx (absent/nil: defaults kept);
** any other key is an error. */
static void bool_opts(lua_State *L, int idx, const char *fname, const char *const *keys, int *vals, int nk) {
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) { /* [key, value] */
    int k = -1;
    if (lua_type(L, -2) == LUA_TSTRING)
      for (int i = 0; i < nk; i++)
        if (!strcmp(lua_tostring(L, -2), keys[i])) k = i;
    if (k < 0) {
      lua_pushvalue(L, -2);
      luaL_error(L, "%s: unknown option '%s'", fname, luaL_tolstring(L, -1, NULL));
    }
    if (!lua_isboolean(L, -1)) luaL_error(L, "%s: option '%s' must be a boolean", fname, keys[k]);
    vals[k] = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
}

static void push_ids(lua_State *L, const int32_t *ids, size_t n) {
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushinteger(L, ids[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

static int t_load(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  tok_box *b = lua_newuserdatauv(L, sizeof *b, 1);
  b->t = NULL;
  luaL_setmetatable(L, TOK_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1); /* the path, for __tostring */
  b->t = llmc_tok_load(path);
  if (!b->t) return tok_raise(L);
  return 1;
}

static int m_encode(lua_State *L) {
  llmc_tok *t = check_tok(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  static const char *const keys[] = {"add_special_tokens"};
  int add = 1;
  bool_opts(L, 3, "encode", keys, &add, 1);
  int32_t *ids;
  size_t n;
  if (llmc_tok_encode(t, s, len, add, &ids, &n) < 0) return tok_raise(L);
  push_ids(L, ids, n);
  free(ids);
  return 1;
}

static int m_encode_batch(lua_State *L) {
  llmc_tok *t = check_tok(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  static const char *const keys[] = {"add_special_tokens"};
  int add = 1;
  bool_opts(L, 3, "encode_batch", keys, &add, 1);
  lua_Integer count = luaL_len(L, 2);
  const char **texts = lua_newuserdatauv(L, (size_t)(count ? count : 1) * sizeof *texts, 0);
  size_t *lens = lua_newuserdatauv(L, (size_t)(count ? count : 1) * sizeof *lens, 0);
  for (lua_Integer i = 1; i <= count; i++) {
    if (lua_rawgeti(L, 2, i) != LUA_TSTRING) luaL_error(L, "encode_batch: texts[%d] is not a string", (int)i);
    texts[i - 1] = lua_tolstring(L, -1, &lens[i - 1]); /* stays alive: referenced by the table */
    lua_pop(L, 1);
  }
  int32_t *ids;
  size_t *offs;
  if (llmc_tok_encode_batch(t, texts, lens, (size_t)count, add, &ids, &offs) < 0) return tok_raise(L);
  lua_createtable(L, (int)count, 0);
  for (lua_Integer i = 0; i < count; i++) {
    push_ids(L, ids + offs[i], offs[i + 1] - offs[i]);
    lua_rawseti(L, -2, i + 1);
  }
  free(ids);
  free(offs);
  return 1;
}

static int m_decode(lua_State *L) {
  llmc_tok *t = check_tok(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  static const char *const keys[] = {"skip_special_tokens"};
  int skip = 0;
  bool_opts(L, 3, "decode", keys, &skip, 1);
  lua_Integer n = luaL_len(L, 2);
  int32_t *ids = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *ids, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < INT32_MIN || v > INT32_MAX) luaL_error(L, "decode: ids[%d] is not a token id", (int)i);
    ids[i - 1] = (int32_t)v;
    lua_pop(L, 1);
  }
  char *s;
  size_t len;
  if (llmc_tok_decode(t, ids, (size_t)n, skip, &s, &len) < 0) return tok_raise(L);
  lua_pushlstring(L, s, len);
  free(s);
  return 1;
}

static int m_token_to_id(lua_State *L) {
  llmc_tok *t = check_tok(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  int32_t id = llmc_tok_token_to_id(t, s, len);
  if (id < 0) lua_pushnil(L);
  else lua_pushinteger(L, id);
  return 1;
}

static int m_id_to_token(lua_State *L) {
  llmc_tok *t = check_tok(L);
  lua_Integer id = luaL_checkinteger(L, 2);
  size_t len;
  const char *s = id >= 0 && id <= INT32_MAX ? llmc_tok_id_to_token(t, (int32_t)id, &len) : NULL;
  if (s) lua_pushlstring(L, s, len);
  else lua_pushnil(L);
  return 1;
}

static int m_vocab_size(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)llmc_tok_vocab_size(check_tok(L)));
  return 1;
}

/* { [content] = id } of the added tokens marked special */
static int m_special_tokens(lua_State *L) {
  llmc_tok *t = check_tok(L);
  lua_newtable(L);
  for (size_t i = 0; i < llmc_tok_n_added(t); i++) {
    const char *c;
    size_t len;
    int32_t id;
    int special;
    llmc_tok_added_token(t, i, &c, &len, &id, &special);
    if (!special) continue;
    lua_pushlstring(L, c, len);
    lua_pushinteger(L, id);
    lua_rawset(L, -3);
  }
  return 1;
}

/* every added token, in file order: { {content=, id=, special=}, ... } */
static int m_added_tokens(lua_State *L) {
  llmc_tok *t = check_tok(L);
  size_t n = llmc_tok_n_added(t);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    const char *c;
    size_t len;
    int32_t id;
    int special;
    llmc_tok_added_token(t, i, &c, &len, &id, &special);
    lua_createtable(L, 0, 3);
    lua_pushlstring(L, c, len);
    lua_setfield(L, -2, "content");
    lua_pushinteger(L, id);
    lua_setfield(L, -2, "id");
    lua_pushboolean(L, special);
    lua_setfield(L, -2, "special");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int m_close(lua_State *L) {
  tok_box *b = luaL_checkudata(L, 1, TOK_MT);
  llmc_tok_free(b->t);
  b->t = NULL;
  return 0;
}

static int m_tostring(lua_State *L) {
  tok_box *b = luaL_checkudata(L, 1, TOK_MT);
  lua_getiuservalue(L, 1, 1);
  const char *path = lua_tostring(L, -1);
  if (!b->t) lua_pushfstring(L, "Tokenizer(%s, closed)", path ? path : "?");
  else
    lua_pushfstring(L, "Tokenizer(%s, vocab_size=%d)", path ? path : "?", (int)llmc_tok_vocab_size(b->t));
  return 1;
}

static const luaL_Reg methods[] = {
  {"encode", m_encode},
  {"encode_batch", m_encode_batch},
  {"decode", m_decode},
  {"token_to_id", m_token_to_id},
  {"id_to_token", m_id_to_token},
  {"vocab_size", m_vocab_size},
  {"special_tokens", m_special_tokens},
  {"added_tokens", m_added_tokens},
  {"close", m_close},
  {NULL, NULL}};

static const luaL_Reg metamethods[] = {
  {"__gc", m_close},
  {"__close", m_close},
  {"__tostring", m_tostring},
  {"__index", NULL},
  {NULL, NULL}};

static const luaL_Reg funcs[] = {
  {"load", t_load},
  {NULL, NULL}};

int luaopen_llmc_tokenizer(lua_State *L) {
  luaL_newmetatable(L, TOK_MT);    /* [mt] */
  luaL_setfuncs(L, metamethods, 0);
  luaL_newlib(L, methods);         /* [mt, methods] */
  lua_setfield(L, -2, "__index");  /* [mt] */
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
