/*
** cuda_backend.h — the CUDA side of the tensor runtime, callable from C.
**
** Compiled only when the build finds a CUDA toolkit (LLMC_HAVE_CUDA).  Every
** function works on a machine without a GPU or driver: llmc_cuda_device_count()
** returns 0 there and allocations fail with a clear error, so CPU-only runs
** of a CUDA build behave exactly like a CPU build.
**
** Memory: device allocations go through a per-device caching allocator
** (freed blocks are kept in size-class free lists and reused; never managed
** memory).  llmc_cuda_empty_cache() returns cached blocks to the driver.
** Out-of-memory errors name the bytes requested and in use.
**
** Ownership: llmc_cuda_malloc'd pointers are released with llmc_cuda_free
** (the tensor storage does this); tensors returned are new references.
**
**   if (llmc_cuda_device_count() > 0) {
**     llmc_tensor *d = llmc_tensor_to_device(host, 0);   // upload
**     llmc_tensor *h = llmc_tensor_to_device(d, -1);     // download
**   }
*/
#ifndef LLMC_CUDA_BACKEND_H
#define LLMC_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

int llmc_cuda_device_count(void);                 /* 0 without a GPU or driver */
int llmc_cuda_device_name(int device, char *buf, size_t n);
void *llmc_cuda_malloc(size_t nbytes, int device); /* NULL + llmc_err on failure */
void llmc_cuda_free(void *p, size_t nbytes, int device);
size_t llmc_cuda_bytes_in_use(int device);
size_t llmc_cuda_bytes_peak(int device);
void llmc_cuda_empty_cache(int device);
/* dst <- src where either side may be on a device; same shape; dtype
** conversion happens on the host side of the copy */
int llmc_cuda_copy(llmc_tensor *dst, const llmc_tensor *src);
/* new contiguous tensor on `device` (-1 = host) */
llmc_tensor *llmc_cuda_to_device(const llmc_tensor *t, int device);
/* bf16 -> f32 on the device (contiguous): the first kernel, tested against
** the CPU conversion */
int llmc_cuda_convert_bf16_f32(float *dst, const uint16_t *src, size_t n, int device);

#ifdef __cplusplus
}
#endif

#endif
