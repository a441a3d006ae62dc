/*
** lua_nn.c — "llmc._nn": the fused forward-pass ops of nn.h for Lua.
**
** Thin wrappers: check arguments, call the C op, push the result (a NEW
** Tensor userdata).  The architectures in lua/llmc/models/ compose these;
** user code reaches them through require "llmc.nn".
**
**   local N = require "llmc._nn"
**   local y = N.linear(x, w)                      -- x [..., in], w [out, in]
**   local cos, sin = N.rope_tables(inv_freq, positions, 1.0)
**   local o = N.attention(q, k, v, {scale = 0.125, q_offset = 0, key_mask = m})
*/
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "lua_llmc.h"
#include "lua_tensor.h"
#include "nn.h"

static llmc_tensor *opt_tensor(lua_State *L, int idx) {
  return lua_isnoneornil(L, idx) ? NULL : llmc_lua_checktensor(L, idx);
}

static int l_linear(lua_State *L) {
  llmc_tensor *x = llmc_lua_checktensor(L, 1), *w = llmc_lua_checktensor(L, 2);
  llmc_lua_pushtensor(L, llmc_nn_linear(x, w, opt_tensor(L, 3)));
  return 1;
}

static int l_embedding(lua_State *L) {
  llmc_lua_pushtensor(L, llmc_nn_embedding(llmc_lua_checktensor(L, 1), llmc_lua_checktensor(L, 2)));
  return 1;
}

static int l_rmsnorm(lua_State *L) {
  llmc_tensor *x = llmc_lua_checktensor(L, 1), *w = llmc_lua_checktensor(L, 2);
  llmc_lua_pushtensor(L, llmc_nn_rmsnorm(x, w, luaL_checknumber(L, 3)));
  return 1;
}

static int l_rope_tables(lua_State *L) {
  llmc_tensor *f = llmc_lua_checktensor(L, 1), *p = llmc_lua_checktensor(L, 2);
  llmc_tensor *c, *s;
  if (llmc_nn_rope_tables(f, p, luaL_optnumber(L, 3, 1.0), &c, &s) < 0) return llmc_lua_error(L, NULL);
  llmc_lua_pushtensor(L, c);
  llmc_lua_pushtensor(L, s);
  return 2;
}

static int l_rope(lua_State *L) {
  llmc_tensor *x = llmc_lua_checktensor(L, 1), *c = llmc_lua_checktensor(L, 2), *s = llmc_lua_checktensor(L, 3);
  llmc_lua_pushtensor(L, llmc_nn_rope(x, c, s));
  return 1;
}

static const char *const attn_keys[] = {"scale", "q_offset", "causal", "window", "key_mask", NULL};

/* attention(q, k, v, {scale=, q_offset=0, causal=true, window=0, key_mask=nil}) */
static int l_attention(lua_State *L) {
  llmc_tensor *q = llmc_lua_checktensor(L, 1), *k = llmc_lua_checktensor(L, 2), *v = llmc_lua_checktensor(L, 3);
  llmc_nn_attn_opts o = {0, 0, 1, 0, NULL};
  int have_scale = 0;
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 4)) {   /* [.., key, value]: reject unknown options */
      if (lua_type(L, -2) != LUA_TSTRING) return luaL_error(L, "attention: option keys must be strings");
      int which = -1;
      for (int i = 0; attn_keys[i]; i++)
        if (strcmp(lua_tostring(L, -2), attn_keys[i]) == 0) which = i;
      switch (which) {
        case 0: o.scale = luaL_checknumber(L, -1); have_scale = 1; break;
        case 1: o.q_offset = luaL_checkinteger(L, -1); break;
        case 2: o.causal = lua_toboolean(L, -1); break;
        case 3: o.window = luaL_checkinteger(L, -1); break;
        case 4: o.key_mask = lua_isnil(L, -1) ? NULL : llmc_lua_checktensor(L, -1); break;
        default: return luaL_error(L, "attention: unknown option '%s'", lua_tostring(L, -2));
      }
      lua_pop(L, 1);
    }
  }
  if (!have_scale) o.scale = q->ndim == 4 && q->shape[3] > 0 ? 1.0 / sqrt((double)q->shape[3]) : 1.0;
  llmc_lua_pushtensor(L, llmc_nn_attention(q, k, v, &o));
  return 1;
}

static int l_attention_force_path(lua_State *L) {
  static const char *const names[] = {"auto", "loop", "sgemm", NULL};
  llmc_nn_attention_force_path(luaL_checkoption(L, 1, "auto", names));
  return 0;
}

static int l_silu_mul(lua_State *L) {
  llmc_lua_pushtensor(L, llmc_nn_silu_mul(llmc_lua_checktensor(L, 1), llmc_lua_checktensor(L, 2)));
  return 1;
}

static int l_moe_route(lua_State *L) {
  llmc_tensor *lg = llmc_lua_checktensor(L, 1);
  lua_Integer k = luaL_checkinteger(L, 2);
  if (k < 1 || k > 1 << 20) return luaL_argerror(L, 2, "top_k out of range");
  llmc_tensor *ids, *w;
  if (llmc_nn_moe_route(lg, (int)k, lua_toboolean(L, 3), &ids, &w) < 0) return llmc_lua_error(L, NULL);
  llmc_lua_pushtensor(L, ids);
  llmc_lua_pushtensor(L, w);
  return 2;
}

/* moe_dispatch(ids [N, K], E [, weights [N, K]]) -> array of E entries
** (expert e at index e + 1): {tokens = Tensor int64 [n], slots = Tensor
** int64 [n], weights = Tensor f32 [n] (when weights were given), count = n},
** or false for an expert that received no token */
static int l_moe_dispatch(lua_State *L) {
  llmc_tensor *ids = llmc_lua_checktensor(L, 1);
  lua_Integer E = luaL_checkinteger(L, 2);
  llmc_tensor *w = opt_tensor(L, 3);
  if (E < 1 || E > 1 << 20) return luaL_argerror(L, 2, "number of experts out of range");
  if (w && (w->ndim != 2 || ids->ndim != 2 || w->shape[0] != ids->shape[0] || w->shape[1] != ids->shape[1]))
    return luaL_argerror(L, 3, "weights must have the shape of ids");
  llmc_tensor *wc = NULL;
  if (w) {
    wc = llmc_tensor_to_dtype(w, LLMC_F32);
    if (!wc) return llmc_lua_error(L, "moe_dispatch");
    llmc_lua_pushtensor(L, wc);   /* anchored: freed by the GC on any error */
  }
  int64_t *off = lua_newuserdatauv(L, sizeof(int64_t) * (size_t)(E + 1), 0);   /* freed by the GC */
  int64_t *tok, *slot;
  if (llmc_nn_moe_dispatch(ids, E, off, &tok, &slot) < 0) return llmc_lua_error(L, NULL);
  int64_t K = ids->shape[1];
  const float *W = wc ? llmc_tensor_data(wc) : NULL;
  lua_createtable(L, (int)E, 0);
  for (lua_Integer e = 0; e < E; e++) {
    int64_t n = off[e + 1] - off[e];
    if (n == 0) { lua_pushboolean(L, 0); lua_rawseti(L, -2, e + 1); continue; }
    llmc_tensor *t = llmc_tensor_from_bytes(LLMC_I64, 1, &n, tok + off[e], sizeof(int64_t) * (size_t)n);
    llmc_tensor *s = t ? llmc_tensor_from_bytes(LLMC_I64, 1, &n, slot + off[e], sizeof(int64_t) * (size_t)n) : NULL;
    llmc_tensor *ws = (s && W) ? llmc_tensor_empty(LLMC_F32, 1, &n) : NULL;
    if (!s || (W && !ws)) {
      llmc_tensor_free(t); llmc_tensor_free(s);
      free(tok); free(slot);
      return llmc_lua_error(L, "moe_dispatch");
    }
    if (ws) {
      float *d = llmc_tensor_data(ws);
      for (int64_t i = 0; i < n; i++) d[i] = W[tok[off[e] + i] * K + slot[off[e] + i]];
    }
    lua_createtable(L, 0, 4);
    llmc_lua_pushtensor(L, t);
    lua_setfield(L, -2, "tokens");
    llmc_lua_pushtensor(L, s);
    lua_setfield(L, -2, "slots");
    if (ws) {
      llmc_lua_pushtensor(L, ws);
      lua_setfield(L, -2, "weights");
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "count");
    lua_rawseti(L, -2, e + 1);
  }
  free(tok);
  free(slot);
  return 1;
}

static int l_gather_rows(lua_State *L) {
  llmc_lua_pushtensor(L, llmc_nn_gather_rows(llmc_lua_checktensor(L, 1), llmc_lua_checktensor(L, 2)));
  return 1;
}

static int l_index_add_rows_(lua_State *L) {
  llmc_tensor *out = llmc_lua_checktensor(L, 1), *idx = llmc_lua_checktensor(L, 2), *src = llmc_lua_checktensor(L, 3);
  if (llmc_nn_index_add_rows_(out, idx, src, opt_tensor(L, 4)) < 0) return llmc_lua_error(L, NULL);
  lua_settop(L, 1);
  return 1;
}

static int l_cross_entropy(lua_State *L) {
  llmc_tensor *nll, *lse;
  if (llmc_nn_cross_entropy(llmc_lua_checktensor(L, 1), llmc_lua_checktensor(L, 2), &nll, &lse) < 0)
    return llmc_lua_error(L, NULL);
  llmc_lua_pushtensor(L, nll);
  llmc_lua_pushtensor(L, lse);
  return 2;
}

/* sample(logits [V], {temperature=, top_k=, top_p=}, state) -> id, state */
static int l_sample(lua_State *L) {
  llmc_tensor *lg = llmc_lua_checktensor(L, 1);
  double temp = 1.0, top_p = 1.0;
  lua_Integer top_k = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "temperature");
    if (!lua_isnil(L, -1)) temp = luaL_checknumber(L, -1);
    lua_getfield(L, 2, "top_k");
    if (!lua_isnil(L, -1)) top_k = luaL_checkinteger(L, -1);
    lua_getfield(L, 2, "top_p");
    if (!lua_isnil(L, -1)) top_p = luaL_checknumber(L, -1);
    lua_pop(L, 3);
  }
  uint64_t state = (uint64_t)luaL_optinteger(L, 3, 0);
  int64_t id = llmc_nn_sample(lg, temp, top_k, top_p, &state);
  if (id < 0) return llmc_lua_error(L, "sample");
  lua_pushinteger(L, id);
  lua_pushinteger(L, (lua_Integer)state);
  return 2;
}

static int l_profile(lua_State *L) {
  llmc_nn_profile p;
  llmc_nn_profile_get(&p);
  lua_createtable(L, 0, 5);
  lua_pushnumber(L, p.gemm_s); lua_setfield(L, -2, "gemm_s");
  lua_pushnumber(L, p.convert_s); lua_setfield(L, -2, "convert_s");
  lua_pushnumber(L, p.attention_s); lua_setfield(L, -2, "attention_s");
  lua_pushnumber(L, p.gemm_flops); lua_setfield(L, -2, "gemm_flops");
  return 1;
}

/* now() -> monotonic wall-clock seconds (for tokens/s figures) */
static int l_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
  return 1;
}

static int l_profile_reset(lua_State *L) {
  (void)L;
  llmc_nn_profile_reset();
  return 0;
}

static const luaL_Reg nn_funcs[] = {
  {"linear", l_linear}, {"embedding", l_embedding}, {"rmsnorm", l_rmsnorm}, {"rope_tables", l_rope_tables},
  {"rope", l_rope}, {"attention", l_attention}, {"attention_force_path", l_attention_force_path},
  {"silu_mul", l_silu_mul}, {"moe_route", l_moe_route}, {"moe_dispatch", l_moe_dispatch},
  {"gather_rows", l_gather_rows}, {"index_add_rows_", l_index_add_rows_}, {"cross_entropy", l_cross_entropy},
  {"sample", l_sample}, {"profile", l_profile}, {"profile_reset", l_profile_reset}, {"now", l_now},
  {NULL, NULL}};

int luaopen_llmc_nn(lua_State *L) {
  llmc_dtype_init();
  luaL_newlib(L, nn_funcs);
  return 1;
}
