/*
** lua_gptq.c — Lua binding "llmc._gptq": Hessian accumulation and the GPTQ
** solve of gptq.c for the GPTQModifier (lua/llmc/modifiers/gptq.lua).
**
**   local G = require "llmc._gptq"
**   local h = G.hessian(in_features)        -- userdata owning an fp32 [C, C] Hessian
**   h:add(x)                                -- x: Tensor [B, T, C] or [T, C], bf16/f16/f32 (n += B, or 1)
**   h:nsamples(), h:ntokens(), h:cols()
**   local r = G.solve(weight, h, wargs, {block_size = 128, dampening_frac = 0.01, actorder = true,
**                                         format = "pack-quantized", global_scale = g, input_args = ia,
**                                         share_factor = true})
**   -- share_factor: keep the Hessian's factorisation (column order, U) in h
**   --   for the next module with the same input (q/k/v, gate/up): same bytes,
**   --   one factorisation instead of one per module; h:add and h:free drop it
**   -- r.fake: Tensor (weight's dtype, the quantize-dequantized solved weight)
**   -- r.format, r.tensors = {{name =, tensor =}, ...} (the compressed tensors, made from
**   --   the solved fp32 weight with the very scales the solve used, so saving is exact)
**   -- r.global_scale (tensor_group), r.loss, r.rtn_fallback, r.dead_columns, r.seconds,
**   -- r.sq_err / r.sq_ref / r.max_abs_err (fake vs the original weight)
**   h:free()                                -- release the Hessian now (also done by __gc)
**
** Ownership: the Hessian userdata owns its buffer; every returned Tensor is
** owned by its Lua box.  Errors are Lua errors naming the argument.
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
#include "lua_quant.h"
#include "lua_tensor.h"
#include "quant.h"
#include "tensor.h"

#define HESS_MT "llmc._gptq.Hessian"

typedef struct {
  llmc_hessian h;
  llmc_gptq_factor f;   /* kept between solves with share_factor */
  int live;
} hess_box;

static hess_box *check_hess(lua_State *L, int i) {
  hess_box *b = luaL_checkudata(L, i, HESS_MT);
  if (!b->live) luaL_error(L, "Hessian: used after free()");
  return b;
}

static int h_gc(lua_State *L) {
  hess_box *b = luaL_checkudata(L, 1, HESS_MT);
  if (b->live) {
    llmc_hessian_free(&b->h);
    llmc_gptq_factor_free(&b->f);
  }
  b->live = 0;
  return 0;
}

static int g_hessian(lua_State *L) {
  lua_Integer cols = luaL_checkinteger(L, 1);
  if (cols <= 0 || cols > (1 << 20)) return luaL_error(L, "hessian: in_features must be in 1..2^20 (got %d)", (int)cols);
  hess_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, HESS_MT);
  if (llmc_hessian_init(&b->h, cols) < 0) return llmc_lua_error(L, "hessian");
  b->live = 1;
  return 1;
}



/* h:add(x): x [B, T, C] (B sequences) or [T, C] (one sequence) */
static int h_add(lua_State *L) {
  lua_settop(L, 2);
  hess_box *b = check_hess(L, 1);
  llmc_tensor *x = llmc_lua_check_host_float(L, 2, "Hessian:add: x");
  int64_t batch, tokens, c = x->shape[x->ndim - 1];
  if (x->ndim == 3) {
    batch = x->shape[0];
    tokens = x->shape[1];
  } else if (x->ndim == 2) {
    batch = 1;
    tokens = x->shape[0];
  } else {
    return luaL_error(L, "Hessian:add: x must be [B, T, C] or [T, C] (got %d dims)", x->ndim);
  }
  if (c != b->h.cols)
    return luaL_error(L, "Hessian:add: x has %d features, the Hessian %d", (int)c, (int)b->h.cols);
  if (batch * tokens == 0) return 0;
  llmc_gptq_factor_free(&b->f);   /* made from the old sums */
  if (llmc_hessian_add_any(&b->h, llmc_tensor_data(x), x->dtype, batch, tokens) < 0)
    return llmc_lua_error(L, "Hessian:add");
  /* drop the reference now: the hold box would keep the activation's
  ** storage alive until the next garbage collection */
  llmc_lua_hold_box *hb = lua_touserdata(L, 3);
  if (hb && hb->t == x) {
    llmc_tensor_free(hb->t);
    hb->t = NULL;
  }
  return 0;
}

static int h_nsamples(lua_State *L) {
  lua_pushinteger(L, check_hess(L, 1)->h.nsamples);
  return 1;
}
static int h_ntokens(lua_State *L) {
  lua_pushinteger(L, check_hess(L, 1)->h.ntokens);
  return 1;
}
static int h_cols(lua_State *L) {
  lua_pushinteger(L, check_hess(L, 1)->h.cols);
  return 1;
}

/* qparams owned by a box so that an error after the observer does not leak */
typedef struct { llmc_qparams qp; int live; } qp_box;
static int qp_gc(lua_State *L) {
  qp_box *b = lua_touserdata(L, 1);
  if (b->live) llmc_q_qparams_free(&b->qp);
  b->live = 0;
  return 0;
}

static int opt_int(lua_State *L, int o, const char *k, int64_t def) {
  int64_t v = def;
  if (lua_getfield(L, o, k) != LUA_TNIL) {
    if (!lua_isinteger(L, -1)) luaL_error(L, "solve: opts.%s must be an integer", k);
    v = lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
  return (int)v;
}

/* solve(weight, hessian, wargs [, opts]) -> result table (see the header) */
static int g_solve(lua_State *L) {
  llmc_tensor *w = llmc_lua_check_host_float(L, 1, "solve: weight");
  if (w->ndim != 2) return luaL_error(L, "solve: weight must be 2-D [out, in] (got %d dims)", w->ndim);
  int64_t rows = w->shape[0], cols = w->shape[1];
  hess_box *hb = check_hess(L, 2);
  if (hb->h.cols != cols)
    return luaL_error(L, "solve: the Hessian has %d columns, the weight %d", (int)hb->h.cols, (int)cols);
  if (hb->h.nsamples <= 0) return luaL_error(L, "solve: the Hessian saw no calibration sample");
  llmc_qargs wa, ia;
  llmc_lua_check_qargs(L, 3, &wa, "weights");
  llmc_gptq_opts opts;
  llmc_gptq_opts_init(&opts);
  const llmc_qargs *in = NULL;
  int fmt = -1, has_gs = 0, share = 0;
  float gs = 0;
  if (lua_istable(L, 4)) {
    share = lua_getfield(L, 4, "share_factor") != LUA_TNIL && lua_toboolean(L, -1);
    lua_pop(L, 1);
    opts.block_size = opt_int(L, 4, "block_size", opts.block_size);
    if (opts.block_size <= 0) return luaL_error(L, "solve: opts.block_size must be positive");
    if (lua_getfield(L, 4, "dampening_frac") == LUA_TNUMBER) opts.dampening_frac = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (opts.dampening_frac < 0) return luaL_error(L, "solve: opts.dampening_frac must be >= 0");
    if (lua_getfield(L, 4, "actorder") != LUA_TNIL) opts.actorder = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 4, "format") == LUA_TSTRING) {
      fmt = llmc_q_format_from_name(lua_tostring(L, -1));
      if (fmt < 0) return luaL_error(L, "solve: unknown format '%s'", lua_tostring(L, -1));
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 4, "global_scale") == LUA_TNUMBER) {
      gs = (float)lua_tonumber(L, -1);
      has_gs = 1;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 4, "input_args") == LUA_TTABLE) {
      llmc_lua_check_qargs(L, -1, &ia, "input_activations");
      in = &ia;
    }
    lua_pop(L, 1);
  }
  if (fmt < 0) fmt = (int)llmc_q_infer_format(&wa, in);

  /* scales / zero points from the observer on the pre-solve weight (§5.4) */
  qp_box *qb = lua_newuserdatauv(L, sizeof *qb, 0);
  memset(qb, 0, sizeof *qb);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, qp_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  if (llmc_q_qparams_compute(&qb->qp, &wa, llmc_tensor_data(w), w->dtype, rows, cols, has_gs ? &gs : NULL) < 0)
    return llmc_lua_error(L, "solve: weight observer");
  qb->live = 1;

  float *W = llmc_lua_scratch_floats(L, (size_t)(rows * cols), "solve: fp32 weight");
  llmc_convert(W, LLMC_F32, llmc_tensor_data(w), w->dtype, (size_t)(rows * cols));

  llmc_gptq_result gr;
  int rc = share ? llmc_gptq_solve_shared(W, rows, cols, &hb->h, &qb->qp, &opts, &hb->f, &gr)
                 : llmc_gptq_solve(W, rows, cols, &hb->h, &qb->qp, &opts, &gr);
  if (rc < 0) return llmc_lua_error(L, "solve");

  lua_createtable(L, 0, 12);
  int res = lua_gettop(L);
  /* the fake-quantized weight in the weight's dtype: every value is q * s,
  ** rounded once to that dtype (what the checkpoint dequantizes to) */
  llmc_tensor *f = llmc_tensor_empty(w->dtype, 2, w->shape);
  if (!f) return llmc_lua_error(L, "solve");
  llmc_lua_pushtensor(L, f);
  llmc_convert(llmc_tensor_data(f), w->dtype, W, LLMC_F32, (size_t)(rows * cols));
  lua_setfield(L, res, "fake");
  /* the compressed tensors, from the fake weight and the scales the solve
  ** used: each value is within a rounding of the weight dtype of q * s, far
  ** below s / 2, so the codes are exactly the solve's q */
  llmc_qtensor_desc d[LLMC_Q_MAX_TENSORS];
  int n = llmc_q_layout((llmc_qformat)fmt, &wa, in, NULL, w->dtype, rows, cols, d);
  if (n < 0) return llmc_lua_error(L, "solve: layout");
  lua_pushstring(L, llmc_q_format_name((llmc_qformat)fmt));
  lua_setfield(L, res, "format");
  lua_createtable(L, n, 0);
  int tl = lua_gettop(L);
  void *bufs[LLMC_Q_MAX_TENSORS];
  int k = 0;
  for (int i = 0; i < n; i++) {
    bufs[i] = NULL;
    if (d[i].source != LLMC_QT_WEIGHT) continue;
    int64_t shape[2] = {d[i].shape[0], d[i].shape[1]};
    llmc_tensor *t = llmc_tensor_empty(d[i].dtype, d[i].ndim, shape);
    if (!t) return llmc_lua_error(L, "solve");
    lua_createtable(L, 0, 2);
    lua_pushstring(L, d[i].name);
    lua_setfield(L, -2, "name");
    llmc_lua_pushtensor(L, t);
    lua_setfield(L, -2, "tensor");
    lua_rawseti(L, tl, ++k);
    bufs[i] = llmc_tensor_data(t);
  }
  lua_setfield(L, res, "tensors");
  if (llmc_q_compress((llmc_qformat)fmt, &qb->qp, llmc_tensor_data(f), w->dtype, d, n, bufs) < 0) return llmc_lua_error(L, "solve");
  if (qb->qp.has_global) {
    lua_pushnumber(L, qb->qp.global_scale);
    lua_setfield(L, res, "global_scale");
  }

  double se = 0, sr = 0, mx = 0;
  const void *wd = llmc_tensor_data(w);
  const void *fd = llmc_tensor_data(f);
  size_t isz = llmc_dtype_size(w->dtype);
  int64_t total = rows * cols;
#pragma omp parallel for reduction(+ : se, sr) reduction(max : mx) schedule(static)
  for (int64_t i = 0; i < total; i++) {
    double a = llmc_load_as_f64((const char *)wd + (size_t)i * isz, w->dtype);
    double b = llmc_load_as_f64((const char *)fd + (size_t)i * isz, w->dtype);
    double e = fabs(a - b);
    se += e * e;
    sr += a * a;
    if (e > mx) mx = e;
  }
  lua_pushnumber(L, se);
  lua_setfield(L, res, "sq_err");
  lua_pushnumber(L, sr);
  lua_setfield(L, res, "sq_ref");
  lua_pushnumber(L, mx);
  lua_setfield(L, res, "max_abs_err");
  lua_pushnumber(L, gr.loss);
  lua_setfield(L, res, "loss");
  lua_pushboolean(L, gr.rtn_fallback);
  lua_setfield(L, res, "rtn_fallback");
  lua_pushinteger(L, gr.dead_columns);
  lua_setfield(L, res, "dead_columns");
  lua_pushnumber(L, gr.seconds);
  lua_setfield(L, res, "seconds");
  lua_pushvalue(L, res);
  return 1;
}

static const luaL_Reg hess_methods[] = {
    {"add", h_add}, {"nsamples", h_nsamples}, {"ntokens", h_ntokens}, {"cols", h_cols}, {"free", h_gc}, {NULL, NULL}};

static const luaL_Reg funcs[] = {{"hessian", g_hessian}, {"solve", g_solve}, {NULL, NULL}};

int luaopen_llmc_gptq(lua_State *L) {
  if (luaL_newmetatable(L, HESS_MT)) {
    lua_pushcfunction(L, h_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_setfuncs(L, hess_methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
