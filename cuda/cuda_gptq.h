/*
** cuda_gptq.h — Hessian accumulation (cuBLAS) and the GPTQ solve (cuSOLVER +
** cuBLAS + one kernel per column block) on the GPU, with the interface and
** the semantics of the CPU code in src/gptq.h (algorithms.md §5.2 / §5.4).
** Compiled only in a CUDA build (LLMC_HAVE_CUDA); every entry point fails
** with a clear error, never a crash, when no device is present.
**
** Hessian: H += X^T X with X = fp32(sqrt(2) * fp32(x)) as on the CPU, summed
** by cublasSsyrk (lower triangle in cuBLAS's column-major view, which is the
** upper triangle of the row-major matrix: the triangle llmc_hessian keeps);
** nsamples counts sequences, and the solve divides by it (sum, then divide).
** Summation order: cuBLAS's order is fixed for a given GPU, library version
** and matrix size, so a run is deterministic on a given device, but it is
** not OpenBLAS's order; entries may differ from the CPU Hessian in the last
** bits (the test allows 1e-5 of max|H|).  Inputs are uploaded and converted
** in chunks of h->chunk elements (whole rows; default LLMC_CUDA_HESSIAN_CHUNK);
** the chunk boundaries only change the summation order.
**
** Solve: everything before the Cholesky (H / n, the activation-order
** permutation, dead columns, the dampening value) is computed exactly as the
** CPU computes it (the permutation and the dampening sum on the host from
** diag(H), which is tiny), so with the same Hessian the two paths factor the
** same matrix.  Then cusolverDnSpotrf / Spotri / Spotrf give U with
** H^-1 = U^T U (the CPU's factor), and for each block of columns one kernel
** (one thread per row, the block's columns in shared memory) quantizes each
** column with the fixed qparams (src/quant_math.h), divides the error by
** U[c,c] and updates the block's remaining columns with explicitly rounded
** multiply and subtract (no FMA, as the CPU's -ffp-contract=off); then
** W[:, i2:] -= Err1 · U[i1:i2, i2:] is one cublasSgemm (fp32, no TF32).
** The per-row work is the CPU's, operation for operation, so the only
** differences from the CPU come from the Cholesky/inverse and the sgemm
** summation order: a few codes may round the other way (the test allows 1%).
** A failed factorisation (devInfo > 0, or a factor diagonal entry <= 0 or
** NaN, LAPACK's test: H not positive definite) falls back to plain RTN
** (U = I) and sets res->rtn_fallback, as the CPU does; it is not an error.
**
** Ownership: the caller owns every host buffer; an llmc_cuda_hessian owns
** its device matrix and cuBLAS handle (llmc_cuda_hessian_free releases
** them).  Device memory comes from the caching allocator of memory.cu, so an
** out-of-memory error names the bytes requested.  Not for concurrent use of
** one accumulator from several host threads.
**
**   llmc_cuda_hessian h;
**   llmc_cuda_hessian_init(&h, cols, 0);
**   for each batch: llmc_cuda_hessian_add(&h, x, LLMC_BF16, batch, tokens);   // host or device x
**   llmc_qparams qp; llmc_q_qparams_compute(&qp, &args, w_bf16, LLMC_BF16, rows, cols, NULL);
**   float *W = malloc(4 * rows * cols);
**   llmc_gptq_result r;
**   llmc_cuda_gptq_solve(w_bf16, LLMC_BF16, W, rows, cols, NULL, &h, &qp, &opts, &r, 0);
**   llmc_cuda_hessian_free(&h);
*/
#ifndef LLMC_CUDA_GPTQ_H
#define LLMC_CUDA_GPTQ_H

#include <stdint.h>

#include "gptq.h"
#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* elements of x converted per cuBLAS call (32 MiB of fp32) */
#define LLMC_CUDA_HESSIAN_CHUNK ((int64_t)8 << 20)

typedef struct llmc_cuda_hessian {
  int64_t cols;
  int device;
  float *H;           /* device [cols, cols] sums; row-major upper triangle valid (= llmc_hessian's) */
  int64_t nsamples;   /* sequences seen */
  int64_t ntokens;    /* tokens seen */
  int64_t chunk;      /* elements uploaded / converted per cuBLAS call: init sets
                      ** LLMC_CUDA_HESSIAN_CHUNK; a caller may lower it (the test
                      ** does, to cover several chunks) */
  void *blas;         /* cublasHandle_t */
} llmc_cuda_hessian;

int llmc_cuda_hessian_init(llmc_cuda_hessian *h, int64_t cols, int device);
/* Add a batch: x is [batch * tokens, cols] row-major, f32 / bf16 / f16, on
** the host or on h's device (detected).  n += batch. */
int llmc_cuda_hessian_add(llmc_cuda_hessian *h, const void *x, llmc_dtype dt, int64_t batch, int64_t tokens);
/* The accumulated sums as a full symmetric host matrix [cols, cols] (both
** triangles; not divided by nsamples, like llmc_hessian.H). */
int llmc_cuda_hessian_download(const llmc_cuda_hessian *h, float *H_host);
/* A CPU llmc_hessian with the same sums and counts (for llmc_gptq_solve);
** the caller frees it with llmc_hessian_free. */
int llmc_cuda_hessian_to_host(const llmc_cuda_hessian *h, llmc_hessian *out);
void llmc_cuda_hessian_free(llmc_cuda_hessian *h);   /* idempotent; zeroes h */

/* GPTQ solve on `device`.  w: the pre-solve weight [rows, cols] on the host,
** of dtype wdt (f32, bf16 or f16).  out: host fp32 [rows, cols], the
** quantize-dequantized weight as llmc_gptq_solve leaves in W (out may be w
** when wdt is f32).  Exactly one of h (host accumulator) and hd (device
** accumulator, which must be on `device`) is non-NULL; neither is modified.
** qp / opts / res: as llmc_gptq_solve (qp->global_scale is the NVFP4
** global scale).  Returns 0, or -1 + llmc_err. */
int llmc_cuda_gptq_solve(const void *w, llmc_dtype wdt, float *out, int64_t rows, int64_t cols, const llmc_hessian *h,
                         const llmc_cuda_hessian *hd, const llmc_qparams *qp, const llmc_gptq_opts *opts,
                         llmc_gptq_result *res, int device);

#ifdef __cplusplus
}
#endif

#endif
