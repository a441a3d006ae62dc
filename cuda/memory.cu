/*
** memory.cu — device memory (caching allocator), host<->device copies and
** the first conversion kernel.  See cuda_backend.h.
*/
#include <cuda_runtime.h>

#include <mutex>
#include <stdlib.h>
#include <string.h>
#include <vector>

extern "C" {
#include "cuda_backend.h"
#include "error.h"
}

#define LLMC_CUDA_MAX_DEVICES 16

namespace {

struct cached_block { void *p; size_t size; };

struct device_pool {
  std::mutex lock;
  std::vector<cached_block> free_blocks;
  size_t in_use = 0, peak = 0, cached = 0;
};

device_pool pools[LLMC_CUDA_MAX_DEVICES];

/* size classes: round up to 512 B below 1 MiB, to 2 MiB above, so freed
** blocks of a layer's weights fit the next layer's */
size_t round_size(size_t n) {
  if (n < (1u << 20)) return (n + 511) & ~(size_t)511;
  return (n + (2u << 20) - 1) & ~(((size_t)2 << 20) - 1);
}

int cuda_fail(cudaError_t e, const char *what) {
  return llmc_err("CUDA %s: %s", what, cudaGetErrorString(e));
}

}  // namespace

extern "C" int llmc_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  /* clear the sticky "no driver" error */
    return 0;
  }
  return n;
}

extern "C" int llmc_cuda_device_name(int device, char *buf, size_t n) {
  cudaDeviceProp prop;
  cudaError_t e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess) return cuda_fail(e, "device properties");
  snprintf(buf, n, "%s", prop.name);
  return 0;
}

extern "C" void *llmc_cuda_malloc(size_t nbytes, int device) {
  if (device < 0 || device >= LLMC_CUDA_MAX_DEVICES || device >= llmc_cuda_device_count()) {
    llmc_err("CUDA device %d is not available (%d devices)", device, llmc_cuda_device_count());
    return NULL;
  }
  size_t size = round_size(nbytes ? nbytes : 1);
  device_pool &pool = pools[device];
  {
    std::lock_guard<std::mutex> g(pool.lock);
    /* best fit among cached blocks no more than 2x larger */
    size_t best = (size_t)-1;
    for (size_t i = 0; i < pool.free_blocks.size(); i++) {
      size_t s = pool.free_blocks[i].size;
      if (s >= size && s <= 2 * size && (best == (size_t)-1 || s < pool.free_blocks[best].size)) best = i;
    }
    if (best != (size_t)-1) {
      cached_block b = pool.free_blocks[best];
      pool.free_blocks.erase(pool.free_blocks.begin() + (long)best);
      pool.cached -= b.size;
      pool.in_use += b.size;
      if (pool.in_use > pool.peak) pool.peak = pool.in_use;
      return b.p;
    }
  }
  cudaSetDevice(device);
  void *p = NULL;
  cudaError_t e = cudaMalloc(&p, size);
  if (e != cudaSuccess) {
    cudaGetLastError();
    llmc_cuda_empty_cache(device);   /* give cached blocks back and retry once */
    e = cudaMalloc(&p, size);
  }
  if (e != cudaSuccess) {
    cudaGetLastError();
    llmc_err("CUDA out of memory on device %d: %zu bytes requested, %zu in use", device, nbytes,
             llmc_cuda_bytes_in_use(device));
    return NULL;
  }
  std::lock_guard<std::mutex> g(pool.lock);
  pool.in_use += size;
  if (pool.in_use > pool.peak) pool.peak = pool.in_use;
  return p;
}

extern "C" void llmc_cuda_free(void *p, size_t nbytes, int device) {
  if (!p || device < 0 || device >= LLMC_CUDA_MAX_DEVICES) return;
  size_t size = round_size(nbytes ? nbytes : 1);
  device_pool &pool = pools[device];
  std::lock_guard<std::mutex> g(pool.lock);
  pool.in_use -= size;
  pool.free_blocks.push_back({p, size});
  pool.cached += size;
}

extern "C" size_t llmc_cuda_bytes_in_use(int device) {
  if (device < 0 || device >= LLMC_CUDA_MAX_DEVICES) return 0;
  std::lock_guard<std::mutex> g(pools[device].lock);
  return pools[device].in_use;
}

extern "C" size_t llmc_cuda_bytes_peak(int device) {
  if (device < 0 || device >= LLMC_CUDA_MAX_DEVICES) return 0;
  std::lock_guard<std::mutex> g(pools[device].lock);
  return pools[device].peak;
}

extern "C" void llmc_cuda_empty_cache(int device) {
  if (device < 0 || device >= LLMC_CUDA_MAX_DEVICES) return;
  device_pool &pool = pools[device];
  std::lock_guard<std::mutex> g(pool.lock);
  cudaSetDevice(device);
  for (cached_block &b : pool.free_blocks) cudaFree(b.p);
  pool.free_blocks.clear();
  pool.cached = 0;
}

extern "C" int llmc_cuda_copy(llmc_tensor *dst, const llmc_tensor *src) {
  if (!llmc_tensor_same_shape(dst, src)) return llmc_err("CUDA copy: shapes differ");
  int dcuda = llmc_tensor_is_cuda(dst), scuda = llmc_tensor_is_cuda(src);
  if (dcuda && (!llmc_tensor_is_contiguous(dst))) return llmc_err("CUDA copy: device destination must be contiguous");
  if (scuda && (!llmc_tensor_is_contiguous(src))) return llmc_err("CUDA copy: device source must be contiguous");
  size_t n = llmc_tensor_nbytes(src);
  if (dcuda && scuda) {
    if (dst->dtype != src->dtype) return llmc_err("CUDA copy: device-to-device copies keep the dtype");
    cudaError_t e = cudaMemcpy(llmc_tensor_data(dst), llmc_tensor_data(src), n, cudaMemcpyDeviceToDevice);
    return e == cudaSuccess ? 0 : cuda_fail(e, "device copy");
  }
  if (dcuda) {
    /* host -> device: convert/contiguous on the host first */
    llmc_tensor *h = llmc_tensor_to_dtype((llmc_tensor *)src, dst->dtype);
    if (!h) return -1;
    cudaError_t e = cudaMemcpy(llmc_tensor_data(dst), llmc_tensor_data(h), llmc_tensor_nbytes(h), cudaMemcpyHostToDevice);
    llmc_tensor_free(h);
    return e == cudaSuccess ? 0 : cuda_fail(e, "upload");
  }
  /* device -> host */
  llmc_tensor *h = llmc_tensor_empty(src->dtype, src->ndim, src->shape);
  if (!h) return -1;
  cudaError_t e = cudaMemcpy(llmc_tensor_data(h), llmc_tensor_data(src), n, cudaMemcpyDeviceToHost);
  int rc = e == cudaSuccess ? llmc_tensor_copy_(dst, h) : cuda_fail(e, "download");
  llmc_tensor_free(h);
  return rc;
}

extern "C" llmc_tensor *llmc_cuda_to_device(const llmc_tensor *t, int device) {
  if (device < 0) {
    llmc_tensor *h = llmc_tensor_empty(t->dtype, t->ndim, t->shape);
    if (h && llmc_cuda_copy(h, t) < 0) { llmc_tensor_free(h); return NULL; }
    return h;
  }
  size_t n = llmc_tensor_nbytes(t);
  void *p = llmc_cuda_malloc(n, device);
  if (!p) return NULL;
  /* wrap as a CUDA storage: a host tensor header whose storage we re-point */
  llmc_tensor *d = llmc_tensor_from_mapped(t->dtype, t->ndim, t->shape, p, n, NULL, NULL);
  if (!d) { llmc_cuda_free(p, n, device); return NULL; }
  d->storage->kind = LLMC_STORAGE_CUDA;
  d->storage->device = device;
  if (llmc_cuda_copy(d, t) < 0) { llmc_tensor_free(d); return NULL; }
  return d;
}

namespace {
__global__ void bf16_to_f32_kernel(float *dst, const uint16_t *src, size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  size_t step = (size_t)gridDim.x * blockDim.x;
  for (; i < n; i += step) dst[i] = __uint_as_float((uint32_t)src[i] << 16);
}
}  // namespace

extern "C" int llmc_cuda_convert_bf16_f32(float *dst, const uint16_t *src, size_t n, int device) {
  cudaSetDevice(device);
  unsigned blocks = (unsigned)((n + 255) / 256);
  if (blocks > 65535u * 16) blocks = 65535u * 16;
  if (blocks == 0) return 0;
  bf16_to_f32_kernel<<<blocks, 256>>>(dst, src, n);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  return e == cudaSuccess ? 0 : cuda_fail(e, "bf16->f32 kernel");
}
