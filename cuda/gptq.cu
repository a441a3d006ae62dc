/*
** gptq.cu — GPTQ on the GPU: Hessian accumulation with cublasSsyrk and the
** solve with cuSOLVER (Cholesky, inverse, Cholesky) + a per-block column
** kernel + cublasSgemm.  Interface, semantics and numerics: cuda_gptq.h.
**
** Layout: every matrix is row-major as on the CPU.  cuBLAS / cuSOLVER are
** column-major, so they see the transpose: a row-major upper triangle is a
** column-major lower triangle, and a row-major product C = A B is computed as
** C^T = B^T A^T.  The symmetric matrices are the same either way.
**
** The per-element arithmetic of the column loop uses __fmul_rn / __fsub_rn /
** __fdiv_rn (and the double-precision _rn forms for the loss), which nvcc
** never contracts into an FMA: the CPU file is compiled with
** -ffp-contract=off for the same reason (algorithms.md §5.4).
*/
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern "C" {
#include "cuda_backend.h"
#include "cuda_gptq.h"
#include "error.h"
}
#include "quant_math.h"

namespace {

int kind_of(llmc_dtype d) { return d == LLMC_BF16 ? QM_BF16 : d == LLMC_F16 ? QM_F16 : QM_F32; }

int cuda_fail(cudaError_t e, const char *what) { return llmc_err("cuda gptq: %s: %s", what, cudaGetErrorString(e)); }

int blas_fail(cublasStatus_t s, const char *what) {
  return llmc_err("cuda gptq: cuBLAS %s failed: %s", what, cublasGetStatusString(s));
}

int solver_fail(cusolverStatus_t s, const char *what) {
  return llmc_err("cuda gptq: cuSOLVER %s failed (status %d)", what, (int)s);
}

unsigned grid_for(int64_t n) {
  int64_t b = (n + 255) / 256;
  return (unsigned)(b < 1 ? 1 : b > 65535 * 32 ? 65535 * 32 : b);
}

int check_device(int device) {
  int n = llmc_cuda_device_count();
  if (device < 0 || device >= n) return llmc_err("cuda gptq: CUDA device %d is not available (%d devices)", device, n);
  cudaError_t e = cudaSetDevice(device);
  return e == cudaSuccess ? 0 : cuda_fail(e, "select device");
}

__device__ __forceinline__ float load_elem(const void *x, int xk, int64_t i) {
  if (xk == QM_BF16) return qm_bf16_to_f32(((const uint16_t *)x)[i]);
  if (xk == QM_F16) return qm_f16_to_f32(((const uint16_t *)x)[i]);
  return ((const float *)x)[i];
}

/* ---- Hessian kernels ----------------------------------------------------- */

/* X = fp32(r2 * fp32(x)), as llmc_hessian_add scales its copy */
__global__ void scale_kernel(float *X, const void *x, int xk, int64_t n, float r2) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    X[i] = __fmul_rn(r2, load_elem(x, xk, i));
}

/* ---- solve kernels --------------------------------------------------------- */

/* Hn = H / n mirrored from the row-major upper triangle of the sums */
__global__ void normalize_kernel(float *Hn, const float *Hs, int64_t C, float n) {
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < C * C; k += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = k / C, j = k - i * C;
    float v = i <= j ? Hs[i * C + j] : Hs[j * C + i];
    Hn[k] = __fdiv_rn(v, n);
  }
}

__global__ void diag_kernel(float *d, const float *H, int64_t C) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < C; i += (int64_t)gridDim.x * blockDim.x)
    d[i] = H[i * C + i];
}

__global__ void permute_h_kernel(float *Hp, const float *H, const int64_t *perm, int64_t C) {
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < C * C; k += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = k / C, j = k - i * C;
    Hp[k] = H[perm[i] * C + perm[j]];
  }
}

/* dead columns get 1 on the diagonal, then every diagonal entry + damp */
__global__ void fix_diag_kernel(float *H, const uint8_t *dead, int64_t C, float damp) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < C; i += (int64_t)gridDim.x * blockDim.x)
    H[i * C + i] = __fadd_rn(dead[i] ? 1.0f : H[i * C + i], damp);
}

/* Wp[r, c] = fp32(w[r, perm[c]]), 0 for dead columns */
__global__ void load_w_kernel(float *Wp, const void *w, int wk, const int64_t *perm, const uint8_t *dead, int64_t rows,
                              int64_t cols) {
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < rows * cols;
       k += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = k / cols, c = k - r * cols;
    Wp[k] = dead[c] ? 0.0f : load_elem(w, wk, r * cols + perm[c]);
  }
}

__global__ void unpermute_kernel(float *out, const float *Wp, const int64_t *perm, int64_t rows, int64_t cols) {
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < rows * cols;
       k += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = k / cols, c = k - r * cols;
    out[r * cols + perm[c]] = Wp[k];
  }
}

/* row-major: strictly upper <- strictly lower (spotri left the lower one) */
__global__ void mirror_kernel(float *H, int64_t C) {
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < C * C; k += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = k / C, j = k - i * C;
    if (i < j) H[k] = H[j * C + i];
  }
}

/* row-major: keep the upper triangle (U), zero the rest; identity = 1 keeps
** only the unit diagonal (the RTN fallback's U = I) */
__global__ void triu_kernel(float *H, int64_t C, int identity) {
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < C * C; k += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = k / C, j = k - i * C;
    if (identity) H[k] = i == j ? 1.0f : 0.0f;
    else if (j < i) H[k] = 0.0f;
  }
}

struct qspec {
  int kind, strategy, sk, has_zp, has_global;
  float qmin, qmax, gscale;
  int64_t div, bh, scols;
};

/* One column block [i1, i1 + n) of GPTQ, one thread per row, exactly the
** CPU's per-row loop of llmc_gptq_solve.  With pitch > 0 the block's
** columns of the CUDA block's rows are staged in shared memory (pitch odd:
** thread t's element i sits in bank (t * pitch + i) % 32, no conflicts);
** with pitch 0 (blocks too wide for shared memory) the rows are used in
** place in global memory. */
__global__ void gptq_block_kernel(float *Wp, int64_t rows, int64_t cols, int64_t i1, int64_t n, const float *U,
                                  const int64_t *perm, const float *scale, const float *zp, qspec p, float *Err,
                                  int64_t B, double *losses, int pitch) {
  extern __shared__ float tile[];
  int64_t r0 = (int64_t)blockIdx.x * blockDim.x;
  int64_t r = r0 + threadIdx.x;
  int64_t nr = rows - r0 < (int64_t)blockDim.x ? rows - r0 : (int64_t)blockDim.x;
  float *w;
  if (pitch > 0) {
    for (int64_t k = threadIdx.x; k < nr * n; k += blockDim.x) {
      int64_t rr = k / n, cc = k - rr * n;
      tile[rr * pitch + cc] = Wp[(r0 + rr) * cols + i1 + cc];
    }
    __syncthreads();
    w = tile + (int64_t)threadIdx.x * pitch;
  } else {
    w = Wp + r * cols + i1;
  }
  if (r < rows) {
    double lsum = 0;
    for (int64_t i = 0; i < n; i++) {
      int64_t c = i1 + i;
      int64_t g = p.div ? perm[c] / p.div : 0;   /* original group of the column */
      int64_t si;
      switch (p.strategy) {
        case LLMC_QS_TENSOR: si = 0; break;
        case LLMC_QS_CHANNEL: si = r; break;
        case LLMC_QS_BLOCK: si = (r / p.bh) * p.scols + g; break;
        default: si = r * p.scols + g; break;     /* group, tensor_group */
      }
      float s = scale[si];
      if (p.has_global) s = __fdiv_rn(s, p.gscale);
      float z = p.has_zp ? zp[si] : 0.0f;
      float x = w[i];
      float t = __fdiv_rn(x, s);
      float q;
      if (p.kind == QM_INT) {
        float code = qm_clamp(rintf(__fadd_rn(t, z)), p.qmin, p.qmax);
        q = qm_round(__fmul_rn(qm_round(__fsub_rn(code, z), p.sk), s), p.sk);
      } else {
        float code = qm_fq_value(qm_clamp(t, p.qmin, p.qmax), p.kind);
        q = qm_round(__fmul_rn(code, s), p.sk);
      }
      const float *u = U + c * cols + i1;
      float e = __fdiv_rn(__fsub_rn(x, q), u[i]);
      w[i] = q;
      Err[r * B + i] = e;
      lsum = __dadd_rn(lsum, __dmul_rn((double)e, (double)e));
      for (int64_t j = i + 1; j < n; j++) w[j] = __fsub_rn(w[j], __fmul_rn(e, u[j]));
    }
    losses[r] = __dadd_rn(losses[r], lsum / 2);
  }
  if (pitch > 0) {
    __syncthreads();
    for (int64_t k = threadIdx.x; k < nr * n; k += blockDim.x) {
      int64_t rr = k / n, cc = k - rr * n;
      Wp[(r0 + rr) * cols + i1 + cc] = tile[rr * pitch + cc];
    }
  }
}

/* device allocations of one call, released together */
struct dev_bufs {
  int device;
  int count = 0;
  void *p[16];
  size_t n[16];
  explicit dev_bufs(int d) : device(d) {}
  void *get(size_t nbytes) {
    if (count == 16) { llmc_err("cuda gptq: too many device buffers"); return NULL; }
    void *q = llmc_cuda_malloc(nbytes, device);
    if (q) { p[count] = q; n[count] = nbytes; count++; }
    return q;
  }
  ~dev_bufs() {
    for (int i = 0; i < count; i++) llmc_cuda_free(p[i], n[i], device);
  }
};

struct diag_entry { float key; int64_t idx; };

int cmp_desc(const void *a, const void *b) {
  const diag_entry *x = (const diag_entry *)a, *y = (const diag_entry *)b;
  if (x->key > y->key) return -1;
  if (x->key < y->key) return 1;
  return (x->idx > y->idx) - (x->idx < y->idx);   /* stable on ties, as the CPU */
}

/* reads devInfo: 0 ok, 1 not positive definite, -1 error (set) */
int factor_info(const int *dinfo, const char *what) {
  int info = 0;
  cudaError_t e = cudaMemcpy(&info, dinfo, sizeof info, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) return cuda_fail(e, what);
  if (info < 0) return llmc_err("cuda gptq: cuSOLVER %s: argument %d is invalid", what, -info);
  return info > 0 ? 1 : 0;
}

double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* 1 when a factor's diagonal is not all positive: LAPACK flags a pivot
** <= 0 or NaN, while cuSOLVER documents only "not a real number"; checking
** the diagonal makes a zero pivot fall back on both sides alike.
** ddiag: device [C], hdiag: host [C] scratch.  -1 on a CUDA error. */
int bad_diagonal(const float *H, int64_t C, float *ddiag, float *hdiag) {
  diag_kernel<<<grid_for(C), 256>>>(ddiag, H, C);
  cudaError_t e = cudaMemcpy(hdiag, ddiag, sizeof(float) * (size_t)C, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) return cuda_fail(e, "factor diagonal download");
  for (int64_t i = 0; i < C; i++)
    if (!(hdiag[i] > 0.0f)) return 1;   /* <= 0 or NaN */
  return 0;
}

/* U with H^-1 = U^T U from the damped, permuted H (row-major, full), in
** place: spotrf(row-major L) + spotri + spotrf(row-major U) as the CPU.
** Returns 0 (factored), 1 (not positive definite: caller falls back), -1. */
int factor_hinv(cusolverDnHandle_t sol, float *H, int64_t C, dev_bufs &bufs, float *ddiag, float *hdiag) {
  int n = (int)C, lw1 = 0, lw2 = 0, lw3 = 0;
  /* row-major lower = column-major upper, and the other way round */
  cusolverStatus_t st = cusolverDnSpotrf_bufferSize(sol, CUBLAS_FILL_MODE_UPPER, n, H, n, &lw1);
  if (st == CUSOLVER_STATUS_SUCCESS) st = cusolverDnSpotri_bufferSize(sol, CUBLAS_FILL_MODE_UPPER, n, H, n, &lw2);
  if (st == CUSOLVER_STATUS_SUCCESS) st = cusolverDnSpotrf_bufferSize(sol, CUBLAS_FILL_MODE_LOWER, n, H, n, &lw3);
  if (st != CUSOLVER_STATUS_SUCCESS) return solver_fail(st, "workspace query");
  int lw = lw1 > lw2 ? lw1 : lw2;
  if (lw3 > lw) lw = lw3;
  float *work = (float *)bufs.get(sizeof(float) * (size_t)(lw > 0 ? lw : 1));
  int *dinfo = (int *)bufs.get(sizeof(int));
  if (!work || !dinfo) return -1;
  st = cusolverDnSpotrf(sol, CUBLAS_FILL_MODE_UPPER, n, H, n, work, lw, dinfo);
  if (st != CUSOLVER_STATUS_SUCCESS) return solver_fail(st, "Cholesky (spotrf)");
  int rc = factor_info(dinfo, "Cholesky of H");
  if (rc == 0) rc = bad_diagonal(H, C, ddiag, hdiag);
  if (rc != 0) return rc;
  st = cusolverDnSpotri(sol, CUBLAS_FILL_MODE_UPPER, n, H, n, work, lw, dinfo);
  if (st != CUSOLVER_STATUS_SUCCESS) return solver_fail(st, "inverse (spotri)");
  rc = factor_info(dinfo, "inverse of H");
  if (rc != 0) return rc;
  mirror_kernel<<<grid_for(C * C), 256>>>(H, C);
  st = cusolverDnSpotrf(sol, CUBLAS_FILL_MODE_LOWER, n, H, n, work, lw, dinfo);
  if (st != CUSOLVER_STATUS_SUCCESS) return solver_fail(st, "Cholesky of the inverse (spotrf)");
  rc = factor_info(dinfo, "Cholesky of H^-1");
  return rc == 0 ? bad_diagonal(H, C, ddiag, hdiag) : rc;
}

}  // namespace

/* ---- Hessian ------------------------------------------------------------------ */

extern "C" int llmc_cuda_hessian_init(llmc_cuda_hessian *h, int64_t cols, int device) {
  memset(h, 0, sizeof *h);
  if (cols <= 0 || cols > (1 << 17)) return llmc_err("cuda hessian: invalid column count %lld", (long long)cols);
  if (check_device(device) < 0) return -1;
  size_t nb = sizeof(float) * (size_t)cols * (size_t)cols;
  float *H = (float *)llmc_cuda_malloc(nb, device);
  if (!H) return llmc_err_prefix("cuda hessian %lldx%lld: ", (long long)cols, (long long)cols);
  cudaError_t e = cudaMemset(H, 0, nb);
  cublasHandle_t blas = NULL;
  cublasStatus_t bs = CUBLAS_STATUS_SUCCESS;
  if (e == cudaSuccess) bs = cublasCreate(&blas);
  if (e != cudaSuccess || bs != CUBLAS_STATUS_SUCCESS) {
    llmc_cuda_free(H, nb, device);
    return e != cudaSuccess ? cuda_fail(e, "hessian clear") : blas_fail(bs, "handle creation");
  }
  /* plain fp32 arithmetic: no TF32 tensor-core down-conversion */
  cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH);
  h->cols = cols;
  h->device = device;
  h->H = H;
  h->blas = blas;
  h->chunk = LLMC_CUDA_HESSIAN_CHUNK;
  return 0;
}

extern "C" void llmc_cuda_hessian_free(llmc_cuda_hessian *h) {
  if (h->H) llmc_cuda_free(h->H, sizeof(float) * (size_t)h->cols * (size_t)h->cols, h->device);
  if (h->blas) {
    cudaSetDevice(h->device);
    cublasDestroy((cublasHandle_t)h->blas);
  }
  memset(h, 0, sizeof *h);
}

extern "C" int llmc_cuda_hessian_add(llmc_cuda_hessian *h, const void *x, llmc_dtype dt, int64_t batch,
                                     int64_t tokens) {
  if (!h->H) return llmc_err("cuda hessian: not initialised");
  if (batch <= 0 || tokens <= 0) return llmc_err("cuda hessian: empty batch");
  if (dt != LLMC_F32 && dt != LLMC_BF16 && dt != LLMC_F16)
    return llmc_err("cuda hessian: inputs must be f32, bf16 or f16, not %s", llmc_dtype_name(dt));
  if (check_device(h->device) < 0) return -1;
  int64_t C = h->cols, n = batch * tokens;
  size_t es = llmc_dtype_size(dt);
  /* where x lives: an unregistered host pointer reports "unregistered" */
  cudaPointerAttributes attr;
  int on_dev = 0;
  if (cudaPointerGetAttributes(&attr, x) == cudaSuccess) {
    on_dev = attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
    if (on_dev && attr.device != h->device)
      return llmc_err("cuda hessian: input is on device %d, the Hessian on device %d", attr.device, h->device);
  } else {
    cudaGetLastError();
  }
  int64_t chunk = (h->chunk > 0 ? h->chunk : LLMC_CUDA_HESSIAN_CHUNK) / C;
  if (chunk < 1) chunk = 1;
  if (chunk > n) chunk = n;
  dev_bufs bufs(h->device);
  float *X = (float *)bufs.get(sizeof(float) * (size_t)(chunk * C));
  void *raw = on_dev ? NULL : bufs.get(es * (size_t)(chunk * C));
  if (!X || (!on_dev && !raw)) return llmc_err_prefix("cuda hessian add (%lld rows of %lld): ", (long long)chunk,
                                                      (long long)C);
  cublasHandle_t blas = (cublasHandle_t)h->blas;
  const float one = 1.0f, r2 = sqrtf(2.0f);
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    int64_t nr = n - r0 < chunk ? n - r0 : chunk;
    const char *src = (const char *)x + (size_t)(r0 * C) * es;
    if (!on_dev) {
      /* on the default stream: waits for the previous chunk's syrk to finish reading */
      cudaError_t e = cudaMemcpy(raw, src, es * (size_t)(nr * C), cudaMemcpyHostToDevice);
      if (e != cudaSuccess) return cuda_fail(e, "hessian upload");
      src = (const char *)raw;
    }
    scale_kernel<<<grid_for(nr * C), 256>>>(X, src, kind_of(dt), nr * C, r2);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_fail(e, "hessian scale kernel");
    /* column-major: X is [C, nr] (ld C); H(lower, col-major) += X X^T */
    cublasStatus_t bs = cublasSsyrk(blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)C, (int)nr, &one, X, (int)C, &one,
                                    h->H, (int)C);
    if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(bs, "ssyrk");
  }
  cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) return cuda_fail(e, "hessian accumulation");
  h->nsamples += batch;
  h->ntokens += n;
  return 0;
}

extern "C" int llmc_cuda_hessian_download(const llmc_cuda_hessian *h, float *H_host) {
  if (!h->H) return llmc_err("cuda hessian: not initialised");
  if (check_device(h->device) < 0) return -1;
  int64_t C = h->cols;
  cudaError_t e = cudaMemcpy(H_host, h->H, sizeof(float) * (size_t)(C * C), cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) return cuda_fail(e, "hessian download");
  for (int64_t i = 0; i < C; i++)
    for (int64_t j = i + 1; j < C; j++) H_host[j * C + i] = H_host[i * C + j];
  return 0;
}

extern "C" int llmc_cuda_hessian_to_host(const llmc_cuda_hessian *h, llmc_hessian *out) {
  if (llmc_hessian_init(out, h->cols) < 0) return -1;
  if (llmc_cuda_hessian_download(h, out->H) < 0) {
    llmc_hessian_free(out);
    return -1;
  }
  out->nsamples = h->nsamples;
  out->ntokens = h->ntokens;
  return 0;
}

/* ---- solve ---------------------------------------------------------------------- */

namespace {

struct solve_ctx {
  cublasHandle_t blas = NULL;
  cusolverDnHandle_t sol = NULL;
  ~solve_ctx() {
    if (blas) cublasDestroy(blas);
    if (sol) cusolverDnDestroy(sol);
  }
};

int solve(const void *w, llmc_dtype wdt, float *out, int64_t rows, int64_t cols, const llmc_hessian *h,
          const llmc_cuda_hessian *hd, const llmc_qparams *qp, const llmc_gptq_opts *opts, llmc_gptq_result *res,
          int device) {
  const llmc_qargs *a = &qp->args;
  if ((h == NULL) == (hd == NULL)) return llmc_err("cuda gptq: pass exactly one Hessian (host or device)");
  int64_t hcols = h ? h->cols : hd->cols, nsamples = h ? h->nsamples : hd->nsamples;
  if (hcols != cols || qp->rows != rows || qp->cols != cols)
    return llmc_err("cuda gptq: Hessian (%lld) / qparams (%lldx%lld) do not match the weight %lldx%lld",
                    (long long)hcols, (long long)qp->rows, (long long)qp->cols, (long long)rows, (long long)cols);
  if (rows <= 0 || cols <= 0) return llmc_err("cuda gptq: empty weight");
  if (nsamples <= 0) return llmc_err("cuda gptq: no calibration samples reached this module");
  if (a->strategy == LLMC_QS_TOKEN || a->strategy == LLMC_QS_ATTN_HEAD)
    return llmc_err("cuda gptq: strategy %s is not a weight strategy", llmc_q_strategy_name(a->strategy));
  if (wdt != LLMC_F32 && wdt != LLMC_BF16 && wdt != LLMC_F16)
    return llmc_err("cuda gptq: the weight must be f32, bf16 or f16, not %s", llmc_dtype_name(wdt));
  if (hd && hd->device != device)
    return llmc_err("cuda gptq: the Hessian is on device %d, the solve was asked for device %d", hd->device, device);
  if (check_device(device) < 0) return -1;

  qspec p;
  p.kind = a->type == LLMC_QTYPE_INT ? QM_INT : (a->num_bits == 8 ? QM_FP8 : QM_FP4);
  if (p.kind == QM_INT) { p.qmax = (float)((1 << (a->num_bits - 1)) - 1); p.qmin = -p.qmax - 1; }
  else if (p.kind == QM_FP8) { p.qmax = 448.0f; p.qmin = -448.0f; }
  else { p.qmax = 6.0f; p.qmin = -6.0f; }
  p.strategy = a->strategy;
  p.div = a->strategy == LLMC_QS_GROUP || a->strategy == LLMC_QS_TENSOR_GROUP ? a->group_size
        : a->strategy == LLMC_QS_BLOCK ? a->block_structure[1] : 0;
  p.bh = a->strategy == LLMC_QS_BLOCK ? a->block_structure[0] : 1;
  p.scols = qp->scols;
  p.sk = qp->has_global ? QM_F32 : kind_of(qp->dtype);
  p.has_zp = qp->zero_point != NULL && !a->symmetric;
  p.has_global = qp->has_global;
  p.gscale = qp->global_scale;
  int64_t B = opts->block_size > 0 ? opts->block_size : 128;
  if (B > cols) B = cols;
  int64_t nscale = qp->srows * qp->scols;

  solve_ctx ctx;
  cublasStatus_t bs = cublasCreate(&ctx.blas);
  if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(bs, "handle creation");
  cublasSetMathMode(ctx.blas, CUBLAS_DEFAULT_MATH);
  cusolverStatus_t ss = cusolverDnCreate(&ctx.sol);
  if (ss != CUSOLVER_STATUS_SUCCESS) return solver_fail(ss, "handle creation");

  size_t cc = (size_t)cols * (size_t)cols, rc = (size_t)rows * (size_t)cols;
  dev_bufs bufs(device);
  float *Hn = (float *)bufs.get(sizeof(float) * cc);
  float *Hp = (float *)bufs.get(sizeof(float) * cc);
  float *Wp = (float *)bufs.get(sizeof(float) * rc);
  void *wraw = bufs.get(llmc_dtype_size(wdt) * rc);
  float *Err = (float *)bufs.get(sizeof(float) * (size_t)rows * (size_t)B);
  double *losses = (double *)bufs.get(sizeof(double) * (size_t)rows);
  int64_t *dperm = (int64_t *)bufs.get(sizeof(int64_t) * (size_t)cols);
  uint8_t *ddead = (uint8_t *)bufs.get((size_t)cols);
  float *ddiag = (float *)bufs.get(sizeof(float) * (size_t)cols);
  float *dscale = (float *)bufs.get(sizeof(float) * (size_t)nscale);
  float *dzp = p.has_zp ? (float *)bufs.get(sizeof(float) * (size_t)nscale) : NULL;
  if (!Hn || !Hp || !Wp || !wraw || !Err || !losses || !dperm || !ddead || !ddiag || !dscale || (p.has_zp && !dzp))
    return llmc_err_prefix("cuda gptq %lldx%lld solve: ", (long long)rows, (long long)cols);

  /* host side: the tiny per-column arrays */
  struct host_arrays {
    diag_entry *de = NULL; int64_t *perm = NULL; uint8_t *dead = NULL; float *diag = NULL; double *loss = NULL;
    ~host_arrays() { free(de); free(perm); free(dead); free(diag); free(loss); }
  } hs;
  hs.de = (diag_entry *)malloc(sizeof(diag_entry) * (size_t)cols);
  hs.perm = (int64_t *)malloc(sizeof(int64_t) * (size_t)cols);
  hs.dead = (uint8_t *)malloc((size_t)cols);
  hs.diag = (float *)malloc(sizeof(float) * (size_t)cols);
  hs.loss = (double *)malloc(sizeof(double) * (size_t)rows);
  if (!hs.de || !hs.perm || !hs.dead || !hs.diag || !hs.loss) return llmc_err("cuda gptq: out of host memory");

  /* H / n on the device, from the host sums or the device accumulator */
  const float *Hs = hd ? hd->H : Hp;   /* Hp is free until the permutation */
  cudaError_t e = cudaSuccess;
  if (h) e = cudaMemcpy(Hp, h->H, sizeof(float) * cc, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) return cuda_fail(e, "Hessian upload");
  normalize_kernel<<<grid_for((int64_t)cc), 256>>>(Hn, Hs, cols, (float)nsamples);
  diag_kernel<<<grid_for(cols), 256>>>(ddiag, Hn, cols);
  e = cudaMemcpy(hs.diag, ddiag, sizeof(float) * (size_t)cols, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) return cuda_fail(e, "diagonal download");

  /* activation order, dead columns and the dampening value: on the host,
  ** in the CPU's order of operations (same permutation, same float) */
  for (int64_t i = 0; i < cols; i++) { hs.de[i].key = hs.diag[i]; hs.de[i].idx = i; hs.perm[i] = i; }
  if (opts->actorder) {
    qsort(hs.de, (size_t)cols, sizeof *hs.de, cmp_desc);
    for (int64_t i = 0; i < cols; i++) hs.perm[i] = hs.de[i].idx;
  }
  double diag_sum = 0;
  for (int64_t i = 0; i < cols; i++) {
    float d = hs.diag[hs.perm[i]];
    hs.dead[i] = d == 0.0f;
    if (hs.dead[i]) { d = 1.0f; res->dead_columns++; }
    diag_sum += d;
  }
  float damp = (float)(opts->dampening_frac * (diag_sum / (double)cols));

  e = cudaMemcpy(dperm, hs.perm, sizeof(int64_t) * (size_t)cols, cudaMemcpyHostToDevice);
  if (e == cudaSuccess) e = cudaMemcpy(ddead, hs.dead, (size_t)cols, cudaMemcpyHostToDevice);
  if (e == cudaSuccess) e = cudaMemcpy(wraw, w, llmc_dtype_size(wdt) * rc, cudaMemcpyHostToDevice);
  if (e == cudaSuccess) e = cudaMemcpy(dscale, qp->scale, sizeof(float) * (size_t)nscale, cudaMemcpyHostToDevice);
  if (e == cudaSuccess && dzp) e = cudaMemcpy(dzp, qp->zero_point, sizeof(float) * (size_t)nscale, cudaMemcpyHostToDevice);
  if (e == cudaSuccess) e = cudaMemset(losses, 0, sizeof(double) * (size_t)rows);
  if (e != cudaSuccess) return cuda_fail(e, "upload");
  float *H = Hn;
  if (opts->actorder) {
    permute_h_kernel<<<grid_for((int64_t)cc), 256>>>(Hp, Hn, dperm, cols);
    H = Hp;
  }
  load_w_kernel<<<grid_for((int64_t)rc), 256>>>(Wp, wraw, kind_of(wdt), dperm, ddead, rows, cols);
  fix_diag_kernel<<<grid_for(cols), 256>>>(H, ddead, cols, damp);
  e = cudaGetLastError();
  if (e != cudaSuccess) return cuda_fail(e, "preparation kernels");

  /* U = cholesky(cholesky_inverse(cholesky(H)), upper) or the RTN fallback */
  int f = factor_hinv(ctx.sol, H, cols, bufs, ddiag, hs.diag);
  if (f < 0) return -1;
  res->rtn_fallback = f;
  triu_kernel<<<grid_for((int64_t)cc), 256>>>(H, cols, f);
  const float *U = H;

  /* shared-memory tile of the block's columns when it fits */
  int dev_smem = 0;
  cudaDeviceGetAttribute(&dev_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  int64_t pitch = B | 1;
  int threads = 64;
  size_t smem = (size_t)threads * (size_t)pitch * sizeof(float);
  if (smem > 48 * 1024) { threads = 32; smem = (size_t)threads * (size_t)pitch * sizeof(float); }
  if (smem > 48 * 1024) {
    if ((int64_t)smem <= dev_smem &&
        cudaFuncSetAttribute(gptq_block_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) == cudaSuccess) {
      /* opted in */
    } else {
      cudaGetLastError();
      pitch = 0;
      smem = 0;
    }
  }
  unsigned nblk = (unsigned)((rows + threads - 1) / threads);
  const float minus1 = -1.0f, one = 1.0f;
  for (int64_t i1 = 0; i1 < cols; i1 += B) {
    int64_t i2 = i1 + B < cols ? i1 + B : cols, n = i2 - i1;
    gptq_block_kernel<<<nblk, threads, smem>>>(Wp, rows, cols, i1, n, U, dperm, dscale, dzp, p, Err, B, losses,
                                               (int)pitch);
    e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_fail(e, "column block kernel");
    /* W[:, i2:] -= Err1 @ U[i1:i2, i2:]  (column-major: W^T -= U^T Err^T) */
    if (i2 < cols) {
      bs = cublasSgemm(ctx.blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)(cols - i2), (int)rows, (int)n, &minus1,
                       U + i1 * cols + i2, (int)cols, Err, (int)B, &one, Wp + i2, (int)cols);
      if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(bs, "sgemm block update");
    }
    if (llmc_interrupted()) {
      cudaDeviceSynchronize();
      return -1;
    }
  }
  /* undo the permutation (without actorder perm is the identity and Wp is
  ** already in order); Hn is free now (U lives in Hp) and is reused when it
  ** is large enough */
  float *Wo = Wp;
  if (opts->actorder) {
    float *tmp = cc >= rc ? Hn : (float *)bufs.get(sizeof(float) * rc);
    if (!tmp) return llmc_err_prefix("cuda gptq %lldx%lld solve: ", (long long)rows, (long long)cols);
    unpermute_kernel<<<grid_for((int64_t)rc), 256>>>(tmp, Wp, dperm, rows, cols);
    Wo = tmp;
  }
  e = cudaMemcpy(out, Wo, sizeof(float) * rc, cudaMemcpyDeviceToHost);
  if (e == cudaSuccess) e = cudaMemcpy(hs.loss, losses, sizeof(double) * (size_t)rows, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) return cuda_fail(e, "result download");
  double loss = 0;
  for (int64_t r = 0; r < rows; r++) loss += hs.loss[r];
  res->loss = loss;
  return 0;
}

}  // namespace

extern "C" int llmc_cuda_gptq_solve(const void *w, llmc_dtype wdt, float *out, int64_t rows, int64_t cols,
                                    const llmc_hessian *h, const llmc_cuda_hessian *hd, const llmc_qparams *qp,
                                    const llmc_gptq_opts *opts, llmc_gptq_result *res, int device) {
  double t0 = now_s();
  memset(res, 0, sizeof *res);
  int rc = solve(w, wdt, out, rows, cols, h, hd, qp, opts, res, device);
  res->seconds = now_s() - t0;
  return rc;
}
