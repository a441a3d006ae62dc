/*
** lua_sparsegpt.c — Lua binding "llmc._sparsegpt": the SparseGPT solve and
** Wanda pruning of sparsegpt.c for lua/llmc/modifiers/{sparsegpt,wanda}.lua.
**
**   local S = require "llmc._sparsegpt"
**   local h = S.hessian(in_features)    -- the GPTQ Hessian (fp32 [C, C]); h:add(x) with x [B, T, C] or [T, C]
**   local c = S.colsq(in_features)      -- Wanda's per-column sum of x^2; c:add(x)
**   h:nsamples(), h:ntokens(), h:cols(), h:free()   (the same on c)
**   local r = S.sparsegpt(weight, h, {sparsity = 0.5, prune_n = 2, prune_m = 4, block_size = 128,
**                                     dampening_frac = 0.01, preserve_mask = false})
**   -- r.weight (a new Tensor, the weight's dtype), r.loss, r.inverse_fallback, r.dead_columns,
**   -- r.zeros, r.seconds
**   local r = S.wanda(weight, c, {sparsity = 0.5, prune_n = 0, prune_m = 0})  -- r.weight, r.zeros, r.seconds
**   local n, m = S.parse_mask("2:4")    -- 2, 4 ("0:0" -> 0, 0); an error names a bad string
**   local i = S.mask_info(t [, nrows])  -- i.zeros, i.hash (FNV-1a 32 of the flat indices of the
**                                       -- zeros as little-endian uint32), i.row_zeros (first nrows
**                                       -- rows), i.sum, i.abs_sum, i.sq_sum (fp64)
**
** Ownership: each statistics userdata owns its buffer (freed by :free() or
** __gc); returned Tensors are owned by their Lua boxes.  Errors are Lua
** errors naming the argument.
*/
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "error.h"
#include "gptq.h"
#include "lua_llmc.h"
#include "lua_tensor.h"
#include "sparsegpt.h"
#include "tensor.h"

#define HESS_MT "llmc._sparsegpt.Hessian"
#define COLSQ_MT "llmc._sparsegpt.ColSq"

typedef struct {
  int kind;   /* 0 Hessian, 1 column sums */
  int live;
  llmc_hessian h;
  llmc_colsq c;
} stat_box;

static stat_box *check_stat(lua_State *L, int i) {
  stat_box *b = luaL_testudata(L, i, HESS_MT);
  if (!b) b = luaL_testudata(L, i, COLSQ_MT);
  if (!b) luaL_typeerror(L, i, "sparsity statistics (S.hessian / S.colsq)");
  if (!b->live) luaL_error(L, "sparsity statistics used after free()");
  return b;
}

static int st_gc(lua_State *L) {
  stat_box *b = lua_touserdata(L, 1);
  if (b && b->live) {
    if (b->kind == 0) llmc_hessian_free(&b->h);
    else llmc_colsq_free(&b->c);
  }
  if (b) b->live = 0;
  return 0;
}

static int new_stat(lua_State *L, int kind) {
  lua_Integer cols = luaL_checkinteger(L, 1);
  if (cols <= 0 || cols > (1 << 20)) return luaL_error(L, "in_features must be in 1..2^20 (got %d)", (int)cols);
  stat_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  b->kind = kind;
  luaL_setmetatable(L, kind == 0 ? HESS_MT : COLSQ_MT);
  int rc = kind == 0 ? llmc_hessian_init(&b->h, cols) : llmc_colsq_init(&b->c, cols);
  if (rc < 0) return llmc_lua_error(L, kind == 0 ? "hessian" : "colsq");
  b->live = 1;
  return 1;
}
static int s_hessian(lua_State *L) { return new_stat(L, 0); }
static int s_colsq(lua_State *L) { return new_stat(L, 1); }


static int st_add(lua_State *L) {
  stat_box *b = check_stat(L, 1);
  llmc_tensor *x = llmc_lua_check_host_float(L, 2, "add: x");
  int64_t batch, tokens, c = x->shape[x->ndim - 1], cols = b->kind == 0 ? b->h.cols : b->c.cols;
  if (x->ndim == 3) { batch = x->shape[0]; tokens = x->shape[1]; }
  else if (x->ndim == 2) { batch = 1; tokens = x->shape[0]; }
  else return luaL_error(L, "add: x must be [B, T, C] or [T, C] (got %d dims)", x->ndim);
  if (c != cols) return luaL_error(L, "add: x has %d features, the statistics %d", (int)c, (int)cols);
  if (batch * tokens == 0) return 0;
  int rc = b->kind == 0 ? llmc_hessian_add_any(&b->h, llmc_tensor_data(x), x->dtype, batch, tokens)
                        : llmc_colsq_add(&b->c, llmc_tensor_data(x), x->dtype, batch, tokens);
  if (rc < 0) return llmc_lua_error(L, "add");
  return 0;
}

static int st_nsamples(lua_State *L) {
  stat_box *b = check_stat(L, 1);
  lua_pushinteger(L, b->kind == 0 ? b->h.nsamples : b->c.nsamples);
  return 1;
}
static int st_ntokens(lua_State *L) {
  stat_box *b = check_stat(L, 1);
  lua_pushinteger(L, b->kind == 0 ? b->h.ntokens : b->c.ntokens);
  return 1;
}
static int st_cols(lua_State *L) {
  stat_box *b = check_stat(L, 1);
  lua_pushinteger(L, b->kind == 0 ? b->h.cols : b->c.cols);
  return 1;
}

static double opt_num(lua_State *L, int o, const char *k, double def) {
  double v = def;
  if (!lua_istable(L, o)) return v;
  int t = lua_getfield(L, o, k);
  if (t == LUA_TNUMBER) v = lua_tonumber(L, -1);
  else if (t != LUA_TNIL) luaL_error(L, "opts.%s must be a number", k);
  lua_pop(L, 1);
  return v;
}
static int64_t opt_int(lua_State *L, int o, const char *k, int64_t def) {
  int64_t v = def;
  if (!lua_istable(L, o)) return v;
  if (lua_getfield(L, o, k) != LUA_TNIL) {
    if (!lua_isinteger(L, -1)) luaL_error(L, "opts.%s must be an integer", k);
    v = lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* weight -> fp32 copy; returns rows / cols */
static float *weight_f32(lua_State *L, llmc_tensor *w, int64_t *rows, int64_t *cols) {
  if (w->ndim != 2) luaL_error(L, "weight must be 2-D [out, in] (got %d dims)", w->ndim);
  *rows = w->shape[0];
  *cols = w->shape[1];
  float *W = llmc_lua_scratch_floats(L, (size_t)(*rows * *cols), "sparsegpt: weight");
  llmc_convert(W, LLMC_F32, llmc_tensor_data(w), w->dtype, (size_t)(*rows * *cols));
  return W;
}

static void push_weight(lua_State *L, llmc_tensor *w, const float *W, int res) {
  llmc_tensor *f = llmc_tensor_empty(w->dtype, 2, w->shape);
  if (!f) llmc_lua_error(L, "result");
  llmc_lua_pushtensor(L, f);
  llmc_convert(llmc_tensor_data(f), w->dtype, W, LLMC_F32, (size_t)(w->shape[0] * w->shape[1]));
  lua_setfield(L, res, "weight");
}

static int s_sparsegpt(lua_State *L) {
  llmc_tensor *w = llmc_lua_check_host_float(L, 1, "sparsegpt: weight");
  stat_box *b = check_stat(L, 2);
  if (b->kind != 0) return luaL_error(L, "sparsegpt: argument 2 must be a Hessian (S.hessian)");
  llmc_sparsegpt_opts o;
  llmc_sparsegpt_opts_init(&o);
  o.sparsity = opt_num(L, 3, "sparsity", o.sparsity);
  o.prune_n = (int)opt_int(L, 3, "prune_n", 0);
  o.prune_m = (int)opt_int(L, 3, "prune_m", 0);
  o.block_size = opt_int(L, 3, "block_size", o.block_size);
  o.dampening_frac = opt_num(L, 3, "dampening_frac", o.dampening_frac);
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "preserve_mask");
    o.preserve_mask = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  int64_t rows, cols;
  float *W = weight_f32(L, w, &rows, &cols);
  if (b->h.cols != cols)
    return luaL_error(L, "sparsegpt: the Hessian has %d columns, the weight %d", (int)b->h.cols, (int)cols);
  llmc_sparsity_result r;
  if (llmc_sparsegpt_solve(W, rows, cols, &b->h, &o, &r) < 0) return llmc_lua_error(L, "sparsegpt");
  lua_createtable(L, 0, 7);
  int res = lua_gettop(L);
  push_weight(L, w, W, res);
  lua_pushnumber(L, r.loss);
  lua_setfield(L, res, "loss");
  lua_pushboolean(L, r.inverse_fallback);
  lua_setfield(L, res, "inverse_fallback");
  lua_pushinteger(L, r.dead_columns);
  lua_setfield(L, res, "dead_columns");
  lua_pushinteger(L, r.zeros);
  lua_setfield(L, res, "zeros");
  lua_pushnumber(L, r.seconds);
  lua_setfield(L, res, "seconds");
  return 1;
}

static int s_wanda(lua_State *L) {
  llmc_tensor *w = llmc_lua_check_host_float(L, 1, "wanda: weight");
  stat_box *b = check_stat(L, 2);
  if (b->kind != 1) return luaL_error(L, "wanda: argument 2 must be column statistics (S.colsq)");
  double sparsity = opt_num(L, 3, "sparsity", 0.5);
  int n = (int)opt_int(L, 3, "prune_n", 0), m = (int)opt_int(L, 3, "prune_m", 0);
  int64_t rows, cols;
  float *W = weight_f32(L, w, &rows, &cols);
  llmc_sparsity_result r;
  if (llmc_wanda_prune(W, rows, cols, &b->c, sparsity, n, m, &r) < 0) return llmc_lua_error(L, "wanda");
  lua_createtable(L, 0, 3);
  int res = lua_gettop(L);
  push_weight(L, w, W, res);
  lua_pushinteger(L, r.zeros);
  lua_setfield(L, res, "zeros");
  lua_pushnumber(L, r.seconds);
  lua_setfield(L, res, "seconds");
  return 1;
}

static int s_parse_mask(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  int n, m;
  if (llmc_sparsity_parse_mask(s, &n, &m) < 0) return luaL_error(L, "%s", llmc_errmsg());
  lua_pushinteger(L, n);
  lua_pushinteger(L, m);
  return 2;
}

static int s_mask_info(lua_State *L) {
  lua_Integer nrows = luaL_optinteger(L, 2, 0);   /* before the tensor check pushes its hold */
  llmc_tensor *t = llmc_lua_check_host_float(L, 1, "mask_info: tensor");
  int64_t cols = t->ndim ? t->shape[t->ndim - 1] : 1, total = (int64_t)llmc_tensor_numel(t);
  int64_t rows = cols ? total / cols : 0;
  if (nrows < 0 || nrows > rows) nrows = rows;
  const char *d = llmc_tensor_data(t);
  size_t isz = llmc_dtype_size(t->dtype);
  uint32_t h = 2166136261u;
  int64_t zeros = 0;
  double sum = 0, asum = 0, sq = 0;
  lua_createtable(L, 0, 6);
  int res = lua_gettop(L);
  lua_createtable(L, (int)nrows, 0);
  int64_t rz = 0;
  for (int64_t i = 0; i < total; i++) {
    double v = llmc_load_as_f64(d + (size_t)i * isz, t->dtype);
    sum += v;
    asum += fabs(v);
    sq += v * v;
    if (v == 0.0) {
      uint32_t idx = (uint32_t)i;
      for (int k = 0; k < 4; k++) { h ^= (idx >> (8 * k)) & 0xFFu; h *= 16777619u; }
      zeros++;
      rz++;
    }
    if (cols && (i + 1) % cols == 0) {
      int64_t r = i / cols;
      if (r < nrows) { lua_pushinteger(L, rz); lua_rawseti(L, -2, r + 1); }
      rz = 0;
    }
  }
  lua_setfield(L, res, "row_zeros");
  lua_pushinteger(L, zeros);
  lua_setfield(L, res, "zeros");
  lua_pushinteger(L, (lua_Integer)h);
  lua_setfield(L, res, "hash");
  lua_pushnumber(L, sum);
  lua_setfield(L, res, "sum");
  lua_pushnumber(L, asum);
  lua_setfield(L, res, "abs_sum");
  lua_pushnumber(L, sq);
  lua_setfield(L, res, "sq_sum");
  return 1;
}

static const luaL_Reg st_methods[] = {{"add", st_add}, {"nsamples", st_nsamples}, {"ntokens", st_ntokens},
                                      {"cols", st_cols}, {"free", st_gc}, {NULL, NULL}};

static const luaL_Reg funcs[] = {{"hessian", s_hessian}, {"colsq", s_colsq}, {"sparsegpt", s_sparsegpt},
                                 {"wanda", s_wanda}, {"parse_mask", s_parse_mask}, {"mask_info", s_mask_info},
                                 {NULL, NULL}};

int luaopen_llmc_sparsegpt(lua_State *L) {
  const char *mts[2] = {HESS_MT, COLSQ_MT};
  for (int i = 0; i < 2; i++) {
    if (luaL_newmetatable(L, mts[i])) {
      lua_pushcfunction(L, st_gc);
      lua_setfield(L, -2, "__gc");
      lua_newtable(L);
      luaL_setfuncs(L, st_methods, 0);
      lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
  }
  luaL_newlib(L, funcs);
  return 1;
}
