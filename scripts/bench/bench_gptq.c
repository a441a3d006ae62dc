/*
** bench_gptq.c — speed of the GPTQ building blocks in src/gptq.c.
**
** 1. Hessian accumulation: llmc_hessian_add (fp32 input: a sqrt(2)-scaled
**    copy, then ssyrk) and llmc_hessian_add_any (bf16 input, converted
**    first) on one batch of activations [tokens, cols], against OpenBLAS
**    called directly on the same buffer: cblas_ssyrk (upper triangle, no
**    copy) and cblas_sgemm (the full X^T X).  GFLOP/s count the flops each
**    call performs: ssyrk and llmc n(n+1)k, sgemm 2n^2k, so sgemm does
**    twice the work for the same Hessian; the "ms" column is the like-for-
**    like comparison.
** 2. llmc_gptq_solve for Linear shapes [rows = out, cols = in] with the
**    W4A16 preset (int4, symmetric, group 128), block size 128, actorder on
**    and off, on a Hessian of 4 sequences x 512 tokens of correlated
**    activations whose channel scales span ~3 orders of magnitude (rank
**    <= 2048, so for 11008 columns only the 1% dampening makes it positive
**    definite: ill-conditioned on purpose).  The solve is timed as a whole;
**    its two BLAS/LAPACK parts are timed again outside, with the same calls
**    on the same sizes: "chol" = spotrf + spotri + spotrf (H -> U with
**    H^-1 = U^T U) and "updates" = the cols/B sgemm block updates
**    W[:, i2:] -= Err @ U[i1:i2, i2:].  "rest" = solve - chol - updates:
**    the row-parallel in-block quantization loop, permutations, copies.
**    A last line per shape: three solves sharing one factorisation
**    (llmc_gptq_solve_shared, as q/k/v and gate/up do), time per module.
**
** Every figure is the median of N runs (default 3).  Threads: OpenMP and
** OpenBLAS both set to -t (default 2).  The 2-core development VM is shared,
** so the load average is printed next to each section.
**
** Build: CMake builds build/bench_gptq (Release: -O3 -march=x86-64-v2).
**   build/bench_gptq                    # both parts, 2 threads, 3 runs
**   build/bench_gptq hessian -t 1 -n 5
**   build/bench_gptq solve --big        # adds cols 11008 to the Hessian part
*/
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "error.h"
#include "gptq.h"
#include "quant.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void print_load(const char *when) {
  FILE *f = fopen("/proc/loadavg", "r");
  char buf[128] = "?";
  if (f) {
    if (!fgets(buf, sizeof buf, f)) strcpy(buf, "?");
    fclose(f);
  }
  buf[strcspn(buf, "\n")] = 0;
  printf("# load average (%s): %s\n", when, buf);
}

/* xorshift64* normal samples: deterministic, cheap */
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) {
  rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
  return (double)((rng * 2685821657736338717ull) >> 11) * 0x1p-53;
}
static float nrand(void) {
  double u1 = urand() + 1e-300, u2 = urand();
  return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

/* activations [tokens, cols]: per-channel scale lognormal (sigma 1.2, a few
** outlier channels x20) times (noise + a token factor shared by channels
** c = c' mod 16): correlated columns, like a transformer's hidden states */
static void make_acts(float *x, int64_t tokens, int64_t cols, const float *chscale) {
  float fac[16];
  for (int64_t t = 0; t < tokens; t++) {
    for (int k = 0; k < 16; k++) fac[k] = nrand();
    for (int64_t c = 0; c < cols; c++) x[t * cols + c] = chscale[c] * (nrand() + 0.7f * fac[c % 16]);
  }
}

static float *make_chscale(int64_t cols) {
  float *s = malloc(sizeof(float) * (size_t)cols);
  for (int64_t c = 0; c < cols; c++) s[c] = (float)exp(1.2 * nrand()) * (c % 211 == 5 ? 20.0f : 1.0f);
  return s;
}

/* ---- 1. Hessian accumulation ----------------------------------------------- */

static void bench_hessian_case(int64_t cols, int64_t tokens, int runs) {
  size_t nx = (size_t)tokens * (size_t)cols, nh = (size_t)cols * (size_t)cols;
  float *x = malloc(sizeof(float) * nx);
  uint16_t *xb = malloc(2 * nx);
  float *H2 = calloc(nh, sizeof(float)), *G = calloc(nh, sizeof(float));
  float *cs = make_chscale(cols);
  if (!x || !xb || !H2 || !G || !cs) { fprintf(stderr, "out of memory\n"); exit(1); }
  make_acts(x, tokens, cols, cs);
  for (size_t i = 0; i < nx; i++) xb[i] = llmc_f32_to_bf16(x[i]);
  llmc_hessian h;
  if (llmc_hessian_init(&h, cols) < 0) { fprintf(stderr, "%s\n", llmc_errmsg()); exit(1); }
  double *t[4];
  for (int k = 0; k < 4; k++) t[k] = malloc(sizeof(double) * (size_t)runs);
  /* one untimed pass of each touches H / G (calloc pages) and wakes the
  ** BLAS threads */
  for (int r = -1; r < runs; r++) {
    double t0 = now();
    if (llmc_hessian_add(&h, x, 1, tokens) < 0) { fprintf(stderr, "%s\n", llmc_errmsg()); exit(1); }
    double t1 = now();
    if (llmc_hessian_add_any(&h, xb, LLMC_BF16, 1, tokens) < 0) { fprintf(stderr, "%s\n", llmc_errmsg()); exit(1); }
    double t2 = now();
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)cols, (int)tokens, 1.0f, x, (int)cols, 1.0f, H2,
                (int)cols);
    double t3 = now();
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)cols, (int)cols, (int)tokens, 1.0f, x, (int)cols, x,
                (int)cols, 1.0f, G, (int)cols);
    double t4 = now();
    if (r >= 0) { t[0][r] = t1 - t0; t[1][r] = t2 - t1; t[2][r] = t3 - t2; t[3][r] = t4 - t3; }
  }
  static const char *what[4] = {"llmc_hessian_add f32", "llmc_hessian_add_any bf16", "cblas_ssyrk f32",
                                "cblas_sgemm X^T X f32"};
  double fsyrk = (double)cols * (double)(cols + 1) * (double)tokens, fgemm = 2.0 * (double)cols * cols * tokens;
  for (int k = 0; k < 4; k++) {
    double m = median(t[k], runs);
    double fl = k == 3 ? fgemm : fsyrk;
    printf("%6lld %6lld  %-26s %10.2f %9.1f\n", (long long)cols, (long long)tokens, what[k], 1e3 * m, fl / m * 1e-9);
  }
  for (int k = 0; k < 4; k++) free(t[k]);
  llmc_hessian_free(&h);
  free(x); free(xb); free(H2); free(G); free(cs);
}

static void bench_hessian(int runs, int big) {
  print_load("hessian start");
  printf("%6s %6s  %-26s %10s %9s\n", "cols", "tokens", "call", "ms", "GFLOP/s");
  static const int64_t colsv[] = {1024, 2048, 4096};
  static const int64_t tokv[] = {512, 2048};
  for (size_t i = 0; i < sizeof colsv / sizeof colsv[0]; i++)
    for (size_t j = 0; j < sizeof tokv / sizeof tokv[0]; j++) bench_hessian_case(colsv[i], tokv[j], runs);
  if (big) bench_hessian_case(11008, 512, runs);
  print_load("hessian end");
}

/* ---- 2. GPTQ solve ------------------------------------------------------------ */

/* the solve's factorisation: damped H/n -> U, H^-1 = U^T U (same calls) */
static int chol_inverse(float *H, int64_t cols) {
  int info = LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)cols, H, (lapack_int)cols);
  if (info == 0) info = LAPACKE_spotri(LAPACK_ROW_MAJOR, 'L', (lapack_int)cols, H, (lapack_int)cols);
  if (info != 0) return info;
  for (int64_t i = 0; i < cols; i++)
    for (int64_t j = i + 1; j < cols; j++) H[i * cols + j] = H[j * cols + i];
  return LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)cols, H, (lapack_int)cols);
}

/* H/n mirrored + 1% mean-diagonal dampening, as the solve prepares it */
static void damped(float *dst, const llmc_hessian *h) {
  int64_t n = h->cols;
  double s = 0;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = i; j < n; j++) {
      float v = h->H[i * n + j] / (float)h->nsamples;
      dst[i * n + j] = dst[j * n + i] = v;
    }
  for (int64_t i = 0; i < n; i++) s += dst[i * n + i];
  float d = (float)(0.01 * s / (double)n);
  for (int64_t i = 0; i < n; i++) dst[i * n + i] += d;
}

static void bench_solve(int runs) {
  static const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
  const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
  const int64_t B = 128, seqs = 4, seqlen = 512;
  print_load("solve start");
  printf("GPTQ solve, W4A16 (int4 symmetric group 128), block 128, Hessian from %lld x %lld tokens\n",
         (long long)seqs, (long long)seqlen);
  printf("%-12s %-8s %9s %9s %9s %9s  %s\n", "rows x cols", "actorder", "solve s", "chol s", "updates s", "rest s",
         "check");
  llmc_hessian h = {0};
  float *U = NULL;
  double chol_s = 0;
  for (int si = 0; si < nshapes; si++) {
    int64_t rows = shapes[si][0], cols = shapes[si][1];
    size_t nw = (size_t)rows * (size_t)cols, nh = (size_t)cols * (size_t)cols;
    if (h.cols != cols) {
      /* a new width: new Hessian, and the factorisation timed once for it */
      llmc_hessian_free(&h);
      free(U);
      if (llmc_hessian_init(&h, cols) < 0) { fprintf(stderr, "%s\n", llmc_errmsg()); exit(1); }
      float *cs = make_chscale(cols), *x = malloc(sizeof(float) * (size_t)seqlen * (size_t)cols);
      for (int64_t s = 0; s < seqs; s++) {
        make_acts(x, seqlen, cols, cs);
        llmc_hessian_add(&h, x, 1, seqlen);
      }
      free(cs); free(x);
      U = malloc(sizeof(float) * nh);
      double *tc = malloc(sizeof(double) * (size_t)runs);
      for (int r = 0; r < runs; r++) {
        damped(U, &h);
        double t0 = now();
        int info = chol_inverse(U, cols);
        tc[r] = now() - t0;
        if (info != 0) { fprintf(stderr, "factorisation failed (info %d) for cols %lld\n", info, (long long)cols); exit(1); }
      }
      chol_s = median(tc, runs);
      free(tc);
      for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < i; j++) U[i * cols + j] = 0.0f;
    }
    /* the block updates alone, same sgemm calls on the real U */
    float *Wp = malloc(sizeof(float) * nw), *Err = malloc(sizeof(float) * (size_t)rows * (size_t)B);
    for (size_t i = 0; i < nw; i++) Wp[i] = 0.01f * nrand();
    for (size_t i = 0; i < (size_t)rows * (size_t)B; i++) Err[i] = nrand();
    double *tu = malloc(sizeof(double) * (size_t)runs);
    for (int r = 0; r < runs; r++) {
      double t0 = now();
      for (int64_t i1 = 0; i1 < cols; i1 += B) {
        int64_t i2 = i1 + B < cols ? i1 + B : cols, n = i2 - i1;
        if (i2 < cols)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)(cols - i2), (int)n, -1.0f, Err,
                      (int)B, U + i1 * cols + i2, (int)cols, 1.0f, Wp + i2, (int)cols);
      }
      tu[r] = now() - t0;
    }
    double upd_s = median(tu, runs);
    free(tu); free(Err);
    /* the weight: N(0, 1/cols) with outliers, bf16 as a checkpoint has it */
    uint16_t *wb = malloc(2 * nw);
    float sd = (float)(1.0 / sqrt((double)cols));
    for (size_t i = 0; i < nw; i++) wb[i] = llmc_f32_to_bf16(sd * nrand() * (i % 97 == 0 ? 6.0f : 1.0f));
    llmc_qargs wa, ia;
    int hw, hi;
    llmc_q_preset("W4A16", &wa, &ia, &hw, &hi);
    wa.force_zero_point = 1;   /* as oneshot calls it */
    llmc_qparams qp;
    if (llmc_q_qparams_compute(&qp, &wa, wb, LLMC_BF16, rows, cols, NULL) < 0) {
      fprintf(stderr, "%s\n", llmc_errmsg());
      exit(1);
    }
    double *ts = malloc(sizeof(double) * (size_t)runs);
    for (int ao = 1; ao >= 0; ao--) {
      llmc_gptq_opts o;
      llmc_gptq_opts_init(&o);
      o.block_size = B;
      o.actorder = ao;
      llmc_gptq_result res = {0};
      for (int r = 0; r < runs; r++) {
        llmc_convert(Wp, LLMC_F32, wb, LLMC_BF16, nw);
        double t0 = now();
        if (llmc_gptq_solve(Wp, rows, cols, &h, &qp, &o, &res) < 0) {
          fprintf(stderr, "solve: %s\n", llmc_errmsg());
          exit(1);
        }
        ts[r] = now() - t0;
      }
      double m = median(ts, runs);
      char shape[32];
      snprintf(shape, sizeof shape, "%lldx%lld", (long long)rows, (long long)cols);
      printf("%-12s %-8s %9.2f %9.2f %9.2f %9.2f  loss %.4g%s\n", shape, ao ? "on" : "off", m, chol_s, upd_s,
             m - chol_s - upd_s, res.loss, res.rtn_fallback ? " RTN FALLBACK" : "");
      fflush(stdout);
    }
    /* three modules with one input (q/k/v): llmc_gptq_solve_shared factors
    ** once; the figure is the mean per module, comparable with "solve s" */
    {
      llmc_gptq_opts o;
      llmc_gptq_opts_init(&o);
      o.block_size = B;
      llmc_gptq_result res = {0};
      for (int r = 0; r < runs; r++) {
        llmc_gptq_factor f = {0};
        double t0 = now();
        for (int m = 0; m < 3; m++) {
          llmc_convert(Wp, LLMC_F32, wb, LLMC_BF16, nw);
          if (llmc_gptq_solve_shared(Wp, rows, cols, &h, &qp, &o, &f, &res) < 0) {
            fprintf(stderr, "solve: %s\n", llmc_errmsg());
            exit(1);
          }
        }
        ts[r] = (now() - t0) / 3;
        llmc_gptq_factor_free(&f);
      }
      char shape[32];
      snprintf(shape, sizeof shape, "%lldx%lld", (long long)rows, (long long)cols);
      printf("%-12s %-8s %9.2f %9s %9s %9s  per module, 3 modules sharing one factor\n", shape, "on", median(ts, runs),
             "", "", "");
      fflush(stdout);
    }
    free(ts);
    llmc_q_qparams_free(&qp);
    free(wb); free(Wp);
  }
  llmc_hessian_free(&h);
  free(U);
  print_load("solve end");
}

int main(int argc, char **argv) {
  int threads = 2, runs = 3, big = 0, do_h = 1, do_s = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-n") && i + 1 < argc) runs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--big")) big = 1;
    else if (!strcmp(argv[i], "hessian")) do_s = 0;
    else if (!strcmp(argv[i], "solve")) do_h = 0;
    else {
      fprintf(stderr, "usage: bench_gptq [hessian|solve] [-t threads] [-n runs] [--big]\n");
      return 2;
    }
  }
  if (threads < 1 || runs < 1) { fprintf(stderr, "bench_gptq: -t and -n must be >= 1\n"); return 2; }
  llmc_dtype_init();
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  printf("# bench_gptq: %d thread(s) (OpenMP + OpenBLAS %s), median of %d runs\n", threads, openblas_get_corename(),
         runs);
  if (do_h) bench_hessian(runs, big);
  if (do_s) bench_solve(runs);
  return 0;
}
