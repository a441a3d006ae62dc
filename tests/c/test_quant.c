/*
** test_quant.c — quantization kernels against closed-form values, the
** worked examples of compressed-tensors-format.md (§3.4-§3.10, §4.4, §4.5)
** and its conformance checklist (§10), hand-computed bit patterns, and the
** round trip quantize -> pack -> unpack -> dequantize == fake_quantize for
** every preset of §2 on pseudo-random weights.
** (Byte equality with compressed-tensors itself: test_quant_ct.c.)
*/
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "quant.h"
#include "quant_math.h"

#define BF(x) qm_f32_to_bf16(x)
#define BFV(h) qm_bf16_to_f32(h)

static uint32_t lcg_state = 12345u;
static uint32_t lcg(void) { return lcg_state = lcg_state * 1664525u + 1013904223u; }
/* roughly normal N(0, sigma): sum of 4 uniforms */
static float lcg_normal(float sigma) {
  float s = 0;
  for (int i = 0; i < 4; i++) s += (float)(lcg() >> 8) / 16777216.0f - 0.5f;
  return s * 1.7320508f * sigma;
}

/* random weight of dtype t with a few special rows */
static void *random_weight(llmc_dtype t, int64_t rows, int64_t cols, float sigma) {
  void *w = malloc((size_t)(rows * cols) * llmc_dtype_size(t));
  for (int64_t i = 0; i < rows * cols; i++) {
    int64_t r = i / cols;
    float v = lcg_normal(sigma);
    if (r == 1) v = 0.0f;                     /* all-zero row */
    if (r == 2 && i % 5 == 0) v = -0.0f;      /* -0.0 entries */
    if (r == 3) v = fabsf(v) + 0.001f;        /* one-signed row */
    if (r == 4 && i % 3 == 0) v = -1e-7f;     /* negatives that round to zero */
    llmc_store_from_f64((char *)w + (size_t)i * llmc_dtype_size(t), t, v);
  }
  return w;
}

/* ---- §3.4 / §10.1-3: int4 +-amax, clamp-then-round, rint ties ----------- */
static void test_int4_amax(void) {
  llmc_qargs a;
  llmc_q_args_init(&a);
  a.num_bits = 4;
  a.strategy = LLMC_QS_CHANNEL;
  float mn = -1.5f, mx = 1.5f, s, z;
  CHECK_EQ_INT(llmc_q_qparams_from_minmax(&a, LLMC_BF16, &mn, &mx, 1, NULL, 1, &s, &z), 0);
  CHECK_EQ_INT(BF(s), 0x3E4D);   /* rnd_bf16(1.5 / 7.5) = 0.2001953125 */
  CHECK(s == 0.2001953125f, "s = %.10g", s);
  uint16_t x[2] = {BF(1.5f), BF(-1.5f)};
  llmc_qparams qp;
  CHECK_EQ_INT(llmc_q_qparams_compute(&qp, &a, x, LLMC_BF16, 1, 2, NULL), 0);
  int8_t q[2];
  llmc_q_quantize(&qp, x, LLMC_BF16, q);
  CHECK_EQ_INT(q[0], 7);    /* 1.5/s = 7.4927 -> bf16 7.5 -> clamp 7 */
  CHECK_EQ_INT(q[1], -8);   /* -7.5 -> rint (ties to even) -> -8 */
  llmc_q_qparams_free(&qp);
  /* rint ties to even */
  CHECK_EQ_INT(qm_code(2.5f, QM_INT), 2);
  CHECK_EQ_INT(qm_code(3.5f, QM_INT), 4);
  CHECK_EQ_INT(qm_code(-7.5f, QM_INT), -8);
  CHECK_EQ_INT(qm_code(-0.5f, QM_INT), 0);
  /* other widths: divisor 2^(b-1) - 0.5 */
  for (int b = 2; b <= 8; b++) {
    a.num_bits = b;
    float m1 = -1.0f, m2 = 1.0f;
    llmc_q_qparams_from_minmax(&a, LLMC_F32, &m1, &m2, 1, NULL, 1, &s, &z);
    CHECK(s == 1.0f / ((float)(1 << (b - 1)) - 0.5f), "int%d scale %g", b, s);
  }
}

/* ---- §3.4: double rounding (100.6), eager vs fused ------------------------ */
static void test_double_rounding(void) {
  llmc_qargs a;
  llmc_q_args_init(&a);   /* int8 sym tensor */
  llmc_qparams qp;
  CHECK_EQ_INT(llmc_q_qparams_alloc(&qp, &a, LLMC_BF16, 1, 1), 0);
  qp.scale[0] = 0.30078125f;   /* bf16 */
  uint16_t x = BF(30.25f);    /* 30.25 / 0.30078125 = 100.571... */
  int8_t q;
  llmc_q_quantize(&qp, &x, LLMC_BF16, &q);
  CHECK_EQ_INT(q, 100);        /* eager: bf16(100.57) = 100.5, rint -> 100 */
  qp.args.rounding = LLMC_QROUND_FUSED;
  llmc_q_quantize(&qp, &x, LLMC_BF16, &q);
  CHECK_EQ_INT(q, 101);        /* fused: fp32 100.57 -> 101 */
  uint16_t y;
  llmc_q_fake_quantize(&qp, &x, LLMC_BF16, &y);   /* fake quant is always eager */
  CHECK_EQ_INT(y, BF(100.0f * 0.30078125f));
  /* fp32 weights: both modes agree */
  llmc_q_qparams_free(&qp);
  llmc_q_qparams_alloc(&qp, &a, LLMC_F32, 1, 1);
  qp.scale[0] = 0.30078125f;
  float xf = 30.25f;
  llmc_q_quantize(&qp, &xf, LLMC_F32, &q);
  CHECK_EQ_INT(q, 101);
  llmc_q_qparams_free(&qp);
}

/* ---- §3.5 / §10.4: fp8 e4m3 --------------------------------------------- */
/* reference: nearest of the 126 finite positive codes, ties to even code */
static uint8_t fp8_ref(float v) {
  float a = fabsf(v);
  int best = 0;
  float bd = INFINITY;
  for (int c = 0; c <= 0x7e; c++) {
    float d = fabsf(llmc_e4m3_to_f32((uint8_t)c) - a);
    if (d < bd || (d == bd && (c & 1) == 0)) bd = d, best = c;
  }
  return (uint8_t)(best | (signbit(v) ? 0x80 : 0));
}

static void test_fp8(void) {
  llmc_dtype_init();
  CHECK_EQ_INT(qm_e4m3_encode(-0.0f), 0x80);
  CHECK_EQ_INT(qm_e4m3_encode(0.0f), 0x00);
  CHECK_EQ_INT(qm_e4m3_encode(448.0f), 0x7E);
  CHECK_EQ_INT(qm_e4m3_encode(-448.0f), 0xFE);
  CHECK_EQ_INT(qm_e4m3_encode(0x1p-9f), 0x01);           /* smallest subnormal */
  CHECK_EQ_INT(qm_e4m3_encode(0x1p-10f), 0x00);          /* tie 0 / 2^-9 -> even 0 */
  CHECK_EQ_INT(qm_e4m3_encode(3 * 0x1p-10f), 0x02);      /* tie 1 / 2 -> 2 */
  CHECK_EQ_INT(qm_e4m3_encode(15 * 0x1p-10f), 0x08);     /* tie subnormal 7 / normal 2^-6 -> 8 */
  CHECK_EQ_INT(qm_e4m3_encode(1.0625f), 0x38);           /* tie 1.0 / 1.125 -> 1.0 */
  CHECK_EQ_INT(qm_e4m3_encode(1.1875f), 0x3A);           /* tie 1.125 / 1.25 -> 1.25 */
  CHECK_EQ_INT(qm_e4m3_encode(-3e-5f), 0x80);            /* tiny negative keeps the sign */
  CHECK(qm_e4m3_decode(0x5E) == 28.0f, "0x5E = %g", qm_e4m3_decode(0x5E));
  /* exhaustive over every bf16 in [-448, 448] */
  int bad = 0, bad_dtype = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float v = BFV((uint16_t)h);
    if (!(fabsf(v) <= 448.0f)) continue;
    uint8_t r = fp8_ref(v);
    bad += qm_e4m3_encode(v) != r;
    bad_dtype += llmc_f32_to_e4m3(v) != r;
    bad += llmc_e4m3_to_f32(r) != qm_e4m3_decode(r) && !isnan(qm_e4m3_decode(r));
  }
  CHECK(bad == 0, "%d bf16 values encode differently from the table reference", bad);
  CHECK(bad_dtype == 0, "dtype.c disagrees on %d values", bad_dtype);
  /* the value paths used by fake quantization agree bit for bit with the
  ** code paths, over every bf16 in range (and the f16 / rint helpers with
  ** dtype.c / libm over every 16-bit pattern) */
  int bad_fq = 0, bad_fp4 = 0, bad_rint = 0, bad_f16 = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float v = BFV((uint16_t)h);
    if (fabsf(v) <= 448.0f) {
      float a = qm_e4m3_round(v), b = qm_e4m3_decode(qm_e4m3_encode(v));
      bad_fq += memcmp(&a, &b, 4) != 0;
    }
    if (fabsf(v) <= 6.0f) {
      float a = qm_e2m1_round(v), b = qm_e2m1_decode(qm_e2m1_encode(v));
      bad_fp4 += memcmp(&a, &b, 4) != 0;
    }
    if (fabsf(v) <= 128.0f) {
      float a = qm_rint_small(v), b = rintf(v);
      bad_rint += memcmp(&a, &b, 4) != 0 || qm_code(v, QM_INT) != (int)rintf(v);
    }
    float f = llmc_f16_to_f32((uint16_t)h), g = qm_f16_to_f32((uint16_t)h);
    bad_f16 += memcmp(&f, &g, 4) != 0 && !(isnan(f) && isnan(g));
    bad_f16 += !isnan(v) && qm_f32_to_f16(v) != llmc_f32_to_f16(v);
    bad_f16 += !isnan(v) && qm_f32_to_f16(v * 0.001f) != llmc_f32_to_f16(v * 0.001f);
  }
  CHECK(bad_fq == 0, "qm_e4m3_round differs from decode(encode) on %d values", bad_fq);
  CHECK(bad_fp4 == 0, "qm_e2m1_round differs from decode(encode) on %d values", bad_fp4);
  CHECK(bad_rint == 0, "magic-number rint differs from rintf on %d values", bad_rint);
  CHECK(bad_f16 == 0, "f16 conversions differ from dtype.c on %d values", bad_f16);
}

/* ---- §3.6 / §10.5, §4.5 / §10.13: fp4 ----------------------------------- */
static void test_fp4(void) {
  static const struct { float t; int idx; } cases[] = {
    {0.0f, 0}, {0.25f, 0}, {0.2500001f, 1}, {0.5f, 1}, {0.7499999f, 1}, {0.75f, 2},
    {1.25f, 2}, {1.2500001f, 3}, {1.7499999f, 3}, {1.75f, 4}, {2.5f, 4}, {2.5000002f, 5},
    {3.4999998f, 5}, {3.5f, 6}, {5.0f, 6}, {5.0000005f, 7}, {6.0f, 7},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    CHECK(qm_e2m1_encode(cases[i].t) == cases[i].idx, "fp4(%.9g) = %d, expected %d",
          cases[i].t, qm_e2m1_encode(cases[i].t), cases[i].idx);
    int neg = cases[i].t == 0.0f ? 0 : 8 | cases[i].idx;
    CHECK(qm_e2m1_encode(-cases[i].t) == neg, "fp4(-%.9g) = %d", cases[i].t,
          qm_e2m1_encode(-cases[i].t));
    CHECK_EQ_INT(llmc_f32_to_e2m1(cases[i].t), cases[i].idx);
  }
  CHECK_EQ_INT(qm_e2m1_encode(-0.1f), 0x8);   /* negative nonzero -> -0.0 nibble */
  CHECK_EQ_INT(qm_e2m1_encode(-0.0f), 0x0);   /* sign(-0.0) = +0 */
  static const float grid[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (int i = 0; i < 16; i++) {
    float v = qm_e2m1_decode((uint8_t)i);
    CHECK(v == (i & 8 ? -grid[i & 7] : grid[i & 7]) && (signbit(v) != 0) == ((i & 8) != 0),
          "nibble %d -> %g", i, v);
  }
  /* nibble order: [0.5, -1.5] -> 0xB1 */
  uint8_t nib[2] = {qm_e2m1_encode(0.5f), qm_e2m1_encode(-1.5f)}, byte, back[2];
  CHECK_EQ_INT(llmc_q_pack_fp4(nib, 1, 2, &byte), 0);
  CHECK_EQ_INT(byte, 0xB1);
  llmc_q_unpack_fp4(&byte, 1, 2, back);
  CHECK(back[0] == nib[0] && back[1] == nib[1], "unpack 0xB1");
  CHECK(llmc_q_pack_fp4(nib, 1, 1, &byte) < 0, "odd columns rejected");
}

/* ---- §3.3 / §3.7 / §10.6-7: global scale and NVFP4 ----------------------- */
static void test_nvfp4(void) {
  CHECK(llmc_q_global_scale(0.00811767578125f, LLMC_BF16) == 329728.0f, "G = %g",
        llmc_q_global_scale(0.00811767578125f, LLMC_BF16));
  CHECK(llmc_q_global_scale(1.0f, LLMC_BF16) == 2688.0f, "G(1) = %g",
        llmc_q_global_scale(1.0f, LLMC_BF16));
  CHECK(llmc_q_global_scale(0.0f, LLMC_BF16) == 1.0f, "G(0) bf16");
  CHECK(llmc_q_global_scale(0.0f, LLMC_F16) == 1.0f, "G(0) f16");
  CHECK(llmc_q_global_scale(0.0f, LLMC_F32) == 1.0f, "G(0) f32");

  llmc_qargs w, in;
  int hw, hi;
  CHECK_EQ_INT(llmc_q_preset("NVFP4", &w, &in, &hw, &hi), 0);
  /* one row: group 0 amax 0.0625 with 0.05; group 1 amax 1.0; group 2 zero */
  uint16_t x[48] = {0};
  x[0] = BF(0.0625f);
  x[1] = BF(0.05f);   /* bf16 0.050048828125 */
  x[20] = BF(-1.0f);
  llmc_qparams qp;
  CHECK_EQ_INT(llmc_q_qparams_compute(&qp, &w, x, LLMC_BF16, 1, 48, NULL), 0);
  CHECK(qp.has_global && qp.global_scale == 2688.0f, "G = %g", qp.global_scale);
  CHECK(qp.scale[0] == 28.0f, "s2 = %g", qp.scale[0]);   /* rnd(0.0625/6)*2688 = 28.05 -> 28 */
  CHECK(qp.scale[2] == 0.125f, "zero group scale = %g", qp.scale[2]);
  CHECK(qp.scale[1] == 448.0f, "amax group scale = %g", qp.scale[1]);
  float eff = qp.scale[0] / qp.global_scale;
  CHECK(eff == 0.0104166669771075f, "eff = %.12g", eff);
  CHECK(BFV(x[1]) / eff == 4.8046875f, "t = %.9g", BFV(x[1]) / eff);
  uint8_t q[48];
  llmc_q_quantize(&qp, x, LLMC_BF16, q);
  CHECK_EQ_INT(q[1], 6);   /* 4.80 -> fp4 4.0 */
  CHECK_EQ_INT(q[0], 7);   /* 0.0625 / eff = 6.0 */
  CHECK_EQ_INT(q[20], 0xF);
  llmc_qtensor_desc d[LLMC_Q_MAX_TENSORS];
  int n = llmc_q_layout(LLMC_QF_NVFP4, &w, &in, NULL, LLMC_BF16, 1, 48, d);
  CHECK_EQ_INT(n, 4);
  void *bufs[LLMC_Q_MAX_TENSORS] = {0};
  for (int i = 0; i < n; i++) bufs[i] = calloc(1, d[i].nbytes);
  CHECK_EQ_INT(llmc_q_compress(LLMC_QF_NVFP4, &qp, x, LLMC_BF16, d, n, bufs), 0);
  CHECK(strcmp(d[1].name, "weight_scale") == 0 && ((uint8_t *)bufs[1])[0] == 0x5E,
        "fp8 scale byte 0x%02x", ((uint8_t *)bufs[1])[0]);
  CHECK(((uint8_t *)bufs[0])[0] == (7 | 6 << 4), "packed byte 0x%02x", ((uint8_t *)bufs[0])[0]);
  CHECK(strcmp(d[3].name, "input_global_scale") == 0 && d[3].source == LLMC_QT_INPUT,
        "input_global_scale listed for the caller");
  for (int i = 0; i < n; i++) free(bufs[i]);
  llmc_q_qparams_free(&qp);

  /* shared global scale of a fused set (q/k/v): the max over all members */
  uint16_t qw[32], kw[32], vw[32];
  for (int i = 0; i < 32; i++) qw[i] = BF(0.01f * i), kw[i] = BF(-0.02f * i), vw[i] = BF(0.005f);
  const uint16_t *mem[3] = {qw, kw, vw};
  float amax = 0;
  for (int m = 0; m < 3; m++) {
    float mn[2], mx[2];
    llmc_q_observe_minmax(&w, mem[m], LLMC_BF16, 1, 32, mn, mx);
    float am = llmc_q_absmax(mn, mx, 2);
    amax = am > amax ? am : amax;
  }
  CHECK(amax == BFV(BF(-0.02f * 31)) * -1.0f, "fused amax %g", amax);
  float G = llmc_q_global_scale(amax, LLMC_BF16);
  for (int m = 0; m < 3; m++) {
    CHECK_EQ_INT(llmc_q_qparams_compute(&qp, &w, mem[m], LLMC_BF16, 1, 32, &G), 0);
    CHECK(qp.global_scale == G, "member %d uses the shared G", m);
    float mn[2], mx[2], s[2];
    llmc_q_observe_minmax(&w, mem[m], LLMC_BF16, 1, 32, mn, mx);
    llmc_q_qparams_from_minmax(&w, LLMC_BF16, mn, mx, 2, &G, 1, s, NULL);
    CHECK(s[0] == qp.scale[0] && s[1] == qp.scale[1], "member %d scales", m);
    llmc_q_qparams_free(&qp);
  }
}

/* ---- §3.8 / §10.8, §10.14: MX ------------------------------------------- */
static void test_mx(void) {
  static const struct { float a, p; } pw[] = {
    {5.69f, 4.0f}, {7.29f, 8.0f}, {0.965f, 1.0f}, {0.4518f, 0.5f}, {0.0733f, 0.0625f},
    {-0.0406f, -0.03125f}, {0.0f, 0.0f},
  };
  static const int kinds[3] = {QM_BF16, QM_F16, QM_F32};
  for (int k = 0; k < 3; k++)
    for (size_t i = 0; i < sizeof pw / sizeof pw[0]; i++) {
      float a = qm_round(pw[i].a, kinds[k]);
      CHECK(qm_mx_pow2(a, kinds[k]) == pw[i].p, "kind %d: P(%g) = %g, expected %g", kinds[k],
            a, qm_mx_pow2(a, kinds[k]), pw[i].p);
    }
  llmc_qargs w, in;
  int hw, hi;
  llmc_q_preset("MXFP4A16", &w, &in, &hw, &hi);
  static const llmc_dtype dts[3] = {LLMC_BF16, LLMC_F16, LLMC_F32};
  for (int k = 0; k < 3; k++) {
    float mn[3] = {-3.5f, 0.0f, 0.0f}, mx[3] = {1.0f, 3.0f, 0.0f}, s[3];
    CHECK_EQ_INT(llmc_q_qparams_from_minmax(&w, dts[k], mn, mx, 3, NULL, 1, s, NULL), 0);
    CHECK_EQ_INT(llmc_q_e8m0_from_scale(s[0]), 127);   /* a = 3.5 -> P = 4 -> E = 0 */
    CHECK(s[0] == 1.0f, "s(3.5) = %g", s[0]);
    CHECK_EQ_INT(llmc_q_e8m0_from_scale(s[1]), 126);   /* a = 3.0 -> P = 2 -> 2^-1 */
    CHECK(s[1] == 0.5f, "s(3.0) = %g", s[1]);
    /* all-zero group: byte 0 (2^-127), except fp16 where 2^-127 underflows
    ** to 0 and the uint8 eps 1.0 replaces it: byte 127 */
    CHECK_EQ_INT(llmc_q_e8m0_from_scale(s[2]), dts[k] == LLMC_F16 ? 127 : 0);
  }
  llmc_q_preset("MXFP8A16", &w, &in, &hw, &hi);
  float mn = -448.0f, mx = 100.0f, s;
  llmc_q_qparams_from_minmax(&w, LLMC_BF16, &mn, &mx, 1, NULL, 1, &s, NULL);
  CHECK(s == 2.0f, "MXFP8 448 -> P 512 -> scale %g", s);   /* 448 = 1.75 * 2^8 rounds up */
  for (int b = 0; b < 256; b++) {
    float v = llmc_q_e8m0_to_scale((uint8_t)b);
    if (b > 0 && b < 255) CHECK(v == ldexpf(1.0f, b - 127), "e8m0 %d", b);
    if (b < 255) CHECK_EQ_INT(llmc_q_e8m0_from_scale(v), b);
  }
  /* elements: a = 3.0 group -> s = 0.5 -> 3.0 / 0.5 = 6 = FP4 max */
  llmc_q_preset("MXFP4A16", &w, &in, &hw, &hi);
  uint16_t x[32] = {0};
  x[0] = BF(3.0f), x[1] = BF(-0.2f), x[2] = BF(1.3f);
  llmc_qparams qp;
  llmc_q_qparams_compute(&qp, &w, x, LLMC_BF16, 1, 32, NULL);
  uint8_t q[32];
  llmc_q_quantize(&qp, x, LLMC_BF16, q);
  CHECK(q[0] == 7 && q[1] == 9 && q[2] == 5, "MX codes %d %d %d", q[0], q[1], q[2]);
  llmc_q_qparams_free(&qp);
}

/* ---- §3.3 / §10.9, §10.16: asymmetric, eps, all-zero groups ------------- */
static void test_asym_and_zero(void) {
  llmc_qargs a;
  llmc_q_args_init(&a);
  a.num_bits = 4;
  a.symmetric = 0;
  a.strategy = LLMC_QS_GROUP;
  a.group_size = 4;
  uint16_t x[8] = {BF(-0.5f), BF(1.0f), BF(0.25f), BF(0.0f), 0, 0, 0x8000, 0};
  llmc_qparams qp;
  CHECK_EQ_INT(llmc_q_qparams_compute(&qp, &a, x, LLMC_BF16, 1, 8, NULL), 0);
  CHECK(qp.scale[0] == 0.10009765625f, "asym scale %.12g", qp.scale[0]);   /* bf16(1.5/15) */
  CHECK(qp.zero_point[0] == -3.0f, "z = %g", qp.zero_point[0]);   /* -8 - bf16(-4.995) = -3 */
  CHECK(qp.scale[1] == 0.0078125f, "all-zero group scale %g (bf16 eps)", qp.scale[1]);
  CHECK(qp.zero_point[1] == 0.0f && !signbit(qp.zero_point[1]), "all-zero group z = 0");
  int8_t q[8];
  llmc_q_quantize(&qp, x, LLMC_BF16, q);
  CHECK(q[0] == -8 && q[1] == 7 && q[3] == -3, "asym codes %d %d %d", q[0], q[1], q[3]);
  uint16_t y[8];
  llmc_q_dequantize(&qp, q, y, LLMC_BF16);
  int zeros = 1;
  for (int i = 4; i < 8; i++) zeros &= y[i] == 0;
  CHECK(zeros, "all-zero group dequantizes to +0");
  CHECK(BFV(y[3]) == 0.0f, "zero maps to zero");
  llmc_q_qparams_free(&qp);
  /* symmetric all-zero: bf16 eps 2^-7, f16 2^-10, f32 2^-23; fp8 scale dtype 0.125 */
  llmc_q_args_init(&a);
  float m0 = 0, s;
  llmc_q_qparams_from_minmax(&a, LLMC_BF16, &m0, &m0, 1, NULL, 1, &s, NULL);
  CHECK(s == 0x1p-7f, "bf16 eps %g", s);
  llmc_q_qparams_from_minmax(&a, LLMC_F16, &m0, &m0, 1, NULL, 1, &s, NULL);
  CHECK(s == 0x1p-10f, "f16 eps %g", s);
  llmc_q_qparams_from_minmax(&a, LLMC_F32, &m0, &m0, 1, NULL, 1, &s, NULL);
  CHECK(s == 0x1p-23f, "f32 eps %g", s);
  a.scale_dtype = LLMC_F8_E4M3;
  llmc_q_qparams_from_minmax(&a, LLMC_BF16, &m0, &m0, 1, NULL, 1, &s, NULL);
  CHECK(s == 0.125f, "fp8 scale dtype eps %g", s);
  /* asymmetric with a zero scale but negative min: z = clamp(+inf) = q_max */
  llmc_q_args_init(&a);
  a.symmetric = 0;
  float tmn = -1e-45f, tmx = 0, zp;
  llmc_q_qparams_from_minmax(&a, LLMC_F32, &tmn, &tmx, 1, NULL, 1, &s, &zp);
  CHECK(zp == 127.0f, "z for underflowed scale = %g", zp);
}

/* ---- §3.10 / §10.10: block grids and padding ---------------------------- */
static void test_block(void) {
  llmc_qargs w, in;
  int hw, hi;
  llmc_q_preset("FP8_BLOCK", &w, &in, &hw, &hi);
  static const int64_t shapes[3][4] = {{100, 200, 1, 2}, {10944, 2048, 86, 16}, {50, 50, 1, 1}};
  for (int i = 0; i < 3; i++) {
    int64_t sr, sc;
    CHECK_EQ_INT(llmc_q_scale_grid(&w, shapes[i][0], shapes[i][1], &sr, &sc), 0);
    CHECK(sr == shapes[i][2] && sc == shapes[i][3], "grid of [%lld,%lld] = [%lld,%lld]",
          (long long)shapes[i][0], (long long)shapes[i][1], (long long)sr, (long long)sc);
  }
  /* padding amounts (§3.10): [10944, 2048] -> (64, 0); [100, 200] -> (28, 56) */
  CHECK_EQ_INT(86 * 128 - 10944, 64);
  CHECK_EQ_INT(1 * 128 - 100, 28);
  CHECK_EQ_INT(2 * 128 - 200, 56);
  /* the padded zeros join the min/max of partial tiles but never a full one */
  int64_t rows = 130, cols = 260;
  float *x = malloc(sizeof(float) * (size_t)(rows * cols));
  for (int64_t i = 0; i < rows * cols; i++) x[i] = 1.0f + (float)(i % 7);   /* all >= 1 */
  x[0] = 100.0f;
  llmc_qargs a = w;
  float mn[6], mx[6];
  CHECK_EQ_INT(llmc_q_observe_minmax(&a, x, LLMC_F32, rows, cols, mn, mx), 0);
  CHECK(mn[0] == 1.0f && mx[0] == 100.0f, "full tile min %g max %g", mn[0], mx[0]);
  CHECK(mn[1] == 1.0f, "full tile 1 min %g", mn[1]);
  CHECK(mn[2] == 0.0f && mn[3] == 0.0f && mn[5] == 0.0f, "partial tiles include padding zeros");
  llmc_qparams qp;
  CHECK_EQ_INT(llmc_q_qparams_compute(&qp, &a, x, LLMC_F32, rows, cols, NULL), 0);
  CHECK(qp.srows == 2 && qp.scols == 3, "grid %lldx%lld", (long long)qp.srows,
        (long long)qp.scols);
  CHECK(qp.scale[0] == 100.0f / 448.0f, "tile 0 scale %g", qp.scale[0]);
  llmc_qtensor_desc d[LLMC_Q_MAX_TENSORS];
  int n = llmc_q_layout(LLMC_QF_FLOAT, &a, &in, NULL, LLMC_F32, rows, cols, d);
  CHECK(n == 2 && d[0].shape[0] == rows && d[0].shape[1] == cols && d[1].shape[0] == 2 &&
        d[1].shape[1] == 3, "block layout: unpadded weight, [2,3] scales");
  /* element (r, c) uses s[r / 128][c / 128] */
  uint8_t *q = malloc((size_t)(rows * cols));
  llmc_q_quantize(&qp, x, LLMC_F32, q);
  float s = qp.scale[1 * 3 + 2];
  CHECK(q[129 * cols + 259] == qm_e4m3_encode(x[129 * cols + 259] / s), "last element code");
  free(q);
  free(x);
  llmc_q_qparams_free(&qp);
}

/* ---- §4.4 / §10.11-12: pack-quantized ---------------------------------- */
static void test_pack(void) {
  int8_t row[8] = {1, 2, 3, 4, 5, 6, 7, 0};
  int32_t word;
  CHECK_EQ_INT(llmc_q_pack_int32(row, 1, 8, 4, &word), 0);
  CHECK(word == -1880241239, "int4 word %d (0x%08x)", word, (unsigned)word);
  CHECK((uint32_t)word == 0x8FEDCBA9u, "0x8FEDCBA9");
  /* b = 3: element 10 straddles bits 30-31 of word 0 and bit 0 of word 1 */
  int8_t r3[32];
  for (int i = 0; i < 32; i++) r3[i] = -4;   /* u = 0 */
  r3[10] = 3;                                /* u = 7 */
  int32_t w3[3];
  llmc_q_pack_int32(r3, 1, 32, 3, w3);
  CHECK((uint32_t)w3[0] == 0xC0000000u && w3[1] == 1 && w3[2] == 0, "b=3 words %08x %08x %08x",
        (unsigned)w3[0], (unsigned)w3[1], (unsigned)w3[2]);
  /* int8: column 4w + k in bits [8k, 8k+8) */
  int8_t r8[5] = {-128, 127, 0, -1, 5};
  int32_t w8[2];
  llmc_q_pack_int32(r8, 1, 5, 8, w8);
  CHECK((uint32_t)w8[0] == 0x7F80FF00u && w8[1] == 0x85, "int8 words %08x %08x", (unsigned)w8[0],
        (unsigned)w8[1]);
  /* round trips for b = 1..8 and the shapes of §10.11 */
  static const int64_t shp[3][2] = {{256, 1024}, {512, 100}, {128, 33}};
  int bad = 0;
  for (int b = 1; b <= 8; b++)
    for (int s = 0; s < 3; s++) {
      int64_t rows = shp[s][0], cols = shp[s][1], pc = llmc_q_packed_cols(cols, b);
      CHECK(pc == (cols * b + 31) / 32, "packed cols");
      int8_t *q = malloc((size_t)(rows * cols)), *u = malloc((size_t)(rows * cols));
      int32_t *p = malloc(sizeof(int32_t) * (size_t)(rows * pc));
      for (int64_t i = 0; i < rows * cols; i++)
        q[i] = (int8_t)((int)(lcg() >> 20) % (1 << b) - (1 << (b - 1)));
      llmc_q_pack_int32(q, rows, cols, b, p);
      llmc_q_unpack_int32(p, rows, cols, b, u);
      bad += memcmp(q, u, (size_t)(rows * cols)) != 0;
      /* dim-0 (zero points): shape [ceil(rows*b/32), cols] */
      int64_t pr = llmc_q_packed_cols(rows, b);
      int32_t *pz = malloc(sizeof(int32_t) * (size_t)(pr * cols));
      llmc_q_pack_int32_dim0(q, rows, cols, b, pz);
      memset(u, 0, (size_t)(rows * cols));
      llmc_q_unpack_int32_dim0(pz, rows, cols, b, u);
      bad += memcmp(q, u, (size_t)(rows * cols)) != 0;
      /* dim-0 packing of column g equals row packing of the transposed column */
      int8_t *col = malloc((size_t)rows);
      int32_t *pw = malloc(sizeof(int32_t) * (size_t)pr);
      for (int64_t r = 0; r < rows; r++) col[r] = q[r * cols + 1];
      llmc_q_pack_int32(col, 1, rows, b, pw);
      for (int64_t k = 0; k < pr; k++) bad += pw[k] != pz[k * cols + 1];
      free(col), free(pw), free(pz), free(q), free(u), free(p);
    }
  CHECK(bad == 0, "%d pack round-trip failures", bad);
  CHECK(llmc_q_pack_int32(row, 1, 8, 9, &word) < 0, "9 bits rejected");
}

/* ---- §4.1 / §4.3 / §10.17: formats and layouts -------------------------- */
static void test_formats(void) {
  static const struct { const char *preset, *format; } fm[] = {
    {"W4A16", "pack-quantized"}, {"W2A16", "pack-quantized"}, {"W8A16", "pack-quantized"},
    {"W4A16_ASYM", "pack-quantized"}, {"W4A4", "int-quantized"}, {"W4A8", "int-quantized"},
    {"W8A8", "int-quantized"}, {"INT8", "int-quantized"}, {"W4AFP8", "int-quantized"},
    {"FP8", "float-quantized"}, {"FP8_DYNAMIC", "float-quantized"},
    {"FP8_BLOCK", "float-quantized"}, {"NVFP4A16", "nvfp4-pack-quantized"},
    {"NVFP4", "nvfp4-pack-quantized"}, {"MXFP4A16", "mxfp4-pack-quantized"},
    {"MXFP4", "mxfp4-pack-quantized"}, {"MXFP8A16", "mxfp8-quantized"},
    {"MXFP8", "mxfp8-quantized"},
  };
  for (size_t i = 0; i < sizeof fm / sizeof fm[0]; i++) {
    llmc_qargs w, in;
    int hw, hi;
    CHECK(llmc_q_preset(fm[i].preset, &w, &in, &hw, &hi) == 0 && hw, "preset %s", fm[i].preset);
    const char *f = llmc_q_format_name(llmc_q_infer_format(&w, hi ? &in : NULL));
    CHECK(strcmp(f, fm[i].format) == 0, "%s -> %s, expected %s", fm[i].preset, f, fm[i].format);
  }
  llmc_qargs w, in;
  int hw, hi;
  CHECK(llmc_q_preset("unquantized", &w, &in, &hw, &hi) == 0 && !hw && !hi, "UNQUANTIZED");
  CHECK(llmc_q_preset("W9A16", &w, &in, &hw, &hi) < 0, "W9A16 rejected");
  CHECK(llmc_q_preset("W8A4", &w, &in, &hw, &hi) < 0, "W8A4 rejected");
  llmc_q_preset("FP8", &w, &in, &hw, &hi);
  CHECK_EQ_INT(llmc_q_infer_format(&w, NULL), LLMC_QF_NAIVE);   /* fp8 weight-only */

  /* layouts for a [64, 256] bf16 weight: name, dtype, d0, d1 (0 = 1-D) */
  static const struct {
    const char *preset;
    int n;
    struct { const char *name; llmc_dtype t; int64_t d0, d1; } e[5];
  } lay[] = {
    {"W4A16", 3, {{"weight_packed", LLMC_I32, 64, 32}, {"weight_scale", LLMC_BF16, 64, 2},
                  {"weight_shape", LLMC_I64, 2, 0}}},
    {"W4A16_ASYM", 4, {{"weight_packed", LLMC_I32, 64, 32}, {"weight_scale", LLMC_BF16, 64, 2},
                       {"weight_shape", LLMC_I64, 2, 0}, {"weight_zero_point", LLMC_I32, 8, 2}}},
    {"W3A16", 3, {{"weight_packed", LLMC_I32, 64, 24}, {"weight_scale", LLMC_BF16, 64, 2},
                  {"weight_shape", LLMC_I64, 2, 0}}},
    {"W8A8", 2, {{"weight", LLMC_I8, 64, 256}, {"weight_scale", LLMC_BF16, 64, 1}}},
    {"FP8", 3, {{"weight", LLMC_F8_E4M3, 64, 256}, {"weight_scale", LLMC_BF16, 1, 0},
                {"input_scale", LLMC_BF16, 1, 0}}},
    {"NVFP4A16", 3, {{"weight_packed", LLMC_U8, 64, 128}, {"weight_scale", LLMC_F8_E4M3, 64, 16},
                     {"weight_global_scale", LLMC_F32, 1, 0}}},
    {"MXFP4", 2, {{"weight_packed", LLMC_U8, 64, 128}, {"weight_scale", LLMC_U8, 64, 8}}},
    {"MXFP8A16", 2, {{"weight", LLMC_F8_E4M3, 64, 256}, {"weight_scale", LLMC_U8, 64, 8}}},
  };
  for (size_t i = 0; i < sizeof lay / sizeof lay[0]; i++) {
    llmc_q_preset(lay[i].preset, &w, &in, &hw, &hi);
    llmc_qtensor_desc d[LLMC_Q_MAX_TENSORS];
    llmc_qformat f = llmc_q_infer_format(&w, hi ? &in : NULL);
    int n = llmc_q_layout(f, &w, hi ? &in : NULL, NULL, LLMC_BF16, 64, 256, d);
    CHECK(n == lay[i].n, "%s: %d tensors (%s)", lay[i].preset, n, llmc_errmsg());
    for (int k = 0; k < n && k < lay[i].n; k++) {
      int nd = lay[i].e[k].d1 ? 2 : 1;
      CHECK(strcmp(d[k].name, lay[i].e[k].name) == 0 && d[k].dtype == lay[i].e[k].t &&
                d[k].ndim == nd && d[k].shape[0] == lay[i].e[k].d0 &&
                (nd == 1 || d[k].shape[1] == lay[i].e[k].d1),
            "%s: tensor %d is %s %s [%lld, %lld]", lay[i].preset, k, d[k].name,
            llmc_dtype_name(d[k].dtype), (long long)d[k].shape[0], (long long)d[k].shape[1]);
    }
  }
  /* dense with forced (oneshot) zero points lists them; other formats never
  ** list symmetric zero points */
  llmc_q_preset("W4A16", &w, &in, &hw, &hi);
  w.force_zero_point = 1;
  llmc_qtensor_desc d[LLMC_Q_MAX_TENSORS];
  CHECK_EQ_INT(llmc_q_layout(LLMC_QF_DENSE, &w, NULL, NULL, LLMC_BF16, 64, 256, d), 3);
  CHECK(strcmp(d[2].name, "weight_zero_point") == 0 && d[2].dtype == LLMC_I8, "dense zp");
  CHECK_EQ_INT(llmc_q_layout(LLMC_QF_PACK, &w, NULL, NULL, LLMC_BF16, 64, 256, d), 3);
}

/* ---- §1.3: argument validation and error messages ----------------------- */
static void test_errors(void) {
  llmc_qargs a;
  llmc_q_args_init(&a);
  a.strategy = LLMC_QS_TOKEN;
  CHECK(llmc_q_args_check(&a, "input") < 0 && strstr(llmc_errmsg(), "token"), "static token");
  llmc_q_args_init(&a);
  a.strategy = LLMC_QS_GROUP;
  CHECK(llmc_q_args_check(&a, "w") < 0, "group without group_size");
  a.group_size = 128;
  uint16_t x[200] = {0};
  llmc_qparams qp;
  CHECK(llmc_q_qparams_compute(&qp, &a, x, LLMC_BF16, 1, 200, NULL) < 0 &&
            strstr(llmc_errmsg(), "divisible"),
        "non-divisible group: %s", llmc_errmsg());
  llmc_q_args_init(&a);
  a.type = LLMC_QTYPE_FLOAT;
  a.num_bits = 4;
  a.symmetric = 0;
  CHECK(llmc_q_args_check(&a, "w") < 0 && strstr(llmc_errmsg(), "FP4"), "asym fp4");
  llmc_q_args_init(&a);
  a.strategy = LLMC_QS_CHANNEL;
  a.dynamic = LLMC_QDYN_DYNAMIC;
  CHECK(llmc_q_args_check(&a, "w") < 0, "dynamic channel");
  llmc_q_args_init(&a);
  a.num_bits = 9;
  CHECK(llmc_q_args_check(&a, "w") < 0, "int9");
  llmc_q_args_init(&a);
  CHECK(llmc_q_qparams_compute(&qp, &a, x, LLMC_I8, 1, 2, NULL) < 0, "int8 input rejected");
  /* decompress validates dtypes and sizes */
  llmc_qargs w, in;
  int hw, hi;
  llmc_q_preset("W4A16", &w, &in, &hw, &hi);
  llmc_qtensor_desc d[LLMC_Q_MAX_TENSORS];
  int n = llmc_q_layout(LLMC_QF_PACK, &w, NULL, NULL, LLMC_BF16, 2, 128, d);
  int32_t packed[32] = {0};
  uint16_t scale[2] = {BF(1.0f), BF(1.0f)};
  int64_t shape[2] = {2, 128};
  const void *bufs[3] = {packed, scale, shape};
  uint16_t out[256];
  CHECK_EQ_INT(llmc_q_decompress(LLMC_QF_PACK, &w, 2, 128, d, n, bufs, out, LLMC_BF16), 0);
  CHECK(BFV(out[0]) == -8.0f, "packed zero word -> q = -8 (%g)", BFV(out[0]));
  d[0].dtype = LLMC_U8;
  CHECK(llmc_q_decompress(LLMC_QF_PACK, &w, 2, 128, d, n, bufs, out, LLMC_BF16) < 0 &&
            strstr(llmc_errmsg(), "weight_packed"),
        "wrong dtype named: %s", llmc_errmsg());
  d[0].dtype = LLMC_I32;
  shape[1] = 64;
  CHECK(llmc_q_decompress(LLMC_QF_PACK, &w, 2, 128, d, n, bufs, out, LLMC_BF16) < 0 &&
            strstr(llmc_errmsg(), "weight_shape"),
        "shape mismatch: %s", llmc_errmsg());
}

/* ---- §10.15 / §10.22: every preset, round trip, modes, threads ---------- */
static int same_bits(const void *a, const void *b, llmc_dtype t, int64_t n, int zero_ok,
                     int64_t *nd) {
  size_t es = llmc_dtype_size(t);
  *nd = 0;
  for (int64_t i = 0; i < n; i++) {
    const char *x = (const char *)a + i * es, *y = (const char *)b + i * es;
    if (memcmp(x, y, es) == 0) continue;
    /* int schemes: CT's fake quant keeps -0.0 where decompression gives +0 */
    if (zero_ok && llmc_load_as_f32(x, t) == 0.0f && llmc_load_as_f32(y, t) == 0.0f) continue;
    (*nd)++;
  }
  return *nd == 0;
}

static void test_presets_round_trip(void) {
  static const llmc_dtype dts[3] = {LLMC_BF16, LLMC_F16, LLMC_F32};
  for (int p = 0; llmc_q_preset_names[p]; p++) {
    llmc_qargs w, in;
    int hw, hi;
    const char *name = llmc_q_preset_names[p];
    CHECK_EQ_INT(llmc_q_preset(name, &w, &in, &hw, &hi), 0);
    if (!hw) continue;
    llmc_qformat f = llmc_q_infer_format(&w, hi ? &in : NULL);
    int fp4mx = f == LLMC_QF_NVFP4 || f == LLMC_QF_MXFP4 || f == LLMC_QF_MXFP8;
    for (int k = 0; k < 3; k++) {
      llmc_dtype W = dts[k];
      if (fp4mx && W != LLMC_BF16) continue;   /* CT decompresses these to bf16 (§10.15) */
      int64_t rows = 64, cols = 256;
      void *x = random_weight(W, rows, cols, 0.05f);
      llmc_qparams qp;
      CHECK_EQ_INT(llmc_q_qparams_compute(&qp, &w, x, W, rows, cols, NULL), 0);
      llmc_qtensor_desc d[LLMC_Q_MAX_TENSORS];
      int n = llmc_q_layout(f, &w, NULL, NULL, W, rows, cols, d);
      void *bufs[LLMC_Q_MAX_TENSORS];
      for (int i = 0; i < n; i++) bufs[i] = malloc(d[i].nbytes);
      CHECK_EQ_INT(llmc_q_compress(f, &qp, x, W, d, n, bufs), 0);
      size_t ob = (size_t)(rows * cols) * llmc_dtype_size(W);
      void *dec = malloc(ob), *fq = malloc(ob);
      CHECK_EQ_INT(llmc_q_decompress(f, &w, rows, cols, d, n, (const void *const *)bufs, dec, W),
                   0);
      CHECK_EQ_INT(llmc_q_fake_quantize(&qp, x, W, fq), 0);
      int64_t nd;
      CHECK(same_bits(dec, fq, W, rows * cols, w.type == LLMC_QTYPE_INT, &nd),
            "%s %s: %lld elements of decompress(compress(w)) differ from fake_quantize(w)", name,
            llmc_dtype_name(W), (long long)nd);
      /* in place */
      memcpy(dec, x, ob);
      llmc_q_fake_quantize(&qp, dec, W, dec);
      CHECK(memcmp(dec, fq, ob) == 0, "%s %s: in-place fake quantization", name,
            llmc_dtype_name(W));
      /* fused vs eager (int / fp8 presets): never differ on f32 weights, differ
      ** on a fraction of bf16 elements (§3.4: ~0.6 % int4, ~3 % fp8, ~10 % int8); fp16's
      ** 11-bit quotients rarely change the final rounding, so no claim there */
      if (!fp4mx) {
        size_t cb = (size_t)(rows * cols);
        void *ce = malloc(cb), *cf = malloc(cb);
        llmc_q_quantize(&qp, x, W, ce);
        qp.args.rounding = LLMC_QROUND_FUSED;
        llmc_q_quantize(&qp, x, W, cf);
        qp.args.rounding = LLMC_QROUND_EAGER;
        size_t diff = 0;
        for (size_t i = 0; i < cb; i++) diff += ((uint8_t *)ce)[i] != ((uint8_t *)cf)[i];
        if (W == LLMC_F32)
          CHECK(diff == 0, "%s f32: eager and fused differ on %zu", name, diff);
        else if (W == LLMC_BF16 && w.num_bits >= 4)
          CHECK(diff > 0 && diff < cb / 5, "%s bf16: eager and fused differ on %zu of %zu", name,
                diff, cb);
        free(ce), free(cf);
      }
      free(dec), free(fq), free(x);
      for (int i = 0; i < n; i++) free(bufs[i]);
      llmc_q_qparams_free(&qp);
    }
  }
}

/* the same bytes whatever the thread count */
static void test_threads(void) {
  static const char *presets[] = {"FP8_BLOCK", "W4A16", "NVFP4A16", "MXFP4A16", "FP8"};
  int64_t rows = 300, cols = 512;
  void *x = random_weight(LLMC_BF16, rows, cols, 0.02f);
  for (size_t p = 0; p < sizeof presets / sizeof presets[0]; p++) {
    llmc_qargs w, in;
    int hw, hi;
    llmc_q_preset(presets[p], &w, &in, &hw, &hi);
    w.observer = p == 1 ? LLMC_QOBS_MSE : LLMC_QOBS_MINMAX;
    llmc_qformat f = llmc_q_infer_format(&w, hi ? &in : NULL);
    llmc_qtensor_desc d[LLMC_Q_MAX_TENSORS];
    int n = llmc_q_layout(f, &w, NULL, NULL, LLMC_BF16, rows, cols, d);
    void *ref[LLMC_Q_MAX_TENSORS], *got[LLMC_Q_MAX_TENSORS];
    for (int t = 1; t <= 3; t++) {
      omp_set_num_threads(t);
      llmc_qparams qp;
      llmc_q_qparams_compute(&qp, &w, x, LLMC_BF16, rows, cols, NULL);
      void **b = t == 1 ? ref : got;
      for (int i = 0; i < n; i++) b[i] = calloc(1, d[i].nbytes);
      llmc_q_compress(f, &qp, x, LLMC_BF16, d, n, b);
      if (t > 1) {
        int same = 1;
        for (int i = 0; i < n; i++) same &= memcmp(ref[i], got[i], d[i].nbytes) == 0;
        CHECK(same, "%s: %d threads give different bytes", presets[p], t);
        for (int i = 0; i < n; i++) free(got[i]);
      }
      llmc_q_qparams_free(&qp);
    }
    for (int i = 0; i < n; i++) free(ref[i]);
  }
  omp_set_num_threads(2);
  free(x);
}

/* ---- MSE observer: closed-form properties ------------------------------- */
static void test_mse(void) {
  llmc_qargs a;
  llmc_q_args_init(&a);
  a.num_bits = 4;
  a.strategy = LLMC_QS_CHANNEL;
  a.observer = LLMC_QOBS_MSE;
  /* row 0: values on the int4 grid of amax 7 -> no shrink beats p = 1;
  ** row 1: one outlier among small values -> the search shrinks the range */
  float x[2][64];
  for (int i = 0; i < 64; i++) {
    x[0][i] = (float)(i % 15 - 7);
    x[1][i] = 0.01f * (float)(i % 9 - 4);
  }
  x[1][5] = 0.2f;
  float mn[2], mx[2], mmn[2], mmx[2];
  CHECK_EQ_INT(llmc_q_observe_mse(&a, x, LLMC_F32, 2, 64, mn, mx), 0);
  llmc_q_observe_minmax(&a, x, LLMC_F32, 2, 64, mmn, mmx);
  CHECK(mn[0] == mmn[0] && mx[0] == mmx[0], "grid-aligned row keeps p = 1 (%g %g)", mn[0], mx[0]);
  CHECK(mx[1] < mmx[1] && mx[1] >= 0.8f * mmx[1], "outlier row shrinks: %g of %g", mx[1], mmx[1]);
  /* the chosen range is one of the candidates p = 1 - i/100 */
  int found = 0;
  for (int i = 0; i < 20; i++) found |= mx[1] == (float)(mmx[1] * (float)(1.0 - i / 100.0));
  CHECK(found, "MSE max %g is a grid candidate", mx[1]);
}

int main(void) {
  llmc_dtype_init();
  omp_set_num_threads(2);
  test_int4_amax();
  test_double_rounding();
  test_fp8();
  test_fp4();
  test_nvfp4();
  test_mx();
  test_asym_and_zero();
  test_block();
  test_pack();
  test_formats();
  test_errors();
  test_presets_round_trip();
  test_threads();
  test_mse();
  return check_summary();
}
