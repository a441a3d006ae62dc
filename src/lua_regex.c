/*
** lua_regex.c — "llmc._regex": PCRE2 regular expressions for the `re:`
** patterns of module targets (llm-compressor's targets / ignore lists).
**
** Patterns compile with PCRE2_UTF | PCRE2_UCP (so \w, \d, \s and case
** folding are Unicode-aware, like Python 3's `re` on str patterns) and
** match with PCRE2_MATCH_INVALID_UTF (a subject that is not UTF-8 still
** matches byte-wise instead of raising).  fullmatch anchors at both ends
** with PCRE2_ANCHORED | PCRE2_ENDANCHORED, which backtracks into earlier
** alternatives exactly as Python's re.fullmatch does.  The differences from
** Python are listed in docs/models.md.
**
**   local R = require "llmc._regex"
**   R.fullmatch(".*(q|k|v)_proj$", "model.layers.0.self_attn.q_proj")  --> true
**   local re = R.compile([[layers\.(\d+)\.]])
**   local s, e, caps = re:search("model.layers.12.mlp")   --> 7, 16, {"12"}
**
** Compiled patterns are userdata ("llmc.Regex"); R.fullmatch / R.search
** with a pattern string use a per-state cache of compiled patterns.
*/
#define PCRE2_CODE_UNIT_WIDTH 8
#include <lauxlib.h>
#include <lua.h>
#include <pcre2.h>
#include <string.h>

#include "lua_llmc.h"

#define REGEX_MT "llmc.Regex"
#define REGEX_CACHE "llmc.regex.cache"

typedef struct { pcre2_code *code; } regex_box;

static int regex_gc(lua_State *L) {
  regex_box *b = luaL_checkudata(L, 1, REGEX_MT);
  if (b->code) pcre2_code_free(b->code);
  b->code = NULL;
  return 0;
}

/* compile the pattern at idx into a new userdata pushed on the stack;
** raises with PCRE2's message and the offset on a syntax error */
static regex_box *compile_at(lua_State *L, int idx) {
  size_t len;
  const char *pat = luaL_checklstring(L, idx, &len);
  regex_box *b = lua_newuserdatauv(L, sizeof *b, 0);   /* [.., ud] */
  b->code = NULL;
  luaL_setmetatable(L, REGEX_MT);
  int err;
  PCRE2_SIZE off;
  b->code = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, NULL);
  if (!b->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    luaL_error(L, "bad regular expression '%s': %s at offset %d", pat, (const char *)msg, (int)off);
  }
  return b;
}

static regex_box *check_regex(lua_State *L, int idx) {
  regex_box *b = luaL_checkudata(L, idx, REGEX_MT);
  if (!b->code) luaL_argerror(L, idx, "regex was released");
  return b;
}

/* cached compile of the pattern string at idx; leaves nothing on the stack */
static regex_box *cached(lua_State *L, int idx) {
  lua_getfield(L, LUA_REGISTRYINDEX, REGEX_CACHE);   /* [.., cache] */
  lua_pushvalue(L, idx);
  lua_rawget(L, -2);                                  /* [.., cache, ud?] */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    compile_at(L, idx);                               /* [.., cache, ud] */
    lua_pushvalue(L, idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  regex_box *b = lua_touserdata(L, -1);
  lua_pop(L, 2);   /* the cache table keeps the userdata alive */
  return b;
}

/* run a match; pushes (start, end, captures) 1-based inclusive like
** string.find, or nil when there is no match */
static int do_match(lua_State *L, pcre2_code *code, int subj_idx, int full) {
  size_t len;
  const char *s = luaL_checklstring(L, subj_idx, &len);
  pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
  if (!md) return luaL_error(L, "regex: out of memory");
  int rc = pcre2_match(code, (PCRE2_SPTR)s, len, 0, full ? (PCRE2_ANCHORED | PCRE2_ENDANCHORED) : 0, md, NULL);
  if (rc == PCRE2_ERROR_NOMATCH) {
    pcre2_match_data_free(md);
    lua_pushnil(L);
    return 1;
  }
  if (rc < 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    pcre2_match_data_free(md);
    return luaL_error(L, "regex match failed: %s", (const char *)msg);
  }
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
  uint32_t ncap = pcre2_get_ovector_count(md);
  lua_pushinteger(L, (lua_Integer)ov[0] + 1);
  lua_pushinteger(L, (lua_Integer)ov[1]);
  lua_createtable(L, (int)(ncap > 1 ? ncap - 1 : 0), 0);
  for (uint32_t i = 1; i < ncap; i++) {
    if (ov[2 * i] == PCRE2_UNSET) lua_pushboolean(L, 0);   /* group did not take part */
    else lua_pushlstring(L, s + ov[2 * i], ov[2 * i + 1] - ov[2 * i]);
    lua_rawseti(L, -2, (lua_Integer)i);
  }
  pcre2_match_data_free(md);
  return 3;
}

static int l_compile(lua_State *L) {
  compile_at(L, 1);
  return 1;
}

/* fullmatch(pattern_or_regex, s) -> true, captures | false */
static int fullmatch_impl(lua_State *L, pcre2_code *code) {
  int n = do_match(L, code, 2, 1);
  if (n == 1) { lua_pushboolean(L, 0); return 1; }
  lua_pushboolean(L, 1);
  lua_replace(L, -4);   /* [true, end, caps] */
  lua_remove(L, -2);    /* [true, caps] */
  return 2;
}

static pcre2_code *pattern_arg(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TSTRING) return cached(L, idx)->code;
  return check_regex(L, idx)->code;
}

static int l_fullmatch(lua_State *L) { return fullmatch_impl(L, pattern_arg(L, 1)); }
static int l_search(lua_State *L) { return do_match(L, pattern_arg(L, 1), 2, 0); }

static int l_tostring(lua_State *L) {
  regex_box *b = luaL_checkudata(L, 1, REGEX_MT);
  lua_pushfstring(L, "llmc.Regex(%p)", (void *)b->code);
  return 1;
}

static const luaL_Reg regex_methods[] = {
  {"fullmatch", l_fullmatch}, {"search", l_search}, {NULL, NULL}};

static const luaL_Reg regex_funcs[] = {
  {"compile", l_compile}, {"fullmatch", l_fullmatch}, {"search", l_search}, {NULL, NULL}};

int luaopen_llmc_regex(lua_State *L) {
  if (luaL_newmetatable(L, REGEX_MT)) {   /* [mt] */
    lua_pushcfunction(L, regex_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, regex_gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, regex_methods);        /* [mt, methods] */
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_newtable(L);                        /* the pattern cache */
  lua_setfield(L, LUA_REGISTRYINDEX, REGEX_CACHE);
  luaL_newlib(L, regex_funcs);
  return 1;
}
