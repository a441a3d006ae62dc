/*
** dtype.c — dtype table and bit-exact scalar conversions (see dtype.h).
*/
#include "dtype.h"

#include <math.h>
#include <stdatomic.h>
#include <strings.h>

const llmc_dtype_traits llmc_dtype_table[LLMC_DTYPE_COUNT] = {
  [LLMC_F32]     = {"float32", "F32", 4, 1},
  [LLMC_F16]     = {"float16", "F16", 2, 1},
  [LLMC_BF16]    = {"bfloat16", "BF16", 2, 1},
  [LLMC_F8_E4M3] = {"float8_e4m3fn", "F8_E4M3", 1, 1},
  [LLMC_F8_E5M2] = {"float8_e5m2", "F8_E5M2", 1, 1},
  [LLMC_F64]     = {"float64", "F64", 8, 1},
  [LLMC_I8]      = {"int8", "I8", 1, 0},
  [LLMC_U8]      = {"uint8", "U8", 1, 0},
  [LLMC_I16]     = {"int16", "I16", 2, 0},
  [LLMC_I32]     = {"int32", "I32", 4, 0},
  [LLMC_I64]     = {"int64", "I64", 8, 0},
  [LLMC_BOOL]    = {"bool", "BOOL", 1, 0},
};

static const struct { const char *alias; llmc_dtype t; } dtype_aliases[] = {
  {"f32", LLMC_F32}, {"float", LLMC_F32}, {"fp32", LLMC_F32},
  {"f16", LLMC_F16}, {"half", LLMC_F16}, {"fp16", LLMC_F16},
  {"bf16", LLMC_BF16},
  {"fp8", LLMC_F8_E4M3}, {"f8_e4m3", LLMC_F8_E4M3}, {"e4m3", LLMC_F8_E4M3},
  {"f8_e5m2", LLMC_F8_E5M2}, {"e5m2", LLMC_F8_E5M2},
  {"f64", LLMC_F64}, {"double", LLMC_F64},
  {"i8", LLMC_I8}, {"u8", LLMC_U8}, {"i16", LLMC_I16}, {"i32", LLMC_I32},
  {"int", LLMC_I32}, {"i64", LLMC_I64}, {"long", LLMC_I64},
};

int llmc_dtype_from_st_name(const char *code) {
  for (int i = 0; i < LLMC_DTYPE_COUNT; i++)
    if (strcmp(code, llmc_dtype_table[i].st_name) == 0) return i;
  return -1;
}

int llmc_dtype_from_name(const char *name) {
  for (int i = 0; i < LLMC_DTYPE_COUNT; i++)
    if (strcmp(name, llmc_dtype_table[i].name) == 0) return i;
  for (size_t i = 0; i < sizeof dtype_aliases / sizeof dtype_aliases[0]; i++)
    if (strcasecmp(name, dtype_aliases[i].alias) == 0) return (int)dtype_aliases[i].t;
  return llmc_dtype_from_st_name(name);
}

/* ---- float16 --------------------------------------------------------- */

float llmc_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
  if (exp == 0x1f) return llmc_bits_f32(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    /* zero or subnormal: man * 2^-24, exact in f32 */
    float v = (float)man * 0x1p-24f;
    return sign ? -v : v;
  }
  return llmc_bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t llmc_f32_to_f16(float f) {
  uint32_t u = llmc_f32_bits(f);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;          /* NaN */
  if (a >= 0x477ff000u) return sign | 0x7c00u;         /* rounds to >= 65520: inf */
  if (a < 0x38800000u) {                               /* below 2^-14: subnormal */
    /* value / 2^-24 rounded to nearest even integer; exact via f32 rint */
    float m = rintf(llmc_bits_f32(a) * 0x1p24f);
    return sign | (uint16_t)m;
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u);           /* RNE on 13 dropped bits */
  return sign | (uint16_t)((r - (112u << 23)) >> 13);
}

/* ---- fp8 ------------------------------------------------------------- */

float llmc_e4m3_lut[256];
float llmc_e5m2_lut[256];

static float decode_e4m3(uint8_t b) {
  int s = b >> 7, e = (b >> 3) & 0xf, m = b & 7;
  float v;
  if (e == 0xf && m == 7) return s ? -NAN : NAN;
  if (e == 0) v = ldexpf((float)m, -9);
  else v = ldexpf(1.0f + m / 8.0f, e - 7);
  return s ? -v : v;
}

static float decode_e5m2(uint8_t b) {
  /* e5m2 is the high byte of an f16 */
  return llmc_f16_to_f32((uint16_t)((uint16_t)b << 8));
}

void llmc_dtype_init(void) {
  static atomic_int done = 0;
  if (atomic_load(&done)) return;
  for (int i = 0; i < 256; i++) {
    llmc_e4m3_lut[i] = decode_e4m3((uint8_t)i);
    llmc_e5m2_lut[i] = decode_e5m2((uint8_t)i);
  }
  atomic_store(&done, 1);
}

/* Generic RNE of a positive finite float to a format with `mbits` mantissa
** bits, exponent bias `bias`, subnormal exponent 1-bias.  Returns the
** unsigned code (exponent<<mbits | mantissa) without range checks; the
** caller handles overflow.  Exact: works on the f32 bit pattern. */
static uint32_t round_small_float(float a, int mbits, int bias) {
  uint32_t u = llmc_f32_bits(a);
  int e = (int)(u >> 23) - 127;                 /* unbiased exponent of a */
  if (u == 0) return 0;
  int emin = 1 - bias;                          /* smallest normal exponent */
  if (e < emin) {
    /* subnormal in target: value / 2^(emin - mbits), rounded to integer RNE */
    float q = rintf(ldexpf(a, mbits - emin));   /* exact scaling by power of 2 */
    return (uint32_t)q;                         /* may equal 1<<mbits: smallest normal, correct code */
  }
  int drop = 23 - mbits;
  uint32_t mant = u & 0x7fffffu;
  uint32_t half = 1u << (drop - 1);
  uint32_t rem = mant & ((1u << drop) - 1);
  uint32_t m = mant >> drop;
  uint32_t code = ((uint32_t)(e + bias) << mbits) | m;
  if (rem > half || (rem == half && (m & 1))) code++;   /* carry into exponent is correct */
  return code;
}

uint8_t llmc_f32_to_e4m3(float f) {
  uint32_t u = llmc_f32_bits(f);
  uint8_t sign = (uint8_t)((u >> 24) & 0x80);
  float a = fabsf(f);
  if (!(a <= 448.0f)) {
    if (isnan(a) || a > 464.0f) return sign | 0x7f;      /* NaN */
    return sign | 0x7e;                                  /* (448, 464] rounds to 448 */
  }
  return sign | (uint8_t)round_small_float(a, 3, 7);
}

uint8_t llmc_f32_to_e4m3_sat(float f) {
  if (isnan(f)) return 0x7f;
  if (f > 448.0f) f = 448.0f;
  if (f < -448.0f) f = -448.0f;
  return llmc_f32_to_e4m3(f);
}

uint8_t llmc_f32_to_e5m2(float f) {
  uint32_t u = llmc_f32_bits(f);
  uint8_t sign = (uint8_t)((u >> 24) & 0x80);
  float a = fabsf(f);
  if (isnan(a)) return sign | 0x7f;
  if (a >= 61440.0f) return sign | 0x7c;   /* 57344 max; midpoint to 2^16 is 61440, ties to even (inf) */
  return sign | (uint8_t)round_small_float(a, 2, 15);
}

/* ---- fp4 e2m1 -------------------------------------------------------- */

const float llmc_e2m1_values[16] = {
  0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f,
};

uint8_t llmc_f32_to_e2m1(float t) {
  /* compressed-tensors' threshold table (spec §3.6): intervals closed on
  ** the side that makes ties go to the even index. */
  float a = fabsf(t);
  uint8_t idx;
  if (a <= 0.25f) idx = 0;
  else if (a < 0.75f) idx = 1;
  else if (a <= 1.25f) idx = 2;
  else if (a < 1.75f) idx = 3;
  else if (a <= 2.5f) idx = 4;
  else if (a < 3.5f) idx = 5;
  else if (a <= 5.0f) idx = 6;
  else idx = 7;
  /* sign(t) with sign(+-0) = +0: negative nonzero inputs keep the sign bit
  ** even when the magnitude rounds to 0 (CT writes nibble 0x8). */
  if (t < 0.0f) idx |= 8;
  return idx;
}

/* ---- generic access -------------------------------------------------- */

double llmc_load_as_f64(const void *p, llmc_dtype t) {
  switch (t) {
    case LLMC_F32: { float v; memcpy(&v, p, 4); return v; }
    case LLMC_F64: { double v; memcpy(&v, p, 8); return v; }
    case LLMC_F16: { uint16_t v; memcpy(&v, p, 2); return llmc_f16_to_f32(v); }
    case LLMC_BF16: { uint16_t v; memcpy(&v, p, 2); return llmc_bf16_to_f32(v); }
    case LLMC_F8_E4M3: llmc_dtype_init(); return llmc_e4m3_lut[*(const uint8_t *)p];
    case LLMC_F8_E5M2: llmc_dtype_init(); return llmc_e5m2_lut[*(const uint8_t *)p];
    case LLMC_I8: return *(const int8_t *)p;
    case LLMC_U8: return *(const uint8_t *)p;
    case LLMC_BOOL: return *(const uint8_t *)p ? 1.0 : 0.0;
    case LLMC_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case LLMC_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case LLMC_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    default: return NAN;
  }
}

float llmc_load_as_f32(const void *p, llmc_dtype t) { return (float)llmc_load_as_f64(p, t); }

static double clamp_round_int(double v, double lo, double hi) {
  if (isnan(v)) return 0;
  v = trunc(v);
  return v < lo ? lo : v > hi ? hi : v;
}

void llmc_store_from_f64(void *p, llmc_dtype t, double v) {
  switch (t) {
    case LLMC_F32: { float f = (float)v; memcpy(p, &f, 4); break; }
    case LLMC_F64: memcpy(p, &v, 8); break;
    case LLMC_F16: { uint16_t h = llmc_f32_to_f16((float)v); memcpy(p, &h, 2); break; }
    case LLMC_BF16: { uint16_t h = llmc_f32_to_bf16((float)v); memcpy(p, &h, 2); break; }
    case LLMC_F8_E4M3: *(uint8_t *)p = llmc_f32_to_e4m3((float)v); break;
    case LLMC_F8_E5M2: *(uint8_t *)p = llmc_f32_to_e5m2((float)v); break;
    case LLMC_I8: *(int8_t *)p = (int8_t)clamp_round_int(v, -128, 127); break;
    case LLMC_U8: *(uint8_t *)p = (uint8_t)clamp_round_int(v, 0, 255); break;
    case LLMC_BOOL: *(uint8_t *)p = (v != 0.0); break;
    case LLMC_I16: { int16_t x = (int16_t)clamp_round_int(v, -32768, 32767); memcpy(p, &x, 2); break; }
    case LLMC_I32: { int32_t x = (int32_t)clamp_round_int(v, -2147483648.0, 2147483647.0); memcpy(p, &x, 4); break; }
    case LLMC_I64: { int64_t x = (int64_t)clamp_round_int(v, -9223372036854775808.0, 9223372036854774784.0); memcpy(p, &x, 8); break; }
    default: break;
  }
}

/* Fast paths for the conversions that matter (weights upcast, activations
** rounded); everything else goes through f64, which is exact for every
** dtype we have (f32 -> f64 -> f32 and int64 up to 2^53 aside). */
void llmc_convert(void *dst, llmc_dtype dt, const void *src, llmc_dtype st, size_t n) {
  llmc_dtype_init();
  const long long N = (long long)n;
  if (dt == st) { memmove(dst, src, n * llmc_dtype_size(st)); return; }
  if (st == LLMC_BF16 && dt == LLMC_F32) {
    const uint16_t *s = src; float *d = dst;
    #pragma omp parallel for simd schedule(static) if (N > 65536)
    for (long long i = 0; i < N; i++) d[i] = llmc_bits_f32((uint32_t)s[i] << 16);
    return;
  }
  if (st == LLMC_F32 && dt == LLMC_BF16) {
    const float *s = src; uint16_t *d = dst;
    #pragma omp parallel for simd schedule(static) if (N > 65536)
    for (long long i = 0; i < N; i++) d[i] = llmc_f32_to_bf16(s[i]);
    return;
  }
  if (st == LLMC_F16 && dt == LLMC_F32) {
    const uint16_t *s = src; float *d = dst;
    #pragma omp parallel for schedule(static) if (N > 65536)
    for (long long i = 0; i < N; i++) d[i] = llmc_f16_to_f32(s[i]);
    return;
  }
  if (st == LLMC_F32 && dt == LLMC_F16) {
    const float *s = src; uint16_t *d = dst;
    #pragma omp parallel for schedule(static) if (N > 65536)
    for (long long i = 0; i < N; i++) d[i] = llmc_f32_to_f16(s[i]);
    return;
  }
  if (st == LLMC_F8_E4M3 && dt == LLMC_F32) {
    const uint8_t *s = src; float *d = dst;
    #pragma omp parallel for schedule(static) if (N > 65536)
    for (long long i = 0; i < N; i++) d[i] = llmc_e4m3_lut[s[i]];
    return;
  }
  if (st == LLMC_F32 && dt == LLMC_F8_E4M3) {
    const float *s = src; uint8_t *d = dst;
    #pragma omp parallel for schedule(static) if (N > 65536)
    for (long long i = 0; i < N; i++) d[i] = llmc_f32_to_e4m3(s[i]);
    return;
  }
  size_t ss = llmc_dtype_size(st), ds = llmc_dtype_size(dt);
  #pragma omp parallel for schedule(static) if (N > 65536)
  for (long long i = 0; i < N; i++) {
    const char *sp = (const char *)src + (size_t)i * ss;
    char *dp = (char *)dst + (size_t)i * ds;
    double v = llmc_load_as_f64(sp, st);
    /* narrow floats are reached through f32, as torch does (c10's
    ** BFloat16/Half/Float8 constructors take a float): exact for every
    ** source narrower than f32, and torch's double rounding for f64/i64 */
    if (dt == LLMC_BF16 || dt == LLMC_F16 || dt == LLMC_F8_E4M3 || dt == LLMC_F8_E5M2)
      v = (double)(float)v;
    llmc_store_from_f64(dp, dt, v);
  }
}
