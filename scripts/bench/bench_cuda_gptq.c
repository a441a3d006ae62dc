/*
** bench_cuda_gptq.c — the GPU GPTQ path (cuda/gptq.cu) against the CPU one
** (src/gptq.c) on Linear shapes of a 7B model, W4A16 (int4, symmetric,
** group 128), block size 128, activation order on:
**
** 1. Hessian accumulation, llmc_cuda_hessian_add on `tokens` x cols inputs
**    (default 8192 tokens = 4 x 2048): bf16 from the host (upload and
**    conversion included) and fp32 already on the device (cublasSsyrk
**    alone).  GFLOP/s count the syrk's cols * (cols + 1) * tokens flops.
** 2. The solve: llmc_cuda_gptq_solve from a host Hessian (upload of H and W,
**    download of the result included) in seconds per layer, then
**    llmc_gptq_solve on the CPU once for the same layer, the speed-up, and
**    the share of codes where the two differ (fp32 summation order).
**
** GPU figures are medians of N runs (-n, default 5) after one warm-up; the
** CPU solve runs once (it takes seconds to minutes per layer; --no-cpu skips
** it).  Prints "no GPU" and exits 0 without a CUDA build or a GPU.
**
**   build/bench_cuda_gptq                 # all three shapes
**   build/bench_cuda_gptq -n 3 --no-cpu
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "gptq.h"
#include "quant.h"
#include "tensor.h"
#ifdef LLMC_HAVE_CUDA
#include "cuda_backend.h"
#include "cuda_gptq.h"
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
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmpd);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
static uint64_t rng = 0x2545f4914f6cdd1dull;
static float nrand(void) {   /* xorshift64* + Box-Muller */
  double u[2];
  for (int k = 0; k < 2; k++) {
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    u[k] = (double)((rng * 2685821657736338717ull) >> 11) * 0x1p-53;
  }
  return (float)(sqrt(-2 * log(u[0] + 1e-300)) * cos(2 * M_PI * u[1]));
}
#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fprintf(stderr, ": %s\n", llmc_errmsg()); return 1; } while (0)
#endif

int main(int argc, char **argv) {
#ifndef LLMC_HAVE_CUDA
  (void)argc; (void)argv;
  printf("bench_cuda_gptq: built without CUDA: no GPU\n");
  return 0;
#else
  int runs = 5, cpu = 1;
  int64_t tokens = 8192;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-n") && i + 1 < argc) runs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-cpu")) cpu = 0;
    else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) tokens = atoll(argv[++i]);
    else { fprintf(stderr, "usage: %s [-n runs] [--tokens N] [--no-cpu]\n", argv[0]); return 2; }
  }
  if (runs < 1 || runs > 100) runs = 5;
  if (llmc_cuda_device_count() == 0) { printf("bench_cuda_gptq: no GPU\n"); return 0; }
  llmc_dtype_init();
  char name[256];
  llmc_cuda_device_name(0, name, sizeof name);
  printf("device: %s; W4A16 (int4 group 128), block 128, actorder on; GPU: median of %d; Hessian from %lld tokens\n",
         name, runs, (long long)tokens);
  const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};   /* [rows = out, cols = in] */
  llmc_qargs wa, ia;
  int hw, hi;
  llmc_q_preset("W4A16", &wa, &ia, &hw, &hi);
  llmc_gptq_opts o;
  llmc_gptq_opts_init(&o);

  printf("\n%-8s %14s %14s %14s %14s\n", "cols", "bf16 host ms", "GFLOP/s", "f32 device ms", "GFLOP/s");
  const int64_t hcols[] = {4096, 11008};
  for (int k = 0; k < 2; k++) {
    int64_t C = hcols[k], n = tokens * C;
    uint16_t *xb = malloc(2 * (size_t)n);
    float *xf = malloc(4 * (size_t)n);
    if (!xb || !xf) { fprintf(stderr, "out of host memory\n"); return 1; }
    for (int64_t i = 0; i < n; i++) { xf[i] = nrand(); xb[i] = llmc_f32_to_bf16(xf[i]); }
    llmc_tensor *t = llmc_tensor_from_bytes(LLMC_F32, 2, (int64_t[]){tokens, C}, xf, 4 * (size_t)n);
    llmc_tensor *d = t ? llmc_tensor_to_device(t, 0) : NULL;
    if (!d) FAIL("upload");
    llmc_cuda_hessian h;
    if (llmc_cuda_hessian_init(&h, C, 0) < 0) FAIL("hessian init");
    double th[100], td[100];
    for (int it = -1; it < runs; it++) {
      double t0 = now();
      if (llmc_cuda_hessian_add(&h, xb, LLMC_BF16, 4, tokens / 4) < 0) FAIL("hessian add");
      double t1 = now();
      if (llmc_cuda_hessian_add(&h, llmc_tensor_data(d), LLMC_F32, 4, tokens / 4) < 0) FAIL("hessian add (device)");
      double t2 = now();
      if (it >= 0) { th[it] = t1 - t0; td[it] = t2 - t1; }
    }
    double flops = (double)C * (double)(C + 1) * (double)tokens;
    double mh = median(th, runs), md = median(td, runs);
    printf("%-8lld %14.2f %14.0f %14.2f %14.0f\n", (long long)C, 1e3 * mh, flops / mh * 1e-9, 1e3 * md,
           flops / md * 1e-9);
    llmc_cuda_hessian_free(&h);
    llmc_tensor_free(d);
    llmc_tensor_free(t);
    free(xb); free(xf);
  }

  printf("\n%-12s %12s %12s %10s %14s %12s\n", "shape", "GPU s/layer", "CPU s/layer", "speed-up", "codes != CPU",
         "loss GPU/CPU");
  for (int k = 0; k < 3; k++) {
    int64_t rows = shapes[k][0], cols = shapes[k][1], nw = rows * cols;
    /* Hessian of 4 x 512 correlated tokens: x = z + 0.5 * z shifted by one
    ** channel, channel scales over three orders of magnitude */
    int64_t T = 2048;
    float *x = malloc(4 * (size_t)(T * cols));
    uint16_t *wb = malloc(2 * (size_t)nw);
    float *Wg = malloc(4 * (size_t)nw), *Wc = malloc(4 * (size_t)nw);
    if (!x || !wb || !Wg || !Wc) { fprintf(stderr, "out of host memory\n"); return 1; }
    for (int64_t t = 0; t < T; t++) {
      float prev = 0;
      for (int64_t c = 0; c < cols; c++) {
        float z = nrand();
        x[t * cols + c] = (z + 0.5f * prev) * powf(10.0f, (float)(c % 31) / 10.0f - 1.5f);
        prev = z;
      }
    }
    for (int64_t i = 0; i < nw; i++) wb[i] = llmc_f32_to_bf16(0.02f * nrand());
    llmc_hessian h;
    if (llmc_hessian_init(&h, cols) < 0 || llmc_hessian_add(&h, x, 4, T / 4) < 0) FAIL("cpu hessian");
    llmc_qparams qp;
    if (llmc_q_qparams_compute(&qp, &wa, wb, LLMC_BF16, rows, cols, NULL) < 0) FAIL("qparams");
    double ts[100];
    llmc_gptq_result rg, rc;
    for (int it = -1; it < runs; it++) {
      double t0 = now();
      if (llmc_cuda_gptq_solve(wb, LLMC_BF16, Wg, rows, cols, &h, NULL, &qp, &o, &rg, 0) < 0) FAIL("gpu solve");
      if (it >= 0) ts[it] = now() - t0;
    }
    double mg = median(ts, runs);
    char shape[32];
    snprintf(shape, sizeof shape, "%lldx%lld", (long long)rows, (long long)cols);
    if (cpu) {
      for (int64_t i = 0; i < nw; i++) Wc[i] = llmc_bf16_to_f32(wb[i]);
      double t0 = now();
      if (llmc_gptq_solve(Wc, rows, cols, &h, &qp, &o, &rc) < 0) FAIL("cpu solve");
      double tc = now() - t0;
      uint8_t *cg = malloc((size_t)nw), *cc = malloc((size_t)nw);
      int64_t differ = 0;
      if (cg && cc && llmc_q_quantize(&qp, Wg, LLMC_F32, cg) == 0 && llmc_q_quantize(&qp, Wc, LLMC_F32, cc) == 0)
        for (int64_t i = 0; i < nw; i++) differ += cg[i] != cc[i];
      free(cg); free(cc);
      printf("%-12s %12.3f %12.2f %9.1fx %13.3f%% %12.5f\n", shape, mg, tc, tc / mg, 100.0 * (double)differ / (double)nw,
             rg.loss / rc.loss);
    } else {
      printf("%-12s %12.3f %12s %10s %14s %12s\n", shape, mg, "-", "-", "-", "-");
    }
    llmc_q_qparams_free(&qp);
    llmc_hessian_free(&h);
    free(x); free(wb); free(Wg); free(Wc);
  }
  return 0;
#endif
}
