/*
** gptq.h — Hessian accumulation and the GPTQ solve on the CPU (OpenBLAS +
** LAPACKE), exactly the algorithm of ../shared/docs/algorithms.md §5.2/§5.4.
**
** Hessian (§5.2): for every calibration batch x [B, T, C] (or [T, C]),
**   n += B (sequences, not tokens);  X = sqrt(2) * fp32(x) as [B*T, C];
**   H += X^T X  (ssyrk, upper triangle; mirrored at solve time).
** The solve uses H / n.  (The issue text mentions llm-compressor's older
** running normalisation H *= n/(n+k); the digest, re-checked against the
** released code, says sum-then-divide, which is what this does.)
**
** Solve (§5.4): scales / zero points come from the weight observer run on
** the pre-solve weight (llmc_q_qparams_compute) and stay fixed; activation
** ordering permutes columns by descending diag(H) while each column keeps
** its original group; dead columns (diag 0) are zeroed; dampening adds
** frac * mean(diag) to the diagonal; a failed Cholesky falls back to plain
** RTN (U = I) and says so in the result.  Every row is processed
** independently inside a block (one thread per row range), and the block
** update W[:, i2:] -= Err1 @ U[i1:i2, i2:] is one sgemm, so the result does
** not depend on the thread count.
**
** Ownership: the caller owns every buffer; llmc_hessian owns its H.
**
**   llmc_hessian h; llmc_hessian_init(&h, cols);
**   for each batch: llmc_hessian_add(&h, x_f32, batch, tokens);
**   llmc_qparams qp; llmc_q_qparams_compute(&qp, &args, w_bf16, LLMC_BF16, rows, cols, NULL);
**   float *W = ...fp32 copy of the weight...;
**   llmc_gptq_result r;
**   llmc_gptq_solve(W, rows, cols, &h, &qp, &opts, &r);   // W now holds the quantized weight
*/
#ifndef LLMC_GPTQ_H
#define LLMC_GPTQ_H

#include <stdint.h>

#include "quant.h"

typedef struct llmc_hessian {
  int64_t cols;
  float *H;           /* [cols, cols], upper triangle valid until llmc_hessian_finalize */
  int64_t nsamples;   /* sequences seen */
  int64_t ntokens;    /* tokens seen (for reports) */
} llmc_hessian;

int llmc_hessian_init(llmc_hessian *h, int64_t cols);
/* Add a batch: x is [batch * tokens, cols] fp32 rows (batch sequences of
** `tokens` tokens each).  n += batch. */
int llmc_hessian_add(llmc_hessian *h, const float *x, int64_t batch, int64_t tokens);
/* Same from bf16 / f16 / f32 data (converted to fp32 exactly, in chunks). */
int llmc_hessian_add_any(llmc_hessian *h, const void *x, llmc_dtype dt, int64_t batch, int64_t tokens);
void llmc_hessian_free(llmc_hessian *h);
/* dst [cols, cols] (caller's) := H / n, both triangles: what the solvers
** factor (n = sequences seen, nsamples > 0) */
void llmc_hessian_normalized(const llmc_hessian *h, float *dst);

typedef struct llmc_gptq_opts {
  int64_t block_size;      /* 128 */
  double dampening_frac;   /* 0.01 */
  int actorder;            /* 1 = "weight"/"static" (the default), 0 = none */
} llmc_gptq_opts;

void llmc_gptq_opts_init(llmc_gptq_opts *o);

typedef struct llmc_gptq_result {
  double loss;             /* sum over rows of sum(e^2)/2 (LC's logged "error") */
  int rtn_fallback;        /* 1 when the Cholesky failed and RTN was used */
  int64_t dead_columns;
  double seconds;
} llmc_gptq_result;

/* W [rows, cols] fp32 in/out: on return, the quantize-dequantized weight
** (values exact in the scale dtype).  H: the accumulated Hessian (not
** modified).  qp: the weight qparams (strategy tensor / channel / group /
** tensor_group / block; int, fp8 or fp4 args). */
int llmc_gptq_solve(float *W, int64_t rows, int64_t cols, const llmc_hessian *h, const llmc_qparams *qp,
                    const llmc_gptq_opts *opts, llmc_gptq_result *res);

/* The part of a solve that depends only on the Hessian and the options: the
** column order, the dead columns and U (the upper Cholesky factor of the
** damped H^-1).  Modules that share an input (q/k/v, gate/up) share it: the
** first llmc_gptq_solve_shared fills it, the next ones with the same Hessian
** (same sample and token counts) and options reuse it, so a layer factors
** one matrix per distinct input instead of one per module.  Reuse gives the
** same bytes as factoring again.  Owns perm, dead and U (cols x cols fp32:
** the caller decides how long to keep that); zero-initialise it, release it
** with llmc_gptq_factor_free. */
typedef struct llmc_gptq_factor {
  int64_t cols, nsamples, ntokens;   /* of the Hessian it was made from */
  int actorder;
  double dampening_frac;
  int64_t *perm;                     /* [cols] solve order -> original column */
  unsigned char *dead;               /* [cols] in solve order: diag(H) was 0 */
  float *U;                          /* [cols, cols] upper, in solve order */
  int64_t dead_columns;
  int rtn_fallback;                  /* the factorisation failed: U = I */
} llmc_gptq_factor;

/* llmc_gptq_solve with a factor that is reused when it matches (h, opts)
** and (re)made into *f otherwise. */
int llmc_gptq_solve_shared(float *W, int64_t rows, int64_t cols, const llmc_hessian *h, const llmc_qparams *qp,
                           const llmc_gptq_opts *opts, llmc_gptq_factor *f, llmc_gptq_result *res);
void llmc_gptq_factor_free(llmc_gptq_factor *f);

/* The preconditioning GPTQ and SparseGPT share (algorithms.md §5.4, §6.1),
** in place on H = the normalised Hessian (cols x cols, full, row-major):
** dead columns (H_ii == 0 -> H_ii = 1, column i of W [rows, cols] zeroed
** unless W is NULL, *dead_columns incremented), relative dampening
** (dampening_frac x the mean diagonal), then H := U, the upper Cholesky
** factor of H^-1 (H^-1 = U^T U; the lower part zeroed).  Returns 1 when a
** factorisation failed and U was set to the identity (the caller's
** fallback), else 0. */
int llmc_gptq_inverse_factor(float *H, int64_t cols, float *W, int64_t rows, double dampening_frac,
                             int64_t *dead_columns);

#endif
