/*
** ops.c — elementwise, reductions and matmul on the CPU (see ops.h for the
** arithmetic rules).  Strategy: operands are materialised as contiguous
** buffers of the compute type (f32 or f64) broadcast to the result shape,
** the op runs as a flat OpenMP loop the compiler vectorises, and the result
** is rounded once to the result dtype.
*/
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define PAR_MIN 32768   /* below this many elements threads cost more than they give */

/* ---- promotion --------------------------------------------------------------- */

static int float_rank(llmc_dtype t) {
  switch (t) {
    case LLMC_F8_E4M3: case LLMC_F8_E5M2: return 1;
    case LLMC_BF16: return 2;
    case LLMC_F16: return 3;
    case LLMC_F32: return 5;
    case LLMC_F64: return 6;
    default: return 0;
  }
}

static llmc_dtype promote_same_kind(llmc_dtype a, llmc_dtype b) {
  if (a == b) return a;
  int fa = float_rank(a), fb = float_rank(b);
  if (fa && fb) {
    /* bf16 with f16 (or any two distinct 8/16-bit floats) -> f32 */
    if (fa <= 3 && fb <= 3) return LLMC_F32;
    return fa > fb ? a : b;
  }
  if (fa) return a;
  if (fb) return b;
  if (a == LLMC_BOOL) return b;
  if (b == LLMC_BOOL) return a;
  /* ints: widest signed; u8 with i8 -> i16 */
  if ((a == LLMC_U8 && b == LLMC_I8) || (a == LLMC_I8 && b == LLMC_U8)) return LLMC_I16;
  return llmc_dtype_size(a) >= llmc_dtype_size(b) ? a : b;
}

llmc_dtype llmc_promote(const llmc_tensor *a, const llmc_tensor *b) {
  /* A 0-dim tensor only decides the kind (float over int), never the width
  ** within a kind (PyTorch's "dimensioned tensors first" rule). */
  int fa = float_rank(a->dtype) > 0, fb = float_rank(b->dtype) > 0;
  if (a->ndim == 0 && b->ndim > 0) {
    if (fa == fb) return b->dtype;
    return fb ? b->dtype : (a->dtype == LLMC_F64 ? LLMC_F32 : LLMC_F32);
  }
  if (b->ndim == 0 && a->ndim > 0) {
    if (fa == fb) return a->dtype;
    return fa ? a->dtype : LLMC_F32;
  }
  return promote_same_kind(a->dtype, b->dtype);
}

static llmc_dtype compute_type(llmc_dtype result) {
  return (result == LLMC_F64 || !llmc_dtype_is_float(result)) ? LLMC_F64 : LLMC_F32;
}

/* ---- helpers -------------------------------------------------------------------- */

static int broadcast_shape(const llmc_tensor *a, const llmc_tensor *b, int *nd, int64_t *shape) {
  int n = a->ndim > b->ndim ? a->ndim : b->ndim;
  for (int d = 0; d < n; d++) {
    int da = d - (n - a->ndim), db = d - (n - b->ndim);
    int64_t sa = da >= 0 ? a->shape[da] : 1, sb = db >= 0 ? b->shape[db] : 1;
    if (sa != sb && sa != 1 && sb != 1) {
      char x[128], y[128];
      return llmc_err("shapes %s and %s do not broadcast", llmc_shape_str(a->ndim, a->shape, x, sizeof x),
                      llmc_shape_str(b->ndim, b->shape, y, sizeof y));
    }
    shape[d] = sa == 1 ? sb : sa;
  }
  *nd = n;
  return 0;
}

/* contiguous copy of t in dtype dt, broadcast to (nd, shape) */
static llmc_tensor *materialize(const llmc_tensor *t, llmc_dtype dt, int nd, const int64_t *shape) {
  if (t->dtype == dt && llmc_tensor_is_contiguous(t) && t->ndim == nd && !llmc_tensor_is_cuda(t)) {
    int same = 1;
    for (int d = 0; d < nd; d++) same &= t->shape[d] == shape[d];
    if (same) return llmc_tensor_retain((llmc_tensor *)t);
  }
  llmc_tensor *out = llmc_tensor_empty(dt, nd, shape);
  if (!out) return NULL;
  if (llmc_tensor_copy_(out, t) < 0) { llmc_tensor_free(out); return NULL; }
  return out;
}

/* convert a compute-type result into the result dtype (consumes r) */
static llmc_tensor *finish(llmc_tensor *r, llmc_dtype dt) {
  if (!r || r->dtype == dt) return r;
  llmc_tensor *o = llmc_tensor_to_dtype(r, dt);
  llmc_tensor_free(r);
  return o;
}

llmc_tensor *llmc_as_f32(const llmc_tensor *t) {
  return llmc_tensor_to_dtype((llmc_tensor *)t, LLMC_F32);
}

/* ---- binary ----------------------------------------------------------------------- */

#define BIN_LOOP(T, EXPR)                                                      \
  do {                                                                         \
    const T *x = llmc_tensor_data(ca), *y = llmc_tensor_data(cb);              \
    T *z = llmc_tensor_data(r);                                                \
    _Pragma("omp parallel for simd schedule(static) if (n > PAR_MIN)")         \
    for (int64_t i = 0; i < n; i++) { T u = x[i], v = y[i]; z[i] = (EXPR); }   \
  } while (0)

static int binop_is_compare(llmc_binop op) { return op >= LLMC_OP_EQ; }

static llmc_tensor *binary_impl(llmc_binop op, const llmc_tensor *a, const llmc_tensor *b, llmc_dtype rdt) {
  int nd;
  int64_t shape[LLMC_MAX_DIMS];
  if (broadcast_shape(a, b, &nd, shape) < 0) return NULL;
  llmc_dtype cdt = compute_type(rdt);
  if (binop_is_compare(op)) {
    llmc_dtype p = llmc_promote(a, b);
    cdt = compute_type(p);
  }
  llmc_tensor *ca = materialize(a, cdt, nd, shape), *cb = ca ? materialize(b, cdt, nd, shape) : NULL;
  llmc_tensor *r = cb ? llmc_tensor_empty(cdt, nd, shape) : NULL;
  if (!r) { llmc_tensor_free(ca); llmc_tensor_free(cb); return NULL; }
  int64_t n = llmc_tensor_numel(r);
  if (cdt == LLMC_F32) {
    switch (op) {
      case LLMC_OP_ADD: BIN_LOOP(float, u + v); break;
      case LLMC_OP_SUB: BIN_LOOP(float, u - v); break;
      case LLMC_OP_MUL: BIN_LOOP(float, u * v); break;
      case LLMC_OP_DIV: BIN_LOOP(float, u / v); break;
      case LLMC_OP_POW: BIN_LOOP(float, powf(u, v)); break;
      case LLMC_OP_MAX: BIN_LOOP(float, (u != u || u > v) ? u : v); break;
      case LLMC_OP_MIN: BIN_LOOP(float, (u != u || u < v) ? u : v); break;
      case LLMC_OP_EQ: BIN_LOOP(float, (float)(u == v)); break;
      case LLMC_OP_NE: BIN_LOOP(float, (float)(u != v)); break;
      case LLMC_OP_LT: BIN_LOOP(float, (float)(u < v)); break;
      case LLMC_OP_LE: BIN_LOOP(float, (float)(u <= v)); break;
      case LLMC_OP_GT: BIN_LOOP(float, (float)(u > v)); break;
      case LLMC_OP_GE: BIN_LOOP(float, (float)(u >= v)); break;
    }
  } else {
    int is_int = !llmc_dtype_is_float(rdt) && !binop_is_compare(op);
    switch (op) {
      case LLMC_OP_ADD: BIN_LOOP(double, u + v); break;
      case LLMC_OP_SUB: BIN_LOOP(double, u - v); break;
      case LLMC_OP_MUL: BIN_LOOP(double, u * v); break;
      /* integer division in torch is true division (float result); the
      ** caller gave rdt f32 for that case */
      case LLMC_OP_DIV: BIN_LOOP(double, u / v); break;
      case LLMC_OP_POW: BIN_LOOP(double, pow(u, v)); break;
      case LLMC_OP_MAX: BIN_LOOP(double, (u != u || u > v) ? u : v); break;
      case LLMC_OP_MIN: BIN_LOOP(double, (u != u || u < v) ? u : v); break;
      case LLMC_OP_EQ: BIN_LOOP(double, (double)(u == v)); break;
      case LLMC_OP_NE: BIN_LOOP(double, (double)(u != v)); break;
      case LLMC_OP_LT: BIN_LOOP(double, (double)(u < v)); break;
      case LLMC_OP_LE: BIN_LOOP(double, (double)(u <= v)); break;
      case LLMC_OP_GT: BIN_LOOP(double, (double)(u > v)); break;
      case LLMC_OP_GE: BIN_LOOP(double, (double)(u >= v)); break;
    }
    (void)is_int;
  }
  llmc_tensor_free(ca);
  llmc_tensor_free(cb);
  return finish(r, binop_is_compare(op) ? LLMC_BOOL : rdt);
}

llmc_tensor *llmc_binary(llmc_binop op, const llmc_tensor *a, const llmc_tensor *b) {
  llmc_dtype rdt = llmc_promote(a, b);
  if (op == LLMC_OP_DIV && !llmc_dtype_is_float(rdt)) rdt = LLMC_F32;
  return binary_impl(op, a, b, rdt);
}

llmc_tensor *llmc_binary_scalar(llmc_binop op, const llmc_tensor *a, double s, int scalar_first) {
  /* A Python number: float tensors keep their dtype; int tensors stay int
  ** for integral numbers and become f32 for fractional ones. */
  llmc_dtype rdt = a->dtype;
  if (!llmc_dtype_is_float(rdt) && (s != floor(s) || op == LLMC_OP_DIV)) rdt = LLMC_F32;
  if (rdt == LLMC_BOOL && !binop_is_compare(op)) rdt = LLMC_I64;
  llmc_tensor *st = llmc_tensor_full(compute_type(rdt), 0, NULL, s);
  if (!st) return NULL;
  llmc_tensor *r = scalar_first ? binary_impl(op, st, a, rdt) : binary_impl(op, a, st, rdt);
  llmc_tensor_free(st);
  return r;
}

/* ---- unary ------------------------------------------------------------------------- */

static inline float silu_f(float x) { return x / (1.0f + expf(-x)); }

llmc_tensor *llmc_unary(llmc_unop op, const llmc_tensor *a) {
  llmc_dtype rdt = a->dtype;
  int float_only = op >= LLMC_OP_SQRT && op != LLMC_OP_SIGN;
  if (float_only && !llmc_dtype_is_float(rdt)) rdt = LLMC_F32;
  llmc_dtype cdt = compute_type(rdt);
  llmc_tensor *c = materialize(a, cdt, a->ndim, a->shape);
  llmc_tensor *r = c ? llmc_tensor_empty(cdt, a->ndim, a->shape) : NULL;
  if (!r) { llmc_tensor_free(c); return NULL; }
  int64_t n = llmc_tensor_numel(r);
  if (cdt == LLMC_F32) {
    const float *x = llmc_tensor_data(c);
    float *z = llmc_tensor_data(r);
    #pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
      float u = x[i], v;
      switch (op) {
        case LLMC_OP_NEG: v = -u; break;
        case LLMC_OP_ABS: v = fabsf(u); break;
        case LLMC_OP_ROUND: v = rintf(u); break;
        case LLMC_OP_FLOOR: v = floorf(u); break;
        case LLMC_OP_CEIL: v = ceilf(u); break;
        case LLMC_OP_SQRT: v = sqrtf(u); break;
        case LLMC_OP_RSQRT: v = 1.0f / sqrtf(u); break;
        case LLMC_OP_EXP: v = expf(u); break;
        case LLMC_OP_LOG: v = logf(u); break;
        case LLMC_OP_SILU: v = silu_f(u); break;
        case LLMC_OP_SIGMOID: v = 1.0f / (1.0f + expf(-u)); break;
        case LLMC_OP_TANH: v = tanhf(u); break;
        case LLMC_OP_RECIPROCAL: v = 1.0f / u; break;
        case LLMC_OP_SIGN: v = (float)((u > 0) - (u < 0)); break;
        default: v = u;
      }
      z[i] = v;
    }
  } else {
    const double *x = llmc_tensor_data(c);
    double *z = llmc_tensor_data(r);
    #pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
      double u = x[i], v;
      switch (op) {
        case LLMC_OP_NEG: v = -u; break;
        case LLMC_OP_ABS: v = fabs(u); break;
        case LLMC_OP_ROUND: v = rint(u); break;
        case LLMC_OP_FLOOR: v = floor(u); break;
        case LLMC_OP_CEIL: v = ceil(u); break;
        case LLMC_OP_SQRT: v = sqrt(u); break;
        case LLMC_OP_RSQRT: v = 1.0 / sqrt(u); break;
        case LLMC_OP_EXP: v = exp(u); break;
        case LLMC_OP_LOG: v = log(u); break;
        case LLMC_OP_SILU: v = u / (1.0 + exp(-u)); break;
        case LLMC_OP_SIGMOID: v = 1.0 / (1.0 + exp(-u)); break;
        case LLMC_OP_TANH: v = tanh(u); break;
        case LLMC_OP_RECIPROCAL: v = 1.0 / u; break;
        case LLMC_OP_SIGN: v = (double)((u > 0) - (u < 0)); break;
        default: v = u;
      }
      z[i] = v;
    }
  }
  llmc_tensor_free(c);
  return finish(r, rdt);
}

llmc_tensor *llmc_clamp(const llmc_tensor *a, double lo, double hi) {
  llmc_dtype cdt = compute_type(a->dtype);
  llmc_tensor *r = materialize(a, cdt, a->ndim, a->shape), *w = r ? llmc_tensor_clone(r) : NULL;
  llmc_tensor_free(r);
  if (!w) return NULL;
  int64_t n = llmc_tensor_numel(w);
  if (cdt == LLMC_F32) {
    float *z = llmc_tensor_data(w), l = (float)lo, h = (float)hi;
    int hl = !isnan(lo), hh = !isnan(hi);
    #pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
      float v = z[i];
      if (hl && v < l) v = l;
      if (hh && v > h) v = h;
      z[i] = v;
    }
  } else {
    double *z = llmc_tensor_data(w);
    for (int64_t i = 0; i < n; i++) {
      if (!isnan(lo) && z[i] < lo) z[i] = lo;
      if (!isnan(hi) && z[i] > hi) z[i] = hi;
    }
  }
  return finish(w, a->dtype);
}

llmc_tensor *llmc_where(const llmc_tensor *cond, const llmc_tensor *a, const llmc_tensor *b) {
  int nd, nd2;
  int64_t s1[LLMC_MAX_DIMS], s2[LLMC_MAX_DIMS];
  if (broadcast_shape(a, b, &nd, s1) < 0) return NULL;
  llmc_tensor tmp = *a;  /* shape-only stand-in for the broadcast of a and b */
  tmp.ndim = nd;
  memcpy(tmp.shape, s1, sizeof s1);
  if (broadcast_shape(cond, &tmp, &nd2, s2) < 0) return NULL;
  llmc_dtype rdt = llmc_promote(a, b), cdt = compute_type(rdt);
  llmc_tensor *cc = materialize(cond, LLMC_F32, nd2, s2);
  llmc_tensor *ca = cc ? materialize(a, cdt, nd2, s2) : NULL;
  llmc_tensor *cb = ca ? materialize(b, cdt, nd2, s2) : NULL;
  llmc_tensor *r = cb ? llmc_tensor_empty(cdt, nd2, s2) : NULL;
  if (r) {
    int64_t n = llmc_tensor_numel(r);
    const float *c = llmc_tensor_data(cc);
    size_t is = llmc_dtype_size(cdt);
    for (int64_t i = 0; i < n; i++)
      memcpy((char *)llmc_tensor_data(r) + i * is, (char *)llmc_tensor_data(c[i] != 0 ? ca : cb) + i * is, is);
  }
  llmc_tensor_free(cc); llmc_tensor_free(ca); llmc_tensor_free(cb);
  return finish(r, rdt);
}

/* ---- reductions ------------------------------------------------------------------------- */

llmc_tensor *llmc_reduce(llmc_redop op, const llmc_tensor *a, int dim, int keepdim) {
  int all = dim == LLMC_ALL_DIMS;
  if (!all) {
    if (dim < 0) dim += a->ndim;
    if (dim < 0 || dim >= a->ndim) { llmc_err("reduce: dim out of range for a %d-dim tensor", a->ndim); return NULL; }
  }
  /* move the reduced dim last, materialise as f64 rows */
  llmc_tensor *moved = NULL;
  int64_t rows, len;
  if (all) {
    moved = llmc_tensor_retain((llmc_tensor *)a);
    len = llmc_tensor_numel(a);
    rows = 1;
  } else {
    /* permute the reduced dim to the end keeping the others in order, so
    ** row i of the materialised copy is output element i */
    int perm[LLMC_MAX_DIMS], k = 0;
    for (int d = 0; d < a->ndim; d++) if (d != dim) perm[k++] = d;
    perm[k] = dim;
    moved = llmc_tensor_permute((llmc_tensor *)a, perm);
    len = a->shape[dim];
    rows = len ? llmc_tensor_numel(a) / len : 0;
    if (!len) rows = llmc_tensor_numel(a) ? 0 : 1;
  }
  if (!moved) return NULL;
  llmc_tensor *c = materialize(moved, LLMC_F64, moved->ndim, moved->shape);
  llmc_tensor_free(moved);
  if (!c) return NULL;
  /* output shape */
  int64_t oshape[LLMC_MAX_DIMS];
  int ond = 0;
  if (all) {
    if (keepdim) for (int d = 0; d < a->ndim; d++) oshape[ond++] = 1;
  } else {
    for (int d = 0; d < a->ndim; d++) {
      if (d == dim) { if (keepdim) oshape[ond++] = 1; }
      else oshape[ond++] = a->shape[d];
    }
  }
  int is_arg = op == LLMC_RED_ARGMAX || op == LLMC_RED_ARGMIN;
  if (len == 0 && (op != LLMC_RED_SUM)) {
    llmc_tensor_free(c);
    llmc_err("reduce: %s over an empty dimension", is_arg ? "argmax/argmin" : "max/min/mean");
    return NULL;
  }
  llmc_tensor *r = llmc_tensor_empty(LLMC_F64, ond, oshape);
  if (!r) { llmc_tensor_free(c); return NULL; }
  const double *x = llmc_tensor_data(c);
  double *z = llmc_tensor_data(r);
  int64_t total_rows = all ? 1 : rows;
  #pragma omp parallel for schedule(static) if (total_rows * len > PAR_MIN)
  for (int64_t crow = 0; crow < total_rows; crow++) {
    const double *p = x + crow * len;
    double acc;
    int64_t best = 0;
    switch (op) {
      case LLMC_RED_SUM: case LLMC_RED_MEAN:
        acc = 0;
        for (int64_t i = 0; i < len; i++) acc += p[i];
        if (op == LLMC_RED_MEAN) acc /= (double)len;
        break;
      case LLMC_RED_AMAX:
        acc = 0;
        for (int64_t i = 0; i < len; i++) { double v = fabs(p[i]); if (v > acc || v != v) acc = v; }
        break;
      case LLMC_RED_MAX: case LLMC_RED_ARGMAX:
        acc = p[0];
        for (int64_t i = 1; i < len; i++) if (p[i] > acc || (p[i] != p[i] && acc == acc)) { acc = p[i]; best = i; }
        if (op == LLMC_RED_ARGMAX) acc = (double)best;
        break;
      case LLMC_RED_MIN: case LLMC_RED_ARGMIN:
        acc = p[0];
        for (int64_t i = 1; i < len; i++) if (p[i] < acc || (p[i] != p[i] && acc == acc)) { acc = p[i]; best = i; }
        if (op == LLMC_RED_ARGMIN) acc = (double)best;
        break;
      default: acc = 0;
    }
    z[crow] = acc;
  }
  llmc_tensor_free(c);
  llmc_dtype rdt = a->dtype;
  if (is_arg) rdt = LLMC_I64;
  else if ((op == LLMC_RED_SUM) && !llmc_dtype_is_float(rdt)) rdt = LLMC_I64;
  else if (op == LLMC_RED_MEAN && !llmc_dtype_is_float(rdt)) rdt = LLMC_F32;
  return finish(r, rdt);
}

/* ---- matmul -------------------------------------------------------------------------------- */

llmc_tensor *llmc_matmul(const llmc_tensor *a, const llmc_tensor *b) {
  if (a->ndim < 2 || b->ndim < 2) { llmc_err("matmul: operands need >= 2 dims"); return NULL; }
  int64_t M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1], N = b->shape[b->ndim - 1];
  if (b->shape[b->ndim - 2] != K) {
    char x[128], y[128];
    llmc_err("matmul: shapes %s and %s are not aligned", llmc_shape_str(a->ndim, a->shape, x, sizeof x),
             llmc_shape_str(b->ndim, b->shape, y, sizeof y));
    return NULL;
  }
  /* broadcast batch dims */
  llmc_tensor ba = *a, bb = *b;
  ba.ndim -= 2; bb.ndim -= 2;
  int bnd;
  int64_t bshape[LLMC_MAX_DIMS];
  if (broadcast_shape(&ba, &bb, &bnd, bshape) < 0) return NULL;
  int64_t sa[LLMC_MAX_DIMS], sb[LLMC_MAX_DIMS], so[LLMC_MAX_DIMS];
  memcpy(sa, bshape, sizeof(int64_t) * bnd); sa[bnd] = M; sa[bnd + 1] = K;
  memcpy(sb, bshape, sizeof(int64_t) * bnd); sb[bnd] = K; sb[bnd + 1] = N;
  memcpy(so, bshape, sizeof(int64_t) * bnd); so[bnd] = M; so[bnd + 1] = N;
  llmc_tensor *ca = materialize(a, LLMC_F32, bnd + 2, sa);
  llmc_tensor *cb = ca ? materialize(b, LLMC_F32, bnd + 2, sb) : NULL;
  llmc_tensor *r = cb ? llmc_tensor_empty(LLMC_F32, bnd + 2, so) : NULL;
  if (r) {
    int64_t batch = 1;
    for (int d = 0; d < bnd; d++) batch *= bshape[d];
    const float *x = llmc_tensor_data(ca), *y = llmc_tensor_data(cb);
    float *z = llmc_tensor_data(r);
    for (int64_t i = 0; i < batch; i++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, x + i * M * K, (int)K,
                  y + i * K * N, (int)N, 0.0f, z + i * M * N, (int)N);
  }
  llmc_tensor_free(ca);
  llmc_tensor_free(cb);
  llmc_dtype rdt = llmc_promote(a, b);
  if (!llmc_dtype_is_float(rdt)) rdt = LLMC_F32;
  return finish(r, rdt);
}

llmc_tensor *llmc_linear(const llmc_tensor *x, const llmc_tensor *w, const llmc_tensor *bias) {
  if (w->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1]) {
    char s1[128], s2[128];
    llmc_err("linear: input %s does not match weight %s", llmc_shape_str(x->ndim, x->shape, s1, sizeof s1),
             llmc_shape_str(w->ndim, w->shape, s2, sizeof s2));
    return NULL;
  }
  int64_t in = w->shape[1], out = w->shape[0];
  int64_t rows = in ? llmc_tensor_numel(x) / in : 0;
  llmc_tensor *cx = materialize(x, LLMC_F32, x->ndim, x->shape);
  llmc_tensor *cw = cx ? llmc_as_f32(w) : NULL;
  int64_t oshape[LLMC_MAX_DIMS];
  memcpy(oshape, x->shape, sizeof(int64_t) * x->ndim);
  oshape[x->ndim - 1] = out;
  llmc_tensor *r = cw ? llmc_tensor_empty(LLMC_F32, x->ndim, oshape) : NULL;
  if (r) {
    float *z = llmc_tensor_data(r);
    if (bias) {
      llmc_tensor *cbias = llmc_as_f32(bias);
      if (!cbias) { llmc_tensor_free(r); r = NULL; goto done; }
      const float *bb = llmc_tensor_data(cbias);
      for (int64_t i = 0; i < rows; i++) memcpy(z + i * out, bb, sizeof(float) * out);
      llmc_tensor_free(cbias);
    }
    if (rows && out)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)out, (int)in, 1.0f, llmc_tensor_data(cx),
                  (int)in, llmc_tensor_data(cw), (int)in, bias ? 1.0f : 0.0f, z, (int)out);
  }
done:
  llmc_tensor_free(cx);
  llmc_tensor_free(cw);
  llmc_dtype rdt = llmc_dtype_is_float(x->dtype) ? x->dtype : LLMC_F32;
  return finish(r, rdt);
}

llmc_tensor *llmc_cat(llmc_tensor *const *ts, int n, int dim) {
  if (n <= 0) { llmc_err("cat: no tensors"); return NULL; }
  const llmc_tensor *t0 = ts[0];
  if (dim < 0) dim += t0->ndim;
  if (dim < 0 || dim >= t0->ndim) { llmc_err("cat: dim out of range"); return NULL; }
  int64_t shape[LLMC_MAX_DIMS];
  memcpy(shape, t0->shape, sizeof shape);
  shape[dim] = 0;
  llmc_dtype dt = t0->dtype;
  for (int i = 0; i < n; i++) {
    if (ts[i]->ndim != t0->ndim) { llmc_err("cat: tensor %d has %d dims, expected %d", i, ts[i]->ndim, t0->ndim); return NULL; }
    for (int d = 0; d < t0->ndim; d++)
      if (d != dim && ts[i]->shape[d] != t0->shape[d]) { llmc_err("cat: tensor %d has a different size in dim %d", i, d); return NULL; }
    shape[dim] += ts[i]->shape[dim];
    if (i) dt = promote_same_kind(dt, ts[i]->dtype);
  }
  llmc_tensor *r = llmc_tensor_empty(dt, t0->ndim, shape);
  if (!r) return NULL;
  int64_t at = 0;
  for (int i = 0; i < n; i++) {
    llmc_tensor *part = llmc_tensor_narrow(r, dim, at, ts[i]->shape[dim]);
    int rc = part ? llmc_tensor_copy_(part, ts[i]) : -1;
    llmc_tensor_free(part);
    if (rc < 0) { llmc_tensor_free(r); return NULL; }
    at += ts[i]->shape[dim];
  }
  return r;
}

/* ---- statistics --------------------------------------------------------------------- */

#define STATS_CHUNK 65536

int llmc_tensor_stats(const llmc_tensor *t, llmc_stats *out) {
  llmc_tensor *c = materialize(t, LLMC_F32, t->ndim, t->shape);
  if (!c) return -1;
  int64_t n = llmc_tensor_numel(c), nchunks = (n + STATS_CHUNK - 1) / STATS_CHUNK;
  const float *x = llmc_tensor_data(c);
  double *part = calloc((size_t)(nchunks ? nchunks : 1) * 6, sizeof(double));
  if (!part) { llmc_tensor_free(c); return llmc_err("out of memory"); }
  /* pass 1: per-chunk min, max, sum, nan count, absmax, (sum of squares
  ** about the chunk mean comes in pass 2) */
  #pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nchunks; k++) {
    int64_t b = k * STATS_CHUNK, e = b + STATS_CHUNK < n ? b + STATS_CHUNK : n;
    double mn = INFINITY, mx = -INFINITY, sum = 0, am = 0, nans = 0;
    for (int64_t i = b; i < e; i++) {
      double v = x[i];
      if (v != v) { nans++; continue; }
      if (v < mn) mn = v;
      if (v > mx) mx = v;
      if (fabs(v) > am) am = fabs(v);
      sum += v;
    }
    double *p = part + k * 6;
    p[0] = mn; p[1] = mx; p[2] = sum; p[3] = nans; p[4] = am;
  }
  double mn = INFINITY, mx = -INFINITY, sum = 0, am = 0, nans = 0;
  for (int64_t k = 0; k < nchunks; k++) {
    double *p = part + k * 6;
    if (p[0] < mn) mn = p[0];
    if (p[1] > mx) mx = p[1];
    sum += p[2]; nans += p[3];
    if (p[4] > am) am = p[4];
  }
  int64_t valid = n - (int64_t)nans;
  double mean = valid ? sum / (double)valid : NAN;
  #pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nchunks; k++) {
    int64_t b = k * STATS_CHUNK, e = b + STATS_CHUNK < n ? b + STATS_CHUNK : n;
    double ss = 0;
    for (int64_t i = b; i < e; i++) { double v = x[i]; if (v == v) ss += (v - mean) * (v - mean); }
    part[k * 6 + 5] = ss;
  }
  double ss = 0;
  for (int64_t k = 0; k < nchunks; k++) ss += part[k * 6 + 5];
  free(part);
  llmc_tensor_free(c);
  out->min = valid ? mn : NAN;
  out->max = valid ? mx : NAN;
  out->mean = mean;
  out->std = valid > 1 ? sqrt(ss / (double)(valid - 1)) : (valid ? 0.0 : NAN);  /* unbiased, as torch.std */
  out->absmax = valid ? am : NAN;
  out->nan_count = (int64_t)nans;
  out->numel = n;
  return 0;
}
