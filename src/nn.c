/*
** nn.c — fused CPU ops of the forward pass (see nn.h for shapes and rules).
**
** Structure: small leaf kernels over contiguous f32 rows (dot, axpy, exp,
** bf16 upcast) that the compiler vectorises, compiled in several ISA
** versions (target_clones: AVX-512, AVX2, baseline) because the build
** targets x86-64-v2; the ops call them from OpenMP loops over rows / heads.
** Matrix products go to OpenBLAS sgemm from the calling thread.
*/
#include "nn.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"

/* `omp simd` lets GCC vectorise the f32 reductions (it licenses the
** reassociation); clang warns when it cannot honour the pragma, so the
** pragmas are GCC-only. */
#define NN_PRAGMA(x) _Pragma(#x)
#if defined(__GNUC__) && !defined(__clang__)
#define NN_SIMD NN_PRAGMA(omp simd)
#define NN_SIMD_RED(op, v) NN_PRAGMA(omp simd reduction(op : v))
#else
#define NN_SIMD
#define NN_SIMD_RED(op, v)
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define NN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NN_CLONES
#endif

/* ---- profiling ---------------------------------------------------------------- */

/* nanoseconds per category; atomics so that concurrent callers stay correct */
static _Atomic uint64_t prof_gemm_ns, prof_convert_ns, prof_attention_ns;
static _Atomic uint64_t prof_flops;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void llmc_nn_profile_get(llmc_nn_profile *out) {
  out->gemm_s = (double)atomic_load(&prof_gemm_ns) * 1e-9;
  out->convert_s = (double)atomic_load(&prof_convert_ns) * 1e-9;
  out->attention_s = (double)atomic_load(&prof_attention_ns) * 1e-9;
  out->gemm_flops = (double)atomic_load(&prof_flops);
}

void llmc_nn_profile_reset(void) {
  atomic_store(&prof_gemm_ns, 0);
  atomic_store(&prof_convert_ns, 0);
  atomic_store(&prof_attention_ns, 0);
  atomic_store(&prof_flops, 0);
}

/* ---- leaf kernels --------------------------------------------------------------- */

/* exp for f32 that vectorises (no libm call): Cody-Waite reduction by ln2
** and a degree-7 Taylor polynomial on |r| <= ln2/2; max relative error
** about 2 ulp.  Inputs are clamped to [-87.33, 88]: below, the result is
** 2^-126 (never used: masked scores are skipped, not exponentiated). */
static inline float nn_expf(float x) {
  x = x < -87.33654f ? -87.33654f : x;
  x = x > 88.0f ? 88.0f : x;
  /* round to nearest by the 1.5 * 2^23 trick: no libm call, so it vectorises */
  float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.98412698e-4f;
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  union { int32_t i; float f; } s = {.i = ((int32_t)n + 127) << 23};
  return p * s.f;
}

NN_CLONES static float k_dot(const float *a, const float *b, int64_t n) {
  float s = 0.0f;
NN_SIMD_RED(+, s)
  for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/* y += a * x */
NN_CLONES static void k_axpy(float *y, float a, const float *x, int64_t n) {
NN_SIMD
  for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

NN_CLONES static float k_max(const float *x, int64_t n) {
  float m = -INFINITY;
NN_SIMD_RED(max, m)
  for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

/* x[i] = exp(x[i] - m); returns the sum (f32 lanes, then added up) */
NN_CLONES static float k_exp_sub_sum(float *x, float m, int64_t n) {
  float s = 0.0f;
NN_SIMD_RED(+, s)
  for (int64_t i = 0; i < n; i++) {
    float e = nn_expf(x[i] - m);
    x[i] = e;
    s += e;
  }
  return s;
}

/* sum exp(x[i] - m), x untouched, accumulated in f64 across f32 blocks */
NN_CLONES static double k_sum_exp(const float *x, float m, int64_t n) {
  double total = 0.0;
  for (int64_t b = 0; b < n; b += 1024) {
    int64_t e = b + 1024 < n ? b + 1024 : n;
    float s = 0.0f;
NN_SIMD_RED(+, s)
    for (int64_t i = b; i < e; i++) s += nn_expf(x[i] - m);
    total += s;
  }
  return total;
}

NN_CLONES static void k_bf16_to_f32(float *dst, const uint16_t *src, int64_t n) {
NN_SIMD
  for (int64_t i = 0; i < n; i++) {
    union { uint32_t u; float f; } c = {.u = (uint32_t)src[i] << 16};
    dst[i] = c.f;
  }
}

NN_CLONES static void k_silu_mul(float *y, const float *g, const float *u, int64_t n) {
NN_SIMD
  for (int64_t i = 0; i < n; i++) {
    float x = g[i];
    y[i] = (x / (1.0f + nn_expf(-x))) * u[i];
  }
}

/* one row of n elements of any float dtype to f32 */
static void row_to_f32(float *dst, const void *src, llmc_dtype dt, int64_t n) {
  switch (dt) {
    case LLMC_F32: memcpy(dst, src, sizeof(float) * (size_t)n); break;
    case LLMC_BF16: k_bf16_to_f32(dst, src, n); break;
    case LLMC_F16: {
      const uint16_t *s = src;
      for (int64_t i = 0; i < n; i++) dst[i] = llmc_f16_to_f32(s[i]);
      break;
    }
    default: {
      size_t isz = llmc_dtype_size(dt);
      for (int64_t i = 0; i < n; i++) dst[i] = llmc_load_as_f32((const char *)src + (size_t)i * isz, dt);
    }
  }
}

/* ---- helpers -------------------------------------------------------------------- */

static const char *shp(const llmc_tensor *t, char *buf, size_t n) { return llmc_shape_str(t->ndim, t->shape, buf, n); }

/* contiguous f32 version of t (t retained when it already is one) */
static llmc_tensor *f32c(const llmc_tensor *t) { return llmc_tensor_to_dtype((llmc_tensor *)t, LLMC_F32); }

/* contiguous int64 version of t */
static llmc_tensor *i64c(const llmc_tensor *t, const char *op, const char *arg) {
  if (llmc_dtype_is_float(t->dtype)) {
    llmc_err("%s: %s must be an integer tensor, got %s", op, arg, llmc_dtype_name(t->dtype));
    return NULL;
  }
  return llmc_tensor_to_dtype((llmc_tensor *)t, LLMC_I64);
}

static int check_float(const llmc_tensor *t, const char *op, const char *arg) {
  if (!llmc_dtype_is_float(t->dtype))
    return llmc_err("%s: %s must be a float tensor, got %s", op, arg, llmc_dtype_name(t->dtype));
  if (llmc_tensor_is_cuda(t)) return llmc_err("%s: %s is on a CUDA device; these ops run on the CPU", op, arg);
  return 0;
}


/* ---- gemm inside OpenMP ------------------------------------------------------------- */

/* OpenBLAS (pthreads build) and libgomp each keep a pool of threads that
** spin for a while after their work.  Alternating multithreaded sgemm calls
** with OpenMP loops therefore makes the two pools fight for the same cores
** (measured: a tiny-llama forward pass 4-6x slower).  So the ops split their
** gemms themselves: inside one OpenMP region each thread calls a
** single-threaded sgemm on its slice.  OpenBLAS is switched to one thread
** for the duration of the region and restored after it. */
typedef struct { int saved; } blas_guard;
static blas_guard blas_single(void) {
  blas_guard g = {openblas_get_num_threads()};
  if (g.saved != 1) openblas_set_num_threads(1);
  return g;
}
static void blas_restore(blas_guard g) {
  if (g.saved != 1) openblas_set_num_threads(g.saved);
}


/* ---- linear ----------------------------------------------------------------------- */

#define LINEAR_FUSED_ROWS 4           /* up to this many rows: convert+dot, no gemm */

llmc_tensor *llmc_nn_linear(const llmc_tensor *x, const llmc_tensor *w, const llmc_tensor *bias) {
  char s1[128], s2[128];
  if (check_float(x, "linear", "input") < 0 || check_float(w, "linear", "weight") < 0) return NULL;
  if (w->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1]) {
    llmc_err("linear: input %s does not match weight %s", shp(x, s1, sizeof s1), shp(w, s2, sizeof s2));
    return NULL;
  }
  int64_t in = w->shape[1], out = w->shape[0];
  if (bias && (bias->ndim != 1 || bias->shape[0] != out)) {
    llmc_err("linear: bias %s does not match weight %s", shp(bias, s1, sizeof s1), shp(w, s2, sizeof s2));
    return NULL;
  }
  if (in > INT32_MAX || out > INT32_MAX) { llmc_err("linear: weight too large for sgemm"); return NULL; }
  int64_t rows = in ? llmc_tensor_numel(x) / in : 0;
  if (rows > INT32_MAX) { llmc_err("linear: too many input rows"); return NULL; }
  int64_t oshape[LLMC_MAX_DIMS];
  memcpy(oshape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
  oshape[x->ndim - 1] = out;

  llmc_tensor *xc = f32c(x);
  llmc_tensor *wc = xc ? llmc_tensor_contiguous((llmc_tensor *)w) : NULL;
  llmc_tensor *y = wc ? llmc_tensor_empty(LLMC_F32, x->ndim, oshape) : NULL;
  if (!y) goto fail;
  const float *X = llmc_tensor_data(xc);
  float *Y = llmc_tensor_data(y);
  if (rows == 0 || out == 0) goto bias;
  if (in == 0) { memset(Y, 0, sizeof(float) * (size_t)(rows * out)); goto bias; }

  const char *W = llmc_tensor_data(wc);
  llmc_dtype wdt = wc->dtype;
  size_t rowbytes = (size_t)in * llmc_dtype_size(wdt);
  int oom = 0;
  uint64_t t0 = now_ns(), conv0 = 0;
  if (rows <= LINEAR_FUSED_ROWS) {
    /* decoding: one pass over the weight (a gemm would repack all of it for
    ** one row), each row upcast once into a per-thread buffer (f32 rows are
    ** used in place) and dotted with every input row */
#pragma omp parallel
    {
      float *row = wdt == LLMC_F32 ? NULL : malloc(sizeof(float) * (size_t)in);
      if (wdt != LLMC_F32 && !row) {
#pragma omp atomic write
        oom = 1;
      }
#pragma omp for schedule(static)
      for (int64_t o = 0; o < out; o++) {
        const float *wr;
        if (wdt == LLMC_F32) wr = (const float *)W + o * in;
        else if (row) { row_to_f32(row, W + (size_t)o * rowbytes, wdt, in); wr = row; }
        else continue;
        for (int64_t r = 0; r < rows; r++) Y[r * out + o] = k_dot(X + r * in, wr, in);
      }
      free(row);
    }
  } else {
    /* the output columns (weight rows) in chunks whose size depends on the
    ** shape only, so every output element comes from the same sgemm call
    ** whatever the thread count (OpenBLAS picks its kernels by size): f32
    ** weights go straight to sgemm, others are upcast a chunk at a time into
    ** a per-thread buffer first */
    int64_t ch = out >= 4096 ? 256 : 64;
    int64_t nch = (out + ch - 1) / ch;
    blas_guard g = blas_single();
#pragma omp parallel
    {
      int me = omp_get_thread_num();
      float *buf = NULL;
      if (wdt != LLMC_F32) {
        buf = malloc(sizeof(float) * (size_t)(ch * in));
        if (!buf) {
#pragma omp atomic write
          oom = 1;
        }
      }
#pragma omp for schedule(static)
      for (int64_t c = 0; c < nch; c++) {
        int64_t o0 = c * ch, n = out - o0 < ch ? out - o0 : ch;
        const float *wb;
        if (wdt == LLMC_F32) {
          wb = (const float *)W + o0 * in;
        } else {
          if (!buf) continue;
          uint64_t c0 = me == 0 ? now_ns() : 0;
          for (int64_t o = 0; o < n; o++) row_to_f32(buf + o * in, W + (size_t)(o0 + o) * rowbytes, wdt, in);
          if (me == 0) conv0 += now_ns() - c0;
          wb = buf;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)n, (int)in, 1.0f, X, (int)in, wb,
                    (int)in, 0.0f, Y + o0, (int)out);
      }
      free(buf);
    }
    blas_restore(g);
  }
  {
    /* the conversion share is thread 0's (every thread upcasts the same amount) */
    uint64_t total = now_ns() - t0;
    atomic_fetch_add(&prof_convert_ns, conv0);
    atomic_fetch_add(&prof_gemm_ns, total > conv0 ? total - conv0 : 0);
    atomic_fetch_add(&prof_flops, (uint64_t)(2 * rows * out * in));
  }
  if (oom) { llmc_err("linear: out of memory"); goto fail; }
bias:
  if (bias) {
    llmc_tensor *bc = f32c(bias);
    if (!bc) goto fail;
    const float *bb = llmc_tensor_data(bc);
#pragma omp parallel for schedule(static) if (rows * out > 65536)
    for (int64_t r = 0; r < rows; r++)
      for (int64_t o = 0; o < out; o++) Y[r * out + o] += bb[o];
    llmc_tensor_free(bc);
  }
  llmc_tensor_free(xc);
  llmc_tensor_free(wc);
  return y;
fail:
  llmc_tensor_free(xc);
  llmc_tensor_free(wc);
  llmc_tensor_free(y);
  return NULL;
}

/* ---- embedding ---------------------------------------------------------------------- */

llmc_tensor *llmc_nn_embedding(const llmc_tensor *weight, const llmc_tensor *ids) {
  char s1[128];
  if (check_float(weight, "embedding", "weight") < 0) return NULL;
  if (weight->ndim != 2) { llmc_err("embedding: weight must be [vocab, hidden], got %s", shp(weight, s1, sizeof s1)); return NULL; }
  if (ids->ndim + 1 > LLMC_MAX_DIMS) { llmc_err("embedding: ids have too many dims"); return NULL; }
  llmc_tensor *ic = i64c(ids, "embedding", "ids");
  if (!ic) return NULL;
  int64_t V = weight->shape[0], H = weight->shape[1], n = llmc_tensor_numel(ic);
  const int64_t *id = llmc_tensor_data(ic);
  for (int64_t i = 0; i < n; i++)
    if (id[i] < 0 || id[i] >= V) {
      llmc_err("embedding: token id %lld at position %lld is outside the vocabulary [0, %lld)", (long long)id[i],
               (long long)i, (long long)V);
      llmc_tensor_free(ic);
      return NULL;
    }
  int64_t shape[LLMC_MAX_DIMS];
  memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
  shape[ids->ndim] = H;
  llmc_tensor *wc = llmc_tensor_contiguous((llmc_tensor *)weight);
  llmc_tensor *y = wc ? llmc_tensor_empty(LLMC_F32, ids->ndim + 1, shape) : NULL;
  if (y) {
    const char *W = llmc_tensor_data(wc);
    size_t rowbytes = (size_t)H * llmc_dtype_size(wc->dtype);
    float *Y = llmc_tensor_data(y);
    llmc_dtype wdt = wc->dtype;
#pragma omp parallel for schedule(static) if (n * H > 65536)
    for (int64_t i = 0; i < n; i++) row_to_f32(Y + i * H, W + (size_t)id[i] * rowbytes, wdt, H);
  }
  llmc_tensor_free(wc);
  llmc_tensor_free(ic);
  return y;
}

/* ---- RMSNorm ----------------------------------------------------------------------- */

llmc_tensor *llmc_nn_rmsnorm(const llmc_tensor *x, const llmc_tensor *weight, double eps) {
  char s1[128], s2[128];
  if (check_float(x, "rmsnorm", "input") < 0 || check_float(weight, "rmsnorm", "weight") < 0) return NULL;
  if (x->ndim < 1 || weight->ndim != 1 || weight->shape[0] != x->shape[x->ndim - 1]) {
    llmc_err("rmsnorm: input %s does not match weight %s", shp(x, s1, sizeof s1), shp(weight, s2, sizeof s2));
    return NULL;
  }
  int64_t D = weight->shape[0], rows = D ? llmc_tensor_numel(x) / D : 0;
  llmc_tensor *xc = f32c(x), *wc = xc ? f32c(weight) : NULL;
  llmc_tensor *y = wc ? llmc_tensor_empty(LLMC_F32, x->ndim, x->shape) : NULL;
  if (y) {
    const float *X = llmc_tensor_data(xc), *Wt = llmc_tensor_data(wc);
    float *Y = llmc_tensor_data(y);
    float feps = (float)eps;
#pragma omp parallel for schedule(static) if (rows * D > 32768)
    for (int64_t r = 0; r < rows; r++) {
      const float *xr = X + r * D;
      float *yr = Y + r * D;
      double ss = 0.0;
      for (int64_t i = 0; i < D; i++) ss += (double)xr[i] * (double)xr[i];
      float var = (float)(ss / (double)D);
      float inv = 1.0f / sqrtf(var + feps);
      for (int64_t i = 0; i < D; i++) {
        float nrm = xr[i] * inv;   /* rounded to the input dtype (f32) first, as HF */
        yr[i] = Wt[i] * nrm;
      }
    }
  }
  llmc_tensor_free(xc);
  llmc_tensor_free(wc);
  return y;
}

/* ---- rotary embeddings ------------------------------------------------------------- */

int llmc_nn_rope_tables(const llmc_tensor *inv_freq, const llmc_tensor *positions, double attention_scaling,
                        llmc_tensor **cos_out, llmc_tensor **sin_out) {
  char s1[128];
  *cos_out = *sin_out = NULL;
  if (check_float(inv_freq, "rope_tables", "inv_freq") < 0) return -1;
  if (inv_freq->ndim != 1) return llmc_err("rope_tables: inv_freq must be 1-D, got %s", shp(inv_freq, s1, sizeof s1));
  if (positions->ndim != 2) return llmc_err("rope_tables: positions must be [B, T], got %s", shp(positions, s1, sizeof s1));
  int64_t half = inv_freq->shape[0], hd = 2 * half;
  int64_t B = positions->shape[0], T = positions->shape[1];
  llmc_tensor *pc = i64c(positions, "rope_tables", "positions");
  llmc_tensor *fc = pc ? f32c(inv_freq) : NULL;
  int64_t shape[3] = {B, T, hd};
  llmc_tensor *c = fc ? llmc_tensor_empty(LLMC_F32, 3, shape) : NULL;
  llmc_tensor *s = c ? llmc_tensor_empty(LLMC_F32, 3, shape) : NULL;
  if (!s) {
    llmc_tensor_free(pc); llmc_tensor_free(fc); llmc_tensor_free(c);
    return -1;
  }
  const int64_t *P = llmc_tensor_data(pc);
  const float *F = llmc_tensor_data(fc);
  float *C = llmc_tensor_data(c), *S = llmc_tensor_data(s);
  float sc = (float)attention_scaling;
#pragma omp parallel for schedule(static) if (B * T * hd > 32768)
  for (int64_t i = 0; i < B * T; i++) {
    float pos = (float)P[i];
    for (int64_t j = 0; j < half; j++) {
      float f = pos * F[j];   /* f32 product, as HF's f32 matmul of one term */
      float cv = cosf(f) * sc, sv = sinf(f) * sc;
      C[i * hd + j] = C[i * hd + j + half] = cv;
      S[i * hd + j] = S[i * hd + j + half] = sv;
    }
  }
  llmc_tensor_free(pc);
  llmc_tensor_free(fc);
  *cos_out = c;
  *sin_out = s;
  return 0;
}

llmc_tensor *llmc_nn_rope(const llmc_tensor *x, const llmc_tensor *cos, const llmc_tensor *sin) {
  char s1[128], s2[128];
  if (check_float(x, "rope", "input") < 0) return NULL;
  if (x->ndim != 4 || cos->ndim != 3 || !llmc_tensor_same_shape(cos, sin) || cos->shape[0] != x->shape[0] ||
      cos->shape[1] != x->shape[1] || cos->shape[2] != x->shape[3] || (x->shape[3] & 1)) {
    llmc_err("rope: input %s (expected [B, T, heads, head_dim]) does not match tables %s", shp(x, s1, sizeof s1),
             shp(cos, s2, sizeof s2));
    return NULL;
  }
  int64_t B = x->shape[0], T = x->shape[1], n = x->shape[2], hd = x->shape[3], half = hd / 2;
  llmc_tensor *xc = f32c(x), *cc = xc ? f32c(cos) : NULL, *sc = cc ? f32c(sin) : NULL;
  llmc_tensor *y = sc ? llmc_tensor_empty(LLMC_F32, 4, x->shape) : NULL;
  if (y) {
    const float *X = llmc_tensor_data(xc), *C = llmc_tensor_data(cc), *S = llmc_tensor_data(sc);
    float *Y = llmc_tensor_data(y);
#pragma omp parallel for schedule(static) if (B * T * n * hd > 32768)
    for (int64_t bt = 0; bt < B * T; bt++) {
      const float *c = C + bt * hd, *s = S + bt * hd;
      for (int64_t h = 0; h < n; h++) {
        const float *xr = X + (bt * n + h) * hd;
        float *yr = Y + (bt * n + h) * hd;
        for (int64_t j = 0; j < half; j++) {
          float a = xr[j] * c[j], b = (-xr[j + half]) * s[j];
          yr[j] = a + b;
          float a2 = xr[j + half] * c[j + half], b2 = xr[j] * s[j + half];
          yr[j + half] = a2 + b2;
        }
      }
    }
  }
  llmc_tensor_free(xc);
  llmc_tensor_free(cc);
  llmc_tensor_free(sc);
  return y;
}

/* ---- attention ----------------------------------------------------------------------- */

static int attn_path_forced;
void llmc_nn_attention_force_path(int path) { attn_path_forced = path; }

/* visible key range [lo, hi] of query t (before the padding mask) */
static inline void key_range(const llmc_nn_attn_opts *o, int64_t t, int64_t S, int64_t *lo, int64_t *hi) {
  int64_t qpos = o->q_offset + t;
  *hi = o->causal ? (qpos < S - 1 ? qpos : S - 1) : S - 1;
  *lo = 0;
  if (o->window > 0 && qpos - o->window + 1 > 0) *lo = qpos - o->window + 1;
}

/* softmax over row[lo..hi] with masked keys excluded (set to 0); returns
** 0 when no key is visible (the whole row is then 0) */
static int masked_softmax(float *row, int64_t S, int64_t lo, int64_t hi, const uint8_t *km) {
  int any = 0;
  for (int64_t j = 0; j < S; j++) {
    int vis = j >= lo && j <= hi && (!km || km[j]);
    if (!vis) row[j] = -INFINITY;
    else any = 1;
  }
  if (!any) {
    memset(row, 0, sizeof(float) * (size_t)S);
    return 0;
  }
  float m = k_max(row + lo, hi - lo + 1);
  /* exp of -inf - m would be clamped, not 0: zero the masked ones after */
  float sum = k_exp_sub_sum(row + lo, m, hi - lo + 1);
  float inv = 1.0f / sum;
  for (int64_t j = 0; j < S; j++) {
    if (j < lo || j > hi || (km && !km[j])) row[j] = 0.0f;
    else row[j] = row[j] * inv;   /* HF normalises, then multiplies by V */
  }
  (void)sum;
  return 1;
}

llmc_tensor *llmc_nn_attention(const llmc_tensor *q, const llmc_tensor *k, const llmc_tensor *v,
                               const llmc_nn_attn_opts *o) {
  char s1[128], s2[128], s3[128];
  if (check_float(q, "attention", "q") < 0 || check_float(k, "attention", "k") < 0 ||
      check_float(v, "attention", "v") < 0)
    return NULL;
  if (q->ndim != 4 || k->ndim != 4 || !llmc_tensor_same_shape(k, v) || k->shape[0] != q->shape[0] ||
      k->shape[3] != q->shape[3] || k->shape[2] == 0 || q->shape[2] % k->shape[2] != 0) {
    llmc_err("attention: q %s, k %s, v %s: expected q [B, T, nh, hd], k and v [B, S, nkv, hd], nh a multiple of nkv",
             shp(q, s1, sizeof s1), shp(k, s2, sizeof s2), shp(v, s3, sizeof s3));
    return NULL;
  }
  int64_t B = q->shape[0], T = q->shape[1], nh = q->shape[2], hd = q->shape[3];
  int64_t S = k->shape[1], nkv = k->shape[2], grp = nh / nkv;
  if (o->key_mask && (o->key_mask->ndim != 2 || o->key_mask->shape[0] != B || o->key_mask->shape[1] != S)) {
    llmc_err("attention: key mask %s does not match [B=%lld, S=%lld]", shp(o->key_mask, s1, sizeof s1),
             (long long)B, (long long)S);
    return NULL;
  }
  uint64_t t_start = now_ns();
  /* operands: f32 with a contiguous head dim; other strides kept (cache views) */
  const llmc_tensor *in[3] = {q, k, v};
  llmc_tensor *own[3] = {NULL, NULL, NULL};
  for (int i = 0; i < 3; i++) {
    if (in[i]->dtype != LLMC_F32 || in[i]->stride[3] != 1 || in[i]->stride[2] != hd) {
      own[i] = llmc_tensor_to_dtype((llmc_tensor *)in[i], LLMC_F32);
      if (own[i] && !llmc_tensor_is_contiguous(own[i])) {
        llmc_tensor *c = llmc_tensor_clone(own[i]);
        llmc_tensor_free(own[i]);
        own[i] = c;
      }
      if (!own[i]) { for (int j = 0; j < 3; j++) llmc_tensor_free(own[j]); return NULL; }
      in[i] = own[i];
    }
  }
  llmc_tensor *maskc = NULL;
  if (o->key_mask) {
    maskc = llmc_tensor_to_dtype((llmc_tensor *)o->key_mask, LLMC_U8);
    if (!maskc) { for (int j = 0; j < 3; j++) llmc_tensor_free(own[j]); return NULL; }
  }
  const float *Q = llmc_tensor_data(in[0]), *K = llmc_tensor_data(in[1]), *Vv = llmc_tensor_data(in[2]);
  int64_t qsb = in[0]->stride[0], qst = in[0]->stride[1];
  int64_t ksb = in[1]->stride[0], kst = in[1]->stride[1];
  int64_t vsb = in[2]->stride[0], vst = in[2]->stride[1];
  const uint8_t *M = maskc ? llmc_tensor_data(maskc) : NULL;
  int64_t oshape[3] = {B, T, nh * hd};
  llmc_tensor *y = llmc_tensor_zeros(LLMC_F32, 3, oshape);
  float scale = (float)o->scale;
  int use_gemm = attn_path_forced ? attn_path_forced == 2 : T >= 32;
  int oom = 0;
  if (!y) goto done;
  float *Y = llmc_tensor_data(y);

  if (!use_gemm) {
    /* one (b, h, t) per iteration: dot products, softmax, weighted sum */
#pragma omp parallel
    {
      float *row = malloc(sizeof(float) * (size_t)(S ? S : 1));
      if (!row) {
#pragma omp atomic write
        oom = 1;
      }
#pragma omp for schedule(dynamic, 4)
      for (int64_t it = 0; it < B * nh * T; it++) {
        if (!row) continue;
        int64_t b = it / (nh * T), h = (it / T) % nh, t = it % T, g = h / grp;
        int64_t lo, hi;
        key_range(o, t, S, &lo, &hi);
        const float *qr = Q + b * qsb + t * qst + h * hd;
        const uint8_t *km = M ? M + b * S : NULL;
        for (int64_t j = lo; j <= hi; j++)
          if (!km || km[j]) row[j] = k_dot(qr, K + b * ksb + j * kst + g * hd, hd) * scale;
        float *yr = Y + (b * T + t) * nh * hd + h * hd;
        if (hi < lo || !masked_softmax(row, S, lo, hi, km)) continue;
        for (int64_t j = lo; j <= hi; j++)
          if (row[j] != 0.0f) k_axpy(yr, row[j], Vv + b * vsb + j * vst + g * hd, hd);
      }
      free(row);
    }
  } else {
    /* per (b, h) pair, one per OpenMP iteration, blocks of queries:
    ** scores = q k^T over the keys the block can see (single-threaded
    ** sgemm), masked softmax per row, out = P v (sgemm) */
    const int64_t TB = 128;
    blas_guard bg = blas_single();
#pragma omp parallel
    {
      float *P = malloc(sizeof(float) * (size_t)(TB * (S ? S : 1)));
      if (!P) {
#pragma omp atomic write
        oom = 1;
      }
#pragma omp for schedule(dynamic, 1)
      for (int64_t bh = 0; bh < B * nh; bh++) {
        if (!P) continue;
        int64_t b = bh / nh, h = bh % nh, g = h / grp;
        for (int64_t t0 = 0; t0 < T; t0 += TB) {
          int64_t nt = T - t0 < TB ? T - t0 : TB;
          int64_t lo0, hi0, lo1, hi1;
          key_range(o, t0, S, &lo0, &hi0);
          key_range(o, t0 + nt - 1, S, &lo1, &hi1);
          int64_t klo = lo0, khi = hi1;   /* keys any query of the block may see */
          if (khi < klo) continue;
          int64_t ns = khi - klo + 1;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nt, (int)ns, (int)hd, scale,
                      Q + b * qsb + t0 * qst + h * hd, (int)qst, K + b * ksb + klo * kst + g * hd, (int)kst, 0.0f, P,
                      (int)ns);
          const uint8_t *km = M ? M + b * S + klo : NULL;
          for (int64_t i = 0; i < nt; i++) {
            int64_t lo, hi;
            key_range(o, t0 + i, S, &lo, &hi);
            lo -= klo;
            hi -= klo;
            if (hi < lo) memset(P + i * ns, 0, sizeof(float) * (size_t)ns);
            else masked_softmax(P + i * ns, ns, lo, hi, km);
          }
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nt, (int)hd, (int)ns, 1.0f, P, (int)ns,
                      Vv + b * vsb + klo * vst + g * hd, (int)vst, 0.0f, Y + (b * T + t0) * nh * hd + h * hd,
                      (int)(nh * hd));
        }
      }
      free(P);
    }
    blas_restore(bg);
  }
done:
  for (int j = 0; j < 3; j++) llmc_tensor_free(own[j]);
  llmc_tensor_free(maskc);
  atomic_fetch_add(&prof_attention_ns, now_ns() - t_start);
  if (oom) {
    llmc_tensor_free(y);
    llmc_err("attention: out of memory (S = %lld keys)", (long long)S);
    return NULL;
  }
  return y;
}

/* ---- MLP ---------------------------------------------------------------------------- */

llmc_tensor *llmc_nn_silu_mul(const llmc_tensor *gate, const llmc_tensor *up) {
  char s1[128], s2[128];
  if (check_float(gate, "silu_mul", "gate") < 0 || check_float(up, "silu_mul", "up") < 0) return NULL;
  if (!llmc_tensor_same_shape(gate, up)) {
    llmc_err("silu_mul: gate %s and up %s differ", shp(gate, s1, sizeof s1), shp(up, s2, sizeof s2));
    return NULL;
  }
  llmc_tensor *gc = f32c(gate), *uc = gc ? f32c(up) : NULL;
  llmc_tensor *y = uc ? llmc_tensor_empty(LLMC_F32, gate->ndim, gate->shape) : NULL;
  if (y) {
    int64_t n = llmc_tensor_numel(y);
    const float *G = llmc_tensor_data(gc), *U = llmc_tensor_data(uc);
    float *Y = llmc_tensor_data(y);
    const int64_t CH = 16384;
#pragma omp parallel for schedule(static) if (n > 2 * CH)
    for (int64_t c = 0; c < (n + CH - 1) / CH; c++) {
      int64_t b = c * CH, e = b + CH < n ? b + CH : n;
      k_silu_mul(Y + b, G + b, U + b, e - b);
    }
  }
  llmc_tensor_free(gc);
  llmc_tensor_free(uc);
  return y;
}

/* ---- mixture of experts --------------------------------------------------------------- */

int llmc_nn_moe_route(const llmc_tensor *logits, int top_k, int renorm, llmc_tensor **ids_out,
                      llmc_tensor **weights_out) {
  char s1[128];
  *ids_out = *weights_out = NULL;
  if (check_float(logits, "moe_route", "router logits") < 0) return -1;
  if (logits->ndim != 2) return llmc_err("moe_route: router logits must be [N, E], got %s", shp(logits, s1, sizeof s1));
  int64_t N = logits->shape[0], E = logits->shape[1];
  if (top_k < 1 || top_k > E) return llmc_err("moe_route: top_k %d outside [1, %lld]", top_k, (long long)E);
  llmc_tensor *lc = f32c(logits);
  int64_t shape[2] = {N, top_k};
  llmc_tensor *ids = lc ? llmc_tensor_empty(LLMC_I64, 2, shape) : NULL;
  llmc_tensor *w = ids ? llmc_tensor_empty(LLMC_F32, 2, shape) : NULL;
  float *prob = w ? malloc(sizeof(float) * (size_t)(N * E)) : NULL;
  if (!prob) {
    llmc_tensor_free(lc); llmc_tensor_free(ids); llmc_tensor_free(w);
    return llmc_err("moe_route: out of memory");
  }
  const float *L = llmc_tensor_data(lc);
  int64_t *Ix = llmc_tensor_data(ids);
  float *Wt = llmc_tensor_data(w);
#pragma omp parallel for schedule(static) if (N * E > 65536)
  for (int64_t r = 0; r < N; r++) {
    float *p = prob + r * E;
    const float *l = L + r * E;
    float m = -INFINITY;
    for (int64_t e = 0; e < E; e++) m = l[e] > m ? l[e] : m;
    float s = 0.0f;
    for (int64_t e = 0; e < E; e++) { p[e] = expf(l[e] - m); s += p[e]; }
    for (int64_t e = 0; e < E; e++) p[e] = p[e] / s;
    /* selection: k passes of argmax, the first index winning ties */
    float sel = 0.0f;
    for (int k = 0; k < top_k; k++) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; e++) {
        int taken = 0;
        for (int j = 0; j < k; j++) taken |= Ix[r * top_k + j] == e;
        if (!taken && (best < 0 || p[e] > p[best])) best = e;
      }
      Ix[r * top_k + k] = best;
      Wt[r * top_k + k] = p[best];
      sel += p[best];
    }
    if (renorm)
      for (int k = 0; k < top_k; k++) Wt[r * top_k + k] = Wt[r * top_k + k] / sel;
  }
  free(prob);
  llmc_tensor_free(lc);
  *ids_out = ids;
  *weights_out = w;
  return 0;
}

int llmc_nn_moe_dispatch(const llmc_tensor *ids, int64_t num_experts, int64_t *offsets, int64_t **tokens,
                         int64_t **slots) {
  char s1[128];
  *tokens = *slots = NULL;
  if (ids->ndim != 2) return llmc_err("moe_dispatch: expert ids must be [N, K], got %s", shp(ids, s1, sizeof s1));
  llmc_tensor *ic = i64c(ids, "moe_dispatch", "expert ids");
  if (!ic) return -1;
  int64_t N = ids->shape[0], K = ids->shape[1];
  const int64_t *Ix = llmc_tensor_data(ic);
  for (int64_t i = 0; i < N * K; i++)
    if (Ix[i] < 0 || Ix[i] >= num_experts) {
      llmc_tensor_free(ic);
      return llmc_err("moe_dispatch: expert id %lld outside [0, %lld)", (long long)Ix[i], (long long)num_experts);
    }
  int64_t *tok = malloc(sizeof(int64_t) * (size_t)(N * K > 0 ? N * K : 1));
  int64_t *slt = malloc(sizeof(int64_t) * (size_t)(N * K > 0 ? N * K : 1));
  int64_t *fill = calloc((size_t)num_experts + 1, sizeof(int64_t));
  if (!tok || !slt || !fill) {
    free(tok); free(slt); free(fill); llmc_tensor_free(ic);
    return llmc_err("moe_dispatch: out of memory");
  }
  for (int64_t e = 0; e <= num_experts; e++) offsets[e] = 0;
  for (int64_t i = 0; i < N * K; i++) offsets[Ix[i] + 1]++;
  for (int64_t e = 0; e < num_experts; e++) offsets[e + 1] += offsets[e];
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < K; k++) {
      int64_t e = Ix[n * K + k], at = offsets[e] + fill[e]++;
      tok[at] = n;
      slt[at] = k;
    }
  free(fill);
  llmc_tensor_free(ic);
  *tokens = tok;
  *slots = slt;
  return 0;
}

llmc_tensor *llmc_nn_gather_rows(const llmc_tensor *x, const llmc_tensor *idx) {
  char s1[128];
  if (check_float(x, "gather_rows", "input") < 0) return NULL;
  if (x->ndim != 2 || idx->ndim != 1) {
    llmc_err("gather_rows: expected x [N, D] and idx [n], got x %s", shp(x, s1, sizeof s1));
    return NULL;
  }
  llmc_tensor *ic = i64c(idx, "gather_rows", "idx");
  if (!ic) return NULL;
  int64_t N = x->shape[0], D = x->shape[1], n = idx->shape[0];
  const int64_t *Ix = llmc_tensor_data(ic);
  for (int64_t i = 0; i < n; i++)
    if (Ix[i] < 0 || Ix[i] >= N) {
      llmc_tensor_free(ic);
      llmc_err("gather_rows: index %lld outside [0, %lld)", (long long)Ix[i], (long long)N);
      return NULL;
    }
  llmc_tensor *xc = f32c(x);
  int64_t shape[2] = {n, D};
  llmc_tensor *y = xc ? llmc_tensor_empty(LLMC_F32, 2, shape) : NULL;
  if (y) {
    const float *X = llmc_tensor_data(xc);
    float *Y = llmc_tensor_data(y);
#pragma omp parallel for schedule(static) if (n * D > 65536)
    for (int64_t i = 0; i < n; i++) memcpy(Y + i * D, X + Ix[i] * D, sizeof(float) * (size_t)D);
  }
  llmc_tensor_free(xc);
  llmc_tensor_free(ic);
  return y;
}

int llmc_nn_index_add_rows_(llmc_tensor *out, const llmc_tensor *idx, const llmc_tensor *src,
                            const llmc_tensor *scale) {
  char s1[128], s2[128];
  if (out->dtype != LLMC_F32 || !llmc_tensor_is_contiguous(out) || out->ndim != 2)
    return llmc_err("index_add_rows_: out must be a contiguous f32 [N, D] tensor, got %s %s",
                    llmc_dtype_name(out->dtype), shp(out, s1, sizeof s1));
  if (check_float(src, "index_add_rows_", "src") < 0) return -1;
  int64_t N = out->shape[0], D = out->shape[1];
  if (idx->ndim != 1 || src->ndim != 2 || src->shape[0] != idx->shape[0] || src->shape[1] != D ||
      (scale && (scale->ndim != 1 || scale->shape[0] != idx->shape[0])))
    return llmc_err("index_add_rows_: src %s / idx / scale do not match out %s", shp(src, s1, sizeof s1),
                    shp(out, s2, sizeof s2));
  if (llmc_tensor_make_writable(out) < 0) return -1;
  llmc_tensor *ic = i64c(idx, "index_add_rows_", "idx");
  llmc_tensor *sc = ic ? f32c(src) : NULL;
  llmc_tensor *wc = (sc && scale) ? f32c(scale) : NULL;
  if (!sc || (scale && !wc)) { llmc_tensor_free(ic); llmc_tensor_free(sc); return -1; }
  int64_t n = idx->shape[0];
  const int64_t *Ix = llmc_tensor_data(ic);
  int rc = 0;
  for (int64_t i = 0; i < n; i++)
    if (Ix[i] < 0 || Ix[i] >= N) { rc = llmc_err("index_add_rows_: index %lld outside [0, %lld)", (long long)Ix[i], (long long)N); break; }
  if (rc == 0) {
    const float *Sr = llmc_tensor_data(sc), *Wt = wc ? llmc_tensor_data(wc) : NULL;
    float *O = llmc_tensor_data(out);
    /* column blocks per thread: rows of idx may repeat, so threads split
    ** the columns, and each column sees the rows in order */
    const int64_t CB = 64;
    int64_t nb = (D + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (n * D > 65536)
    for (int64_t cb = 0; cb < nb; cb++) {
      int64_t c0 = cb * CB, c1 = c0 + CB < D ? c0 + CB : D;
      for (int64_t i = 0; i < n; i++) {
        float *orow = O + Ix[i] * D;
        const float *srow = Sr + i * D;
        if (Wt) {
          float w = Wt[i];
          for (int64_t c = c0; c < c1; c++) { float p = srow[c] * w; orow[c] += p; }
        } else {
          for (int64_t c = c0; c < c1; c++) orow[c] += srow[c];
        }
      }
    }
  }
  llmc_tensor_free(ic);
  llmc_tensor_free(sc);
  llmc_tensor_free(wc);
  return rc;
}

/* ---- losses and sampling ------------------------------------------------------------ */

int llmc_nn_cross_entropy(const llmc_tensor *logits, const llmc_tensor *targets, llmc_tensor **nll_out,
                          llmc_tensor **lse_out) {
  char s1[128], s2[128];
  if (nll_out) *nll_out = NULL;
  if (lse_out) *lse_out = NULL;
  if (check_float(logits, "cross_entropy", "logits") < 0) return -1;
  if (logits->ndim != 2 || targets->ndim != 1 || targets->shape[0] != logits->shape[0])
    return llmc_err("cross_entropy: logits %s and targets %s: expected [N, V] and [N]", shp(logits, s1, sizeof s1),
                    shp(targets, s2, sizeof s2));
  int64_t N = logits->shape[0], V = logits->shape[1];
  llmc_tensor *tc = i64c(targets, "cross_entropy", "targets");
  if (!tc) return -1;
  const int64_t *Tg = llmc_tensor_data(tc);
  for (int64_t i = 0; i < N; i++)
    if (Tg[i] >= V) {
      llmc_tensor_free(tc);
      return llmc_err("cross_entropy: target %lld at row %lld outside the vocabulary [0, %lld)", (long long)Tg[i],
                      (long long)i, (long long)V);
    }
  /* rows may be strided (a [B, T, V] slice), the vocab dim must be dense */
  llmc_tensor *lc = NULL;
  if (logits->dtype == LLMC_F32 && logits->stride[1] == 1) lc = llmc_tensor_retain((llmc_tensor *)logits);
  else lc = f32c(logits);
  int64_t one[1] = {N};
  llmc_tensor *nll = lc ? llmc_tensor_empty(LLMC_F64, 1, one) : NULL;
  llmc_tensor *lse = nll ? llmc_tensor_empty(LLMC_F64, 1, one) : NULL;
  if (!lse) {
    llmc_tensor_free(tc); llmc_tensor_free(lc); llmc_tensor_free(nll);
    return -1;
  }
  const float *L = llmc_tensor_data(lc);
  int64_t rs = lc->stride[0];
  double *Nl = llmc_tensor_data(nll), *Ls = llmc_tensor_data(lse);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; i++) {
    const float *row = L + i * rs;
    float m = k_max(row, V);
    double l = (double)m + log(k_sum_exp(row, m, V));
    Ls[i] = l;
    Nl[i] = Tg[i] < 0 ? 0.0 : l - (double)row[Tg[i]];
  }
  llmc_tensor_free(tc);
  llmc_tensor_free(lc);
  if (nll_out) *nll_out = nll; else llmc_tensor_free(nll);
  if (lse_out) *lse_out = lse; else llmc_tensor_free(lse);
  return 0;
}

/* splitmix64 step: a full-period 64-bit generator, good enough for sampling */
static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

typedef struct { float v; int64_t i; } scored;

static int cmp_scored_desc(const void *a, const void *b) {
  const scored *x = a, *y = b;
  if (x->v > y->v) return -1;
  if (x->v < y->v) return 1;
  return x->i < y->i ? -1 : (x->i > y->i);
}

int64_t llmc_nn_sample(const llmc_tensor *logits, double temperature, int64_t top_k, double top_p, uint64_t *rng) {
  char s1[128];
  if (check_float(logits, "sample", "logits") < 0) return -1;
  if (logits->ndim != 1 || logits->shape[0] < 1) {
    llmc_err("sample: logits must be one non-empty row [V], got %s", shp(logits, s1, sizeof s1));
    return -1;
  }
  int64_t V = logits->shape[0];
  llmc_tensor *lc = f32c(logits);
  if (!lc) return -1;
  const float *L = llmc_tensor_data(lc);
  int64_t best = 0;
  for (int64_t i = 1; i < V; i++)
    if (L[i] > L[best]) best = i;
  if (temperature <= 0.0) { llmc_tensor_free(lc); return best; }
  scored *c = malloc(sizeof(scored) * (size_t)V);
  if (!c) { llmc_tensor_free(lc); llmc_err("sample: out of memory"); return -1; }
  for (int64_t i = 0; i < V; i++) { c[i].v = (float)(L[i] / temperature); c[i].i = i; }
  llmc_tensor_free(lc);
  qsort(c, (size_t)V, sizeof *c, cmp_scored_desc);
  int64_t n = V;
  if (top_k > 0 && top_k < n) n = top_k;
  /* probabilities of the survivors (renormalised over them) */
  double m = c[0].v, sum = 0.0;
  double *p = malloc(sizeof(double) * (size_t)n);
  if (!p) { free(c); llmc_err("sample: out of memory"); return -1; }
  for (int64_t i = 0; i < n; i++) { p[i] = exp((double)c[i].v - m); sum += p[i]; }
  if (top_p < 1.0) {
    /* keep the smallest prefix whose mass reaches top_p (at least one token) */
    double cum = 0.0;
    int64_t keep = n;
    for (int64_t i = 0; i < n; i++) {
      cum += p[i] / sum;
      if (cum >= top_p) { keep = i + 1; break; }
    }
    n = keep;
    sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += p[i];
  }
  double u = (double)(rng_next(rng) >> 11) * 0x1.0p-53 * sum, acc = 0.0;
  int64_t pick = c[n - 1].i;
  for (int64_t i = 0; i < n; i++) {
    acc += p[i];
    if (u < acc) { pick = c[i].i; break; }
  }
  free(p);
  free(c);
  return pick;
}
