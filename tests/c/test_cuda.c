/*
** test_cuda.c — the CUDA backend against the CPU reference.  Skips (exit
** 77, with the reason printed) in a build without CUDA or on a machine
** without a GPU; where a GPU exists every check runs.
*/
#include <string.h>

#include "check.h"
#include "error.h"
#include "tensor.h"
#ifdef LLMC_HAVE_CUDA
#include "cuda_backend.h"
#endif

int main(void) {
#ifndef LLMC_HAVE_CUDA
  printf("SKIP: built without CUDA (LLMC_CUDA=OFF or no toolkit)\n");
  return CHECK_SKIP;
#else
  llmc_dtype_init();
  int n = llmc_cuda_device_count();
  if (n == 0) {
    /* the no-GPU path must fail cleanly, not crash */
    int64_t s = 4;
    llmc_tensor *h = llmc_tensor_zeros(LLMC_F32, 1, &s);
    llmc_tensor *d = llmc_tensor_to_device(h, 0);
    int clean = d == NULL && strstr(llmc_errmsg(), "not available") != NULL;
    llmc_tensor_free(h);
    printf("SKIP: no CUDA device on this machine (allocation failed cleanly: %s)\n", clean ? "yes" : "NO");
    return clean ? CHECK_SKIP : 1;
  }
  char name[256];
  llmc_cuda_device_name(0, name, sizeof name);
  printf("CUDA device 0: %s\n", name);
  int64_t shape[2] = {513, 1031};
  llmc_tensor *x = llmc_tensor_randn(LLMC_BF16, 2, shape, 11);
  llmc_tensor *d = llmc_tensor_to_device(x, 0);
  CHECK(d != NULL && llmc_tensor_is_cuda(d), "upload: %s", llmc_errmsg());
  llmc_tensor *back = llmc_tensor_to_device(d, -1);
  CHECK(back && memcmp(llmc_tensor_data(back), llmc_tensor_data(x), llmc_tensor_nbytes(x)) == 0, "round trip bytes");
  /* bf16 -> f32 kernel vs the CPU conversion */
  llmc_tensor *ref = llmc_tensor_to_dtype(x, LLMC_F32);
  llmc_tensor *dout = llmc_tensor_to_device(ref, 0);
  CHECK(llmc_cuda_convert_bf16_f32(llmc_tensor_data(dout), llmc_tensor_data(d), (size_t)llmc_tensor_numel(x), 0) == 0,
        "kernel: %s", llmc_errmsg());
  llmc_tensor *got = llmc_tensor_to_device(dout, -1);
  CHECK(got && memcmp(llmc_tensor_data(got), llmc_tensor_data(ref), llmc_tensor_nbytes(ref)) == 0,
        "bf16->f32 on the GPU equals the CPU bit for bit");
  size_t before = llmc_cuda_bytes_in_use(0);
  llmc_tensor_free(d);
  CHECK(llmc_cuda_bytes_in_use(0) < before, "freeing a device tensor returns its bytes to the pool");
  llmc_tensor_free(got); llmc_tensor_free(dout); llmc_tensor_free(ref); llmc_tensor_free(back); llmc_tensor_free(x);
  return check_summary();
#endif
}
