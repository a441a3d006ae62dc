/*
** test_cuda_quant.c — every preset scheme's GPU kernels (cuda/quant.cu)
** against the CPU reference (src/quant*.c), byte for byte: min-max
** observation, codes in eager and fused rounding, fake quantization.
** Skips with the reason where there is no CUDA build or no GPU.
*/
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "quant.h"
#include "tensor.h"
#ifdef LLMC_HAVE_CUDA
#include "cuda_backend.h"
#include "cuda_quant.h"
#endif

int main(void) {
#ifndef LLMC_HAVE_CUDA
  printf("SKIP: built without CUDA\n");
  return CHECK_SKIP;
#else
  if (llmc_cuda_device_count() == 0) {
    printf("SKIP: no CUDA device on this machine: the GPU quantization kernels were compiled, not run\n");
    return CHECK_SKIP;
  }
  llmc_dtype_init();
  const int64_t shapes[][2] = {{256, 512}, {100, 200}};
  for (const char *const *name = llmc_q_preset_names; *name; name++) {
    llmc_qargs wa, ia;
    int hw, hi;
    if (llmc_q_preset(*name, &wa, &ia, &hw, &hi) < 0 || !hw) continue;
    for (int si = 0; si < 2; si++) {
      int64_t rows = shapes[si][0], cols = shapes[si][1];
      int64_t sr, sc;
      if (llmc_q_scale_grid(&wa, rows, cols, &sr, &sc) < 0) continue;   /* e.g. group 128 on 200 cols */
      llmc_tensor *w = llmc_tensor_randn(LLMC_BF16, 2, (int64_t[]){rows, cols}, 1234 + si);
      llmc_tensor *wd = llmc_tensor_to_device(w, 0);
      int64_t n = sr * sc;
      float *mn = malloc(4 * n), *mx = malloc(4 * n), *gmn = malloc(4 * n), *gmx = malloc(4 * n);
      CHECK(llmc_q_observe_minmax(&wa, llmc_tensor_data(w), LLMC_BF16, rows, cols, mn, mx) == 0, "cpu minmax");
      CHECK(llmc_cuda_q_observe_minmax(&wa, llmc_tensor_data(wd), LLMC_BF16, rows, cols, gmn, gmx, 0) == 0,
            "%s: gpu minmax: %s", *name, llmc_errmsg());
      CHECK(memcmp(mn, gmn, 4 * n) == 0 && memcmp(mx, gmx, 4 * n) == 0, "%s %lldx%lld: min/max equal", *name,
            (long long)rows, (long long)cols);
      for (int mode = 0; mode < 2; mode++) {
        wa.rounding = mode ? LLMC_QROUND_FUSED : LLMC_QROUND_EAGER;
        llmc_qparams qp;
        CHECK(llmc_q_qparams_compute(&qp, &wa, llmc_tensor_data(w), LLMC_BF16, rows, cols, NULL) == 0, "qparams");
        size_t ne = (size_t)(rows * cols);
        uint8_t *codes = malloc(ne), *gcodes = malloc(ne);
        CHECK(llmc_q_quantize(&qp, llmc_tensor_data(w), LLMC_BF16, codes) == 0, "cpu quantize");
        llmc_tensor *cz = llmc_tensor_zeros(LLMC_U8, 2, (int64_t[]){rows, cols});
        llmc_tensor *cd = llmc_tensor_to_device(cz, 0);
        llmc_tensor_free(cz);
        CHECK(llmc_cuda_q_quantize(&qp, llmc_tensor_data(wd), LLMC_BF16, llmc_tensor_data(cd), 0) == 0, "gpu quantize");
        llmc_tensor *ch = llmc_tensor_to_device(cd, -1);
        memcpy(gcodes, llmc_tensor_data(ch), ne);
        size_t diff = 0;
        for (size_t i = 0; i < ne; i++) diff += codes[i] != gcodes[i];
        CHECK(diff == 0, "%s %s rounding: %zu of %zu codes differ", *name, mode ? "fused" : "eager", diff, ne);
        uint16_t *fq = malloc(2 * ne);
        CHECK(llmc_q_fake_quantize(&qp, llmc_tensor_data(w), LLMC_BF16, fq) == 0, "cpu fake-quant");
        llmc_tensor *fd = llmc_tensor_to_device(w, 0);
        CHECK(llmc_cuda_q_fake_quantize(&qp, llmc_tensor_data(wd), LLMC_BF16, llmc_tensor_data(fd), 0) == 0, "gpu fq");
        llmc_tensor *fh = llmc_tensor_to_device(fd, -1);
        CHECK(memcmp(fq, llmc_tensor_data(fh), 2 * ne) == 0, "%s: fake-quantized weights equal", *name);
        llmc_tensor_free(fh); llmc_tensor_free(fd); llmc_tensor_free(ch); llmc_tensor_free(cd);
        free(fq); free(codes); free(gcodes);
        llmc_q_qparams_free(&qp);
      }
      free(mn); free(mx); free(gmn); free(gmx);
      llmc_tensor_free(wd); llmc_tensor_free(w);
    }
  }
  return check_summary();
#endif
}
