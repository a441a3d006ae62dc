/*
** lua_quant.c — the "llmc._quant" module: the quantization kernels of
** quant.h on Tensor userdata.  Lua code (lua/llmc/quant.lua, the
** QuantizationModifier, model_free_ptq) calls these; users normally don't.
**
** Quantization args are passed as Lua tables with the fields of
** lua/llmc/qargs.lua (compressed-tensors' QuantizationArgs):
**   {num_bits = 4, type = "int", symmetric = true, strategy = "group",
**    group_size = 128, block_structure = {128, 128}, dynamic = false | true | "local",
**    observer = "memoryless_minmax" | "mse" | ..., observer_kwargs = {grid = 100, ...},
**    scale_dtype = "torch.float8_e4m3fn", zp_dtype = "torch.int8",
**    rounding = "eager" | "fused", force_zero_point = false}
**
**   local Q = require "llmc._quant"
**   local r = Q.compress(w, wargs, {fake = true, error = true})
**   -- r.format = "pack-quantized"; r.tensors = {{name = "weight_packed", tensor = T}, ...}
**   -- r.fake = fake-quantized weight (dtype of w); r.sq_err, r.sq_ref, r.max_abs_err
**   local y = Q.qdq_dynamic(x, iargs)                 -- dynamic activation fake-quant
**   local w2 = Q.decompress("pack-quantized", wargs, rows, cols, {weight_packed = T, ...})
**
** Every function raises a Lua error naming the argument on bad input; the
** kernels' own messages (quant.h) are passed through.  Returned tensors are
** fresh host tensors owned by Lua.
*/
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "lua_llmc.h"
#include "lua_quant.h"
#include "lua_tensor.h"
#include "quant.h"

/* ---- args from a Lua table ------------------------------------------------- */

static int field_type(lua_State *L, int t, const char *k) {
  return lua_getfield(L, t, k);   /* pushes the value */
}

/* a torch dtype string ("torch.uint8" or "uint8") -> llmc_dtype, -1 for nil */
static int dtype_field(lua_State *L, int t, const char *k, const char *what) {
  int ty = field_type(L, t, k);
  int r = -1;
  if (ty == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    if (strncmp(s, "torch.", 6) == 0) s += 6;
    r = llmc_dtype_from_name(s);
    if (r < 0) luaL_error(L, "%s.%s: unknown dtype '%s'", what, k, lua_tostring(L, -1));
  } else if (ty != LUA_TNIL && ty != LUA_TLIGHTUSERDATA) {
    luaL_error(L, "%s.%s: expected a dtype name", what, k);
  }
  lua_pop(L, 1);
  return r;
}

static double num_field(lua_State *L, int t, const char *k, double def) {
  double v = def;
  if (lua_getfield(L, t, k) == LUA_TNUMBER) v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Fill a from the table at index t (absolute).  `what` names it in errors. */
static void check_args(lua_State *L, int t, llmc_qargs *a, const char *what) {
  if (!lua_istable(L, t)) luaL_error(L, "%s: expected a quantization args table", what);
  llmc_q_args_init(a);
  lua_Integer nb = 8;
  if (field_type(L, t, "num_bits") != LUA_TNIL) {
    if (!lua_isinteger(L, -1)) luaL_error(L, "%s.num_bits: expected an integer", what);
    nb = lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
  a->num_bits = (int)nb;
  if (field_type(L, t, "type") == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    if (strcmp(s, "int") == 0) a->type = LLMC_QTYPE_INT;
    else if (strcmp(s, "float") == 0) a->type = LLMC_QTYPE_FLOAT;
    else luaL_error(L, "%s.type: '%s' is not int or float", what, s);
  }
  lua_pop(L, 1);
  if (field_type(L, t, "symmetric") == LUA_TBOOLEAN) a->symmetric = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (field_type(L, t, "group_size") == LUA_TNUMBER) {
    lua_Integer g = lua_tointeger(L, -1);
    a->group_size = g;
  }
  lua_pop(L, 1);
  const char *strategy = NULL;
  if (field_type(L, t, "strategy") == LUA_TSTRING) strategy = lua_tostring(L, -1);
  if (strategy) {
    int s = llmc_q_strategy_from_name(strategy);
    if (s < 0) luaL_error(L, "%s.strategy: unknown strategy '%s'", what, strategy);
    a->strategy = (llmc_qstrategy)s;
  } else {
    a->strategy = a->group_size > 0 ? LLMC_QS_GROUP
                  : a->group_size == -1 ? LLMC_QS_CHANNEL : LLMC_QS_TENSOR;
  }
  lua_pop(L, 1);
  if (field_type(L, t, "block_structure") == LUA_TTABLE) {
    for (int i = 0; i < 2; i++) {
      lua_geti(L, -1, i + 1);
      if (!lua_isinteger(L, -1)) luaL_error(L, "%s.block_structure: expected two integers", what);
      a->block_structure[i] = lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  int ty = field_type(L, t, "dynamic");
  if (ty == LUA_TBOOLEAN) a->dynamic = lua_toboolean(L, -1) ? LLMC_QDYN_DYNAMIC : LLMC_QDYN_STATIC;
  else if (ty == LUA_TSTRING && strcmp(lua_tostring(L, -1), "local") == 0) a->dynamic = LLMC_QDYN_LOCAL;
  else if (ty != LUA_TNIL) luaL_error(L, "%s.dynamic: expected true, false or \"local\"", what);
  lua_pop(L, 1);
  if (field_type(L, t, "observer") == LUA_TSTRING) {
    const char *o = lua_tostring(L, -1);
    if (!strcmp(o, "minmax") || !strcmp(o, "memoryless_minmax") || !strcmp(o, "static_minmax"))
      a->observer = LLMC_QOBS_MINMAX;
    else if (!strcmp(o, "mse") || !strcmp(o, "memoryless_mse") || !strcmp(o, "static_mse"))
      a->observer = LLMC_QOBS_MSE;
    else
      luaL_error(L, "%s.observer: '%s' is not supported by llmc's RTN kernels "
                 "(minmax, memoryless_minmax, static_minmax, mse, memoryless_mse)", what, o);
  }
  lua_pop(L, 1);
  if (field_type(L, t, "observer_kwargs") == LUA_TTABLE) {
    int kw = lua_gettop(L);
    a->mse.maxshrink = num_field(L, kw, "maxshrink", a->mse.maxshrink);
    a->mse.grid = num_field(L, kw, "grid", a->mse.grid);
    a->mse.norm = num_field(L, kw, "norm", a->mse.norm);
    a->mse.expand = num_field(L, kw, "expand", a->mse.expand);
    a->mse.patience = (int)num_field(L, kw, "patience", a->mse.patience);
  }
  lua_pop(L, 1);
  a->scale_dtype = dtype_field(L, t, "scale_dtype", what);
  a->zp_dtype = dtype_field(L, t, "zp_dtype", what);
  if (field_type(L, t, "rounding") == LUA_TSTRING) {
    const char *r = lua_tostring(L, -1);
    if (!strcmp(r, "eager")) a->rounding = LLMC_QROUND_EAGER;
    else if (!strcmp(r, "fused")) a->rounding = LLMC_QROUND_FUSED;
    else luaL_error(L, "%s.rounding: '%s' is not eager or fused", what, r);
  }
  lua_pop(L, 1);
  if (field_type(L, t, "force_zero_point") == LUA_TBOOLEAN) a->force_zero_point = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (llmc_q_args_check(a, what) < 0) llmc_lua_error(L, NULL);
}

void llmc_lua_check_qargs(lua_State *L, int t, llmc_qargs *a, const char *what) {
  check_args(L, lua_absindex(L, t), a, what);
}

/* optional args at index i: NULL when nil/none */
static const llmc_qargs *opt_args(lua_State *L, int i, llmc_qargs *a, const char *what) {
  if (lua_isnoneornil(L, i) || lua_islightuserdata(L, i)) return NULL;
  check_args(L, lua_absindex(L, i), a, what);
  return a;
}

/* ---- tensors ------------------------------------------------------------------ */

/* A contiguous host bf16/f16/f32 2-D view of the tensor at idx, as
** [rows = numel / last dim, cols = last dim].  Returns a NEW reference
** (the tensor itself when already contiguous). */
static llmc_tensor *weight_2d(lua_State *L, int idx, int64_t *rows, int64_t *cols, const char *what) {
  llmc_tensor *t = llmc_lua_checktensor(L, idx);
  if (llmc_tensor_is_cuda(t)) luaL_error(L, "%s: a host tensor is needed (got a CUDA tensor)", what);
  if (t->dtype != LLMC_BF16 && t->dtype != LLMC_F16 && t->dtype != LLMC_F32)
    luaL_error(L, "%s: dtype must be bfloat16, float16 or float32 (got %s)", what, llmc_dtype_name(t->dtype));
  if (t->ndim < 1) luaL_error(L, "%s: a 0-dim tensor cannot be quantized", what);
  int64_t c = t->shape[t->ndim - 1];
  int64_t n = llmc_tensor_numel(t);
  if (c <= 0 || n <= 0) luaL_error(L, "%s: empty tensor", what);
  *rows = n / c;
  *cols = c;
  llmc_tensor *ct = llmc_tensor_contiguous(t);
  if (!ct) llmc_lua_error(L, what);
  return ct;
}


typedef struct { llmc_qparams qp; int live; } qp_box;
static int qp_gc(lua_State *L) {
  qp_box *b = lua_touserdata(L, 1);
  if (b->live) llmc_q_qparams_free(&b->qp);
  b->live = 0;
  return 0;
}
static qp_box *new_qp(lua_State *L) {
  qp_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, "llmc._quant.qparams")) {
    lua_pushcfunction(L, qp_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

static int opt_bool(lua_State *L, int t, const char *k) {
  if (!lua_istable(L, t)) return 0;
  lua_getfield(L, t, k);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* sum (a-b)^2, sum a^2, max |a-b| over n elements of two equal-dtype
** buffers (bf16 / f16 / f32: typed loops, this runs once per weight) */
#define ERR_LOOP(T, CONV)                                                   \
  do {                                                                      \
    const T *pa = a, *pb = b;                                               \
    _Pragma("omp parallel for reduction(+ : s1, s2) reduction(max : m) schedule(static)") \
    for (int64_t i = 0; i < n; i++) {                                       \
      double x = CONV(pa[i]), y = CONV(pb[i]);                              \
      double d = x - y;                                                     \
      s1 += d * d;                                                          \
      s2 += x * x;                                                          \
      if (fabs(d) > m) m = fabs(d);                                         \
    }                                                                       \
  } while (0)
#define ID(v) (v)

static void err_stats(const void *a, const void *b, llmc_dtype dt, int64_t n, double *se, double *sr,
                      double *mx) {
  double s1 = 0, s2 = 0, m = 0;
  switch (dt) {
    case LLMC_BF16: ERR_LOOP(uint16_t, llmc_bf16_to_f32); break;
    case LLMC_F16: ERR_LOOP(uint16_t, llmc_f16_to_f32); break;
    case LLMC_F32: ERR_LOOP(float, ID); break;
    default: {
      size_t es = llmc_dtype_size(dt);
      for (int64_t i = 0; i < n; i++) {
        double x = llmc_load_as_f32((const char *)a + (size_t)i * es, dt);
        double y = llmc_load_as_f32((const char *)b + (size_t)i * es, dt);
        double d = x - y;
        s1 += d * d;
        s2 += x * x;
        if (fabs(d) > m) m = fabs(d);
      }
    }
  }
  *se = s1, *sr = s2, *mx = m;
}

/* ---- compress ----------------------------------------------------------------- */

/* compress(w, wargs [, opts]) -> {format=, tensors={{name=, tensor=}...}, fake=, sq_err=, sq_ref=,
**   max_abs_err=, global_scale=}
** opts: format (string; default inferred from wargs and opts.input_args),
**       input_args, output_args (tables; only for the format and the layout),
**       global_scale (number: the shared G of a fused tensor_group set),
**       fake (bool): also return the fake-quantized weight in w's dtype,
**       error (bool): relative-error statistics of fake vs w. */
static int q_compress(lua_State *L) {
  int64_t rows, cols;
  lua_settop(L, 3);
  llmc_tensor *w = weight_2d(L, 1, &rows, &cols, "compress: weight");
  llmc_lua_holdtensor(L, w);   /* index 4 */
  llmc_qargs wa, ia, oa;
  check_args(L, 2, &wa, "weights");
  int o = lua_istable(L, 3) ? 3 : 0;
  const llmc_qargs *in = NULL, *out = NULL;
  float gs = 0;
  int has_gs = 0;
  int want_fake = 0, want_err = 0;
  int fmt = -1;
  if (o) {
    lua_getfield(L, o, "input_args");
    in = opt_args(L, -1, &ia, "input_activations");
    lua_pop(L, 1);
    lua_getfield(L, o, "output_args");
    out = opt_args(L, -1, &oa, "output_activations");
    lua_pop(L, 1);
    if (lua_getfield(L, o, "global_scale") == LUA_TNUMBER) {
      gs = (float)lua_tonumber(L, -1);
      has_gs = 1;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, o, "format") == LUA_TSTRING) {
      fmt = llmc_q_format_from_name(lua_tostring(L, -1));
      if (fmt < 0) return luaL_error(L, "compress: unknown format '%s'", lua_tostring(L, -1));
    }
    lua_pop(L, 1);
    want_fake = opt_bool(L, o, "fake");
    want_err = opt_bool(L, o, "error");
  }
  if (fmt < 0) fmt = (int)llmc_q_infer_format(&wa, in);
  qp_box *qb = new_qp(L);
  if (llmc_q_qparams_compute(&qb->qp, &wa, llmc_tensor_data(w), w->dtype, rows, cols,
                             has_gs ? &gs : NULL) < 0)
    return llmc_lua_error(L, "compress");
  qb->live = 1;
  llmc_qtensor_desc d[LLMC_Q_MAX_TENSORS];
  int n = llmc_q_layout((llmc_qformat)fmt, &wa, in, out, w->dtype, rows, cols, d);
  if (n < 0) return llmc_lua_error(L, "compress");

  lua_createtable(L, 0, 8);                 /* result */
  int res = lua_gettop(L);
  lua_pushstring(L, llmc_q_format_name((llmc_qformat)fmt));
  lua_setfield(L, res, "format");
  lua_createtable(L, n, 0);                 /* tensors */
  int tl = lua_gettop(L);
  void *bufs[LLMC_Q_MAX_TENSORS];
  int k = 0;
  for (int i = 0; i < n; i++) {
    bufs[i] = NULL;
    if (d[i].source != LLMC_QT_WEIGHT) continue;   /* static activation params: calibration */
    int64_t shape[2] = {d[i].shape[0], d[i].shape[1]};
    llmc_tensor *t = llmc_tensor_empty(d[i].dtype, d[i].ndim, shape);
    if (!t) return llmc_lua_error(L, "compress");
    lua_createtable(L, 0, 2);
    lua_pushstring(L, d[i].name);
    lua_setfield(L, -2, "name");
    llmc_lua_pushtensor(L, t);              /* the box owns t */
    lua_setfield(L, -2, "tensor");
    lua_rawseti(L, tl, ++k);
    bufs[i] = llmc_tensor_data(t);
  }
  lua_setfield(L, res, "tensors");
  if (llmc_q_compress((llmc_qformat)fmt, &qb->qp, llmc_tensor_data(w), w->dtype, d, n, bufs) < 0)
    return llmc_lua_error(L, "compress");
  if (qb->qp.has_global) {
    lua_pushnumber(L, qb->qp.global_scale);
    lua_setfield(L, res, "global_scale");
  }
  if (want_fake || want_err) {
    llmc_tensor *f = llmc_tensor_empty(w->dtype, w->ndim, w->shape);
    if (!f) return llmc_lua_error(L, "compress");
    /* only for the statistics: owned by a hold box and freed right away
    ** below, so that streaming callers (model_free) keep constant memory
    ** instead of waiting for the garbage collector */
    if (want_fake) llmc_lua_pushtensor(L, f);
    else llmc_lua_holdtensor(L, f);
    if (llmc_q_fake_quantize(&qb->qp, llmc_tensor_data(w), w->dtype, llmc_tensor_data(f)) < 0)
      return llmc_lua_error(L, "compress");
    if (want_err) {
      double se, sr, mx;
      err_stats(llmc_tensor_data(w), llmc_tensor_data(f), w->dtype, rows * cols, &se, &sr, &mx);
      lua_pushnumber(L, se);
      lua_setfield(L, res, "sq_err");
      lua_pushnumber(L, sr);
      lua_setfield(L, res, "sq_ref");
      lua_pushnumber(L, mx);
      lua_setfield(L, res, "max_abs_err");
    }
    if (want_fake) {
      lua_setfield(L, res, "fake");
    } else {
      llmc_lua_hold_box *hb = lua_touserdata(L, -1);
      llmc_tensor_free(hb->t);
      hb->t = NULL;
      lua_pop(L, 1);
    }
  }
  /* the qparams arrays are no longer needed either */
  llmc_q_qparams_free(&qb->qp);
  qb->live = 0;
  /* and the contiguous weight reference (a copy when w was strided) */
  {
    llmc_lua_hold_box *wb = lua_touserdata(L, 4);
    if (wb && wb->t == w) { llmc_tensor_free(wb->t); wb->t = NULL; }
  }
  lua_pushvalue(L, res);
  return 1;
}

/* fake_quantize(w, wargs [, global_scale]) -> Tensor (dtype of w) */
static int q_fake_quantize(lua_State *L) {
  int64_t rows, cols;
  lua_settop(L, 3);
  llmc_tensor *w = weight_2d(L, 1, &rows, &cols, "fake_quantize: tensor");
  llmc_lua_holdtensor(L, w);
  llmc_qargs a;
  check_args(L, 2, &a, "args");
  float gs = 0;
  int has_gs = lua_isnumber(L, 3);
  if (has_gs) gs = (float)lua_tonumber(L, 3);
  qp_box *qb = new_qp(L);
  if (llmc_q_qparams_compute(&qb->qp, &a, llmc_tensor_data(w), w->dtype, rows, cols,
                             has_gs ? &gs : NULL) < 0)
    return llmc_lua_error(L, "fake_quantize");
  qb->live = 1;
  llmc_tensor *f = llmc_tensor_empty(w->dtype, w->ndim, w->shape);
  if (!f) return llmc_lua_error(L, "fake_quantize");
  llmc_lua_pushtensor(L, f);
  if (llmc_q_fake_quantize(&qb->qp, llmc_tensor_data(w), w->dtype, llmc_tensor_data(f)) < 0)
    return llmc_lua_error(L, "fake_quantize");
  return 1;
}

/* qdq_dynamic(x, args [, global_scale]) -> Tensor: dynamic activation
** quantize-dequantize over the last dim (token = per row). */
static int q_qdq_dynamic(lua_State *L) {
  int64_t rows, cols;
  lua_settop(L, 3);
  llmc_tensor *x = weight_2d(L, 1, &rows, &cols, "qdq_dynamic: input");
  llmc_lua_holdtensor(L, x);
  llmc_qargs a;
  check_args(L, 2, &a, "input_activations");
  float gs = 0;
  int has_gs = lua_isnumber(L, 3);
  if (has_gs) gs = (float)lua_tonumber(L, 3);
  llmc_tensor *y = llmc_tensor_empty(x->dtype, x->ndim, x->shape);
  if (!y) return llmc_lua_error(L, "qdq_dynamic");
  llmc_lua_pushtensor(L, y);
  if (llmc_q_qdq_dynamic(&a, llmc_tensor_data(x), x->dtype, rows, cols, has_gs ? &gs : NULL,
                         llmc_tensor_data(y)) < 0)
    return llmc_lua_error(L, "qdq_dynamic");
  return 1;
}

/* qdq_static(x, args, scale [, zero_point]) -> Tensor: quantize-dequantize
** an activation with calibrated (static) qparams: the input_scale /
** output_scale / k_scale of a module.  scale is a Tensor of the qparam dtype
** D holding one value (tensor strategy) or one per row of x laid out as
** [stats, rest] (attn_head: the caller puts the heads first); zero_point
** (zp dtype, same count) only for asymmetric args.  As in CT's forward the
** zero point is always added (all zeros when symmetric). */
static int q_qdq_static(lua_State *L) {
  int64_t rows, cols;
  lua_settop(L, 4);
  llmc_tensor *x = weight_2d(L, 1, &rows, &cols, "qdq_static: input");
  llmc_lua_holdtensor(L, x);   /* index 5 */
  llmc_qargs a;
  check_args(L, 2, &a, "activations");
  llmc_tensor *s = llmc_lua_checktensor(L, 3);
  llmc_tensor *z = lua_isnoneornil(L, 4) ? NULL : llmc_lua_checktensor(L, 4);
  int64_t ns = llmc_tensor_numel(s);
  if (a.strategy == LLMC_QS_ATTN_HEAD) {
    int64_t n = rows * cols;
    if (ns < 1 || n % ns != 0)
      return luaL_error(L, "qdq_static: %lld head scales do not divide %lld elements", (long long)ns, (long long)n);
    rows = ns;
    cols = n / ns;
  } else if (a.strategy != LLMC_QS_TENSOR) {
    return luaL_error(L, "qdq_static: strategy %s has no static activation form (tensor or attn_head)",
                      llmc_q_strategy_name(a.strategy));
  } else if (ns != 1) {
    return luaL_error(L, "qdq_static: a tensor-strategy scale has one element (got %lld)", (long long)ns);
  }
  if (z && llmc_tensor_numel(z) != ns)
    return luaL_error(L, "qdq_static: zero_point has %lld elements, scale %lld", (long long)llmc_tensor_numel(z),
                      (long long)ns);
  if (!llmc_dtype_is_float(s->dtype)) return luaL_error(L, "qdq_static: scale must be a float tensor");
  a.force_zero_point = 1;
  qp_box *qb = new_qp(L);
  if (llmc_q_qparams_alloc(&qb->qp, &a, s->dtype, rows, cols) < 0) return llmc_lua_error(L, "qdq_static");
  qb->live = 1;
  llmc_tensor *sc = llmc_tensor_contiguous(s);
  if (!sc) return llmc_lua_error(L, "qdq_static");
  llmc_lua_holdtensor(L, sc);
  for (int64_t i = 0; i < ns; i++)
    qb->qp.scale[i] = llmc_load_as_f32((const char *)llmc_tensor_data(sc) + (size_t)i * llmc_dtype_size(sc->dtype),
                                       sc->dtype);
  if (z && qb->qp.zero_point) {
    llmc_tensor *zc = llmc_tensor_contiguous(z);
    if (!zc) return llmc_lua_error(L, "qdq_static");
    llmc_lua_holdtensor(L, zc);
    for (int64_t i = 0; i < ns; i++)
      qb->qp.zero_point[i] =
          llmc_load_as_f32((const char *)llmc_tensor_data(zc) + (size_t)i * llmc_dtype_size(zc->dtype), zc->dtype);
  }
  llmc_tensor *y = llmc_tensor_empty(x->dtype, llmc_lua_checktensor(L, 1)->ndim, llmc_lua_checktensor(L, 1)->shape);
  if (!y) return llmc_lua_error(L, "qdq_static");
  llmc_lua_pushtensor(L, y);
  if (llmc_q_fake_quantize(&qb->qp, llmc_tensor_data(x), x->dtype, llmc_tensor_data(y)) < 0)
    return llmc_lua_error(L, "qdq_static");
  return 1;
}

/* global_amax(w, wargs) -> the largest |min|/|max| over the tensor's groups,
** as a number (feeds a fused set's shared global scale, §6.3) */
static int q_global_amax(lua_State *L) {
  int64_t rows, cols, sr, sc;
  lua_settop(L, 2);
  llmc_tensor *w = weight_2d(L, 1, &rows, &cols, "global_amax: weight");
  llmc_lua_holdtensor(L, w);
  llmc_qargs a;
  check_args(L, 2, &a, "weights");
  if (llmc_q_scale_grid(&a, rows, cols, &sr, &sc) < 0) return llmc_lua_error(L, "global_amax");
  size_t ns = (size_t)(sr * sc);
  float *mn = lua_newuserdatauv(L, ns * sizeof(float), 0);
  float *mx = lua_newuserdatauv(L, ns * sizeof(float), 0);
  if (llmc_q_observe_minmax(&a, llmc_tensor_data(w), w->dtype, rows, cols, mn, mx) < 0)
    return llmc_lua_error(L, "global_amax");
  lua_pushnumber(L, llmc_q_absmax(mn, mx, (int64_t)ns));
  return 1;
}

/* global_scale(amax, dtype) -> G (fp32 value) */
static int q_global_scale(lua_State *L) {
  float amax = (float)luaL_checknumber(L, 1);
  llmc_dtype dt = llmc_lua_checkdtype(L, 2);
  lua_pushnumber(L, llmc_q_global_scale(amax, dt));
  return 1;
}

/* infer_format(wargs [, input_args]) -> format name */
static int q_infer_format(lua_State *L) {
  llmc_qargs wa, ia;
  const llmc_qargs *w = opt_args(L, 1, &wa, "weights");
  const llmc_qargs *in = opt_args(L, 2, &ia, "input_activations");
  lua_pushstring(L, llmc_q_format_name(llmc_q_infer_format(w, in)));
  return 1;
}

static int check_format(lua_State *L, int idx) {
  const char *f = luaL_checkstring(L, idx);
  int r = llmc_q_format_from_name(f);
  if (r < 0) luaL_argerror(L, idx, lua_pushfstring(L, "unknown format '%s'", f));
  return r;
}

/* layout(format, wargs, input_args|nil, output_args|nil, dtype, rows, cols)
** -> {{name=, dtype=, shape={...}, nbytes=, source="weight"|"input"|"output"}, ...} */
static int q_layout(lua_State *L) {
  int f = check_format(L, 1);
  llmc_qargs wa, ia, oa;
  const llmc_qargs *w = opt_args(L, 2, &wa, "weights");
  const llmc_qargs *in = opt_args(L, 3, &ia, "input_activations");
  const llmc_qargs *out = opt_args(L, 4, &oa, "output_activations");
  llmc_dtype dt = llmc_lua_checkdtype(L, 5);
  int64_t rows = luaL_checkinteger(L, 6), cols = luaL_checkinteger(L, 7);
  llmc_qtensor_desc d[LLMC_Q_MAX_TENSORS];
  int n = llmc_q_layout((llmc_qformat)f, w, in, out, dt, rows, cols, d);
  if (n < 0) return llmc_lua_error(L, "layout");
  static const char *const src[] = {"weight", "input", "output"};
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_createtable(L, 0, 5);
    lua_pushstring(L, d[i].name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, llmc_dtype_name(d[i].dtype));
    lua_setfield(L, -2, "dtype");
    lua_createtable(L, d[i].ndim, 0);
    for (int j = 0; j < d[i].ndim; j++) {
      lua_pushinteger(L, d[i].shape[j]);
      lua_rawseti(L, -2, j + 1);
    }
    lua_setfield(L, -2, "shape");
    lua_pushinteger(L, (lua_Integer)d[i].nbytes);
    lua_setfield(L, -2, "nbytes");
    lua_pushstring(L, src[d[i].source]);
    lua_setfield(L, -2, "source");
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* decompress(format, wargs, rows, cols, {suffix = Tensor, ...} [, out_dtype]) -> Tensor [rows, cols] */
static int q_decompress(lua_State *L) {
  int f = check_format(L, 1);
  llmc_qargs wa;
  check_args(L, 2, &wa, "weights");
  int64_t rows = luaL_checkinteger(L, 3), cols = luaL_checkinteger(L, 4);
  luaL_checktype(L, 5, LUA_TTABLE);
  llmc_qtensor_desc ref[LLMC_Q_MAX_TENSORS], d[LLMC_Q_MAX_TENSORS];
  const void *bufs[LLMC_Q_MAX_TENSORS];
  /* the layout in the scale's dtype tells which tensors to look up */
  llmc_dtype W = LLMC_BF16;
  lua_getfield(L, 5, "weight_scale");
  llmc_tensor *sc = llmc_lua_totensor(L, -1);
  lua_pop(L, 1);
  if (!sc) return luaL_error(L, "decompress: missing tensor 'weight_scale'");
  if (sc->dtype == LLMC_F16 || sc->dtype == LLMC_F32) W = sc->dtype;
  int nref = llmc_q_layout((llmc_qformat)f, &wa, NULL, NULL, W, rows, cols, ref);
  if (nref < 0) return llmc_lua_error(L, "decompress");
  int n = 0;
  for (int k = 0; k < nref; k++) {
    lua_getfield(L, 5, ref[k].name);
    llmc_tensor *t = llmc_lua_totensor(L, -1);
    if (!t) return luaL_error(L, "decompress: missing tensor '%s'", ref[k].name);
    llmc_tensor *c = llmc_tensor_contiguous(t);
    if (!c) return llmc_lua_error(L, "decompress");
    lua_pop(L, 1);
    llmc_lua_holdtensor(L, c);
    d[n] = ref[k];
    d[n].dtype = c->dtype;
    d[n].nbytes = llmc_tensor_nbytes(c);
    bufs[n] = llmc_tensor_data(c);
    n++;
  }
  llmc_dtype od = lua_isnoneornil(L, 6) ? W : llmc_lua_checkdtype(L, 6);
  int64_t shape[2] = {rows, cols};
  llmc_tensor *o = llmc_tensor_empty(od, 2, shape);
  if (!o) return llmc_lua_error(L, "decompress");
  llmc_lua_pushtensor(L, o);
  if (llmc_q_decompress((llmc_qformat)f, &wa, rows, cols, d, n, bufs, llmc_tensor_data(o), od) < 0)
    return llmc_lua_error(L, "decompress");
  return 1;
}

/* error_stats(a, b) -> sum (a-b)^2, sum a^2, max |a-b| (same shape and dtype) */
static int q_error_stats(lua_State *L) {
  llmc_tensor *a = llmc_lua_checktensor(L, 1), *b = llmc_lua_checktensor(L, 2);
  if (!llmc_tensor_same_shape(a, b)) return luaL_error(L, "error_stats: shapes differ");
  llmc_dtype dt = a->dtype == b->dtype && (a->dtype == LLMC_BF16 || a->dtype == LLMC_F16) ? a->dtype : LLMC_F32;
  llmc_tensor *ca = llmc_tensor_to_dtype(a, dt);
  if (!ca) return llmc_lua_error(L, "error_stats");
  llmc_lua_holdtensor(L, ca);
  llmc_tensor *cb = llmc_tensor_to_dtype(b, dt);
  if (!cb) return llmc_lua_error(L, "error_stats");
  llmc_lua_holdtensor(L, cb);
  double se, sr, mx;
  err_stats(llmc_tensor_data(ca), llmc_tensor_data(cb), dt, llmc_tensor_numel(ca), &se, &sr, &mx);
  lua_pushnumber(L, se);
  lua_pushnumber(L, sr);
  lua_pushnumber(L, mx);
  return 3;
}

/* preset(name) -> weights args table | nil, input args table | nil (the C
** preset table, for cross-checking lua/llmc/schemes.lua) */
static void push_args(lua_State *L, const llmc_qargs *a) {
  lua_createtable(L, 0, 10);
  lua_pushinteger(L, a->num_bits);
  lua_setfield(L, -2, "num_bits");
  lua_pushstring(L, a->type == LLMC_QTYPE_INT ? "int" : "float");
  lua_setfield(L, -2, "type");
  lua_pushboolean(L, a->symmetric);
  lua_setfield(L, -2, "symmetric");
  lua_pushstring(L, llmc_q_strategy_name(a->strategy));
  lua_setfield(L, -2, "strategy");
  if (a->group_size > 0) {
    lua_pushinteger(L, a->group_size);
    lua_setfield(L, -2, "group_size");
  }
  if (a->strategy == LLMC_QS_BLOCK) {
    lua_createtable(L, 2, 0);
    lua_pushinteger(L, a->block_structure[0]);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, a->block_structure[1]);
    lua_rawseti(L, -2, 2);
    lua_setfield(L, -2, "block_structure");
  }
  if (a->dynamic == LLMC_QDYN_LOCAL) lua_pushstring(L, "local");
  else lua_pushboolean(L, a->dynamic == LLMC_QDYN_DYNAMIC);
  lua_setfield(L, -2, "dynamic");
  if (a->scale_dtype >= 0) {
    lua_pushfstring(L, "torch.%s", llmc_dtype_name((llmc_dtype)a->scale_dtype));
    lua_setfield(L, -2, "scale_dtype");
  }
}

static int q_preset(lua_State *L) {
  llmc_qargs w, in;
  int hw = 0, hi = 0;
  if (llmc_q_preset(luaL_checkstring(L, 1), &w, &in, &hw, &hi) < 0) return llmc_lua_error(L, NULL);
  if (hw) push_args(L, &w); else lua_pushnil(L);
  if (hi) push_args(L, &in); else lua_pushnil(L);
  return 2;
}

static const luaL_Reg funcs[] = {
  {"compress", q_compress}, {"fake_quantize", q_fake_quantize}, {"qdq_dynamic", q_qdq_dynamic},
  {"qdq_static", q_qdq_static},
  {"global_amax", q_global_amax}, {"global_scale", q_global_scale},
  {"infer_format", q_infer_format}, {"layout", q_layout}, {"decompress", q_decompress},
  {"error_stats", q_error_stats}, {"preset", q_preset},
  {NULL, NULL}};

int luaopen_llmc_quant(lua_State *L) {
  /* tensors are pushed with the Tensor metatable: make sure it exists */
  luaL_requiref(L, "llmc._tensor", luaopen_llmc_tensor, 0);
  lua_pop(L, 1);
  llmc_dtype_init();
  luaL_newlib(L, funcs);
  return 1;
}
