/*
** sparsegpt.c — the SparseGPT solve and Wanda pruning (see sparsegpt.h).
**
** Like gptq.c, the column loop keeps multiply and subtract separate, as
** PyTorch does: no FMA contraction in this file (the pragmas below; the
** build's -march=x86-64-v2 has no FMA either).
*/
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "sparsegpt.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"

#ifdef _OPENMP
#include <omp.h>
#endif

void llmc_sparsegpt_opts_init(llmc_sparsegpt_opts *o) {
  o->sparsity = 0.5;
  o->prune_n = 0;
  o->prune_m = 0;
  o->block_size = 128;
  o->dampening_frac = 0.01;
  o->preserve_mask = 0;
}

int llmc_sparsity_parse_mask(const char *s, int *n, int *m) {
  char *end;
  if (!s) return llmc_err("mask_structure: expected a string \"N:M\"");
  long a = strtol(s, &end, 10);
  if (end == s || *end != ':' || a < 0) return llmc_err("mask_structure '%s': expected \"N:M\" (e.g. \"2:4\"; \"0:0\" = unstructured)", s);
  const char *p = end + 1;
  long b = strtol(p, &end, 10);
  if (end == p || *end != 0 || b < 0) return llmc_err("mask_structure '%s': expected \"N:M\" (e.g. \"2:4\"; \"0:0\" = unstructured)", s);
  if (a > 0 && (b == 0 || a > b))
    return llmc_err("mask_structure '%s': N must be at most M and M positive (N of every M weights are pruned)", s);
  if (b > 4096) return llmc_err("mask_structure '%s': M is too large", s);
  *n = (int)a;
  *m = a > 0 ? (int)b : 0;
  return 0;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* k-th smallest (0-based) of a[0..n) — a is reordered.  Three-way
** partition quickselect: exact, deterministic, linear on average, and
** indifferent to the many equal values a pruned weight produces. */
static float kth_smallest(float *a, int64_t n, int64_t k) {
  int64_t lo = 0, hi = n;   /* the answer lies in a[lo..hi) */
  while (hi - lo > 1) {
    float x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi - 1];
    float pv = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));   /* median of 3 */
    int64_t lt = lo, i = lo, gt = hi;   /* [lo,lt) < pv, [lt,i) == pv, [gt,hi) > pv */
    while (i < gt) {
      float v = a[i];
      if (v < pv) { a[i] = a[lt]; a[lt] = v; lt++; i++; }
      else if (v > pv) { gt--; a[i] = a[gt]; a[gt] = v; }
      else i++;
    }
    if (k < lt) hi = lt;
    else if (k >= gt) lo = gt;
    else return pv;
  }
  return a[lo];
}

/* The N smallest of s[0..g) (ties: the lower index) -> mark[j] = 1. */
static void mark_smallest(const float *s, int g, int nprune, unsigned char *mark) {
  unsigned char used[4096];
  if (g <= 0 || g > 4096) return;   /* callers guarantee 0 < g <= 4096 */
  memset(used, 0, (size_t)g);
  for (int t = 0; t < nprune; t++) {
    int best = -1;
    for (int j = 0; j < g; j++)
      if (!used[j] && (best < 0 || s[j] < s[best])) best = j;
    used[best] = 1;
    mark[best] = 1;
  }
}

int llmc_sparsegpt_solve(float *W, int64_t rows, int64_t cols, const llmc_hessian *h,
                         const llmc_sparsegpt_opts *o, llmc_sparsity_result *res) {
  double t0 = now_s();
  memset(res, 0, sizeof *res);
  if (h->cols != cols)
    return llmc_err("sparsegpt: the Hessian has %lld columns, the weight %lld", (long long)h->cols, (long long)cols);
  if (rows <= 0 || cols <= 0) return llmc_err("sparsegpt: empty weight");
  if (h->nsamples <= 0) return llmc_err("sparsegpt: no calibration samples reached this module");
  const int N = o->prune_n, M = o->prune_m;
  if (N < 0 || (N > 0 && (M <= 0 || N > M || M > 4096)))
    return llmc_err("sparsegpt: invalid N:M structure %d:%d", N, M);
  const int64_t B = o->block_size;
  if (B <= 0) return llmc_err("sparsegpt: block_size must be positive");
  if (N > 0 && B % M != 0)
    return llmc_err("sparsegpt: block_size %lld must be a multiple of M = %d (N:M groups are formed inside a block)",
                    (long long)B, M);
  if (N > 0 && cols % M != 0 && cols % M < N)
    return llmc_err("sparsegpt: %lld columns end with a group of %lld, fewer than N = %d", (long long)cols,
                    (long long)(cols % M), N);
  if (!(o->sparsity >= 0.0 && o->sparsity < 1.0)) return llmc_err("sparsegpt: sparsity must be in [0, 1) (got %g)", o->sparsity);
  if (!(o->dampening_frac >= 0.0)) return llmc_err("sparsegpt: dampening_frac must be >= 0");

  size_t cc = (size_t)cols * (size_t)cols, rc = (size_t)rows * (size_t)cols, rb = (size_t)rows * (size_t)B;
  float *H = malloc(sizeof(float) * cc);
  float *Err = malloc(sizeof(float) * rb);
  float *score = N == 0 ? malloc(sizeof(float) * rb) : NULL;
  unsigned char *bmask = malloc(rb);
  unsigned char *pmask = o->preserve_mask ? malloc(rc) : NULL;
  float *P = o->preserve_mask ? malloc(sizeof(float) * rb) : NULL;   /* rows x (cols - i2) chunk, see below */
  double *losses = calloc((size_t)rows, sizeof(double));
  int rc_ret = 0;
  if (!H || !Err || (N == 0 && !score) || !bmask || (o->preserve_mask && (!pmask || !P)) || !losses) {
    rc_ret = llmc_err("sparsegpt: out of memory for a %lldx%lld solve", (long long)rows, (long long)cols);
    goto done;
  }
  llmc_hessian_normalized(h, H);
  /* dead columns, dampening and the Cholesky factor of H^-1, exactly as GPTQ */
  if (llmc_gptq_inverse_factor(H, cols, W, rows, o->dampening_frac, &res->dead_columns)) res->inverse_fallback = 1;
  const float *U = H;

  if (pmask) {
    int64_t z = 0;
    for (size_t i = 0; i < rc; i++) { pmask[i] = W[i] == 0.0f; z += pmask[i]; }
    if ((double)z / (double)rc > o->sparsity) {
      rc_ret = llmc_err("sparsegpt: the weight is already %.4f sparse, more than the target %g: "
                        "turn preserve_sparsity_mask off or raise sparsity", (double)z / (double)rc, o->sparsity);
      goto done;
    }
  }

  for (int64_t i1 = 0; i1 < cols; i1 += B) {
    int64_t i2 = i1 + B < cols ? i1 + B : cols, n = i2 - i1;
    int64_t numel = rows * n;
    /* the block's mask before the column loop */
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
      for (int64_t i = 0; i < n; i++) bmask[r * n + i] = pmask ? pmask[r * cols + i1 + i] : 0;
    if (N == 0) {
      int64_t k = (int64_t)((double)numel * o->sparsity);
      int extend = 1;
      if (pmask) {
        int64_t have = 0;
        for (int64_t i = 0; i < numel; i++) have += bmask[i];
        extend = k > have;
      }
      if (extend) {
        if (k >= numel) { rc_ret = llmc_err("sparsegpt: sparsity %g leaves nothing in a block", o->sparsity); goto done; }
        /* score = W1^2 / diag(U1)^2, each op rounded in fp32 as torch does;
        ** preserved entries score 0 */
        #pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++)
          for (int64_t i = 0; i < n; i++) {
            float w = W[r * cols + i1 + i], d = U[(i1 + i) * cols + i1 + i];
            float w2 = w * w;
            if (pmask && pmask[r * cols + i1 + i]) w2 = 0.0f * w2;
            score[r * n + i] = w2 / (d * d);
          }
        float *sel = Err;   /* Err is free until the column loop: use it for the selection copy */
        memcpy(sel, score, sizeof(float) * (size_t)numel);
        float thr = kth_smallest(sel, numel, k);
        #pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < numel; i++) bmask[i] = score[i] <= thr;
      }
    }
    int bad_group = 0;
    #pragma omp parallel for schedule(static) reduction(| : bad_group)
    for (int64_t r = 0; r < rows; r++) {
      float *w = W + r * cols;
      unsigned char *mk = bmask + r * n;
      double lsum = 0;
      for (int64_t i = 0; i < n; i++) {
        int64_t c = i1 + i;
        if (N > 0 && i % M == 0) {
          int g = (int)(n - i < M ? n - i : M);
          if (g < N) { bad_group = 1; break; }
          float s[4096];
          for (int j = 0; j < g; j++) {
            float d = U[(c + j) * cols + c + j];
            s[j] = (w[c + j] * w[c + j]) / (d * d);
            if (pmask && pmask[r * cols + c + j]) s[j] = s[j] * 0.0f;
          }
          mark_smallest(s, g, N, mk + i);
        }
        float x = w[c];
        float q = mk[i] ? 0.0f : x;
        float d = U[c * cols + c];
        float diff = x - q;
        lsum += (double)((diff * diff) / (d * d));
        float e = diff / d;
        w[c] = q;
        Err[r * B + i] = e;
        const float *u = U + c * cols;
        for (int64_t j = c + 1; j < i2; j++) {
          float p = e * u[j];
          w[j] = w[j] - p;
        }
      }
      losses[r] += lsum / 2;
    }
    if (bad_group) { rc_ret = llmc_err("sparsegpt: an N:M group has fewer than N columns"); goto done; }
    /* W[:, i2:] -= Err1 @ U[i1:i2, i2:]  (only where not preserved) */
    if (i2 < cols) {
      if (!pmask) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)(cols - i2), (int)n, -1.0f, Err, (int)B,
                    U + i1 * cols + i2, (int)cols, 1.0f, W + i2, (int)cols);
      } else {
        /* the product in column chunks of B to bound the scratch buffer */
        for (int64_t j1 = i2; j1 < cols; j1 += B) {
          int64_t j2 = j1 + B < cols ? j1 + B : cols, nj = j2 - j1;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)nj, (int)n, 1.0f, Err, (int)B,
                      U + i1 * cols + j1, (int)cols, 0.0f, P, (int)B);
          #pragma omp parallel for schedule(static)
          for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < nj; j++)
              if (!pmask[r * cols + j1 + j]) W[r * cols + j1 + j] = W[r * cols + j1 + j] - P[r * B + j];
        }
      }
    }
    if (llmc_interrupted()) { rc_ret = -1; goto done; }
  }
  double loss = 0;
  for (int64_t r = 0; r < rows; r++) loss += losses[r];
  res->loss = loss;
  int64_t z = 0;
  #pragma omp parallel for reduction(+ : z) schedule(static)
  for (size_t i = 0; i < rc; i++) z += W[i] == 0.0f;
  res->zeros = z;
done:
  free(H); free(Err); free(score); free(bmask); free(pmask); free(P); free(losses);
  res->seconds = now_s() - t0;
  return rc_ret;
}

/* ---- Wanda ------------------------------------------------------------------ */

int llmc_colsq_init(llmc_colsq *s, int64_t cols) {
  memset(s, 0, sizeof *s);
  if (cols <= 0 || cols > (1 << 24)) return llmc_err("wanda: invalid column count %lld", (long long)cols);
  s->sq = calloc((size_t)cols, sizeof(double));
  if (!s->sq) return llmc_err("wanda: out of memory");
  s->cols = cols;
  return 0;
}

void llmc_colsq_free(llmc_colsq *s) {
  free(s->sq);
  memset(s, 0, sizeof *s);
}

int llmc_colsq_add(llmc_colsq *s, const void *x, llmc_dtype dt, int64_t batch, int64_t tokens) {
  if (batch <= 0 || tokens <= 0) return llmc_err("wanda: empty batch");
  if (dt != LLMC_F32 && dt != LLMC_BF16 && dt != LLMC_F16)
    return llmc_err("wanda: inputs must be float32, bfloat16 or float16 (got %s)", llmc_dtype_name(dt));
  int64_t n = batch * tokens, C = s->cols;
  const float *f = x;
  float *conv = NULL;
  if (dt != LLMC_F32) {
    conv = malloc(sizeof(float) * (size_t)(n * C));
    if (!conv) return llmc_err("wanda: out of memory");
    llmc_convert(conv, LLMC_F32, x, dt, (size_t)(n * C));
    f = conv;
  }
  /* each thread owns a column range: the sums do not depend on the thread count */
  #pragma omp parallel for schedule(static) if (n * C > 65536)
  for (int64_t j = 0; j < C; j++) {
    double a = 0;
    for (int64_t t = 0; t < n; t++) {
      double v = f[t * C + j];
      a += v * v;
    }
    s->sq[j] += a;
  }
  free(conv);
  s->nsamples += batch;
  s->ntokens += n;
  return 0;
}

typedef struct { float key; int64_t idx; } metric_entry;

static int cmp_metric(const void *a, const void *b) {
  const metric_entry *x = a, *y = b;
  if (x->key < y->key) return -1;
  if (x->key > y->key) return 1;
  return (x->idx > y->idx) - (x->idx < y->idx);   /* stable: the lower column first */
}

int llmc_wanda_prune(float *W, int64_t rows, int64_t cols, const llmc_colsq *s, double sparsity, int N, int M,
                     llmc_sparsity_result *res) {
  double t0 = now_s();
  memset(res, 0, sizeof *res);
  if (s->cols != cols) return llmc_err("wanda: the statistics have %lld columns, the weight %lld", (long long)s->cols, (long long)cols);
  if (s->nsamples <= 0) return llmc_err("wanda: no calibration samples reached this module");
  if (N < 0 || (N > 0 && (M <= 0 || N > M || M > 4096))) return llmc_err("wanda: invalid N:M structure %d:%d", N, M);
  if (N > 0 && cols % M != 0 && cols % M < N)
    return llmc_err("wanda: %lld columns end with a group of %lld, fewer than N = %d", (long long)cols,
                    (long long)(cols % M), N);
  if (N == 0 && !(sparsity >= 0.0 && sparsity <= 1.0)) return llmc_err("wanda: sparsity must be in [0, 1] (got %g)", sparsity);
  int nt = 1;
#ifdef _OPENMP
  nt = omp_get_max_threads();
#endif
  float *rs = malloc(sizeof(float) * (size_t)cols);
  /* one row of sort entries per thread */
  metric_entry *ent = N == 0 ? malloc(sizeof(metric_entry) * (size_t)cols * (size_t)nt) : NULL;
  if (!rs || (N == 0 && !ent)) { free(rs); free(ent); return llmc_err("wanda: out of memory"); }
  /* sqrt(S), S = sum x^2 / n rounded to fp32 (llm-compressor keeps S in fp32) */
  for (int64_t j = 0; j < cols; j++) rs[j] = sqrtf((float)(s->sq[j] / (double)s->nsamples));
  int64_t k = N == 0 ? (int64_t)((double)cols * sparsity) : 0;
  int64_t z = 0;
  #pragma omp parallel for schedule(static) reduction(+ : z) num_threads(nt)
  for (int64_t r = 0; r < rows; r++) {
    float *w = W + r * cols;
    if (N > 0) {
      for (int64_t ii = 0; ii < cols; ii += M) {
        int g = (int)(cols - ii < M ? cols - ii : M);
        float sc[4096];
        unsigned char mk[4096];
        for (int j = 0; j < g; j++) mk[j] = 0;
        for (int j = 0; j < g; j++) sc[j] = fabsf(w[ii + j]) * rs[ii + j];
        mark_smallest(sc, g, N, mk);
        for (int j = 0; j < g; j++)
          if (mk[j]) w[ii + j] = 0.0f;
      }
    } else {
      int tid = 0;
#ifdef _OPENMP
      tid = omp_get_thread_num();
#endif
      metric_entry *e = ent + (size_t)tid * (size_t)cols;
      for (int64_t j = 0; j < cols; j++) { e[j].key = fabsf(w[j]) * rs[j]; e[j].idx = j; }
      qsort(e, (size_t)cols, sizeof *e, cmp_metric);
      for (int64_t j = 0; j < k; j++) w[e[j].idx] = 0.0f;
    }
    for (int64_t j = 0; j < cols; j++) z += w[j] == 0.0f;
  }
  free(rs);
  free(ent);
  res->zeros = z;
  res->seconds = now_s() - t0;
  return 0;
}
