/*
** observer.h — activation statistics accumulators ("observers", prefix
** llmc_obs_): the running min / max (and sum of |x|) of the activations a
** calibration pass feeds them, batch after batch, as llm-compressor 0.14's
** observers keep them (algorithms.md §4.2, §4.5, §7; compressed-tensors-format.md §7).
**
** An observer is told the width `cols` of the activations once; each
** llmc_obs_update() is one calibration batch x [rows, cols] (row-major,
** rows = tokens).  It keeps `nstats` statistics, one per
**   LLMC_OBS_TENSOR   the whole tensor                    (nstats = 1)
**   LLMC_OBS_CHANNEL  column (the last dim)               (nstats = cols)
**   LLMC_OBS_HEAD     group of cols/heads consecutive columns, i.e. an
**                     attention head of [tokens, heads*head_dim] states,
**                     or a quantization group of size cols/heads (nstats = heads)
** and for each: min, max, abs_sum.
**
** A batch's min / max per statistic (over all its rows and, for TENSOR /
** HEAD, all its columns) are rounded to the statistics dtype D (the model's
** dtype: llm-compressor observes bf16 activations of a bf16 model while
** llmc computes in fp32; rounding is monotone, so rounding the fp32 min
** equals the min of the rounded values).  Then, per update rule:
**   STATIC_MINMAX      min = min(min, batch_min), max = max(max, batch_max)
**   MINMAX (LC's EMA)  first batch taken as is, then for min and max apart
**                      new = rnd_D(rnd_D(old * (float)(1-c)) + rnd_D(cur * (float)c))
**                      (PyTorch: a bf16 tensor times a Python float computes in
**                      fp32 and rounds once per op), c = averaging_constant
**   MEMORYLESS_MINMAX  the last batch only
** min / max therefore always hold values exact in D (stored as float).
** abs_sum (double) is the sum of |x| over every row of every batch (for
** TENSOR / HEAD also over the statistic's columns), whatever the rule; it
** feeds AWQ / SmoothQuant-style per-channel means (abs_sum / tokens).
**
** NaN: like torch.amin / amax / minimum / maximum, a NaN anywhere in a
** statistic's elements makes its min and max NaN, and a NaN statistic
** stays NaN in every later update (static and EMA alike; memoryless until
** a batch without NaN replaces it).
**
** Threads: OpenMP over blocks of columns; each column is reduced by one
** thread in row order and columns are combined in column order, so every
** result (abs_sum included) is the same for any number of threads.
**
** Errors: functions returning int give 0, or -1 after llmc_err() (error.h):
** bad reduce / update / dtype, heads not dividing cols, rows < 1, an update
** whose width differs from the one given at init, out of memory.
**
** Ownership: the observer owns its arrays min / max / abs_sum (nstats
** each), allocated by llmc_obs_init and released by llmc_obs_free
** (idempotent; a zeroed struct may be freed).  x is borrowed.
**
** Example (a static FP8 per-tensor input scale over a bf16 model):
**
**   llmc_obs o;
**   if (llmc_obs_init(&o, LLMC_OBS_TENSOR, LLMC_OBS_STATIC_MINMAX, hidden, 0, 0.01, LLMC_BF16) < 0) fail;
**   for (each batch) if (llmc_obs_update(&o, x, LLMC_F32, tokens, hidden) < 0) fail;
**   float s;   // calculate_qparams on the statistics (quant.h)
**   llmc_q_qparams_from_minmax(&fp8_args, LLMC_BF16, o.min, o.max, o.nstats, NULL, 1, &s, NULL);
**   llmc_obs_free(&o);
*/
#ifndef LLMC_OBSERVER_H
#define LLMC_OBSERVER_H

#include <stdint.h>

#include "dtype.h"

typedef enum {
  LLMC_OBS_TENSOR = 0,  /* one statistic over everything */
  LLMC_OBS_CHANNEL,     /* one per column (last dim) */
  LLMC_OBS_HEAD         /* `heads` groups of cols/heads consecutive columns (ATTN_HEAD) */
} llmc_obs_reduce;

typedef enum {
  LLMC_OBS_STATIC_MINMAX = 0,  /* running min of mins / max of maxes over batches */
  LLMC_OBS_MINMAX,             /* LC "minmax": EMA new = old*(1-c) + cur*c, first batch as is */
  LLMC_OBS_MEMORYLESS_MINMAX   /* the last batch only */
} llmc_obs_update_rule;

typedef struct llmc_obs {
  llmc_obs_reduce reduce;
  llmc_obs_update_rule update;
  int64_t cols;                /* width of every observed batch */
  int64_t heads;               /* HEAD: number of groups; else 0 */
  int64_t nstats;              /* 1, cols or heads */
  double averaging_constant;   /* c of the EMA (MINMAX only) */
  llmc_dtype dtype;            /* D: bf16, f16 or f32 */
  float *min, *max;            /* [nstats], values exact in D; meaningless while batches == 0 */
  double *abs_sum;             /* [nstats] sum of |x| */
  int64_t batches, tokens;     /* updates so far, rows so far */
} llmc_obs;

/* Set up o (any previous content is ignored, not freed).  heads: HEAD only
** (>= 1, must divide cols), ignored otherwise.  c: the EMA constant, in
** (0, 1] for MINMAX, ignored otherwise.  D: bf16, f16 or f32. */
int llmc_obs_init(llmc_obs *o, llmc_obs_reduce r, llmc_obs_update_rule u, int64_t cols,
                  int64_t heads, double c, llmc_dtype D);
/* One batch: x row-major [rows, cols], dtype xd (bf16, f16, f32); cols
** must equal o->cols. */
int llmc_obs_update(llmc_obs *o, const void *x, llmc_dtype xd, int64_t rows, int64_t cols);
/* Forget every statistic (batches = tokens = 0); keeps the configuration. */
void llmc_obs_reset(llmc_obs *o);
/* Release the arrays and zero o; idempotent. */
void llmc_obs_free(llmc_obs *o);

const char *llmc_obs_reduce_name(llmc_obs_reduce r);        /* "tensor", "channel", "head" */
const char *llmc_obs_update_name(llmc_obs_update_rule u);   /* "static_minmax", "minmax", ... */
int llmc_obs_reduce_from_name(const char *name);            /* -1 if unknown */
int llmc_obs_update_from_name(const char *name);            /* -1 if unknown */

#endif
