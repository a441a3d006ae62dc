/*
** bench_cuda_quant.c — GPU quantization throughput (GB/s of weight bytes
** read + codes written, median of 10) for the 8B-model weight shapes, and
** the largest difference from the CPU reference (must be 0).  Prints a
** table; part of scripts/gpu_check.  Needs a CUDA build and a GPU.
**
**   build/bench_cuda_quant
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "quant.h"
#include "tensor.h"
#ifdef LLMC_HAVE_CUDA
#include "cuda_backend.h"
#include "cuda_quant.h"
#endif

#ifdef LLMC_HAVE_CUDA
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
#endif

int main(void) {
#ifndef LLMC_HAVE_CUDA
  printf("bench_cuda_quant: built without CUDA\n");
  return 0;
#else
  if (llmc_cuda_device_count() == 0) { printf("bench_cuda_quant: no GPU\n"); return 0; }
  llmc_dtype_init();
  const char *schemes[] = {"FP8_BLOCK", "FP8", "W4A16", "NVFP4A16", "MXFP4A16"};
  const int64_t shapes[][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}};
  printf("%-10s %-12s %10s %10s %10s %s\n", "scheme", "shape", "observe ms", "quant ms", "GB/s", "codes != CPU");
  for (size_t s = 0; s < sizeof schemes / sizeof *schemes; s++) {
    llmc_qargs wa, ia;
    int hw, hi;
    llmc_q_preset(schemes[s], &wa, &ia, &hw, &hi);
    for (size_t k = 0; k < 3; k++) {
      int64_t rows = shapes[k][0], cols = shapes[k][1], sr, sc;
      llmc_q_scale_grid(&wa, rows, cols, &sr, &sc);
      llmc_tensor *w = llmc_tensor_randn(LLMC_BF16, 2, (int64_t[]){rows, cols}, 7);
      llmc_tensor *wd = llmc_tensor_to_device(w, 0);
      llmc_tensor *cz = llmc_tensor_zeros(LLMC_U8, 2, (int64_t[]){rows, cols});
      llmc_tensor *cd = llmc_tensor_to_device(cz, 0);
      float *mn = malloc(4 * (size_t)(sr * sc)), *mx = malloc(4 * (size_t)(sr * sc));
      llmc_qparams qp;
      llmc_q_qparams_compute(&qp, &wa, llmc_tensor_data(w), LLMC_BF16, rows, cols, NULL);
      double to[10], tq[10];
      for (int it = 0; it < 10; it++) {
        double t0 = now();
        llmc_cuda_q_observe_minmax(&wa, llmc_tensor_data(wd), LLMC_BF16, rows, cols, mn, mx, 0);
        double t1 = now();
        llmc_cuda_q_quantize(&qp, llmc_tensor_data(wd), LLMC_BF16, llmc_tensor_data(cd), 0);
        double t2 = now();
        to[it] = t1 - t0;
        tq[it] = t2 - t1;
      }
      qsort(to, 10, sizeof(double), cmpd);
      qsort(tq, 10, sizeof(double), cmpd);
      uint8_t *ref = malloc((size_t)(rows * cols));
      llmc_q_quantize(&qp, llmc_tensor_data(w), LLMC_BF16, ref);
      llmc_tensor *ch = llmc_tensor_to_device(cd, -1);
      size_t diff = 0;
      for (int64_t i = 0; i < rows * cols; i++) diff += ref[i] != ((uint8_t *)llmc_tensor_data(ch))[i];
      double bytes = (double)rows * (double)cols * 3.0;   /* read bf16, write one code byte */
      char shp[64];
      snprintf(shp, sizeof shp, "%lldx%lld", (long long)rows, (long long)cols);
      printf("%-10s %-12s %10.3f %10.3f %10.1f %zu\n", schemes[s], shp, 1e3 * to[5], 1e3 * tq[5],
             bytes / tq[5] / 1e9, diff);
      free(ref); free(mn); free(mx);
      llmc_q_qparams_free(&qp);
      llmc_tensor_free(ch); llmc_tensor_free(cd); llmc_tensor_free(cz); llmc_tensor_free(wd); llmc_tensor_free(w);
    }
  }
  return 0;
#endif
}
