/*
** sparsegpt.h — one-shot pruning on the CPU: the SparseGPT solve
** (OpenBLAS + LAPACKE) and Wanda, exactly the algorithms of
** ../shared/docs/algorithms.md §6.1 / §6.2 (llm-compressor's
** SparseGPTModifier and WandaPruningModifier).
**
** SparseGPT uses the GPTQ Hessian (gptq.h: llmc_hessian, H = (2/n) sum x x^T
** with n the number of sequences; llm-compressor's running-average form is
** the same matrix up to fp32 rounding).  The solve: dead columns (diag 0)
** are zeroed, frac * mean(diag) dampening, U = chol(chol^-1(chol(H)))^T
** (upper, H^-1 = U^T U) — on a failed factorisation U = I and the result
** says so.  Per column block [i1, i2):
**   unstructured: score = W1^2 / diag(U1)^2 over the whole block (all rows,
**     the block's current weights), thr = the k-th smallest score with
**     k = int(numel * sparsity), prune every score <= thr (k + 1 entries,
**     more on ties — llm-compressor's rule);
**   N:M: at every column i with i % M == 0 (block-local) each row prunes the
**     N smallest W1[r, i:i+M]^2 / diag(U1)[i:i+M]^2 of its CURRENT (already
**     error-updated) weights; ties go to the lower column;
** and the OBS update of the kept weights (row-local inside a block, one
** sgemm for the rest of the matrix), as GPTQ.  Rows are independent inside a
** block and the threshold is an exact selection, so the result does not
** depend on the thread count.
**
** Wanda: per input column S_j = sum over all tokens of x_j^2 / n (n =
** sequences); metric = |W| * sqrt(S); N:M prunes the N smallest of every M
** consecutive columns per row; unstructured prunes, per row, the
** int(cols * sparsity) smallest (stable: ties go to the lower column).
**
** Ownership: the caller owns every buffer; llmc_colsq owns its sums.
**
**   llmc_hessian h; llmc_hessian_init(&h, cols);  ... llmc_hessian_add(&h, x, batch, tokens);
**   llmc_sparsegpt_opts o; llmc_sparsegpt_opts_init(&o); o.prune_n = 2; o.prune_m = 4;
**   llmc_sparsity_result r;
**   llmc_sparsegpt_solve(W, rows, cols, &h, &o, &r);     // W (fp32) now pruned and updated
**
**   llmc_colsq s; llmc_colsq_init(&s, cols); ... llmc_colsq_add(&s, x, LLMC_F32, batch, tokens);
**   llmc_wanda_prune(W, rows, cols, &s, 0.5, 0, 0, &r);
*/
#ifndef LLMC_SPARSEGPT_H
#define LLMC_SPARSEGPT_H

#include <stdint.h>

#include "dtype.h"
#include "gptq.h"

typedef struct llmc_sparsegpt_opts {
  double sparsity;         /* fraction pruned, [0, 1) (unstructured only; N:M ignores it) */
  int prune_n, prune_m;    /* N:M structure; 0, 0 = unstructured */
  int64_t block_size;      /* 128; a multiple of prune_m */
  double dampening_frac;   /* 0.01 */
  int preserve_mask;       /* keep the existing zeros pruned (preserve_sparsity_mask) */
} llmc_sparsegpt_opts;

void llmc_sparsegpt_opts_init(llmc_sparsegpt_opts *o);

typedef struct llmc_sparsity_result {
  double loss;             /* sum over rows of sum((w - q)^2 / d^2) / 2 (LC's "error") */
  int inverse_fallback;    /* 1: the Hessian could not be factored, U = I was used */
  int64_t dead_columns;
  int64_t zeros;           /* zeros of the result */
  double seconds;
} llmc_sparsity_result;

/* W [rows, cols] fp32 in/out.  h: the accumulated Hessian (not modified). */
int llmc_sparsegpt_solve(float *W, int64_t rows, int64_t cols, const llmc_hessian *h,
                         const llmc_sparsegpt_opts *opts, llmc_sparsity_result *res);

/* Wanda's per-column statistic: sum of x_j^2 over all tokens (fp64) and
** the number of sequences. */
typedef struct llmc_colsq {
  int64_t cols;
  double *sq;
  int64_t nsamples, ntokens;
} llmc_colsq;

int llmc_colsq_init(llmc_colsq *s, int64_t cols);
/* x: [batch * tokens, cols] rows of dtype dt (f32, bf16 or f16); n += batch */
int llmc_colsq_add(llmc_colsq *s, const void *x, llmc_dtype dt, int64_t batch, int64_t tokens);
void llmc_colsq_free(llmc_colsq *s);

/* Prune W [rows, cols] fp32 in place (no weight update). */
int llmc_wanda_prune(float *W, int64_t rows, int64_t cols, const llmc_colsq *s, double sparsity, int prune_n,
                     int prune_m, llmc_sparsity_result *res);

/* Check an N:M structure string "N:M" ("0:0" = unstructured): 0 and the
** numbers, or -1 with an error naming the problem. */
int llmc_sparsity_parse_mask(const char *s, int *n, int *m);

#endif
