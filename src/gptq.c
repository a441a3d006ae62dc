/*
** gptq.c — Hessian accumulation and the GPTQ solve (see gptq.h).
**
** The inner loop must keep multiply and subtract separate, as PyTorch does
** (algorithms.md §5.4): this file is compiled with -ffp-contract=off
** (CMakeLists.txt sets it for this source).
*/

#include "gptq.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "quant_math.h"

/* ---- Hessian --------------------------------------------------------------- */

int llmc_hessian_init(llmc_hessian *h, int64_t cols) {
  memset(h, 0, sizeof *h);
  if (cols <= 0 || cols > (1 << 17)) return llmc_err("hessian: invalid column count %lld", (long long)cols);
  h->H = calloc((size_t)cols * (size_t)cols, sizeof(float));
  if (!h->H) return llmc_err("hessian: out of memory for a %lldx%lld matrix", (long long)cols, (long long)cols);
  h->cols = cols;
  return 0;
}

void llmc_hessian_free(llmc_hessian *h) {
  free(h->H);
  memset(h, 0, sizeof *h);
}

int llmc_hessian_add(llmc_hessian *h, const float *x, int64_t batch, int64_t tokens) {
  int64_t n = batch * tokens, C = h->cols;
  if (batch <= 0 || tokens <= 0) return llmc_err("hessian: empty batch");
  float *X = malloc(sizeof(float) * (size_t)n * (size_t)C);
  if (!X) return llmc_err("hessian: out of memory");
  const float r2 = sqrtf(2.0f);   /* X = sqrt(2) * fp32(x), rounded in fp32 as torch does */
  #pragma omp parallel for schedule(static) if (n * C > 65536)
  for (int64_t i = 0; i < n * C; i++) X[i] = r2 * x[i];
  /* H(upper) += X^T X */
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)C, (int)n, 1.0f, X, (int)C, 1.0f, h->H, (int)C);
  free(X);
  h->nsamples += batch;
  h->ntokens += n;
  return 0;
}

void llmc_hessian_normalized(const llmc_hessian *h, float *dst) {
  const int64_t C = h->cols;
  const float n = (float)h->nsamples;
  for (int64_t i = 0; i < C; i++)
    for (int64_t j = i; j < C; j++) {
      float v = h->H[i * C + j] / n;
      dst[i * C + j] = v;
      dst[j * C + i] = v;
    }
}

int llmc_hessian_add_any(llmc_hessian *h, const void *x, llmc_dtype dt, int64_t batch, int64_t tokens) {
  if (dt == LLMC_F32) return llmc_hessian_add(h, x, batch, tokens);
  size_t n = (size_t)(batch * tokens * h->cols);
  float *f = malloc(sizeof(float) * n);
  if (!f) return llmc_err("hessian: out of memory");
  llmc_convert(f, LLMC_F32, x, dt, n);
  int rc = llmc_hessian_add(h, f, batch, tokens);
  free(f);
  return rc;
}

/* ---- solve ----------------------------------------------------------------- */

void llmc_gptq_opts_init(llmc_gptq_opts *o) {
  o->block_size = 128;
  o->dampening_frac = 0.01;
  o->actorder = 1;
}

static int qm_kind_of(llmc_dtype d) { return d == LLMC_BF16 ? QM_BF16 : d == LLMC_F16 ? QM_F16 : QM_F32; }

typedef struct { float key; int64_t idx; } diag_entry;

static int cmp_desc(const void *a, const void *b) {
  const diag_entry *x = a, *y = b;
  if (x->key > y->key) return -1;
  if (x->key < y->key) return 1;
  return (x->idx > y->idx) - (x->idx < y->idx);   /* stable on ties */
}

int llmc_gptq_inverse_factor(float *H, int64_t cols, float *W, int64_t rows, double dampening_frac,
                             int64_t *dead_columns) {
  /* dead columns, then dampening with the mean of the fixed-up diagonal */
  for (int64_t i = 0; i < cols; i++) {
    if (H[i * cols + i] == 0.0f) {
      H[i * cols + i] = 1.0f;
      if (W)
        for (int64_t r = 0; r < rows; r++) W[r * cols + i] = 0.0f;
      if (dead_columns) (*dead_columns)++;
    }
  }
  /* torch.mean over fp32 accumulates in fp32 pairwise; we use a double sum
  ** rounded once — the dampening value may differ in the last bit */
  double diag_sum = 0;
  for (int64_t i = 0; i < cols; i++) diag_sum += H[i * cols + i];
  float damp = (float)(dampening_frac * (diag_sum / (double)cols));
  for (int64_t i = 0; i < cols; i++) H[i * cols + i] += damp;
  /* U = cholesky(cholesky_inverse(cholesky(H)), upper): H^-1 = U^T U */
  int info = LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)cols, H, (lapack_int)cols);
  if (info == 0) info = LAPACKE_spotri(LAPACK_ROW_MAJOR, 'L', (lapack_int)cols, H, (lapack_int)cols);
  if (info == 0) {
    /* spotri fills the lower triangle of H^-1; mirror, then factor upper */
    for (int64_t i = 0; i < cols; i++)
      for (int64_t j = i + 1; j < cols; j++) H[i * cols + j] = H[j * cols + i];
    info = LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)cols, H, (lapack_int)cols);
  }
  if (info != 0) {
    memset(H, 0, sizeof(float) * (size_t)(cols * cols));
    for (int64_t i = 0; i < cols; i++) H[i * cols + i] = 1.0f;
    return 1;
  }
  for (int64_t i = 0; i < cols; i++)
    for (int64_t j = 0; j < i; j++) H[i * cols + j] = 0.0f;   /* keep only U */
  return 0;
}

void llmc_gptq_factor_free(llmc_gptq_factor *f) {
  free(f->perm);
  free(f->dead);
  free(f->U);
  memset(f, 0, sizeof *f);
}

static int factor_matches(const llmc_gptq_factor *f, const llmc_hessian *h, const llmc_gptq_opts *o) {
  return f->U && f->cols == h->cols && f->nsamples == h->nsamples && f->ntokens == h->ntokens &&
         f->actorder == (o->actorder != 0) && f->dampening_frac == o->dampening_frac;
}

/* H / n, the column order, the dead columns and U (§5.4) into f */
static int factor_make(llmc_gptq_factor *f, const llmc_hessian *h, const llmc_gptq_opts *opts) {
  int64_t cols = h->cols;
  size_t cc = (size_t)cols * (size_t)cols;
  llmc_gptq_factor_free(f);
  float *H = malloc(sizeof(float) * cc);
  f->perm = malloc(sizeof(int64_t) * (size_t)cols);
  f->dead = calloc((size_t)cols, 1);
  diag_entry *de = malloc(sizeof(diag_entry) * (size_t)cols);
  if (!H || !f->perm || !f->dead || !de) {
    free(H); free(de);
    llmc_gptq_factor_free(f);
    return llmc_err("gptq: out of memory for a %lldx%lld Hessian", (long long)cols, (long long)cols);
  }
  llmc_hessian_normalized(h, H);
  /* activation order: argsort(diag(H), descending) */
  int64_t *perm = f->perm;
  for (int64_t i = 0; i < cols; i++) { de[i].key = H[i * cols + i]; de[i].idx = i; perm[i] = i; }
  if (opts->actorder) {
    qsort(de, (size_t)cols, sizeof *de, cmp_desc);
    for (int64_t i = 0; i < cols; i++) perm[i] = de[i].idx;
  }
  free(de);
  if (opts->actorder) {
    float *Hp = malloc(sizeof(float) * cc);
    if (!Hp) {
      free(H);
      llmc_gptq_factor_free(f);
      return llmc_err("gptq: out of memory for a %lldx%lld Hessian", (long long)cols, (long long)cols);
    }
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < cols; i++)
      for (int64_t j = 0; j < cols; j++) Hp[i * cols + j] = H[perm[i] * cols + perm[j]];
    free(H);
    H = Hp;
  }
  /* dead columns in the permuted order; the solve zeroes them in W */
  for (int64_t i = 0; i < cols; i++) f->dead[i] = H[i * cols + i] == 0.0f;
  f->rtn_fallback = llmc_gptq_inverse_factor(H, cols, NULL, 0, opts->dampening_frac, &f->dead_columns);
  f->U = H;
  f->cols = cols;
  f->nsamples = h->nsamples;
  f->ntokens = h->ntokens;
  f->actorder = opts->actorder != 0;
  f->dampening_frac = opts->dampening_frac;
  return 0;
}

int llmc_gptq_solve(float *W, int64_t rows, int64_t cols, const llmc_hessian *h, const llmc_qparams *qp,
                    const llmc_gptq_opts *opts, llmc_gptq_result *res) {
  llmc_gptq_factor f = {0};
  int rc = llmc_gptq_solve_shared(W, rows, cols, h, qp, opts, &f, res);
  llmc_gptq_factor_free(&f);
  return rc;
}

int llmc_gptq_solve_shared(float *W, int64_t rows, int64_t cols, const llmc_hessian *h, const llmc_qparams *qp,
                           const llmc_gptq_opts *opts, llmc_gptq_factor *f, llmc_gptq_result *res) {
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  memset(res, 0, sizeof *res);
  const llmc_qargs *a = &qp->args;
  if (h->cols != cols || qp->rows != rows || qp->cols != cols)
    return llmc_err("gptq: Hessian (%lld) / qparams (%lldx%lld) do not match the weight %lldx%lld", (long long)h->cols,
                    (long long)qp->rows, (long long)qp->cols, (long long)rows, (long long)cols);
  if (h->nsamples <= 0) return llmc_err("gptq: no calibration samples reached this module");
  if (a->strategy == LLMC_QS_TOKEN || a->strategy == LLMC_QS_ATTN_HEAD)
    return llmc_err("gptq: strategy %s is not a weight strategy", llmc_q_strategy_name(a->strategy));
  int kind = a->type == LLMC_QTYPE_INT ? QM_INT : (a->num_bits == 8 ? QM_FP8 : QM_FP4);
  float qmin, qmax;
  if (kind == QM_INT) { qmax = (float)((1 << (a->num_bits - 1)) - 1); qmin = -qmax - 1; }
  else if (kind == QM_FP8) { qmax = 448.0f; qmin = -448.0f; }
  else { qmax = 6.0f; qmin = -6.0f; }
  int64_t div = a->strategy == LLMC_QS_GROUP || a->strategy == LLMC_QS_TENSOR_GROUP ? a->group_size
              : a->strategy == LLMC_QS_BLOCK ? a->block_structure[1] : 0;
  int64_t bh = a->strategy == LLMC_QS_BLOCK ? a->block_structure[0] : 1;
  int sk = qp->has_global ? QM_F32 : qm_kind_of(qp->dtype);   /* dtype of s_r */
  int has_zp = qp->zero_point != NULL && !a->symmetric;
  int64_t B = opts->block_size > 0 ? opts->block_size : 128;

  if (!factor_matches(f, h, opts) && factor_make(f, h, opts) < 0) return -1;
  const int64_t *perm = f->perm;
  const float *U = f->U;
  res->dead_columns = f->dead_columns;
  res->rtn_fallback = f->rtn_fallback;
  float *Wp = malloc(sizeof(float) * (size_t)rows * (size_t)cols);
  float *Err = malloc(sizeof(float) * (size_t)rows * (size_t)B);
  double *losses = calloc((size_t)rows, sizeof(double));
  if (!Wp || !Err || !losses) {
    free(Wp); free(Err); free(losses);
    return llmc_err("gptq: out of memory for a %lldx%lld solve", (long long)rows, (long long)cols);
  }
  /* permute W columns; dead columns are zero */
  #pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) Wp[r * cols + c] = f->dead[c] ? 0.0f : W[r * cols + perm[c]];

  for (int64_t i1 = 0; i1 < cols; i1 += B) {
    int64_t i2 = i1 + B < cols ? i1 + B : cols, n = i2 - i1;
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      float *w = Wp + r * cols;
      double lsum = 0;
      for (int64_t i = 0; i < n; i++) {
        int64_t c = i1 + i;
        int64_t g = div ? perm[c] / div : 0;          /* original group of the column */
        int64_t si;
        switch (a->strategy) {
          case LLMC_QS_TENSOR: si = 0; break;
          case LLMC_QS_CHANNEL: si = r; break;
          case LLMC_QS_BLOCK: si = (r / bh) * qp->scols + g; break;
          default: si = r * qp->scols + g; break;     /* group, tensor_group */
        }
        float s = qp->scale[si];
        if (qp->has_global) s = s / qp->global_scale;   /* fp32 */
        float z = has_zp ? qp->zero_point[si] : 0.0f;
        float x = w[c];
        float t = x / s;
        float q;
        if (kind == QM_INT) {
          float code = qm_clamp(rintf(t + z), qmin, qmax);
          q = qm_round(qm_round(code - z, sk) * s, sk);
        } else {
          float code = qm_fq_value(qm_clamp(t, qmin, qmax), kind);
          q = qm_round(code * s, sk);
        }
        float d = U[c * cols + c];
        float e = (x - q) / d;
        w[c] = q;
        Err[r * B + i] = e;
        lsum += (double)e * (double)e;
        const float *u = U + c * cols;
        for (int64_t j = c + 1; j < i2; j++) {
          float p = e * u[j];
          w[j] = w[j] - p;
        }
      }
      losses[r] += lsum / 2;
    }
    /* W[:, i2:] -= Err1 @ U[i1:i2, i2:] */
    if (i2 < cols)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)(cols - i2), (int)n, -1.0f, Err, (int)B,
                  U + i1 * cols + i2, (int)cols, 1.0f, Wp + i2, (int)cols);
    if (llmc_interrupted()) {
      free(Wp); free(Err); free(losses);
      return -1;
    }
  }
  /* undo the permutation */
  #pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) W[r * cols + perm[c]] = Wp[r * cols + c];
  double loss = 0;
  for (int64_t r = 0; r < rows; r++) loss += losses[r];
  res->loss = loss;
  free(Wp); free(Err); free(losses);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  res->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  return 0;
}
