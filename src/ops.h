/*
** ops.h — general tensor ops on the CPU: elementwise arithmetic with
** broadcasting, unary maps, reductions, matmul.
**
** Arithmetic follows PyTorch's eager semantics, because quantization bytes
** depend on where rounding happens (compressed-tensors-format.md §0):
**   - result dtype = type promotion of the operands: the wider float wins
**     (bf16 + f16 -> f32), float beats int, and a 0-dim tensor or a number
**     never widens a dimensioned tensor of the same kind;
**   - a bf16/f16 result is computed in f32 and rounded once to the 16-bit
**     type (rnd_W(fp32_op(a, b)));  f64 results compute in f64, ints in f64
**     then truncate (exact below 2^53).
** Reductions run each output element's reduction sequentially in a fixed
** order (f64 accumulator), so results do not depend on the thread count.
** matmul computes in f32 through OpenBLAS (bf16/f16 upcast exactly).
**
** Ownership: every function returns a NEW tensor (caller frees) or NULL
** with llmc_err() set; arguments are borrowed.  `*_` functions work in
** place on their first argument and return 0 / -1.
**
**   llmc_tensor *y = llmc_binary(LLMC_OP_MUL, x, w);
**   llmc_tensor *m = llmc_reduce(LLMC_RED_AMAX, y, 1, 1);   // over dim 1, keepdim
*/
#ifndef LLMC_OPS_H
#define LLMC_OPS_H

#include "tensor.h"

typedef enum llmc_binop {
  LLMC_OP_ADD, LLMC_OP_SUB, LLMC_OP_MUL, LLMC_OP_DIV, LLMC_OP_POW,
  LLMC_OP_MAX, LLMC_OP_MIN,       /* elementwise maximum / minimum */
  LLMC_OP_EQ, LLMC_OP_NE, LLMC_OP_LT, LLMC_OP_LE, LLMC_OP_GT, LLMC_OP_GE,  /* -> bool */
} llmc_binop;

typedef enum llmc_unop {
  LLMC_OP_NEG, LLMC_OP_ABS, LLMC_OP_ROUND /* ties to even */, LLMC_OP_FLOOR, LLMC_OP_CEIL,
  LLMC_OP_SQRT, LLMC_OP_RSQRT, LLMC_OP_EXP, LLMC_OP_LOG, LLMC_OP_SILU, LLMC_OP_SIGMOID,
  LLMC_OP_TANH, LLMC_OP_RECIPROCAL, LLMC_OP_SIGN,
} llmc_unop;

typedef enum llmc_redop {
  LLMC_RED_SUM, LLMC_RED_MEAN, LLMC_RED_AMAX /* max |x| */, LLMC_RED_MAX, LLMC_RED_MIN,
  LLMC_RED_ARGMAX, LLMC_RED_ARGMIN,  /* -> int64, first index on ties */
} llmc_redop;

/* dtype PyTorch would give a binary op on a and b */
llmc_dtype llmc_promote(const llmc_tensor *a, const llmc_tensor *b);

llmc_tensor *llmc_binary(llmc_binop op, const llmc_tensor *a, const llmc_tensor *b);
/* a OP scalar (scalar on the right unless `scalar_first`): a Python-number
** operand, which never widens a float tensor */
llmc_tensor *llmc_binary_scalar(llmc_binop op, const llmc_tensor *a, double s, int scalar_first);
llmc_tensor *llmc_unary(llmc_unop op, const llmc_tensor *a);
llmc_tensor *llmc_clamp(const llmc_tensor *a, double lo, double hi);   /* NAN = no bound */
/* where(cond, a, b) with broadcasting; result dtype promote(a, b) */
llmc_tensor *llmc_where(const llmc_tensor *cond, const llmc_tensor *a, const llmc_tensor *b);

/* reduce over `dim` (dim = LLMC_ALL_DIMS: every element) */
#define LLMC_ALL_DIMS 99
llmc_tensor *llmc_reduce(llmc_redop op, const llmc_tensor *a, int dim, int keepdim);

/* a [..., M, K] @ b [..., K, N] -> [..., M, N] (batch dims broadcast) */
llmc_tensor *llmc_matmul(const llmc_tensor *a, const llmc_tensor *b);
/* x [..., in] @ w[out, in]^T (+ bias[out]) -> [..., out], in f32, result
** dtype = x's float dtype */
llmc_tensor *llmc_linear(const llmc_tensor *x, const llmc_tensor *w, const llmc_tensor *bias);
/* cat along dim */
llmc_tensor *llmc_cat(llmc_tensor *const *ts, int n, int dim);

/* The f32 view of a weight for gemm: returns t retained when already
** contiguous f32, else a converted copy. */
llmc_tensor *llmc_as_f32(const llmc_tensor *t);


/* ---- statistics (deterministic: fixed chunking, fixed combine order) ---- */
typedef struct llmc_stats {
  double min, max, mean, std, absmax;
  int64_t nan_count, numel;
} llmc_stats;
int llmc_tensor_stats(const llmc_tensor *t, llmc_stats *out);

#endif
