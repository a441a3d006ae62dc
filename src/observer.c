/*
** observer.c — activation statistics accumulators (observer.h).
**
** One update: per column, the min / max / sum |x| over the batch's rows
** (a column block per OpenMP task, rows in order, columns vectorised), then
** the per-column values are folded into the statistics in column order,
** rounded to D, and combined with the running ones by the update rule.
*/
/* The selects below compare floats; GCC only if-converts (and so
** vectorises) them when compares are not treated as trapping.  llmc never
** reads the FP exception flags, so the option changes no result.  The EMA
** must keep multiply and add separate (PyTorch rounds after each op). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "fp-contract=off")
#endif
#include "observer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

static const char *const reduce_names[] = {"tensor", "channel", "head"};
static const char *const update_names[] = {"static_minmax", "minmax", "memoryless_minmax"};

const char *llmc_obs_reduce_name(llmc_obs_reduce r) {
  return (unsigned)r < 3 ? reduce_names[r] : "?";
}
const char *llmc_obs_update_name(llmc_obs_update_rule u) {
  return (unsigned)u < 3 ? update_names[u] : "?";
}
int llmc_obs_reduce_from_name(const char *name) {
  for (int i = 0; i < 3; i++)
    if (name && strcmp(name, reduce_names[i]) == 0) return i;
  return -1;
}
int llmc_obs_update_from_name(const char *name) {
  for (int i = 0; i < 3; i++)
    if (name && strcmp(name, update_names[i]) == 0) return i;
  return -1;
}

static int is_float_dtype(llmc_dtype d) { return d == LLMC_BF16 || d == LLMC_F16 || d == LLMC_F32; }

/* rnd_D(v) as a float (NaN stays NaN) */
static float rnd(float v, llmc_dtype D) {
  switch (D) {
    case LLMC_BF16: return llmc_round_bf16(v);
    case LLMC_F16: return llmc_round_f16(v);
    default: return v;
  }
}

/* NaN-propagating min / max (torch.minimum / maximum): a NaN in either wins */
static inline float nmin(float a, float b) { return (a < b || a != a) ? a : (b != b ? b : (b < a ? b : a)); }
static inline float nmax(float a, float b) { return (a > b || a != a) ? a : (b != b ? b : (b > a ? b : a)); }

void llmc_obs_free(llmc_obs *o) {
  if (!o) return;
  free(o->min);
  free(o->max);
  free(o->abs_sum);
  memset(o, 0, sizeof *o);
}

void llmc_obs_reset(llmc_obs *o) {
  if (!o || !o->min) return;
  for (int64_t i = 0; i < o->nstats; i++) {
    o->min[i] = 0.0f;
    o->max[i] = 0.0f;
    o->abs_sum[i] = 0.0;
  }
  o->batches = 0;
  o->tokens = 0;
}

int llmc_obs_init(llmc_obs *o, llmc_obs_reduce r, llmc_obs_update_rule u, int64_t cols,
                  int64_t heads, double c, llmc_dtype D) {
  memset(o, 0, sizeof *o);
  if ((unsigned)r > LLMC_OBS_HEAD) return llmc_err("observer: bad reduce %d", (int)r);
  if ((unsigned)u > LLMC_OBS_MEMORYLESS_MINMAX) return llmc_err("observer: bad update rule %d", (int)u);
  if ((unsigned)D >= LLMC_DTYPE_COUNT || !is_float_dtype(D))
    return llmc_err("observer: statistics dtype must be bfloat16, float16 or float32 (got %s)",
                    (unsigned)D < LLMC_DTYPE_COUNT ? llmc_dtype_name(D) : "?");
  if (cols < 1) return llmc_err("observer: cols must be >= 1 (got %lld)", (long long)cols);
  int64_t n = 1;
  if (r == LLMC_OBS_CHANNEL) n = cols;
  if (r == LLMC_OBS_HEAD) {
    if (heads < 1 || cols % heads != 0)
      return llmc_err("observer: heads (%lld) must be >= 1 and divide cols (%lld)", (long long)heads,
                      (long long)cols);
    n = heads;
  }
  if (u == LLMC_OBS_MINMAX && !(c > 0.0 && c <= 1.0))
    return llmc_err("observer: averaging_constant must be in (0, 1] (got %g)", c);
  o->reduce = r;
  o->update = u;
  o->cols = cols;
  o->heads = r == LLMC_OBS_HEAD ? heads : 0;
  o->nstats = n;
  o->averaging_constant = c;
  o->dtype = D;
  o->min = calloc((size_t)n, sizeof(float));
  o->max = calloc((size_t)n, sizeof(float));
  o->abs_sum = calloc((size_t)n, sizeof(double));
  if (!o->min || !o->max || !o->abs_sum) {
    llmc_obs_free(o);
    return llmc_err("observer: out of memory for %lld statistics", (long long)n);
  }
  return 0;
}

/* Column block width of one task: a multiple of 16 (vector friendly); it
** never changes a result, only how the work is split. */
#define OBS_BLOCK 256

/* Per-column min / max / sum|x| over rows for columns [c0, c0+w).  The
** NaN-sticky selects vectorise: once a lane holds NaN no compare replaces it. */
#define COL_LOOP(T, CONV)                                                   \
  do {                                                                      \
    const T *px = (const T *)x;                                             \
    for (int64_t r = 0; r < rows; r++) {                                    \
      const T *row = px + r * cols + c0;                                    \
      _Pragma("omp simd")                                                   \
      for (int64_t j = 0; j < w; j++) {                                     \
        float v = CONV(row[j]);                                             \
        float m = lo[j], M = hi[j];                                         \
        lo[j] = (v < m || v != v) ? v : m;                                  \
        hi[j] = (v > M || v != v) ? v : M;                                  \
        as[j] += fabs((double)v);                                           \
      }                                                                     \
    }                                                                       \
  } while (0)

#define ID(v) (v)

static void column_stats(const void *x, llmc_dtype xd, int64_t rows, int64_t cols, int64_t c0,
                         int64_t w, float *lo, float *hi, double *as) {
  /* +-inf are replaced by the first row (rows >= 1) */
  for (int64_t j = 0; j < w; j++) {
    lo[j] = INFINITY;
    hi[j] = -INFINITY;
    as[j] = 0.0;
  }
  switch (xd) {
    case LLMC_BF16: COL_LOOP(uint16_t, llmc_bf16_to_f32); break;
    case LLMC_F16: COL_LOOP(uint16_t, llmc_f16_to_f32); break;
    default: COL_LOOP(float, ID); break;
  }
}

int llmc_obs_update(llmc_obs *o, const void *x, llmc_dtype xd, int64_t rows, int64_t cols) {
  if (!o || !o->min) return llmc_err("observer: not initialised (or already freed)");
  if ((unsigned)xd >= LLMC_DTYPE_COUNT || !is_float_dtype(xd))
    return llmc_err("observer: input dtype must be bfloat16, float16 or float32 (got %s)",
                    (unsigned)xd < LLMC_DTYPE_COUNT ? llmc_dtype_name(xd) : "?");
  if (cols != o->cols)
    return llmc_err("observer: input has %lld columns, the observer was made for %lld",
                    (long long)cols, (long long)o->cols);
  if (rows < 1) return llmc_err("observer: input has %lld rows (need >= 1)", (long long)rows);
  if (!x) return llmc_err("observer: no input data");

  float *lo = malloc((size_t)cols * sizeof(float));
  float *hi = malloc((size_t)cols * sizeof(float));
  double *as = malloc((size_t)cols * sizeof(double));
  if (!lo || !hi || !as) {
    free(lo);
    free(hi);
    free(as);
    return llmc_err("observer: out of memory for %lld columns", (long long)cols);
  }
  int64_t nb = (cols + OBS_BLOCK - 1) / OBS_BLOCK;
  /* tiny batches are not worth a parallel region */
#pragma omp parallel for schedule(static) if (rows * cols >= 32768 && nb > 1)
  for (int64_t b = 0; b < nb; b++) {
    int64_t c0 = b * OBS_BLOCK, w = cols - c0 < OBS_BLOCK ? cols - c0 : OBS_BLOCK;
    column_stats(x, xd, rows, cols, c0, w, lo + c0, hi + c0, as + c0);
  }

  /* fold columns into statistics (column order), round to D, update */
  const int64_t ns = o->nstats, per = cols / ns;
  const llmc_dtype D = o->dtype;
  const int first = o->batches == 0;
  const float keep = (float)(1.0 - o->averaging_constant), take = (float)o->averaging_constant;
  for (int64_t s = 0; s < ns; s++) {
    float m = lo[s * per], M = hi[s * per];
    double a = as[s * per];
    for (int64_t j = s * per + 1; j < (s + 1) * per; j++) {
      m = nmin(m, lo[j]);
      M = nmax(M, hi[j]);
      a += as[j];
    }
    m = rnd(m, D);
    M = rnd(M, D);
    if (first || o->update == LLMC_OBS_MEMORYLESS_MINMAX) {
      o->min[s] = m;
      o->max[s] = M;
    } else if (o->update == LLMC_OBS_STATIC_MINMAX) {
      o->min[s] = nmin(o->min[s], m);
      o->max[s] = nmax(o->max[s], M);
    } else {
      o->min[s] = rnd(rnd(o->min[s] * keep, D) + rnd(m * take, D), D);
      o->max[s] = rnd(rnd(o->max[s] * keep, D) + rnd(M * take, D), D);
    }
    o->abs_sum[s] += a;
  }
  o->batches++;
  o->tokens += rows;
  free(lo);
  free(hi);
  free(as);
  return 0;
}
