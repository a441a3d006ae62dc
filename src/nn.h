/*
** nn.h — the fused CPU ops of the transformer forward pass.
**
** The architectures (lua/llmc/models/<arch>.lua) are composed in Lua from these
** ops; each op does one whole step of a decoder layer in one multithreaded
** pass, so a forward pass crosses the Lua/C boundary a few dozen times per
** layer, not per token.  Numerics follow Hugging Face's eager fp32 code
** (the "conventions" field of the fixtures' golden.json): activations are
** f32 whatever the weight dtype; bf16/f16 weights are upcast exactly.
**
** Layout names used throughout: B = batch, T = query tokens, S = key tokens
** (cache + new), H = hidden size, nh / nkv = query / key-value heads,
** hd = head dim, V = vocabulary, E = experts, K = experts per token.
**
** Ownership: every function returning `llmc_tensor *` returns a NEW
** reference (llmc_tensor_free) or NULL with llmc_err() set; tensor
** arguments are BORROWED.  Functions returning int give 0 / -1.  Outputs
** are contiguous host f32 tensors unless stated.
**
** Threads: OpenMP inside each op; gemms are single-threaded OpenBLAS calls
** on per-thread slices inside the op's OpenMP region (OpenBLAS is set to one
** thread for that time and restored), so the two thread pools never compete
** for the cores.  Work is split in pieces whose size depends on the shapes
** only, so results are bit-identical for any thread count.
**
**   llmc_tensor *h = llmc_nn_embedding(embed_w, ids);        // [B,T] -> [B,T,H]
**   llmc_tensor *n = llmc_nn_rmsnorm(h, norm_w, 1e-5);
**   llmc_tensor *q = llmc_nn_linear(n, q_w, NULL);            // [B,T,nh*hd]
**   ... llmc_tensor_free(q); llmc_tensor_free(n); llmc_tensor_free(h);
*/
#ifndef LLMC_NN_H
#define LLMC_NN_H

#include <stdint.h>

#include "tensor.h"

/* y = x @ w^T (+ bias): x [..., in] (any float dtype), w [out, in] f32, bf16
** or f16 (converted to f32 in blocks of rows, never as a whole), bias [out].
** Returns [..., out] f32.  A fused convert+dot loop for <= 4 rows
** (decoding), else sgemms on chunks of 64 / 256 weight rows (upcast first
** when not f32). */
llmc_tensor *llmc_nn_linear(const llmc_tensor *x, const llmc_tensor *w, const llmc_tensor *bias);

/* rows of weight [V, H] picked by integer ids (any shape, any int dtype):
** [..., H] f32.  An id outside [0, V) is an error naming it. */
llmc_tensor *llmc_nn_embedding(const llmc_tensor *weight, const llmc_tensor *ids);

/* Hugging Face RMSNorm over the last dim: y = w * (x * rsqrt(mean(x^2) + eps))
** with the statistics in fp32 (accumulated in f64), x [..., D], w [D]. */
llmc_tensor *llmc_nn_rmsnorm(const llmc_tensor *x, const llmc_tensor *weight, double eps);

/* Rotary tables: positions [B, T] (int), inv_freq [hd/2] f32 ->
** *cos, *sin [B, T, hd] (the cat(freqs, freqs) layout), each multiplied by
** attention_scaling (1 unless yarn / longrope). */
int llmc_nn_rope_tables(const llmc_tensor *inv_freq, const llmc_tensor *positions, double attention_scaling,
                        llmc_tensor **cos_out, llmc_tensor **sin_out);

/* x * cos + rotate_half(x) * sin for x [B, T, n, hd] (any strides), cos/sin
** [B, T, hd]: a new contiguous [B, T, n, hd]. */
llmc_tensor *llmc_nn_rope(const llmc_tensor *x, const llmc_tensor *cos, const llmc_tensor *sin);

typedef struct llmc_nn_attn_opts {
  double scale;                  /* multiplies q.k (HF: head_dim^-0.5) */
  int64_t q_offset;              /* key index of query 0 (tokens already in the cache) */
  int causal;                    /* key j visible to query t iff j <= q_offset + t */
  int64_t window;                /* > 0: also iff (q_offset + t) - j < window (sliding window) */
  const llmc_tensor *key_mask;   /* NULL or [B, S], nonzero = real token (padding mask) */
} llmc_nn_attn_opts;

/* Grouped-query attention: q [B, T, nh, hd], k and v [B, S, nkv, hd] (any
** strides on the first three dims, so KV-cache views need no copy), nh a
** multiple of nkv.  softmax in f32 over the visible keys; a query that sees
** no key (a padding row) gets zeros.  Returns [B, T, nh*hd] f32.
** Long queries go through per-(batch, head) sgemms, short ones (decoding)
** through a vectorised loop; both compute the same function. */
llmc_tensor *llmc_nn_attention(const llmc_tensor *q, const llmc_tensor *k, const llmc_tensor *v,
                               const llmc_nn_attn_opts *opts);
/* Force a path for tests: 0 = automatic, 1 = loop, 2 = sgemm. */
void llmc_nn_attention_force_path(int path);

/* silu(gate) * up, elementwise, same shapes: f32 result. */
llmc_tensor *llmc_nn_silu_mul(const llmc_tensor *gate, const llmc_tensor *up);

/* MoE routing: logits [N, E] -> softmax in f32, top-k (ties: lower expert
** id first, sorted by weight descending), renormalised to sum 1 when
** `renorm`.  *ids [N, K] int64, *weights [N, K] f32. */
int llmc_nn_moe_route(const llmc_tensor *logits, int top_k, int renorm, llmc_tensor **ids_out,
                      llmc_tensor **weights_out);

/* The tokens routed to each expert: for ids [N, K] (values < E) fills
** counts[E] and returns, through *tokens and *slots (malloc'd arrays of
** N*K int64 the caller frees), the (token, slot) pairs grouped by expert in
** expert order, tokens ascending within an expert; offsets[e] is where
** expert e's group starts (offsets has E + 1 entries). */
int llmc_nn_moe_dispatch(const llmc_tensor *ids, int64_t num_experts, int64_t *offsets, int64_t **tokens,
                         int64_t **slots);

/* rows of x [N, D] picked by idx [n] (int64): [n, D] f32 */
llmc_tensor *llmc_nn_gather_rows(const llmc_tensor *x, const llmc_tensor *idx);

/* out[idx[i], :] += src[i, :] * scale[i] for out [N, D] f32 (in place;
** made writable first), src [n, D], scale NULL or [n].  The product is
** rounded to f32 before the add, as HF's `expert(x) * w` then index_add_. */
int llmc_nn_index_add_rows_(llmc_tensor *out, const llmc_tensor *idx, const llmc_tensor *src,
                            const llmc_tensor *scale);

/* Per-row cross entropy: logits [N, V], targets [N] (int; a negative target
** is ignored and gets nll 0).  *nll and *lse (either may be NULL) are [N]
** f64: lse = log(sum(exp(logits))), nll = lse - logits[target]. */
int llmc_nn_cross_entropy(const llmc_tensor *logits, const llmc_tensor *targets, llmc_tensor **nll_out,
                          llmc_tensor **lse_out);

/* Draw a token from one row of logits [V]: temperature, then top-k
** (k <= 0: off), then top-p (nucleus; >= 1: off), then a draw from the
** softmax with the xoshiro-style generator whose state is *rng (advanced).
** temperature <= 0 means greedy (argmax, first index on ties).  Returns the
** token id, or -1 with llmc_err(). */
int64_t llmc_nn_sample(const llmc_tensor *logits, double temperature, int64_t top_k, double top_p,
                       uint64_t *rng);

/* Where the time went (seconds since the last reset), for the benchmark:
** gemm = the matrix products of llmc_nn_linear (its wall time less the
** weight upcasts), convert = those upcasts (bf16/f16 -> f32), attention =
** the whole attention op, gemm_flops = 2 * rows * in * out summed. */
typedef struct llmc_nn_profile {
  double gemm_s, convert_s, attention_s;
  double gemm_flops;
} llmc_nn_profile;
void llmc_nn_profile_get(llmc_nn_profile *out);
void llmc_nn_profile_reset(void);

#endif
