/*
** cuda_quant.h — quantization kernels on the GPU (cuda/quant.cu), with the
** semantics of the CPU kernels in src/quant.h: the same llmc_qargs /
** llmc_qparams, the same bytes.  Buffers named *_dev live on `device`;
** mn / mx are host arrays of srows*scols floats.  Errors: -1 + llmc_err.
**
**   llmc_cuda_q_observe_minmax(&args, w_dev, LLMC_BF16, rows, cols, mn, mx, 0);
**   llmc_q_qparams_alloc(&qp, &args, LLMC_BF16, rows, cols);
**   llmc_q_qparams_from_minmax(&args, LLMC_BF16, mn, mx, n, NULL, 1, qp.scale, qp.zero_point);
**   llmc_cuda_q_quantize(&qp, w_dev, LLMC_BF16, codes_dev, 0);
*/
#ifndef LLMC_CUDA_QUANT_H
#define LLMC_CUDA_QUANT_H

#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

int llmc_cuda_q_observe_minmax(const llmc_qargs *a, const void *x_dev, llmc_dtype xd, int64_t rows, int64_t cols,
                               float *mn, float *mx, int device);
int llmc_cuda_q_quantize(const llmc_qparams *qp, const void *x_dev, llmc_dtype xd, void *codes_dev, int device);
int llmc_cuda_q_fake_quantize(const llmc_qparams *qp, const void *x_dev, llmc_dtype xd, void *out_dev, int device);

#ifdef __cplusplus
}
#endif

#endif
