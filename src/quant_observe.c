/*
** quant_observe.c — observers (min-max, MSE grid search), global scales and
** calculate_qparams (spec §3.2, §3.3, §3.7, §3.8, §9; algorithms.md §4.2).
**
** Determinism: every per-span reduction runs in one thread in element
** order; per-row partial results are combined in row order afterwards, so
** the results do not depend on the number of OpenMP threads.
*/
/* The loops below select between computed values with float compares; GCC
** only if-converts (and so vectorises) them when float compares are not
** treated as trapping.  llmc never reads the FP exception flags, and the
** option changes no result. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "quant_internal.h"

/* ======================================================================
** qparams storage
** ==================================================================== */

void llmc_q_qparams_free(llmc_qparams *qp) {
  if (!qp) return;
  free(qp->scale);
  free(qp->zero_point);
  memset(qp, 0, sizeof *qp);
}

int llmc_q_qparams_alloc(llmc_qparams *qp, const llmc_qargs *a, llmc_dtype D, int64_t rows,
                         int64_t cols) {
  memset(qp, 0, sizeof *qp);
  qp->args = *a;
  if (llmc_q_args_check(&qp->args, "quantization args") < 0) return -1;
  if (q_kind(D) < 0)
    return llmc_err("quantize: dtype must be bfloat16, float16 or float32 (got %s)",
                    llmc_dtype_name(D));
  if (llmc_q_scale_grid(&qp->args, rows, cols, &qp->srows, &qp->scols) < 0) return -1;
  qp->dtype = D;
  qp->rows = rows;
  qp->cols = cols;
  size_t ns = (size_t)(qp->srows * qp->scols);
  qp->scale = calloc(ns, sizeof(float));
  if (!qp->scale) return llmc_err("quantize: out of memory for %zu scales", ns);
  if (!qp->args.symmetric || qp->args.force_zero_point) {
    qp->zero_point = calloc(ns, sizeof(float));
    if (!qp->zero_point) {
      llmc_q_qparams_free(qp);
      return llmc_err("quantize: out of memory for %zu zero points", ns);
    }
  }
  return 0;
}

/* ======================================================================
** min-max observer
** ==================================================================== */

/* Min and max of n elements of kind k.  The reductions run on integer keys
** that order like the floats (sign-magnitude -> two's complement: flip the
** magnitude bits of negatives), which vectorises (pminsw / pminsd) where a
** float compare-select reduction would not.  -0.0 orders below +0.0, which
** changes no result (zero is forced into every range, §3.3 step 1). */
static inline int16_t key16(uint16_t h) {
  return (int16_t)(h ^ ((uint16_t)((int16_t)h >> 15) & 0x7fffu));
}
static inline int32_t key32(uint32_t u) {
  return (int32_t)(u ^ ((uint32_t)((int32_t)u >> 31) & 0x7fffffffu));
}

static void span_minmax(const void *x, int64_t off, int64_t n, int k, float *pmn, float *pmx) {
  if (k == QM_F32) {
    const uint32_t *p = (const uint32_t *)x + off;
    int32_t mn = INT32_MAX, mx = INT32_MIN;
    for (int64_t i = 0; i < n; i++) {
      int32_t v = key32(p[i]);
      mn = v < mn ? v : mn;
      mx = v > mx ? v : mx;
    }
    *pmn = qm_float((uint32_t)key32((uint32_t)mn));
    *pmx = qm_float((uint32_t)key32((uint32_t)mx));
    return;
  }
  const uint16_t *p = (const uint16_t *)x + off;
  int16_t mn = INT16_MAX, mx = INT16_MIN;
  for (int64_t i = 0; i < n; i++) {
    int16_t v = key16(p[i]);
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
  }
  uint16_t hmn = (uint16_t)key16((uint16_t)mn), hmx = (uint16_t)key16((uint16_t)mx);
  *pmn = k == QM_BF16 ? qm_bf16_to_f32(hmn) : qm_f16_to_f32(hmn);
  *pmx = k == QM_BF16 ? qm_bf16_to_f32(hmx) : qm_f16_to_f32(hmx);
}

/* spans per row and per-row span min/max into rmn/rmx [rows * nsp] */
static void rows_minmax(const llmc_qargs *a, const void *x, int k, int64_t rows, int64_t cols,
                        float *rmn, float *rmx) {
  int64_t w = q_span_width(a, cols);
  int64_t nsp = (cols + w - 1) / w;
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t j = 0; j < nsp; j++) {
      int64_t c0 = j * w, n = cols - c0 < w ? cols - c0 : w;
      span_minmax(x, r * cols + c0, n, k, &rmn[r * nsp + j], &rmx[r * nsp + j]);
    }
  }
}

int llmc_q_observe_minmax(const llmc_qargs *a0, const void *x, llmc_dtype xd, int64_t rows,
                          int64_t cols, float *mn, float *mx) {
  llmc_qargs a = *a0;
  if (llmc_q_args_check(&a, "observer") < 0) return -1;
  int k = q_kind(xd);
  if (k < 0) return llmc_err("observer: dtype must be bfloat16, float16 or float32");
  int64_t sr, sc;
  if (llmc_q_scale_grid(&a, rows, cols, &sr, &sc) < 0) return -1;
  if (a.strategy != LLMC_QS_TENSOR && a.strategy != LLMC_QS_BLOCK) {
    rows_minmax(&a, x, k, rows, cols, mn, mx);   /* one span per scale element */
    return 0;
  }
  int64_t w = q_span_width(&a, cols), nsp = (cols + w - 1) / w;
  float *rmn = malloc((size_t)(rows * nsp) * 2 * sizeof(float));
  if (!rmn) return llmc_err("observer: out of memory");
  float *rmx = rmn + rows * nsp;
  rows_minmax(&a, x, k, rows, cols, rmn, rmx);
  if (a.strategy == LLMC_QS_TENSOR) {
    float m = INFINITY, M = -INFINITY;
    for (int64_t r = 0; r < rows; r++) {
      m = rmn[r] < m ? rmn[r] : m;
      M = rmx[r] > M ? rmx[r] : M;
    }
    mn[0] = m, mx[0] = M;
  } else {
    int64_t bh = a.block_structure[0], bw = a.block_structure[1];
    for (int64_t i = 0; i < sr; i++)
      for (int64_t j = 0; j < sc; j++) {
        float m = INFINITY, M = -INFINITY;
        int64_t r1 = (i + 1) * bh < rows ? (i + 1) * bh : rows;
        for (int64_t r = i * bh; r < r1; r++) {
          m = rmn[r * nsp + j] < m ? rmn[r * nsp + j] : m;
          M = rmx[r * nsp + j] > M ? rmx[r * nsp + j] : M;
        }
        /* a partial tile holds zero padding (§3.10) */
        if ((i + 1) * bh > rows || (j + 1) * bw > cols) {
          m = m < 0.0f ? m : 0.0f;
          M = M > 0.0f ? M : 0.0f;
        }
        mn[i * sc + j] = m, mx[i * sc + j] = M;
      }
  }
  free(rmn);
  return 0;
}

/* ======================================================================
** global scale and calculate_qparams
** ==================================================================== */

float llmc_q_absmax(const float *mn, const float *mx, int64_t n) {
  /* LC get_global_scale: max(max(max_vals), -min(min_vals)) */
  float m = 0.0f;
  for (int64_t i = 0; i < n; i++) {
    float v = mx[i] > -mn[i] ? mx[i] : -mn[i];
    m = v > m ? v : m;
  }
  return m;
}

float llmc_q_global_scale(float amax, llmc_dtype D) {
  int k = q_kind(D);
  if (k < 0) k = QM_F32;
  float a = amax < qm_tiny(k) ? qm_tiny(k) : amax;   /* torch.clamp(min=tiny) */
  /* `2688 / amax` is reciprocal(amax) * 2688 in PyTorch: two roundings in D */
  float g = qm_round(qm_round(1.0f / a, k) * 2688.0f, k);
  if (!isfinite(g)) g = 1.0f;
  return g;
}

/* round_to_quantized_type_dtype (§3.3 steps 5, 8): clamp to the range of t,
** round to t, return the value (NaN -> 0 for integer types). */
static float round_to_dtype(float v, llmc_dtype t) {
  switch (t) {
    case LLMC_F8_E4M3:
      return qm_e4m3_decode(qm_e4m3_encode(qm_clamp(v, -448.0f, 448.0f)));
    case LLMC_BF16:
      return qm_round_bf16(qm_clamp(v, -qm_fmax(QM_BF16), qm_fmax(QM_BF16)));
    case LLMC_F16:
      return qm_round_f16(qm_clamp(v, -65504.0f, 65504.0f));
    case LLMC_F32:
      return v;
    default: {
      double lo, hi;
      switch (t) {
        case LLMC_U8: lo = 0, hi = 255; break;
        case LLMC_I8: lo = -128, hi = 127; break;
        case LLMC_I16: lo = -32768, hi = 32767; break;
        default: lo = -2147483648.0, hi = 2147483647.0; break;
      }
      if (v != v) return 0.0f;
      double d = v < lo ? lo : v > hi ? hi : v;
      return (float)nearbyint(d) + 0.0f;   /* an integer has no -0: rint(-0.3) + 0 = +0 */
    }
  }
}

/* torch.finfo(t).eps for float types, 0.125 for fp8, 1 for integers */
static float dtype_eps(llmc_dtype t) {
  switch (t) {
    case LLMC_F8_E4M3: return 0.125f;
    case LLMC_BF16: return qm_eps(QM_BF16);
    case LLMC_F16: return qm_eps(QM_F16);
    case LLMC_F32: return qm_eps(QM_F32);
    default: return 1.0f;
  }
}

/* The common symmetric, non-MX case (int / fp8 / NVFP4 scales) as a loop
** without data-dependent branches, instantiated on constant kinds below so
** that it vectorises; same steps as the generic loop. */
static inline __attribute__((always_inline)) void sym_scales(
    const float *mn, const float *mx, int64_t i0, int64_t i1, float half, int dk, int has_g,
    float G, int fp8, int cur, float eps, int is_param, float *scale) {
  for (int64_t i = i0; i < i1; i++) {
    /* no NaN here (checked by the caller): plain selects vectorise */
    float m = mn[i] < 0.0f ? -mn[i] : 0.0f;
    float M = mx[i] > 0.0f ? mx[i] : 0.0f;
    float am = m > M ? m : M;
    float s = qm_round(am / half, dk);
    if (has_g) s = G * s;
    if (fp8) s = qm_round(qm_e4m3_round(qm_clamp(s, -448.0f, 448.0f)), cur);
    s = s == 0.0f ? eps : s;
    if (has_g) s = is_param ? qm_round(s, dk) : s;
    scale[i] = s;
  }
}

/* chunks of 4096 scales over the threads; the OpenMP region sits in each
** instantiation so that the constants reach the outlined loop */
#define SYM_SCALES_PAR(...)                                                \
  do {                                                                     \
    int64_t nch_ = (n + 4095) / 4096;                                      \
    _Pragma("omp parallel for schedule(static) if (n > 16384)")            \
    for (int64_t ch_ = 0; ch_ < nch_; ch_++) {                             \
      int64_t i0_ = ch_ * 4096, i1_ = i0_ + 4096 < n ? i0_ + 4096 : n;     \
      sym_scales(mn, mx, i0_, i1_, half, __VA_ARGS__, eps, is_param, scale); \
    }                                                                      \
  } while (0)

static void sym_scales_bf16(const float *mn, const float *mx, int64_t n, float half, float G,
                            float eps, int is_param, float *scale) {
  SYM_SCALES_PAR(QM_BF16, 0, G, 0, QM_BF16);
}
static void sym_scales_nvfp4_bf16(const float *mn, const float *mx, int64_t n, float half,
                                  float G, float eps, int is_param, float *scale) {
  SYM_SCALES_PAR(QM_BF16, 1, G, 1, QM_F32);
}
static void sym_scales_any(const float *mn, const float *mx, int64_t n, float half, int dk,
                           int has_g, float G, int fp8, int cur, float eps, int is_param,
                           float *scale) {
  SYM_SCALES_PAR(dk, has_g, G, fp8, cur);
}

int llmc_q_qparams_from_minmax(const llmc_qargs *a0, llmc_dtype D, const float *mn,
                               const float *mx, int64_t n, const float *global_scale,
                               int is_param, float *scale, float *zp) {
  llmc_qargs a = *a0;
  if (llmc_q_args_check(&a, "qparams") < 0) return -1;
  int dk = q_kind(D);
  if (dk < 0) return llmc_err("qparams: dtype must be bfloat16, float16 or float32");
  float qmin, qmax;
  q_range(&a, &qmin, &qmax);
  const float R = qmax - qmin, half = R / 2;   /* exact in every D (§3.3 step 2) */
  const int mx_args = llmc_q_args_is_mx(&a), off = a.num_bits == 4 ? 2 : 8;
  const int has_g = global_scale != NULL;
  const float G = has_g ? *global_scale : 0.0f;
  const int cur = has_g ? QM_F32 : dk;   /* G * s is fp32 (§3.3 step 4) */
  const llmc_dtype cur_t = has_g ? LLMC_F32 : D;
  const int sdt = a.scale_dtype;
  const float eps = dtype_eps(sdt >= 0 ? (llmc_dtype)sdt : cur_t);
  uint32_t nan = 0;   /* any NaN min / max: the generic loop propagates it as torch does */
  for (int64_t i = 0; i < n; i++) {
    uint32_t u = qm_bits(mn[i]) & 0x7fffffffu, v = qm_bits(mx[i]) & 0x7fffffffu;
    nan |= (uint32_t)(u > 0x7f800000u) | (uint32_t)(v > 0x7f800000u);
  }
  if (!nan && a.symmetric && !mx_args && !zp && (sdt < 0 || sdt == LLMC_F8_E4M3)) {
    const int fp8 = sdt == LLMC_F8_E4M3;
    if (dk == QM_BF16 && !has_g && !fp8)
      sym_scales_bf16(mn, mx, n, half, G, eps, is_param, scale);
    else if (dk == QM_BF16 && has_g && fp8)
      sym_scales_nvfp4_bf16(mn, mx, n, half, G, eps, is_param, scale);
    else
      sym_scales_any(mn, mx, n, half, dk, has_g, G, fp8, cur, eps, is_param, scale);
    return 0;
  }
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t i = 0; i < n; i++) {
    /* step 1: zero inside the range (NaN propagates as in torch.min) */
    float m = (mn[i] < 0.0f || mn[i] != mn[i]) ? mn[i] : 0.0f;
    float M = (mx[i] > 0.0f || mx[i] != mx[i]) ? mx[i] : 0.0f;
    float s, z = 0.0f;
    if (a.symmetric) {
      float am = fabsf(m) > fabsf(M) ? fabsf(m) : fabsf(M);
      if (m != m || M != M) am = NAN;
      if (mx_args)
        s = (float)qm_mx_exponent_byte(qm_mx_pow2(am, dk), off);   /* steps 2 + 5 */
      else
        s = qm_round(am / half, dk);
    } else {
      s = qm_round(qm_round(M - m, dk) / R, dk);
      if (s == 0.0f) {
        /* CT divides by the zero scale before the eps fix: m/0 = -inf gives
        ** z = clamp(+inf) = q_max; 0/0 = NaN, which llmc defines as 0 */
        z = m < 0.0f ? qmax : 0.0f;
      } else {
        z = qm_clamp(qm_round(qmin - qm_round(m / s, dk), dk), qmin, qmax);
      }
    }
    if (has_g) s = G * s;
    if (sdt >= 0 && !mx_args) s = qm_round(round_to_dtype(s, (llmc_dtype)sdt), cur);
    if (mx_args) s = qm_round(qm_e8m0_value((int)s), cur);   /* step 6 */
    if (s == 0.0f) s = eps;                                 /* step 7 */
    if (is_param && has_g) s = qm_round(s, dk);             /* copied into the W parameter */
    scale[i] = s;
    if (zp) zp[i] = round_to_dtype(z, (llmc_dtype)a.zp_dtype);
  }
  return 0;
}

/* ======================================================================
** MSE observer
** ==================================================================== */

/* Error of one span under candidate (s, z): sum of rnd_D(|rnd_D(fq - x)|^norm)
** as LC's _calculate_error computes it elementwise in D (token-style fake
** quantization with the candidate zero point always present). */
static double span_error(const void *x, int64_t off, int64_t n, int k, float s, float z,
                         int kind, float qmin, float qmax, float norm, int norm2) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; i++) {
    float xv = q_load(x, off + i, k);
    float t = qm_quant_t(xv, s, z, k, 1, qmin, qmax);
    float dq = qm_dequant_value(qm_fq_value(t, kind), s, z, k, 1);
    float d = fabsf(qm_round(dq - xv, k));
    float e = norm2 ? d * d : powf(d, norm);
    sum += (double)qm_round(e, k);
  }
  return sum;
}

int llmc_q_observe_mse(const llmc_qargs *a0, const void *x, llmc_dtype xd, int64_t rows,
                       int64_t cols, float *best_mn, float *best_mx) {
  llmc_qargs a = *a0;
  if (llmc_q_args_check(&a, "MSE observer") < 0) return -1;
  int k = q_kind(xd);
  if (k < 0) return llmc_err("MSE observer: dtype must be bfloat16, float16 or float32");
  int64_t sr, sc;
  if (llmc_q_scale_grid(&a, rows, cols, &sr, &sc) < 0) return -1;
  int64_t ns = sr * sc;
  int64_t w = q_span_width(&a, cols), nsp = (cols + w - 1) / w;
  /* candidates are computed without global scale, and for tensor_group
  ** without scale_dtype (LC mse_quant.py) */
  llmc_qargs ca = a;
  ca.observer = LLMC_QOBS_MINMAX;
  if (ca.strategy == LLMC_QS_TENSOR_GROUP) ca.scale_dtype = -1;
  float qmin, qmax;
  q_range(&a, &qmin, &qmax);
  const int kind = q_elem_kind(&a);
  /* torch.pow(D tensor, python float) rounds the exponent to D first:
  ** in bf16 the default norm 2.4 is 2.40625 */
  const float norm = qm_round((float)a.mse.norm, k);
  const int norm2 = norm == 2.0f;
  const int per_row = a.strategy != LLMC_QS_TENSOR && a.strategy != LLMC_QS_BLOCK;

  size_t nf = (size_t)ns * 7;
  float *buf = malloc(nf * sizeof(float));
  double *part = per_row ? NULL : malloc((size_t)(rows * nsp) * sizeof(double));
  double *err = malloc((size_t)ns * sizeof(double));
  if (!buf || (!per_row && !part) || !err) {
    free(buf), free(part), free(err);
    return llmc_err("MSE observer: out of memory");
  }
  float *lo = buf, *hi = buf + ns, *clo = buf + 2 * ns, *chi = buf + 3 * ns;
  float *cs = buf + 4 * ns, *cz = buf + 5 * ns, *best = buf + 6 * ns;
  int rc = -1;
  if (llmc_q_observe_minmax(&a, x, xd, rows, cols, lo, hi) < 0) goto done;
  const float expand = (float)a.mse.expand;   /* a Python float scalar: fp32 opmath */
  for (int64_t i = 0; i < ns; i++) {
    lo[i] = qm_round(lo[i] * expand, k);
    hi[i] = qm_round(hi[i] * expand, k);
    best_mn[i] = lo[i], best_mx[i] = hi[i];
    best[i] = qm_fmax(k);
  }
  int steps = (int)(a.mse.maxshrink * a.mse.grid), stale = 0;
  for (int step = 0; step < steps; step++) {
    float p = (float)(1.0 - (double)step / a.mse.grid);
    for (int64_t i = 0; i < ns; i++) {
      clo[i] = qm_round(lo[i] * p, k);
      chi[i] = qm_round(hi[i] * p, k);
    }
    if (llmc_q_qparams_from_minmax(&ca, xd, clo, chi, ns, NULL, 0, cs, cz) < 0) goto done;
    if (per_row) {
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < nsp; j++) {
          int64_t si = r * nsp + j;
          err[si] = span_error(x, r * cols + j * w, w, k, cs[si], cz[si], kind, qmin, qmax,
                               norm, norm2);
        }
    } else {
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; r++) {
        int64_t srow = q_scale_row(&a, r);
        for (int64_t j = 0; j < nsp; j++) {
          int64_t c0 = j * w, n = cols - c0 < w ? cols - c0 : w;
          int64_t si = srow * sc + j;
          part[r * nsp + j] = span_error(x, r * cols + c0, n, k, cs[si], cz[si], kind, qmin,
                                         qmax, norm, norm2);
        }
      }
      /* combine row partials in row order (thread-count independent) */
      for (int64_t i = 0; i < ns; i++) err[i] = 0.0;
      for (int64_t r = 0; r < rows; r++) {
        int64_t srow = q_scale_row(&a, r);
        for (int64_t j = 0; j < nsp; j++) err[srow * sc + j] += part[r * nsp + j];
      }
    }
    int improved = 0;
    for (int64_t i = 0; i < ns; i++) {
      float e = qm_round((float)err[i], k);   /* torch.sum returns D */
      if (e < best[i]) {
        best[i] = e;
        best_mn[i] = clo[i];
        best_mx[i] = chi[i];
        improved = 1;
      }
    }
    if (improved) {
      stale = 0;
    } else if (++stale >= a.mse.patience) {
      break;
    }
  }
  rc = 0;
done:
  free(buf), free(part), free(err);
  return rc;
}

/* ======================================================================
** qparams for a tensor
** ==================================================================== */

int llmc_q_qparams_compute(llmc_qparams *qp, const llmc_qargs *a, const void *x, llmc_dtype xd,
                           int64_t rows, int64_t cols, const float *global_scale) {
  if (llmc_q_qparams_alloc(qp, a, xd, rows, cols) < 0) return -1;
  const llmc_qargs *c = &qp->args;
  int64_t ns = qp->srows * qp->scols;
  float *mn = malloc((size_t)ns * 2 * sizeof(float));
  if (!mn) {
    llmc_q_qparams_free(qp);
    return llmc_err("quantize: out of memory");
  }
  float *mx = mn + ns;
  int r = c->observer == LLMC_QOBS_MSE ? llmc_q_observe_mse(c, x, xd, rows, cols, mn, mx)
                                       : llmc_q_observe_minmax(c, x, xd, rows, cols, mn, mx);
  if (r == 0 && c->strategy == LLMC_QS_TENSOR_GROUP) {
    if (global_scale) {
      qp->global_scale = *global_scale;
    } else if (c->dynamic == LLMC_QDYN_LOCAL) {
      r = llmc_err("quantize: dynamic=\"local\" needs the stored global scale");
    } else {
      qp->global_scale = llmc_q_global_scale(llmc_q_absmax(mn, mx, ns), xd);
    }
    qp->has_global = 1;
  }
  if (r == 0)
    r = llmc_q_qparams_from_minmax(c, xd, mn, mx, ns, qp->has_global ? &qp->global_scale : NULL,
                                   c->dynamic == LLMC_QDYN_STATIC, qp->scale, qp->zero_point);
  free(mn);
  if (r < 0) llmc_q_qparams_free(qp);
  return r;
}
