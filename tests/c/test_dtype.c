/*
** test_dtype.c — bit-exact scalar conversions against hand-computed bit
** patterns (ties, subnormals, overflow, NaN, signed zero) and exhaustive
** round trips.
*/
#include <math.h>
#include <string.h>

#include "check.h"
#include "dtype.h"

static float bits(uint32_t u) { return llmc_bits_f32(u); }

int main(void) {
  llmc_dtype_init();

  /* ---- bf16: RNE on the low 16 bits ---- */
  CHECK_EQ_INT(llmc_f32_to_bf16(1.0f), 0x3F80);
  CHECK_EQ_INT(llmc_f32_to_bf16(bits(0x3F808000)), 0x3F80);   /* tie -> even (down) */
  CHECK_EQ_INT(llmc_f32_to_bf16(bits(0x3F818000)), 0x3F82);   /* tie -> even (up) */
  CHECK_EQ_INT(llmc_f32_to_bf16(bits(0x3F808001)), 0x3F81);   /* above tie */
  CHECK_EQ_INT(llmc_f32_to_bf16(bits(0x3F807FFF)), 0x3F80);   /* below tie */
  CHECK_EQ_INT(llmc_f32_to_bf16(bits(0x7F7FFFFF)), 0x7F80);   /* FLT_MAX rounds to inf */
  CHECK_EQ_INT(llmc_f32_to_bf16(-0.0f), 0x8000);
  CHECK_EQ_INT(llmc_f32_to_bf16(bits(0x00008000)), 0x0000);   /* subnormal tie -> 0 */
  CHECK_EQ_INT(llmc_f32_to_bf16(bits(0x00018000)), 0x0002);   /* subnormal tie -> even */
  CHECK_EQ_INT(llmc_f32_to_bf16(INFINITY), 0x7F80);
  CHECK(isnan(llmc_bf16_to_f32(llmc_f32_to_bf16(NAN))), "NaN must stay NaN");
  CHECK_EQ_INT(llmc_f32_to_bf16(bits(0x7F800001)) & 0x7FC0, 0x7FC0);  /* signalling NaN -> quiet */
  CHECK(llmc_bf16_to_f32(0x3E4D) == 0.2001953125f, "bf16 0x3E4D decodes to 0.2001953125");
  /* spec §3.4 example: 1.5 / 7.5 in bf16 is 0x3E4D */
  CHECK_EQ_INT(llmc_f32_to_bf16(1.5f / 7.5f), 0x3E4D);

  /* every bf16 value round-trips (NaNs stay NaN) */
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = llmc_bf16_to_f32((uint16_t)h);
    if (isnan(f)) { if (!isnan(llmc_bf16_to_f32(llmc_f32_to_bf16(f)))) bad++; }
    else if (llmc_f32_to_bf16(f) != h) bad++;
  }
  CHECK(bad == 0, "%d bf16 values do not round-trip", bad);

  /* ---- f16 ---- */
  CHECK_EQ_INT(llmc_f32_to_f16(1.0f), 0x3C00);
  CHECK_EQ_INT(llmc_f32_to_f16(65504.0f), 0x7BFF);
  CHECK_EQ_INT(llmc_f32_to_f16(65519.0f), 0x7BFF);
  CHECK_EQ_INT(llmc_f32_to_f16(65520.0f), 0x7C00);          /* tie at the top -> inf */
  CHECK_EQ_INT(llmc_f32_to_f16(ldexpf(1, -24)), 0x0001);     /* smallest subnormal */
  CHECK_EQ_INT(llmc_f32_to_f16(ldexpf(1, -25)), 0x0000);     /* tie -> 0 */
  CHECK_EQ_INT(llmc_f32_to_f16(3 * ldexpf(1, -25)), 0x0002); /* tie -> even */
  CHECK_EQ_INT(llmc_f32_to_f16(ldexpf(1, -14)), 0x0400);     /* smallest normal */
  CHECK_EQ_INT(llmc_f32_to_f16(ldexpf(1023, -24)), 0x03FF);  /* largest subnormal */
  CHECK_EQ_INT(llmc_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3C00);      /* tie -> even */
  CHECK_EQ_INT(llmc_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3C02);  /* tie -> even */
  CHECK_EQ_INT(llmc_f32_to_f16(-2.0f), 0xC000);
  CHECK_EQ_INT(llmc_f32_to_f16(NAN) & 0x7E00, 0x7E00);
  bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = llmc_f16_to_f32((uint16_t)h);
    if (isnan(f)) continue;
    if (llmc_f32_to_f16(f) != h) bad++;
  }
  CHECK(bad == 0, "%d f16 values do not round-trip", bad);

  /* ---- fp8 e4m3fn ---- */
  CHECK_EQ_INT(llmc_f32_to_e4m3(448.0f), 0x7E);
  CHECK_EQ_INT(llmc_f32_to_e4m3(464.0f), 0x7E);      /* tie between 448 and (NaN slot) 480 -> even */
  CHECK_EQ_INT(llmc_f32_to_e4m3(465.0f), 0x7F);      /* past the boundary: NaN, as torch's cast */
  CHECK_EQ_INT(llmc_f32_to_e4m3(-448.0f), 0xFE);
  CHECK_EQ_INT(llmc_f32_to_e4m3(INFINITY), 0x7F);
  CHECK_EQ_INT(llmc_f32_to_e4m3(NAN) & 0x7F, 0x7F);
  CHECK_EQ_INT(llmc_f32_to_e4m3_sat(1000.0f), 0x7E);
  CHECK_EQ_INT(llmc_f32_to_e4m3_sat(-1000.0f), 0xFE);
  CHECK_EQ_INT(llmc_f32_to_e4m3(1.0f), 0x38);
  CHECK_EQ_INT(llmc_f32_to_e4m3(1.0625f), 0x38);     /* tie 1.0 / 1.125 -> even */
  CHECK_EQ_INT(llmc_f32_to_e4m3(1.1875f), 0x3A);     /* tie 1.125 / 1.25 -> even */
  CHECK_EQ_INT(llmc_f32_to_e4m3(ldexpf(1, -9)), 0x01);       /* smallest subnormal */
  CHECK_EQ_INT(llmc_f32_to_e4m3(ldexpf(1, -10)), 0x00);      /* tie -> 0 */
  CHECK_EQ_INT(llmc_f32_to_e4m3(3 * ldexpf(1, -10)), 0x02);  /* tie -> even */
  CHECK_EQ_INT(llmc_f32_to_e4m3(ldexpf(7.5f, -9)), 0x08);    /* subnormal/normal boundary tie -> even (2^-6) */
  CHECK_EQ_INT(llmc_f32_to_e4m3(ldexpf(1, -6)), 0x08);       /* smallest normal */
  CHECK_EQ_INT(llmc_f32_to_e4m3(-0.0f), 0x80);               /* sign of zero kept */
  CHECK_EQ_INT(llmc_f32_to_e4m3(ldexpf(1, -12)), 0x00);      /* underflow to +0 */
  CHECK_EQ_INT(llmc_f32_to_e4m3(-ldexpf(1, -12)), 0x80);     /* underflow to -0 */
  CHECK(llmc_e4m3_to_f32(0x7E) == 448.0f, "0x7E = 448");
  CHECK(llmc_e4m3_to_f32(0x01) == ldexpf(1, -9), "0x01 = 2^-9");
  CHECK(llmc_e4m3_to_f32(0x5E) == 28.0f, "0x5E = 28 (spec §3.7 example)");
  CHECK(isnan(llmc_e4m3_to_f32(0x7F)) && isnan(llmc_e4m3_to_f32(0xFF)), "0x7F/0xFF are NaN");
  CHECK(signbit(llmc_e4m3_to_f32(0x80)) && llmc_e4m3_to_f32(0x80) == 0.0f, "0x80 = -0");
  bad = 0;
  for (int b = 0; b < 256; b++) {
    if ((b & 0x7F) == 0x7F) continue;
    if (llmc_f32_to_e4m3(llmc_e4m3_to_f32((uint8_t)b)) != b) bad++;
  }
  CHECK(bad == 0, "%d e4m3 codes do not round-trip", bad);
  /* every code's decoding equals sign * 2^(e-7) * (1 + m/8) (normal) or m * 2^-9 */
  bad = 0;
  for (int b = 0; b < 256; b++) {
    if ((b & 0x7F) == 0x7F) continue;
    int e = (b >> 3) & 15, m = b & 7;
    double v = e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m, -9);
    if (b & 0x80) v = -v;
    if ((double)llmc_e4m3_to_f32((uint8_t)b) != v) bad++;
  }
  CHECK(bad == 0, "%d e4m3 decodings differ from the closed form", bad);

  /* ---- fp8 e5m2 ---- */
  CHECK_EQ_INT(llmc_f32_to_e5m2(57344.0f), 0x7B);
  CHECK_EQ_INT(llmc_f32_to_e5m2(61440.0f), 0x7C);    /* tie with 2^16 -> even = inf */
  CHECK_EQ_INT(llmc_f32_to_e5m2(61439.0f), 0x7B);
  CHECK_EQ_INT(llmc_f32_to_e5m2(1.0f), 0x3C);
  CHECK_EQ_INT(llmc_f32_to_e5m2(ldexpf(1, -16)), 0x01);
  CHECK_EQ_INT(llmc_f32_to_e5m2(ldexpf(1, -17)), 0x00);
  CHECK_EQ_INT(llmc_f32_to_e5m2(1.125f), 0x3C);      /* tie 1.0 / 1.25 -> even */
  CHECK_EQ_INT(llmc_f32_to_e5m2(1.375f), 0x3E);      /* tie 1.25 / 1.5 -> even */
  CHECK(isinf(llmc_e5m2_to_f32(0x7C)), "e5m2 0x7C is inf");
  bad = 0;
  for (int b = 0; b < 256; b++) {
    float f = llmc_e5m2_to_f32((uint8_t)b);
    if (isnan(f)) continue;
    if (llmc_f32_to_e5m2(f) != b) bad++;
  }
  CHECK(bad == 0, "%d e5m2 codes do not round-trip", bad);

  /* ---- fp4 e2m1 (spec §3.6 thresholds) ---- */
  CHECK_EQ_INT(llmc_f32_to_e2m1(0.25f), 0);
  CHECK_EQ_INT(llmc_f32_to_e2m1(nextafterf(0.25f, 1)), 1);
  CHECK_EQ_INT(llmc_f32_to_e2m1(0.75f), 2);
  CHECK_EQ_INT(llmc_f32_to_e2m1(1.25f), 2);
  CHECK_EQ_INT(llmc_f32_to_e2m1(1.5f), 3);
  CHECK_EQ_INT(llmc_f32_to_e2m1(1.75f), 4);
  CHECK_EQ_INT(llmc_f32_to_e2m1(2.5f), 4);
  CHECK_EQ_INT(llmc_f32_to_e2m1(3.0f), 5);
  CHECK_EQ_INT(llmc_f32_to_e2m1(3.5f), 6);
  CHECK_EQ_INT(llmc_f32_to_e2m1(5.0f), 6);
  CHECK_EQ_INT(llmc_f32_to_e2m1(nextafterf(5.0f, 6)), 7);
  CHECK_EQ_INT(llmc_f32_to_e2m1(6.0f), 7);
  CHECK_EQ_INT(llmc_f32_to_e2m1(-0.1f), 0x8);    /* negative nonzero -> -0 nibble */
  CHECK_EQ_INT(llmc_f32_to_e2m1(-0.0f), 0x0);    /* exact -0 -> +0 */
  CHECK_EQ_INT(llmc_f32_to_e2m1(-4.8046875f), 0xE);
  CHECK_EQ_INT(llmc_f32_to_e2m1(4.8046875f), 6); /* spec §3.7 worked example -> index 6 */

  /* ---- generic conversions ---- */
  {
    float src[5] = {1.0f, -2.5f, 100.6f, 1e-3f, 70000.0f};
    uint16_t b[5];
    llmc_convert(b, LLMC_BF16, src, LLMC_F32, 5);
    CHECK(llmc_bf16_to_f32(b[2]) == 100.5f, "100.6 -> bf16 100.5 (spec §3.4 example)");
    int8_t i8[5];
    llmc_convert(i8, LLMC_I8, src, LLMC_F32, 5);
    CHECK(i8[0] == 1 && i8[1] == -2 && i8[2] == 100 && i8[4] == 127, "f32 -> i8 truncates and saturates");
    CHECK_EQ_INT(llmc_dtype_from_name("bf16"), LLMC_BF16);
    CHECK_EQ_INT(llmc_dtype_from_name("F8_E4M3"), LLMC_F8_E4M3);
    CHECK_EQ_INT(llmc_dtype_from_name("float8_e4m3fn"), LLMC_F8_E4M3);
    CHECK_EQ_INT(llmc_dtype_from_name("nope"), -1);
  }
  return check_summary();
}
