/*
** quant_kernel.c — the element loops: quantize, dequantize, fake-quantize,
** and the fused quantize+pack paths of compression (spec §3.4-§3.8).
**
** A row of the tensor is cut into spans of columns that share one scale
** (the whole row for tensor / channel / token, group_size columns for
** group, block_structure[1] columns for block).  Each span runs a loop
** specialised at compile time on (source dtype, rounding dtype, zero point,
** element kind): span_* are always-inlined templates and the *_dispatch
** switches instantiate the combinations, so the inner loops carry no
** per-element branching on those and GCC vectorises them.
**
** Rows are distributed over OpenMP threads; each element is written by one
** thread from its own inputs only, so results are thread-count independent.
*/
/* The loops below select between computed values with float compares; GCC
** only if-converts (and so vectorises) them when float compares are not
** treated as trapping.  llmc never reads the FP exception flags, and the
** option changes no result. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "quant_internal.h"

#if defined(__GNUC__)
#define QK_INLINE static inline __attribute__((always_inline))
#else
#define QK_INLINE static inline
#endif

/* The span loops are compiled twice, for the build's baseline and for AVX2
** (8 lanes instead of 4), and picked at load time by an ifunc.  Only AVX2,
** not FMA: no contraction can change a rounding.  -DLLMC_NO_TARGET_CLONES
** builds the baseline only (to test it on an AVX2 machine). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(__AVX2__) && !defined(LLMC_NO_TARGET_CLONES)
#define QK_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QK_CLONES
#endif

/* Everything a row loop needs, resolved once per call. */
typedef struct qctx {
  const llmc_qparams *qp;
  int kind;            /* QM_INT / QM_FP8 / QM_FP4 */
  float qmin, qmax;
  int xk;              /* kind of the source buffer */
  int rk;              /* kind the quotient x/s is rounded to */
  int sk;              /* kind of the dequantization arithmetic (the scale's dtype) */
  int hz;              /* zero-point tensor present */
  int64_t w, nsp;      /* span width, spans per row */
  float *eff;          /* effective scales (s, or fp32 s/G) [srows*scols] */
} qctx;

static int qctx_init(qctx *c, const llmc_qparams *qp, llmc_dtype xd, int fused) {
  memset(c, 0, sizeof *c);
  if (!qp || !qp->scale) return llmc_err("quantize: qparams not computed");
  c->qp = qp;
  c->xk = q_kind(xd);
  if (c->xk < 0)
    return llmc_err("quantize: dtype must be bfloat16, float16 or float32 (got %s)",
                    llmc_dtype_name(xd));
  int dk = q_kind(qp->dtype);
  if (dk < 0) return llmc_err("quantize: bad qparams dtype");
  c->kind = q_elem_kind(&qp->args);
  q_range(&qp->args, &c->qmin, &c->qmax);
  /* a global scale makes the effective scale fp32 (§3.4); a dynamic
  ** tensor_group scale is fp32 already */
  c->sk = qp->has_global ? QM_F32 : dk;
  /* eager: the quotient lives in promote(X, S): the same kind, or fp32 */
  c->rk = fused ? QM_F32 : (c->xk == c->sk ? c->xk : QM_F32);
  c->hz = qp->zero_point != NULL;
  c->w = q_span_width(&qp->args, qp->cols);
  c->nsp = (qp->cols + c->w - 1) / c->w;
  int64_t ns = qp->srows * qp->scols;
  c->eff = malloc((size_t)ns * sizeof(float));
  if (!c->eff) return llmc_err("quantize: out of memory");
  for (int64_t i = 0; i < ns; i++)
    c->eff[i] = qp->has_global ? qp->scale[i] / qp->global_scale : qp->scale[i];
  return 0;
}

static void qctx_free(qctx *c) { free(c->eff); }

/* ---- row templates ----------------------------------------------------- */
/* A row job: row r of the tensor, its scale row and zero-point row. */
typedef struct qrow {
  int64_t off;         /* element offset of (r, 0) */
  const float *eff;    /* effective scales of the row's spans */
  const float *zp;     /* zero points of the row's spans, or NULL */
} qrow;

static inline qrow row_job(const qctx *c, int64_t r) {
  const llmc_qparams *qp = c->qp;
  int64_t si = q_scale_row(&qp->args, r) * qp->scols;
  qrow j = {r * qp->cols, c->eff + si, c->hz ? qp->zero_point + si : NULL};
  return j;
}

/* The span loops: (source kind xk, quotient kind rk, scale kind sk, zero
** point hz, element kind) are compile-time constants in each instantiation. */
QK_INLINE void row_codes(const qctx *c, qrow j, const void *x, void *out, int xk, int rk, int hz,
                         int kind) {
  const float qmin = c->qmin, qmax = c->qmax;
  const int64_t cols = c->qp->cols, w = c->w;
  for (int64_t sp = 0, c0 = 0; sp < c->nsp; sp++, c0 += w) {
    const int64_t n = cols - c0 < w ? cols - c0 : w, off = j.off + c0;
    const float s = j.eff[sp], z = hz ? j.zp[sp] : 0.0f;
    if (kind == QM_INT) {
      int8_t *o = (int8_t *)out + c0;
      for (int64_t i = 0; i < n; i++)
        o[i] = (int8_t)qm_code(qm_quant_t(q_load(x, off + i, xk), s, z, rk, hz, qmin, qmax), kind);
    } else {
      uint8_t *o = (uint8_t *)out + c0;
      for (int64_t i = 0; i < n; i++)
        o[i] = (uint8_t)qm_code(qm_quant_t(q_load(x, off + i, xk), s, z, rk, hz, qmin, qmax), kind);
    }
  }
}

QK_INLINE void row_fq(const qctx *c, qrow j, const void *x, void *y, int xk, int rk, int sk,
                      int hz, int kind) {
  const float qmin = c->qmin, qmax = c->qmax;
  const int64_t cols = c->qp->cols, w = c->w;
  for (int64_t sp = 0, c0 = 0; sp < c->nsp; sp++, c0 += w) {
    const int64_t n = cols - c0 < w ? cols - c0 : w, off = j.off + c0;
    const float s = j.eff[sp], z = hz ? j.zp[sp] : 0.0f;
    for (int64_t i = 0; i < n; i++) {
      float t = qm_quant_t(q_load(x, off + i, xk), s, z, rk, hz, qmin, qmax);
      q_store(y, off + i, xk, qm_dequant_value(qm_fq_value(t, kind), s, z, sk, hz));
    }
  }
}

QK_INLINE void row_dq(const qctx *c, qrow j, const void *codes, void *y, int ok, int sk, int hz,
                      int kind) {
  const int64_t cols = c->qp->cols, w = c->w;
  for (int64_t sp = 0, c0 = 0; sp < c->nsp; sp++, c0 += w) {
    const int64_t n = cols - c0 < w ? cols - c0 : w, off = j.off + c0;
    const float s = j.eff[sp], z = hz ? j.zp[sp] : 0.0f;
    if (kind == QM_INT) {
      const int8_t *q = (const int8_t *)codes + off;
      for (int64_t i = 0; i < n; i++)
        q_store(y, off + i, ok, qm_dequant_value((float)q[i], s, z, sk, hz));
    } else {
      const uint8_t *q = (const uint8_t *)codes + off;
      for (int64_t i = 0; i < n; i++)
        q_store(y, off + i, ok, qm_dequant_value(qm_code_value(q[i], kind), s, z, sk, hz));
    }
  }
}

/* ---- dispatchers: instantiate the templates on constant kinds ---------- */

#define KIND_CASES(M, ...)                      \
  switch (c->kind) {                            \
    case QM_INT: M(__VA_ARGS__, QM_INT); break; \
    case QM_FP8: M(__VA_ARGS__, QM_FP8); break; \
    default: M(__VA_ARGS__, QM_FP4); break;     \
  }
#define HZ_CASES(M, ...)                      \
  do {                                        \
    if (c->hz) { KIND_CASES(M, __VA_ARGS__, 1) } \
    else { KIND_CASES(M, __VA_ARGS__, 0) }       \
  } while (0)

#define CODES_CALL(XK, RK, HZ, KIND) row_codes(c, j, x, out, XK, RK, HZ, KIND)

/* quantize one row into out (the codes of element (r, 0)) */
QK_CLONES static void codes_row(const qctx *c, qrow j, const void *x, void *out) {
  if (c->xk == QM_BF16 && c->rk == QM_BF16) HZ_CASES(CODES_CALL, QM_BF16, QM_BF16);
  else if (c->xk == QM_BF16) HZ_CASES(CODES_CALL, QM_BF16, QM_F32);
  else if (c->xk == QM_F16 && c->rk == QM_F16) HZ_CASES(CODES_CALL, QM_F16, QM_F16);
  else if (c->xk == QM_F16) HZ_CASES(CODES_CALL, QM_F16, QM_F32);
  else HZ_CASES(CODES_CALL, QM_F32, QM_F32);
}

#define FQ_CALL(XK, RK, SK, HZ, KIND) row_fq(c, j, x, y, XK, RK, SK, HZ, KIND)

/* fake quantization is eager: the quotient is rounded to promote(X, S) */
QK_CLONES static void fq_row(const qctx *c, qrow j, const void *x, void *y) {
  if (c->xk == QM_BF16 && c->sk == QM_BF16) HZ_CASES(FQ_CALL, QM_BF16, QM_BF16, QM_BF16);
  else if (c->xk == QM_BF16 && c->sk == QM_F32) HZ_CASES(FQ_CALL, QM_BF16, QM_F32, QM_F32);
  else if (c->xk == QM_F16 && c->sk == QM_F16) HZ_CASES(FQ_CALL, QM_F16, QM_F16, QM_F16);
  else if (c->xk == QM_F16 && c->sk == QM_F32) HZ_CASES(FQ_CALL, QM_F16, QM_F32, QM_F32);
  else if (c->xk == QM_F32 && c->sk == QM_F32) HZ_CASES(FQ_CALL, QM_F32, QM_F32, QM_F32);
  else row_fq(c, j, x, y, c->xk, QM_F32, c->sk, c->hz, c->kind);   /* mixed 16-bit kinds */
}

#define DQ_CALL(OK, SK, HZ, KIND) row_dq(c, j, codes, y, OK, SK, HZ, KIND)

QK_CLONES static void dq_row(const qctx *c, qrow j, const void *codes, void *y, int ok) {
  if (ok == QM_BF16 && c->sk == QM_BF16) HZ_CASES(DQ_CALL, QM_BF16, QM_BF16);
  else if (ok == QM_BF16 && c->sk == QM_F32) HZ_CASES(DQ_CALL, QM_BF16, QM_F32);
  else row_dq(c, j, codes, y, ok, c->sk, c->hz, c->kind);
}

/* ---- drivers ------------------------------------------------------------ */

int llmc_q_quantize(const llmc_qparams *qp, const void *x, llmc_dtype xd, void *codes) {
  qctx c;
  if (qctx_init(&c, qp, xd, qp && qp->args.rounding == LLMC_QROUND_FUSED) < 0) return -1;
  int64_t rows = qp->rows, cols = qp->cols;
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
  for (int64_t r = 0; r < rows; r++) codes_row(&c, row_job(&c, r), x, (char *)codes + r * cols);
  qctx_free(&c);
  return 0;
}

int llmc_q_fake_quantize(const llmc_qparams *qp, const void *x, llmc_dtype xd, void *out) {
  qctx c;
  if (qctx_init(&c, qp, xd, 0) < 0) return -1;
  int64_t rows = qp->rows, cols = qp->cols;
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
  for (int64_t r = 0; r < rows; r++) fq_row(&c, row_job(&c, r), x, out);
  qctx_free(&c);
  return 0;
}

int llmc_q_dequantize(const llmc_qparams *qp, const void *codes, void *out, llmc_dtype od) {
  qctx c;
  if (qctx_init(&c, qp, qp ? qp->dtype : LLMC_F32, 0) < 0) return -1;
  int ok = q_kind(od);
  if (ok < 0) {
    qctx_free(&c);
    return llmc_err("dequantize: output dtype must be bfloat16, float16 or float32");
  }
  int64_t rows = qp->rows, cols = qp->cols;
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
  for (int64_t r = 0; r < rows; r++) dq_row(&c, row_job(&c, r), codes, out, ok);
  qctx_free(&c);
  return 0;
}

int llmc_q_qdq_dynamic(const llmc_qargs *a, const void *x, llmc_dtype xd, int64_t rows,
                       int64_t cols, const float *global_scale, void *out) {
  /* CT's dynamic path (compute_dynamic_scales_and_zp) always hands its zero
  ** point, zeros when symmetric, to fake_quantize: -0.0 + 0 = +0.0 */
  llmc_qargs c = *a;
  c.force_zero_point = 1;
  llmc_qparams qp;
  if (llmc_q_qparams_compute(&qp, &c, x, xd, rows, cols, global_scale) < 0) return -1;
  int r = llmc_q_fake_quantize(&qp, x, xd, out);
  llmc_q_qparams_free(&qp);
  return r;
}

/* ---- fused quantize + pack (compression of big weights) ----------------- */

int q_quantize_pack_int32(const llmc_qparams *qp, const void *x, llmc_dtype xd, int32_t *out) {
  if (qp->args.type != LLMC_QTYPE_INT) return llmc_err("pack-quantized: weights must be int");
  qctx c;
  if (qctx_init(&c, qp, xd, qp->args.rounding == LLMC_QROUND_FUSED) < 0) return -1;
  int64_t rows = qp->rows, cols = qp->cols, pc = llmc_q_packed_cols(cols, qp->args.num_bits);
  int fail = 0;
#pragma omp parallel if (rows * cols > 32768)
  {
    int8_t *row = malloc((size_t)cols);
    if (!row) {
#pragma omp atomic write
      fail = 1;
    }
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      if (!row) continue;
      codes_row(&c, row_job(&c, r), x, row);
      q_pack_row_int32(row, cols, qp->args.num_bits, out + r * pc);
    }
    free(row);
  }
  qctx_free(&c);
  return fail ? llmc_err("pack-quantized: out of memory") : 0;
}

int q_quantize_pack_fp4(const llmc_qparams *qp, const void *x, llmc_dtype xd, uint8_t *out) {
  if (qp->args.type != LLMC_QTYPE_FLOAT || qp->args.num_bits != 4)
    return llmc_err("fp4 packing: weights must be 4-bit float");
  if (qp->cols % 2) return llmc_err("fp4 packing: odd number of columns");
  qctx c;
  if (qctx_init(&c, qp, xd, qp->args.rounding == LLMC_QROUND_FUSED) < 0) return -1;
  int64_t rows = qp->rows, cols = qp->cols;
  int fail = 0;
#pragma omp parallel if (rows * cols > 32768)
  {
    uint8_t *row = malloc((size_t)cols);
    if (!row) {
#pragma omp atomic write
      fail = 1;
    }
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      if (!row) continue;
      codes_row(&c, row_job(&c, r), x, row);
      q_pack_row_fp4(row, cols, out + r * (cols / 2));
    }
    free(row);
  }
  qctx_free(&c);
  return fail ? llmc_err("fp4 packing: out of memory") : 0;
}
