/*
** quant.h — quantization kernels of llmc (prefix llmc_q_): observers,
** scale / zero-point computation, quantize, dequantize, fake-quantize,
** packing, and the on-disk tensors of every compressed-tensors format.
**
** The arithmetic is bit-exact to compressed-tensors 0.19 as specified in
** ../shared/docs/compressed-tensors-format.md (§1-§4, §9) and explained in
** docs/quantization.md.  The kernels work on raw contiguous row-major 2-D
** buffers `[rows, cols]` of dtype bf16, f16 or f32 (a Linear weight is
** `[out_features, in_features]`; activations are `[tokens, hidden]`), so they
** do not depend on the tensor module.  Per-element math lives in
** quant_math.h and is shared with the CUDA kernels.
**
** Two arithmetic modes (args.rounding, design.md §4):
**   LLMC_QROUND_EAGER (default): CT on CPU; x/s is rounded to the weight
**     dtype before rint / fp8 (double rounding).
**   LLMC_QROUND_FUSED: CT's Triton kernel on a GPU; x/s in fp32, one rounding.
**   They differ only for int and fp8 weights held in bf16/f16; scales, zero
**   points, NVFP4 and MX are identical.  Fake quantization is always eager
**   (CT's fake_quantize is eager on every device).
**
** Threads: OpenMP over rows / tiles.  Every output element (and every scale)
** is computed by exactly one thread in a fixed order, so the bytes do not
** depend on the thread count.
**
** Errors: functions returning int give 0 on success, -1 after llmc_err()
** (see error.h) on bad arguments; nothing prints or aborts.
**
** Ownership: the caller owns every buffer passed in or out.  The only
** allocations are the arrays inside llmc_qparams, filled by
** llmc_q_qparams_compute / llmc_q_qparams_alloc and released by
** llmc_q_qparams_free.
**
** Example (W4A16 on a bf16 weight, pack-quantized):
**
**   llmc_qargs wa, ia; int hw, hi;
**   llmc_q_preset("W4A16", &wa, &ia, &hw, &hi);
**   llmc_qparams qp;
**   if (llmc_q_qparams_compute(&qp, &wa, w, LLMC_BF16, rows, cols, NULL) < 0) fail;
**   llmc_qformat f = llmc_q_infer_format(&wa, hi ? &ia : NULL);   // pack-quantized
**   llmc_qtensor_desc d[LLMC_Q_MAX_TENSORS];
**   int n = llmc_q_layout(f, &wa, hi ? &ia : NULL, NULL, LLMC_BF16, rows, cols, d);
**   void *bufs[LLMC_Q_MAX_TENSORS];
**   for (int i = 0; i < n; i++) bufs[i] = d[i].source == LLMC_QT_WEIGHT ? malloc(d[i].nbytes) : NULL;
**   llmc_q_compress(f, &qp, w, LLMC_BF16, d, n, bufs);   // weight_packed, weight_scale, weight_shape
**   ... write "<module>.<d[i].name>" ...
**   llmc_q_qparams_free(&qp);
*/
#ifndef LLMC_QUANT_H
#define LLMC_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

/* ======================================================================
** Quantization arguments (CT QuantizationArgs, spec §1)
** ==================================================================== */

typedef enum llmc_qtype { LLMC_QTYPE_INT = 0, LLMC_QTYPE_FLOAT = 1 } llmc_qtype;

typedef enum llmc_qstrategy {
  LLMC_QS_TENSOR = 0,    /* one scale */
  LLMC_QS_CHANNEL,       /* one per row */
  LLMC_QS_GROUP,         /* one per group_size consecutive columns of a row */
  LLMC_QS_BLOCK,         /* one per block_structure tile (zero padding rule §3.10) */
  LLMC_QS_TOKEN,         /* one per row (dynamic activations: rows = tokens) */
  LLMC_QS_TENSOR_GROUP,  /* group + fp32 global scale (NVFP4) */
  LLMC_QS_ATTN_HEAD,     /* one per row: the caller lays the states out as [heads, rest] */
  LLMC_QS_COUNT
} llmc_qstrategy;

typedef enum llmc_qdynamic {
  LLMC_QDYN_STATIC = 0,  /* dynamic = false */
  LLMC_QDYN_DYNAMIC,     /* dynamic = true */
  LLMC_QDYN_LOCAL        /* dynamic = "local" (tensor_group: only the global scale is static) */
} llmc_qdynamic;

typedef enum llmc_qobserver {
  LLMC_QOBS_MINMAX = 0,  /* memoryless min-max (what RTN weights use) */
  LLMC_QOBS_MSE          /* memoryless MSE grid search (LC memoryless_mse, eager path) */
} llmc_qobserver;

typedef enum llmc_qrounding {
  LLMC_QROUND_EAGER = 0, /* CT on CPU (default) */
  LLMC_QROUND_FUSED      /* CT's Triton kernel on CUDA */
} llmc_qrounding;

typedef struct llmc_qargs {
  int num_bits;                 /* int: 1..8; float: 4 (e2m1) or 8 (e4m3fn) */
  llmc_qtype type;
  int symmetric;                /* 1 = symmetric */
  llmc_qstrategy strategy;
  int64_t group_size;           /* > 0 for group / tensor_group, else 0 */
  int64_t block_structure[2];   /* [tile_rows, tile_cols] for block, else 0 */
  llmc_qdynamic dynamic;
  llmc_qobserver observer;
  struct {                      /* MSE grid (LC observers/mse.py defaults) */
    double maxshrink;           /* 0.20: candidates p = 1 - i/grid, i < int(maxshrink*grid) */
    double grid;                /* 100 */
    double norm;                /* 2.4: error = sum |fq(x) - x|^norm */
    double expand;              /* 1.0 (>= 1): search starts from expand * min/max */
    int patience;               /* 5: stop after this many steps without improvement */
  } mse;
  int scale_dtype;              /* -1 = none, else an llmc_dtype (LLMC_F8_E4M3 for NVFP4, LLMC_U8 for MX) */
  int zp_dtype;                 /* -1 = infer (§1.3 step 9); else an llmc_dtype */
  llmc_qrounding rounding;      /* eager (default) or fused */
  int force_zero_point;         /* oneshot registers all-zero zero points for symmetric args and adds
                                   them: fp8 / MXFP8 elements that are exactly -0.0 give 0x00 instead
                                   of 0x80 (§3.4).  model_free_ptq: 0 (the default). */
} llmc_qargs;

/* CT defaults: 8-bit int, symmetric, tensor, static, min-max, MSE defaults,
** no scale_dtype, zp_dtype inferred, eager, no forced zero point. */
void llmc_q_args_init(llmc_qargs *a);
/* Validate (§1.3) and fill inferred fields (zp_dtype).  `what` names the
** args in error messages ("weights", "input_activations", ...). */
int llmc_q_args_check(llmc_qargs *a, const char *what);
/* MX args: float, 4 or 8 bits, group_size 32, scale_dtype uint8 (E8M0 scales) */
int llmc_q_args_is_mx(const llmc_qargs *a);

/* A preset scheme of §2 (case-insensitive: "W4A16", "FP8_BLOCK", "NVFP4", ...).
** Fills the weight and input-activation args (checked); *has_w / *has_in
** say which exist ("UNQUANTIZED" has neither).  Unknown name -> -1. */
int llmc_q_preset(const char *name, llmc_qargs *weights, llmc_qargs *inputs, int *has_w,
                  int *has_in);
/* The preset names, NULL-terminated, in §2 order. */
extern const char *const llmc_q_preset_names[];

const char *llmc_q_strategy_name(llmc_qstrategy s);   /* "tensor", "channel", ... */
int llmc_q_strategy_from_name(const char *name);      /* case-insensitive; -1 if unknown */

/* ======================================================================
** Scale grids and quantization parameters
** ==================================================================== */

/* Shape of the scale grid of a [rows, cols] tensor: tensor 1x1, channel /
** token / attn_head rows x 1, group rows x cols/gs (cols must divide),
** block ceil(rows/bh) x ceil(cols/bw). */
int llmc_q_scale_grid(const llmc_qargs *a, int64_t rows, int64_t cols, int64_t *srows,
                      int64_t *scols);

typedef struct llmc_qparams {
  llmc_qargs args;       /* checked copy */
  llmc_dtype dtype;      /* D: dtype the qparams were computed in (= the observed W / A) */
  int64_t rows, cols;    /* shape of the quantized tensor */
  int64_t srows, scols;  /* scale grid */
  float *scale;          /* [srows*scols] the *_scale values, exact in `dtype` (NVFP4: fp8
                            values; MX: 2^(b-127)); a dynamic tensor_group scale stays fp32 */
  float *zero_point;     /* [srows*scols] zero points as zp_dtype values, or NULL when no
                            zero-point tensor exists (symmetric and !force_zero_point) */
  float global_scale;    /* tensor_group: the fp32 global scale G; else 0 */
  int has_global;
} llmc_qparams;

/* Allocate the arrays of qp for args / shape (scales 0, zero points 0). */
int llmc_q_qparams_alloc(llmc_qparams *qp, const llmc_qargs *a, llmc_dtype D, int64_t rows,
                         int64_t cols);
void llmc_q_qparams_free(llmc_qparams *qp);   /* idempotent; zeroes qp */

/* Observe x with the args' observer (min-max or MSE), take the global scale
** (tensor_group: *global_scale if non-NULL — the shared G of a fused set,
** §6.3 — else the tensor's own) and compute scales / zero points (§3.3).
** x is [rows, cols] of dtype xd (bf16, f16, f32), which is also D.
** Allocates qp's arrays (free with llmc_q_qparams_free). */
int llmc_q_qparams_compute(llmc_qparams *qp, const llmc_qargs *a, const void *x, llmc_dtype xd,
                           int64_t rows, int64_t cols, const float *global_scale);

/* Min-max observer (§3.2, §9): per scale element of the grid, the min and
** max of its elements, as values of xd.  mn / mx have srows*scols entries.
** Block tiles are zero-padded (which never changes a result, §3.2). */
int llmc_q_observe_minmax(const llmc_qargs *a, const void *x, llmc_dtype xd, int64_t rows,
                          int64_t cols, float *mn, float *mx);
/* MSE grid search (LC memoryless_mse, eager: one patience counter for the
** whole tensor; tensor_group searches without global scale and scale_dtype).
** Returns the chosen (shrunk) min / max per scale element.  The error sums
** are accumulated in double in a fixed order and rounded to D once; PyTorch
** accumulates in its own order, so a candidate whose error ties another to
** the last bit may be chosen differently (documented in docs/quantization.md). */
int llmc_q_observe_mse(const llmc_qargs *a, const void *x, llmc_dtype xd, int64_t rows,
                       int64_t cols, float *mn, float *mx);

/* The largest |value| over n (min, max) pairs: the amax that feeds the
** global scale (over every member of a fused set, §6.3). */
float llmc_q_absmax(const float *mn, const float *mx, int64_t n);
/* Global scale (§3.3): G = rnd_D(rnd_D(1 / max(amax, tiny_D)) * 2688),
** NaN / inf -> 1.0; returned as the fp32 value. */
float llmc_q_global_scale(float amax, llmc_dtype D);

/* calculate_qparams (§3.3) for n (min, max) pairs held in dtype D.
** global_scale: NULL or G (tensor_group).  Writes n scales (values exact in
** D, or fp32 when G is given and is_param is 0) and, if zp is non-NULL, n
** zero points (zp_dtype values).  is_param = 1 rounds the result into the
** *_scale parameter dtype D (static args); 0 keeps it as computed (dynamic). */
int llmc_q_qparams_from_minmax(const llmc_qargs *a, llmc_dtype D, const float *mn,
                               const float *mx, int64_t n, const float *global_scale,
                               int is_param, float *scale, float *zp);

/* ======================================================================
** Quantize / dequantize / fake-quantize
** ==================================================================== */

/* Codes, one per element, row-major [rows, cols]:
**   int        int8_t   the integer in [q_min, q_max]
**   fp8        uint8_t  the float8_e4m3fn byte
**   fp4        uint8_t  the e2m1 nibble 0..15 (bit 3 = sign), unpacked
** x has dtype xd (normally qp->dtype; any of bf16/f16/f32 is accepted and
** promoted with the scale dtype as PyTorch does). */
int llmc_q_quantize(const llmc_qparams *qp, const void *x, llmc_dtype xd, void *codes);
/* (q - z) * s in the scale's dtype (fp32 s/G for a global scale), then cast
** to od (bf16, f16, f32).  CT's own decompression uses od = D, except
** NVFP4 / MXFP4 / MXFP8 which CT always decompresses to bf16. */
int llmc_q_dequantize(const llmc_qparams *qp, const void *codes, void *out, llmc_dtype od);
/* quantize-then-dequantize with the eager roundings, output in xd (may
** alias x).  Equals dequantize(quantize(x)) in eager mode, except that an
** int value rounding to zero from below stays -0.0 as in CT. */
int llmc_q_fake_quantize(const llmc_qparams *qp, const void *x, llmc_dtype xd, void *out);
/* One-shot dynamic quantize-dequantize of an activation (compute qparams
** from x itself, then fake-quantize into out, which may alias x): token =
** per row, tensor, group / tensor_group (global_scale required for
** dynamic = "local").  As in CT's dynamic path the (zero) zero point is
** always added, so -0.0 inputs become +0.0 before fp8 rounding. */
int llmc_q_qdq_dynamic(const llmc_qargs *a, const void *x, llmc_dtype xd, int64_t rows,
                       int64_t cols, const float *global_scale, void *out);

/* ======================================================================
** Packing (§4.4, §4.5, §3.8)
** ==================================================================== */

/* int32 words per packed row: ceil(cols * bits / 32) */
int64_t llmc_q_packed_cols(int64_t cols, int bits);
/* pack-quantized: each row of int8 codes (in [-2^(b-1), 2^(b-1)-1]) becomes
** a little-endian bit stream of u = q + 2^(b-1), element c at bit c*b,
** cut into int32 words: out is [rows, llmc_q_packed_cols(cols, bits)]. */
int llmc_q_pack_int32(const int8_t *q, int64_t rows, int64_t cols, int bits, int32_t *out);
int llmc_q_unpack_int32(const int32_t *p, int64_t rows, int64_t cols, int bits, int8_t *q);
/* The same along dim 0 (zero points): out is [packed_cols(rows), cols]. */
int llmc_q_pack_int32_dim0(const int8_t *q, int64_t rows, int64_t cols, int bits, int32_t *out);
int llmc_q_unpack_int32_dim0(const int32_t *p, int64_t rows, int64_t cols, int bits, int8_t *q);
/* FP4 nibbles [rows, cols] (cols even) -> bytes [rows, cols/2]: column 2j in
** the low nibble, 2j+1 in the high nibble. */
int llmc_q_pack_fp4(const uint8_t *nib, int64_t rows, int64_t cols, uint8_t *out);
int llmc_q_unpack_fp4(const uint8_t *p, int64_t rows, int64_t cols, uint8_t *nib);
/* E8M0: byte = 127 + floor(log2 s) (s a positive power of two, clamped to
** [0, 255]); value = 2^(b - 127). */
uint8_t llmc_q_e8m0_from_scale(float s);
float llmc_q_e8m0_to_scale(uint8_t b);

/* ======================================================================
** Compression formats and the tensors they write (§4.1-§4.3)
** ==================================================================== */

typedef enum llmc_qformat {
  LLMC_QF_DENSE = 0,         /* "dense": nothing transformed */
  LLMC_QF_NAIVE,             /* "naive-quantized" */
  LLMC_QF_INT,               /* "int-quantized" */
  LLMC_QF_FLOAT,             /* "float-quantized" */
  LLMC_QF_PACK,              /* "pack-quantized" */
  LLMC_QF_NVFP4,             /* "nvfp4-pack-quantized" */
  LLMC_QF_MXFP4,             /* "mxfp4-pack-quantized" */
  LLMC_QF_MXFP8,             /* "mxfp8-quantized" */
  LLMC_QF_COUNT
} llmc_qformat;

const char *llmc_q_format_name(llmc_qformat f);
int llmc_q_format_from_name(const char *name);   /* -1 if unknown */
/* §4.1 priority list for a Linear: w NULL -> dense; in may be NULL. */
llmc_qformat llmc_q_infer_format(const llmc_qargs *w, const llmc_qargs *in);

#define LLMC_Q_MAX_TENSORS 12

typedef enum llmc_qtensor_source {
  LLMC_QT_WEIGHT = 0,   /* filled by llmc_q_compress from the weight and its qparams */
  LLMC_QT_INPUT,        /* input activation calibration (input_scale, input_zero_point,
                           input_global_scale): filled by the caller */
  LLMC_QT_OUTPUT        /* same for static output activations */
} llmc_qtensor_source;

typedef struct llmc_qtensor_desc {
  char name[32];        /* suffix after "<module>.": "weight_packed", "weight_scale", ... */
  llmc_dtype dtype;     /* on-disk dtype */
  int ndim;             /* 1 or 2 */
  int64_t shape[2];
  size_t nbytes;
  llmc_qtensor_source source;
} llmc_qtensor_desc;

/* The tensors a quantized Linear writes in format f for a weight
** [rows, cols] of dtype W, with weight args w and optional static input /
** output args (NULL when absent), in writing order.  Returns the count
** (<= LLMC_Q_MAX_TENSORS) or -1.  Zero points of symmetric args are never
** listed (§4.2) except in the dense format when w->force_zero_point. */
int llmc_q_layout(llmc_qformat f, const llmc_qargs *w, const llmc_qargs *in,
                  const llmc_qargs *out, llmc_dtype W, int64_t rows, int64_t cols,
                  llmc_qtensor_desc *desc);

/* Fill the LLMC_QT_WEIGHT tensors of a layout (bufs[i] of desc[i].nbytes;
** other entries are ignored and may be NULL) from the weight w (dtype W, shape
** qp->rows x qp->cols) and its qparams.  Uses qp->args.rounding. */
int llmc_q_compress(llmc_qformat f, const llmc_qparams *qp, const void *w, llmc_dtype W,
                    const llmc_qtensor_desc *desc, int n, void *const *bufs);
/* Reconstruct the weight [rows, cols] into out (dtype od) from the tensors
** of a layout (as written by llmc_q_compress, or read from a checkpoint with
** the same names / dtypes / shapes; validated).  wa are the weight args. */
int llmc_q_decompress(llmc_qformat f, const llmc_qargs *wa, int64_t rows, int64_t cols,
                      const llmc_qtensor_desc *desc, int n, const void *const *bufs, void *out,
                      llmc_dtype od);

#endif
