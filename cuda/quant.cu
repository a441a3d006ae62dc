/*
** quant.cu — quantization kernels on the GPU with the interface of the CPU
** kernels (src/quant.h): min-max observation per scale element, quantize to
** codes, fake-quantize.  The per-element arithmetic is src/quant_math.h,
** compiled here as __host__ __device__, so a GPU byte equals the CPU byte by
** construction; tests/c/test_cuda_quant.c checks it on every preset where a
** GPU exists.  Scales and zero points come from llmc_q_qparams_from_minmax
** on the host (a few KB per weight): only the element passes, which carry
** the bandwidth, run on the device.
**
** Layout and semantics as in quant.h: x is a contiguous row-major
** [rows, cols] device buffer of bf16 / f16 / f32; codes are int8 (int),
** e4m3 bytes (fp8) or e2m1 nibbles (fp4), one per element.
*/
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "cuda_quant.h"
#include "error.h"
}
#include "quant_math.h"

namespace {

int kind_of(llmc_dtype d) { return d == LLMC_BF16 ? QM_BF16 : d == LLMC_F16 ? QM_F16 : QM_F32; }

/* promotion of two W kinds (bf16 with f16 -> f32, anything with f32 -> f32) */
int promote_kind(int a, int b) { return a == b ? a : QM_F32; }

struct qgrid {
  int strategy;
  int64_t rows, cols, srows, scols, gs, bh, bw;
};

__device__ __forceinline__ float load_elem(const void *x, int xk, int64_t i) {
  if (xk == QM_BF16) return qm_bf16_to_f32(((const uint16_t *)x)[i]);
  if (xk == QM_F16) return qm_f16_to_f32(((const uint16_t *)x)[i]);
  return ((const float *)x)[i];
}

__device__ __forceinline__ void store_elem(void *o, int ok, int64_t i, float v) {
  if (ok == QM_BF16) ((uint16_t *)o)[i] = qm_f32_to_bf16(v);
  else if (ok == QM_F16) ((uint16_t *)o)[i] = qm_f32_to_f16(v);
  else ((float *)o)[i] = v;
}

__device__ __forceinline__ int64_t scale_index(const qgrid &g, int64_t r, int64_t c) {
  switch (g.strategy) {
    case LLMC_QS_TENSOR: return 0;
    case LLMC_QS_CHANNEL: case LLMC_QS_TOKEN: case LLMC_QS_ATTN_HEAD: return r;
    case LLMC_QS_BLOCK: return (r / g.bh) * g.scols + c / g.bw;
    default: return r * g.scols + c / g.gs;   /* group, tensor_group */
  }
}

struct qelem {
  int xk, rk, sk, hz, kind, ok;
  float qmin, qmax, gscale;
  int has_global;
};

/* one element: code (mode 0) or fake-quantized value (mode 1) */
__global__ void quant_kernel(const void *x, qgrid g, qelem e, const float *scale, const float *zp, void *out,
                             int mode) {
  int64_t n = g.rows * g.cols;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / g.cols, c = i - r * g.cols;
    int64_t si = scale_index(g, r, c);
    float s = scale[si];
    if (e.has_global) s = s / e.gscale;               /* fp32(s / G) */
    float z = zp ? zp[si] : 0.0f;
    float t = qm_quant_t(load_elem(x, e.xk, i), s, z, e.rk, e.hz, e.qmin, e.qmax);
    if (mode == 0) {
      int code = qm_code(t, e.kind);
      if (e.kind == QM_INT) ((int8_t *)out)[i] = (int8_t)code;
      else ((uint8_t *)out)[i] = (uint8_t)code;
    } else {
      float q = qm_fq_value(t, e.kind);
      store_elem(out, e.ok, i, qm_dequant_value(q, s, z, e.sk, e.hz));
    }
  }
}

/* min / max of each scale element's elements: one thread block per element */
__global__ void minmax_kernel(const void *x, int xk, qgrid g, float *mn, float *mx) {
  int64_t si = blockIdx.x;
  int64_t r0, r1, c0, c1;
  switch (g.strategy) {
    case LLMC_QS_TENSOR: r0 = 0; r1 = g.rows; c0 = 0; c1 = g.cols; break;
    case LLMC_QS_BLOCK: {
      int64_t br = si / g.scols, bc = si % g.scols;
      r0 = br * g.bh; r1 = min(r0 + g.bh, g.rows); c0 = bc * g.bw; c1 = min(c0 + g.bw, g.cols);
      break;
    }
    case LLMC_QS_GROUP: case LLMC_QS_TENSOR_GROUP: {
      int64_t r = si / g.scols, k = si % g.scols;
      r0 = r; r1 = r + 1; c0 = k * g.gs; c1 = c0 + g.gs;
      break;
    }
    default: r0 = si; r1 = si + 1; c0 = 0; c1 = g.cols; break;
  }
  int64_t w = c1 - c0, n = (r1 - r0) * w;
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
    int64_t r = r0 + k / w, c = c0 + k % w;
    float v = load_elem(x, xk, r * g.cols + c);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  __shared__ float slo[256], shi[256];
  slo[threadIdx.x] = lo;
  shi[threadIdx.x] = hi;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) {
      slo[threadIdx.x] = fminf(slo[threadIdx.x], slo[threadIdx.x + s]);
      shi[threadIdx.x] = fmaxf(shi[threadIdx.x], shi[threadIdx.x + s]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) { mn[si] = slo[0]; mx[si] = shi[0]; }
}

int fail(cudaError_t e, const char *what) { return llmc_err("CUDA %s: %s", what, cudaGetErrorString(e)); }

int make_grid(const llmc_qargs *a, int64_t rows, int64_t cols, qgrid *g) {
  g->strategy = a->strategy;
  g->rows = rows;
  g->cols = cols;
  g->gs = a->group_size > 0 ? a->group_size : 1;
  g->bh = a->block_structure[0] > 0 ? a->block_structure[0] : 1;
  g->bw = a->block_structure[1] > 0 ? a->block_structure[1] : 1;
  return llmc_q_scale_grid(a, rows, cols, &g->srows, &g->scols);
}

unsigned grid_blocks(int64_t n) {
  int64_t b = (n + 255) / 256;
  return (unsigned)(b < 1 ? 1 : b > 65535 * 32 ? 65535 * 32 : b);
}

int run_quant(const llmc_qparams *qp, const void *x, llmc_dtype xd, void *out, llmc_dtype od, int mode, int device) {
  const llmc_qargs *a = &qp->args;
  qgrid g;
  if (make_grid(a, qp->rows, qp->cols, &g) < 0) return -1;
  qelem e;
  e.xk = kind_of(xd);
  e.sk = qp->has_global ? QM_F32 : kind_of(qp->dtype);
  e.rk = (a->rounding == LLMC_QROUND_FUSED || qp->has_global) ? QM_F32 : promote_kind(e.xk, kind_of(qp->dtype));
  e.hz = qp->zero_point != NULL;
  e.kind = a->type == LLMC_QTYPE_INT ? QM_INT : a->num_bits == 8 ? QM_FP8 : QM_FP4;
  if (e.kind == QM_INT) { e.qmax = (float)((1 << (a->num_bits - 1)) - 1); e.qmin = -e.qmax - 1; }
  else { e.qmax = e.kind == QM_FP8 ? 448.0f : 6.0f; e.qmin = -e.qmax; }
  e.has_global = qp->has_global;
  e.gscale = qp->global_scale;
  e.ok = kind_of(od);
  /* CT's fake_quantize is eager on every device: the quotient is rounded to
  ** the promoted dtype even in fused mode */
  if (mode == 1 && !qp->has_global) e.rk = promote_kind(e.xk, kind_of(qp->dtype));
  size_t ns = (size_t)(g.srows * g.scols) * sizeof(float);
  float *ds = NULL, *dz = NULL;
  cudaError_t err = cudaSetDevice(device);
  if (err == cudaSuccess) err = cudaMalloc(&ds, ns);
  if (err == cudaSuccess) err = cudaMemcpy(ds, qp->scale, ns, cudaMemcpyHostToDevice);
  if (err == cudaSuccess && qp->zero_point) {
    err = cudaMalloc(&dz, ns);
    if (err == cudaSuccess) err = cudaMemcpy(dz, qp->zero_point, ns, cudaMemcpyHostToDevice);
  }
  if (err == cudaSuccess) {
    quant_kernel<<<grid_blocks(g.rows * g.cols), 256>>>(x, g, e, ds, dz, out, mode);
    err = cudaGetLastError();
    if (err == cudaSuccess) err = cudaDeviceSynchronize();
  }
  cudaFree(ds);
  cudaFree(dz);
  return err == cudaSuccess ? 0 : fail(err, mode ? "fake-quantize kernel" : "quantize kernel");
}

}  // namespace

extern "C" int llmc_cuda_q_observe_minmax(const llmc_qargs *a, const void *x_dev, llmc_dtype xd, int64_t rows,
                                          int64_t cols, float *mn, float *mx, int device) {
  qgrid g;
  if (make_grid(a, rows, cols, &g) < 0) return -1;
  int64_t n = g.srows * g.scols;
  float *dmn = NULL, *dmx = NULL;
  cudaError_t err = cudaSetDevice(device);
  if (err == cudaSuccess) err = cudaMalloc(&dmn, sizeof(float) * (size_t)n);
  if (err == cudaSuccess) err = cudaMalloc(&dmx, sizeof(float) * (size_t)n);
  if (err == cudaSuccess) {
    minmax_kernel<<<(unsigned)n, 256>>>(x_dev, kind_of(xd), g, dmn, dmx);
    err = cudaGetLastError();
  }
  if (err == cudaSuccess) err = cudaMemcpy(mn, dmn, sizeof(float) * (size_t)n, cudaMemcpyDeviceToHost);
  if (err == cudaSuccess) err = cudaMemcpy(mx, dmx, sizeof(float) * (size_t)n, cudaMemcpyDeviceToHost);
  cudaFree(dmn);
  cudaFree(dmx);
  return err == cudaSuccess ? 0 : fail(err, "min-max kernel");
}

extern "C" int llmc_cuda_q_quantize(const llmc_qparams *qp, const void *x_dev, llmc_dtype xd, void *codes_dev,
                                    int device) {
  return run_quant(qp, x_dev, xd, codes_dev, xd, 0, device);
}

extern "C" int llmc_cuda_q_fake_quantize(const llmc_qparams *qp, const void *x_dev, llmc_dtype xd, void *out_dev,
                                         int device) {
  return run_quant(qp, x_dev, xd, out_dev, xd, 1, device);
}
