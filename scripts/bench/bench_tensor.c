/*
** bench_tensor.c — bf16 -> f32 conversion (GB/s of bytes read + written) and
** f32 matmul through llmc_matmul / llmc_linear against OpenBLAS's own sgemm
** on the same buffers (the ceiling).  Medians of 7 runs.
**
**   build/bench_tensor            # uses OMP_NUM_THREADS / all cores
*/
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ops.h"
#include "tensor.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
#define RUNS 7

int main(void) {
  llmc_dtype_init();
  /* conversion: 64 Mi elements (128 MB in, 256 MB out) */
  int64_t n = 64ll << 20;
  llmc_tensor *b = llmc_tensor_randn(LLMC_BF16, 1, &n, 1);
  llmc_tensor *f = llmc_tensor_empty(LLMC_F32, 1, &n);
  double t[RUNS];
  for (int r = 0; r < RUNS; r++) {
    double t0 = now();
    llmc_tensor_copy_(f, b);
    t[r] = now() - t0;
  }
  qsort(t, RUNS, sizeof *t, cmpd);
  printf("bf16->f32 convert, %lld elements: %.2f GB/s (median of %d, read+write bytes)\n", (long long)n,
         (double)n * 6 / t[RUNS / 2] / 1e9, RUNS);
  llmc_tensor_free(b);
  llmc_tensor_free(f);
  /* matmul */
  const int64_t sizes[][3] = {{512, 1024, 1024}, {2048, 2048, 2048}, {128, 4096, 4096}};
  for (int s = 0; s < 3; s++) {
    int64_t M = sizes[s][0], K = sizes[s][1], N = sizes[s][2];
    llmc_tensor *x = llmc_tensor_randn(LLMC_F32, 2, (int64_t[]){M, K}, 2);
    llmc_tensor *w = llmc_tensor_randn(LLMC_F32, 2, (int64_t[]){N, K}, 3);
    llmc_tensor *wb = llmc_tensor_to_dtype(w, LLMC_BF16);
    float *out = malloc(sizeof(float) * (size_t)(M * N));
    double tb[RUNS], tl[RUNS], tlb[RUNS];
    for (int r = 0; r < RUNS; r++) {
      double t0 = now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, llmc_tensor_data(x), (int)K,
                  llmc_tensor_data(w), (int)K, 0.0f, out, (int)N);
      double t1 = now();
      llmc_tensor *y = llmc_linear(x, w, NULL);
      double t2 = now();
      llmc_tensor *y2 = llmc_linear(x, wb, NULL);
      double t3 = now();
      llmc_tensor_free(y);
      llmc_tensor_free(y2);
      tb[r] = t1 - t0; tl[r] = t2 - t1; tlb[r] = t3 - t2;
    }
    qsort(tb, RUNS, sizeof(double), cmpd);
    qsort(tl, RUNS, sizeof(double), cmpd);
    qsort(tlb, RUNS, sizeof(double), cmpd);
    double flop = 2.0 * (double)M * (double)N * (double)K;
    printf("linear %lldx%lld @ %lldx%lld^T: OpenBLAS sgemm %.1f GFLOP/s, llmc_linear f32 %.1f GFLOP/s (%.0f%%), "
           "bf16 weight %.1f GFLOP/s\n", (long long)M, (long long)K, (long long)N, (long long)K, flop / tb[RUNS / 2] / 1e9,
           flop / tl[RUNS / 2] / 1e9, 100 * tb[RUNS / 2] / tl[RUNS / 2], flop / tlb[RUNS / 2] / 1e9);
    free(out);
    llmc_tensor_free(x); llmc_tensor_free(w); llmc_tensor_free(wb);
  }
  return 0;
}
