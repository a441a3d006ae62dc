/*
** quant_internal.h — helpers shared by the quant_*.c files (not public API).
*/
#ifndef LLMC_QUANT_INTERNAL_H
#define LLMC_QUANT_INTERNAL_H

#include "quant.h"
#include "quant_math.h"

/* the QM_* arithmetic kind of a float dtype (-1 if not bf16 / f16 / f32) */
static inline int q_kind(llmc_dtype t) {
  return t == LLMC_BF16 ? QM_BF16 : t == LLMC_F16 ? QM_F16 : t == LLMC_F32 ? QM_F32 : -1;
}

/* rnd_t(v) for a float dtype t (f64 is treated as exact) */
static inline float q_round_to(float v, llmc_dtype t) {
  int k = q_kind(t);
  return k < 0 ? v : qm_round(v, k);
}

/* element kind and range of args (§3.1) */
static inline int q_elem_kind(const llmc_qargs *a) {
  return a->type == LLMC_QTYPE_INT ? QM_INT : a->num_bits == 8 ? QM_FP8 : QM_FP4;
}
static inline void q_range(const llmc_qargs *a, float *qmin, float *qmax) {
  if (a->type == LLMC_QTYPE_INT) {
    *qmin = -(float)(1 << (a->num_bits - 1));
    *qmax = (float)((1 << (a->num_bits - 1)) - 1);
  } else if (a->num_bits == 8) {
    *qmin = -448.0f, *qmax = 448.0f;
  } else {
    *qmin = -6.0f, *qmax = 6.0f;
  }
}

/* load element i of a bf16 / f16 / f32 buffer as fp32 */
static inline float q_load(const void *x, int64_t i, int k) {
  if (k == QM_BF16) return qm_bf16_to_f32(((const uint16_t *)x)[i]);
  if (k == QM_F16) return qm_f16_to_f32(((const uint16_t *)x)[i]);
  return ((const float *)x)[i];
}
/* store an fp32 value to a bf16 / f16 / f32 buffer with RNE */
static inline void q_store(void *y, int64_t i, int k, float v) {
  if (k == QM_BF16) ((uint16_t *)y)[i] = qm_f32_to_bf16(v);
  else if (k == QM_F16) ((uint16_t *)y)[i] = qm_f32_to_f16(v);
  else ((float *)y)[i] = v;
}

/* Number of scale columns touched by a row, and the width of each span of
** columns that shares one scale (the last span of a block row may be short). */
static inline int64_t q_span_width(const llmc_qargs *a, int64_t cols) {
  if (a->strategy == LLMC_QS_GROUP || a->strategy == LLMC_QS_TENSOR_GROUP) return a->group_size;
  if (a->strategy == LLMC_QS_BLOCK) return a->block_structure[1];
  return cols;
}
/* scale row of tensor row r */
static inline int64_t q_scale_row(const llmc_qargs *a, int64_t r) {
  if (a->strategy == LLMC_QS_TENSOR) return 0;
  if (a->strategy == LLMC_QS_BLOCK) return r / a->block_structure[0];
  return r;
}

/* fused quantize + pack paths used by llmc_q_compress (quant_kernel.c) */
int q_quantize_pack_int32(const llmc_qparams *qp, const void *x, llmc_dtype xd, int32_t *out);
int q_quantize_pack_fp4(const llmc_qparams *qp, const void *x, llmc_dtype xd, uint8_t *out);

/* pack one row / unpack one row (quant_pack.c) */
void q_pack_row_int32(const int8_t *q, int64_t cols, int bits, int32_t *out);
void q_pack_row_fp4(const uint8_t *nib, int64_t cols, uint8_t *out);

#endif
