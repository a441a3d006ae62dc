/*
** bench_quant.c — throughput of llmc's weight compression kernels.
**
** For each format (FP8_BLOCK, FP8 per channel, W4A16 int4 group 128 + pack,
** NVFP4A16, MXFP4A16) and each bf16 weight shape (4096x4096, 14336x4096),
** times the whole compression of one weight — observer + qparams
** (llmc_q_qparams_compute) and quantize + pack into the on-disk tensors
** (llmc_q_compress) — with 1 and 2 OpenMP threads, and prints the median of
** 5 runs as GB/s of bf16 input (input bytes / time).
**
** Build (from the repository root; same flags as the CMake Release build):
**   gcc -std=c11 -D_GNU_SOURCE -O3 -march=x86-64-v2 -fopenmp -Isrc \
**       src/dtype.c src/error.c src/quant*.c scripts/bench/bench_quant.c \
**       -lm -o /tmp/bench_quant
**   /tmp/bench_quant            # all formats and shapes
**   /tmp/bench_quant FP8_BLOCK  # one preset
*/
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "error.h"
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

/* one compression; returns seconds or -1 */
static double run_once(const char *preset, int fused, const uint16_t *w, int64_t rows,
                       int64_t cols, void **bufs, llmc_qtensor_desc *d, int n, llmc_qformat f) {
  llmc_qargs wa, ia;
  int hw, hi;
  llmc_q_preset(preset, &wa, &ia, &hw, &hi);
  wa.rounding = fused ? LLMC_QROUND_FUSED : LLMC_QROUND_EAGER;
  double t0 = now();
  llmc_qparams qp;
  if (llmc_q_qparams_compute(&qp, &wa, w, LLMC_BF16, rows, cols, NULL) < 0) return -1;
  if (llmc_q_compress(f, &qp, w, LLMC_BF16, d, n, bufs) < 0) return -1;
  double t = now() - t0;
  llmc_q_qparams_free(&qp);
  return t;
}

int main(int argc, char **argv) {
  static const char *presets[] = {"FP8_BLOCK", "FP8_DYNAMIC", "W4A16", "NVFP4A16", "MXFP4A16"};
  static const char *labels[] = {"fp8 block 128x128", "fp8 channel", "int4 group128 + pack",
                                 "nvfp4", "mxfp4"};
  static const int64_t shapes[2][2] = {{4096, 4096}, {14336, 4096}};
  const char *only = argc > 1 ? argv[1] : NULL;
  llmc_dtype_init();
  int64_t maxn = shapes[1][0] * shapes[1][1];
  uint16_t *w = malloc((size_t)maxn * 2);
  uint32_t s = 1;
  for (int64_t i = 0; i < maxn; i++) {
    s = s * 1664525u + 1013904223u;
    float u = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.1f;   /* uniform +-0.05 */
    w[i] = llmc_f32_to_bf16(u);
  }
  printf("%-22s %-12s %7s %9s %9s\n", "format", "shape", "threads", "ms", "GB/s");
  for (size_t p = 0; p < sizeof presets / sizeof presets[0]; p++) {
    if (only && strcmp(only, presets[p]) != 0) continue;
    for (int fused = 0; fused <= (p == 0 ? 1 : 0); fused++)
      for (int sh = 0; sh < 2; sh++) {
        int64_t rows = shapes[sh][0], cols = shapes[sh][1];
        llmc_qargs wa, ia;
        int hw, hi;
        llmc_q_preset(presets[p], &wa, &ia, &hw, &hi);
        llmc_qformat f = llmc_q_infer_format(&wa, hi ? &ia : NULL);
        llmc_qtensor_desc d[LLMC_Q_MAX_TENSORS];
        int n = llmc_q_layout(f, &wa, NULL, NULL, LLMC_BF16, rows, cols, d);
        void *bufs[LLMC_Q_MAX_TENSORS];
        for (int i = 0; i < n; i++) bufs[i] = calloc(1, d[i].nbytes);
        for (int th = 1; th <= 2; th++) {
          omp_set_num_threads(th);
          double t[5];
          run_once(presets[p], fused, w, rows, cols, bufs, d, n, f);   /* warm-up */
          for (int r = 0; r < 5; r++) t[r] = run_once(presets[p], fused, w, rows, cols, bufs, d, n, f);
          qsort(t, 5, sizeof t[0], cmp_double);
          if (t[0] < 0) {
            fprintf(stderr, "%s: %s\n", presets[p], llmc_errmsg());
            return 1;
          }
          char shape[32], label[64];
          snprintf(shape, sizeof shape, "%lldx%lld", (long long)rows, (long long)cols);
          snprintf(label, sizeof label, "%s%s", labels[p], fused ? " (fused)" : "");
          printf("%-22s %-12s %7d %9.1f %9.2f\n", label, shape, th, t[2] * 1e3,
                 (double)(rows * cols * 2) / t[2] / 1e9);
        }
        for (int i = 0; i < n; i++) free(bufs[i]);
      }
  }
  free(w);
  return 0;
}
