/*
** quant_math.h — per-element quantization arithmetic, bit-exact to
** compressed-tensors 0.19 (../shared/docs/compressed-tensors-format.md §0,
** §3.3-§3.8, §3.13).
**
** Everything here is a `static inline` function of scalars: no allocation,
** no libc beyond <math.h> (rintf), no OpenMP, no globals or tables, so the
** same header compiles in the C kernels (src/quant_*.c) and, later, in the
** CUDA kernels (cuda/), where QM_FN adds __host__ __device__.
**
** Vocabulary (spec §0):
**   - a "W kind" (QM_F32, QM_BF16, QM_F16) names the dtype a value is held in;
**     qm_round(v, k) is rnd_k(v): the fp32 value v rounded (RNE) to dtype k
**     and returned as the fp32 value it denotes.  An op on 16-bit tensors is
**     computed in fp32 and rounded once to the 16-bit dtype, so
**     `rnd_W(x / s)` is written qm_round(x / s, k) with x, s fp32 values.
**   - fp8 = float8_e4m3fn, fp4 = E2M1 nibble (bit 3 = sign).
** Ownership: nothing here allocates or keeps state.
*/
#ifndef LLMC_QUANT_MATH_H
#define LLMC_QUANT_MATH_H

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define QM_FN static __host__ __device__ __forceinline__
#else
#define QM_FN static inline
#endif

/* dtype kinds of the arithmetic (values stay fp32 in registers) */
enum { QM_F32 = 0, QM_BF16 = 1, QM_F16 = 2 };

/* element kinds of the quantized value */
enum { QM_INT = 0, QM_FP8 = 1, QM_FP4 = 2 };

/* ---- bit casts ---------------------------------------------------------- */
QM_FN uint32_t qm_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  union { float f; uint32_t u; } c;
  c.f = f;
  return c.u;
#endif
}
QM_FN float qm_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  union { float f; uint32_t u; } c;
  c.u = u;
  return c.f;
#endif
}

/* ---- bf16 ---------------------------------------------------------------- */
QM_FN float qm_bf16_to_f32(uint16_t h) { return qm_float((uint32_t)h << 16); }
/* The helpers below are written without early returns (both sides computed,
** then selected) so that GCC if-converts and vectorises the loops using them. */
QM_FN uint16_t qm_f32_to_bf16(float f) {
  uint32_t u = qm_bits(f);
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;   /* RNE; overflow -> inf */
  uint32_t q = (u >> 16) | 0x40u;                        /* quiet NaN */
  return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
}
QM_FN float qm_round_bf16(float f) {
  uint32_t u = qm_bits(f);
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  return qm_float((u & 0x7fffffffu) > 0x7f800000u ? u : r);
}

/* rint(v) for |v| < 2^22, ties to even, by the 1.5 * 2^23 magic number (the
** addition rounds in the default RNE mode); the sign of a zero result is
** taken from v, as rint does (rint(-0.3) = -0.0). */
QM_FN float qm_rint_small(float v) {
  float r = (v + 0x1.8p23f) - 0x1.8p23f;
  return qm_float((qm_bits(r) & 0x7fffffffu) | (qm_bits(v) & 0x80000000u));
}

/* ---- fp16 ---------------------------------------------------------------- */
QM_FN float qm_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  uint32_t sub = qm_bits((float)m * 0x1p-24f);              /* zero / subnormal: exact */
  uint32_t nrm = ((e + 112u) << 23) | (m << 13);
  uint32_t inf = 0x7f800000u | (m << 13);
  return qm_float(sign | (e == 0 ? sub : e == 0x1f ? inf : nrm));
}
QM_FN uint16_t qm_f32_to_f16(float f) {
  uint32_t u = qm_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  /* below 2^-14: subnormal grid 2^-24; a * 2^24 < 2^10 is exact, then rint */
  uint32_t sub = qm_bits(qm_float(a) * 0x1p24f + 0x1p23f) - 0x4b000000u;
  uint32_t nrm = (a + 0xfffu + ((a >> 13) & 1u) - (112u << 23)) >> 13;
  uint32_t r = a < 0x38800000u ? sub : nrm;
  r = a >= 0x477ff000u ? 0x7c00u : r;                       /* >= 65520 rounds to inf */
  r = a > 0x7f800000u ? 0x7e00u : r;                        /* NaN */
  return (uint16_t)(sign | r);
}
QM_FN float qm_round_f16(float f) { return qm_f16_to_f32(qm_f32_to_f16(f)); }

/* rnd_k(v) */
QM_FN float qm_round(float v, int k) {
  return k == QM_BF16 ? qm_round_bf16(v) : k == QM_F16 ? qm_round_f16(v) : v;
}

/* Machine epsilon of a W kind (torch.finfo(dtype).eps), used for zero scales */
QM_FN float qm_eps(int k) {
  return k == QM_BF16 ? 0x1p-7f : k == QM_F16 ? 0x1p-10f : 0x1p-23f;
}
/* Smallest normal (torch.finfo(dtype).tiny), the global-scale amax floor */
QM_FN float qm_tiny(int k) { return k == QM_F16 ? 0x1p-14f : 0x1p-126f; }
/* Largest finite value */
QM_FN float qm_fmax(int k) {
  return k == QM_BF16 ? 0x1.fep127f : k == QM_F16 ? 65504.0f : 0x1.fffffep127f;
}

/* ---- fp8 e4m3fn ---------------------------------------------------------- */
/* RNE encode of t, |t| <= 448 already (compressed-tensors always clamps
** first).  Sign of zero kept (-0.0 -> 0x80); NaN -> 0x7F|sign. */
QM_FN uint8_t qm_e4m3_encode(float t) {
  uint32_t u = qm_bits(t);
  uint32_t sign = (u >> 24) & 0x80u;
  uint32_t a = u & 0x7fffffffu;
  /* below 2^-6: subnormal grid m * 2^-9; a * 512 (< 8, exact) rounded to
  ** an integer RNE by adding 2^23 (m == 8 is the smallest normal's code) */
  uint32_t sub = qm_bits(qm_float(a) * 512.0f + 0x1p23f) - 0x4b000000u;
  /* normal: round the 23-bit mantissa to 3 bits (RNE), rebias 127 -> 7 */
  uint32_t nrm = ((a + 0x7ffffu + ((a >> 20) & 1u)) >> 20) - (120u << 3);
  uint32_t code = a < 0x3c800000u ? sub : nrm;
  code = a > 0x7f800000u ? 0x7fu : code;
  return (uint8_t)(sign | (code & 0x7fu));
}
QM_FN float qm_e4m3_decode(uint8_t b) {
  uint32_t sign = (uint32_t)(b & 0x80u) << 24;
  uint32_t e = (b >> 3) & 0xfu, m = b & 7u;
  uint32_t sub = qm_bits((float)m * 0x1p-9f);
  uint32_t nrm = ((e + 120u) << 23) | (m << 20);
  uint32_t v = e == 0 ? sub : nrm;
  v = (b & 0x7fu) == 0x7fu ? 0x7fc00000u : v;
  return qm_float(sign | v);
}
/* The fp8 value of a clamped t, without going through the byte: the same
** rounding as qm_e4m3_encode, kept as an fp32 value (sign of zero kept). */
QM_FN float qm_e4m3_round(float t) {
  uint32_t u = qm_bits(t);
  uint32_t a = u & 0x7fffffffu;
  uint32_t sub = qm_bits(qm_rint_small(qm_float(a) * 512.0f) * 0x1p-9f);
  uint32_t nrm = (a + 0x7ffffu + ((a >> 20) & 1u)) & 0xfff00000u;
  uint32_t v = a < 0x3c800000u ? sub : nrm;
  v = a > 0x7f800000u ? a : v;
  return qm_float((u & 0x80000000u) | v);
}

/* ---- fp4 e2m1 ------------------------------------------------------------ */
/* CT's threshold rounding of a clamped t (§3.6); result is the nibble.
** Negative nonzero inputs keep the sign even when they round to 0 (nibble
** 0x8); -0.0 and +0.0 give 0x0 (sign(+-0) = +0). */
QM_FN uint8_t qm_e2m1_encode(float t) {
  float a = fabsf(t);
  uint32_t idx = (uint32_t)(a > 0.25f) + (uint32_t)(a >= 0.75f) + (uint32_t)(a > 1.25f) +
                 (uint32_t)(a >= 1.75f) + (uint32_t)(a > 2.5f) + (uint32_t)(a >= 3.5f) +
                 (uint32_t)(a > 5.0f);
  return (uint8_t)(idx | (t < 0.0f ? 8u : 0u));
}
/* The fp4 value of a clamped t (same thresholds), as an fp32 value: a sum
** of the steps 0.5, 0.5, 0.5, 0.5, 1, 1, 2 crossed (vectorises on SSE). */
QM_FN float qm_e2m1_round(float t) {
  float a = fabsf(t);
  float v = (a > 0.25f ? 0.5f : 0.0f) + (a >= 0.75f ? 0.5f : 0.0f) +
            (a > 1.25f ? 0.5f : 0.0f) + (a >= 1.75f ? 0.5f : 0.0f) +
            (a > 2.5f ? 1.0f : 0.0f) + (a >= 3.5f ? 1.0f : 0.0f) + (a > 5.0f ? 2.0f : 0.0f);
  return t < 0.0f ? -v : v;
}
QM_FN float qm_e2m1_decode(uint8_t nib) {
  uint32_t m = nib & 7u;
  /* 0, 0.5 | 1, 1.5, 2, 3, 4, 6: for m >= 2 the fp32 exponent is (m >> 1) - 1
  ** and the one mantissa bit is m & 1 (only constant shifts: vectorises) */
  uint32_t big = (((m >> 1) + 126u) << 23) | ((m & 1u) << 22);
  uint32_t v = m < 2 ? qm_bits((float)m * 0.5f) : big;
  return qm_float(v | ((uint32_t)(nib & 8u) << 28));
}

/* ---- MX power-of-two rounding (§3.8) -------------------------------------- */
/* P(a) on the bits of `a` held in kind k: add 1 << (M-2), clear the mantissa
** (the sign and exponent survive).  a >= 0 here. */
QM_FN float qm_mx_pow2(float a, int k) {
  if (k == QM_BF16) {
    uint32_t h = qm_bits(a) >> 16;
    h = (h + (1u << 5)) & 0xff80u;
    return qm_float(h << 16);
  }
  if (k == QM_F16) {
    uint32_t h = qm_f32_to_f16(a);
    h = (h + (1u << 8)) & 0xfc00u;
    return qm_f16_to_f32((uint16_t)h);
  }
  return qm_float((qm_bits(a) + (1u << 21)) & 0xff800000u);
}

/* floor(log2(p)) of a power of two / 0 / inf, as CT computes it in float:
** returns the biased E8M0 byte 127 + floor(log2(p)) - off clamped to
** [0, 255] (round_to_quantized_type_dtype(uint8) of §3.3 step 5). */
QM_FN int qm_mx_exponent_byte(float p, int off) {
  uint32_t u = qm_bits(p) & 0x7fffffffu;
  if (u == 0) return 0;                       /* log2(0) = -inf -> clamp 0 */
  if (u >= 0x7f800000u) return 255;           /* +inf -> clamp 255 */
  int e = (int)(u >> 23) - 127;               /* p is a normal power of two */
  int b = 127 + e - off;
  return b < 0 ? 0 : b > 255 ? 255 : b;
}
/* 2^(b-127) computed in fp32 (b = 255 overflows to inf as in torch) */
QM_FN float qm_e8m0_value(int b) {
  if (b == 0) return 0x1p-127f;
  if (b == 255) return qm_float(0x7f800000u);
  return qm_float((uint32_t)b << 23);
}

/* ---- one element ----------------------------------------------------------- */
/* Clamp with torch.clamp semantics (NaN propagates). */
QM_FN float qm_clamp(float t, float lo, float hi) { return t < lo ? lo : (t > hi ? hi : t); }

/* The clamped quotient of one element (§3.4), before the final rounding.
**   x   : element value (fp32, exact value of the source dtype)
**   s   : effective scale (fp32 value; for NVFP4 the fp32 s/G)
**   z   : zero point value (0 when absent)
**   rk  : rounding kind of the quotient: the promoted dtype of x and s
**         (eager) or QM_F32 (fused / Triton, or a global scale made s fp32)
**   hz  : 1 when a zero-point tensor takes part: t + z is rounded to rk too
**         (and -0.0 + 0 = +0.0, which is visible in fp8)
** Eager chain: t = rnd(x/s); t = rnd(t + z); clamp.  Clamp before rounding:
** +amax -> 7.5 -> 7 but -amax -> -7.5 -> rint -> -8. */
QM_FN float qm_quant_t(float x, float s, float z, int rk, int hz, float qmin, float qmax) {
  float t = qm_round(x / s, rk);
  if (hz) t = qm_round(t + z, rk);
  return qm_clamp(t, qmin, qmax);
}

/* The stored code of a clamped t: int -> the integer (fits int8 for <= 8
** bits), fp8 -> the e4m3 byte, fp4 -> the nibble. */
QM_FN int qm_code(float t, int kind) {
  if (kind == QM_INT) {
    /* |t| <= 128 after the clamp: the magic-number rint gives the integer as
    ** the low mantissa bits; NaN -> 0 (what torch's int8 cast gives on x86) */
    int32_t q = (int32_t)(qm_bits(t + 0x1.8p23f) - 0x4b400000u);
    return t == t ? q : 0;
  }
  if (kind == QM_FP8) return qm_e4m3_encode(t);
  return qm_e2m1_encode(t);
}
/* The value a code stands for (what decompression casts to the scale dtype) */
QM_FN float qm_code_value(int code, int kind) {
  if (kind == QM_INT) return (float)code;
  if (kind == QM_FP8) return qm_e4m3_decode((uint8_t)code);
  return qm_e2m1_decode((uint8_t)code);
}
/* The rounded value fake_quantize keeps in float (torch.round keeps the
** sign of a negative value that rounds to zero: rint(-0.3) = -0.0, so CT's
** fake-quantized int weights carry -0.0 where decompression yields +0.0;
** fp8 / fp4 codes keep the sign and agree bit for bit). */
QM_FN float qm_fq_value(float t, int kind) {
  if (kind == QM_INT) return qm_rint_small(t);
  if (kind == QM_FP8) return qm_e4m3_round(t);
  return qm_e2m1_round(t);
}

/* Dequantize (§3.4): (q - z) * s in the scale's dtype sk, with q and z cast
** to it first (exact for every code here), then rounded to the output kind. */
QM_FN float qm_dequant_value(float q, float s, float z, int sk, int hz) {
  float v = hz ? qm_round(q - z, sk) : q;
  return qm_round(v * s, sk);
}

#endif
