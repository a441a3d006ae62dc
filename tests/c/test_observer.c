/*
** test_observer.c — activation observers (observer.h) against naive loops,
** closed forms and the EMA worked example of compressed-tensors-format.md §7.
*/
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dtype.h"
#include "error.h"
#include "observer.h"

/* deterministic pseudo-random values in [-scale, scale) */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float urand(float scale) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return scale * ((float)(rng_state >> 40) / (float)(1u << 24) * 2.0f - 1.0f);
}

static float rnd_to(float v, llmc_dtype D) {
  if (D == LLMC_BF16) return llmc_round_bf16(v);
  if (D == LLMC_F16) return llmc_round_f16(v);
  return v;
}

/* The reference: a straightforward walk over the elements of statistic s. */
typedef struct {
  float mn[64], mx[64];
  double as[64];
  int64_t batches;
} ref_obs;

static void ref_update(ref_obs *R, llmc_obs_reduce red, llmc_obs_update_rule up, int64_t heads,
                       double c, llmc_dtype D, const float *x, int64_t rows, int64_t cols) {
  int64_t ns = red == LLMC_OBS_TENSOR ? 1 : red == LLMC_OBS_CHANNEL ? cols : heads;
  for (int64_t s = 0; s < ns; s++) {
    double lo = INFINITY, hi = -INFINITY, a = 0;
    for (int64_t r = 0; r < rows; r++)
      for (int64_t j = 0; j < cols; j++) {
        int64_t sj = red == LLMC_OBS_TENSOR ? 0 : red == LLMC_OBS_CHANNEL ? j : j / (cols / heads);
        if (sj != s) continue;
        double v = x[r * cols + j];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        a += fabs(v);
      }
    float m = rnd_to((float)lo, D), M = rnd_to((float)hi, D);
    if (R->batches == 0 || up == LLMC_OBS_MEMORYLESS_MINMAX) {
      R->mn[s] = m;
      R->mx[s] = M;
    } else if (up == LLMC_OBS_STATIC_MINMAX) {
      R->mn[s] = fminf(R->mn[s], m);
      R->mx[s] = fmaxf(R->mx[s], M);
    } else {
      volatile float k = (float)(1.0 - c), t = (float)c;
      volatile float p1 = rnd_to(R->mn[s] * k, D), p2 = rnd_to(m * t, D);
      R->mn[s] = rnd_to(p1 + p2, D);
      volatile float q1 = rnd_to(R->mx[s] * k, D), q2 = rnd_to(M * t, D);
      R->mx[s] = rnd_to(q1 + q2, D);
    }
    R->as[s] += a;
  }
  R->batches++;
}

/* x as bf16 bits (its values are then exact bf16; x is rounded in place) */
static void to_bf16(float *x, uint16_t *b, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    b[i] = llmc_f32_to_bf16(x[i]);
    x[i] = llmc_bf16_to_f32(b[i]);
  }
}

static void test_against_reference(void) {
  const int64_t rows = 7, cols = 24, heads = 4;
  const llmc_dtype Ds[3] = {LLMC_F32, LLMC_BF16, LLMC_F16};
  for (int red = 0; red < 3; red++)
    for (int up = 0; up < 3; up++)
      for (int di = 0; di < 3; di++)
        for (int bf_in = 0; bf_in < 2; bf_in++) {
          llmc_dtype D = Ds[di];
          double c = 0.3;
          llmc_obs o;
          int rc = llmc_obs_init(&o, red, up, cols, heads, c, D);
          CHECK(rc == 0, "init: %s", llmc_errmsg());
          if (rc) continue;
          ref_obs R;
          memset(&R, 0, sizeof R);
          int ok_mm = 1, ok_as = 1;
          for (int b = 0; b < 4; b++) {
            float x[7 * 24];
            uint16_t xb[7 * 24];
            float scale = b == 2 ? 0.25f : 3.0f + b;   /* batch 2 narrower: EMA / static differ */
            for (int i = 0; i < rows * cols; i++) x[i] = urand(scale);
            if (bf_in) to_bf16(x, xb, rows * cols);
            rc = bf_in ? llmc_obs_update(&o, xb, LLMC_BF16, rows, cols)
                       : llmc_obs_update(&o, x, LLMC_F32, rows, cols);
            CHECK(rc == 0, "update: %s", llmc_errmsg());
            ref_update(&R, red, up, heads, c, D, x, rows, cols);
            for (int64_t s = 0; s < o.nstats; s++) {
              if (llmc_f32_bits(o.min[s]) != llmc_f32_bits(R.mn[s]) ||
                  llmc_f32_bits(o.max[s]) != llmc_f32_bits(R.mx[s]))
                ok_mm = 0;
              if (fabs(o.abs_sum[s] - R.as[s]) > 1e-12 * (1 + R.as[s])) ok_as = 0;
            }
          }
          CHECK(ok_mm, "min/max differ from the reference: reduce %s update %s D %s input %s",
                llmc_obs_reduce_name(red), llmc_obs_update_name(up), llmc_dtype_name(D),
                bf_in ? "bf16" : "f32");
          CHECK(ok_as, "abs_sum differs: reduce %s update %s", llmc_obs_reduce_name(red),
                llmc_obs_update_name(up));
          CHECK_EQ_INT(o.batches, 4);
          CHECK_EQ_INT(o.tokens, 4 * rows);
          CHECK_EQ_INT(o.nstats, red == 0 ? 1 : red == 1 ? cols : heads);
          llmc_obs_free(&o);
        }
}

/* Closed forms: x[r][j] = (r+1) * (j+1) * sign, batches b = 0..2 scale by (b+1). */
static void test_closed_form(void) {
  const int64_t rows = 5, cols = 6;
  float x[5 * 6];
  llmc_obs ch, hd, tn, mem;
  CHECK(llmc_obs_init(&ch, LLMC_OBS_CHANNEL, LLMC_OBS_STATIC_MINMAX, cols, 0, 0, LLMC_F32) == 0, "init");
  CHECK(llmc_obs_init(&hd, LLMC_OBS_HEAD, LLMC_OBS_STATIC_MINMAX, cols, 3, 0, LLMC_F32) == 0, "init");
  CHECK(llmc_obs_init(&tn, LLMC_OBS_TENSOR, LLMC_OBS_STATIC_MINMAX, cols, 0, 0, LLMC_F32) == 0, "init");
  CHECK(llmc_obs_init(&mem, LLMC_OBS_TENSOR, LLMC_OBS_MEMORYLESS_MINMAX, cols, 0, 0, LLMC_F32) == 0, "init");
  for (int b = 0; b < 3; b++) {
    /* even rows positive, odd rows negative; batch b scaled by (3 - b) for
    ** negatives and (b + 1) for positives */
    for (int r = 0; r < rows; r++)
      for (int j = 0; j < cols; j++)
        x[r * cols + j] = (r % 2 == 0) ? (float)((r + 1) * (j + 1) * (b + 1))
                                       : -(float)((r + 1) * (j + 1) * (3 - b));
    llmc_obs_update(&ch, x, LLMC_F32, rows, cols);
    llmc_obs_update(&hd, x, LLMC_F32, rows, cols);
    llmc_obs_update(&tn, x, LLMC_F32, rows, cols);
    llmc_obs_update(&mem, x, LLMC_F32, rows, cols);
  }
  /* max over batches of positives: row 5 (r=4), batch 2: 5*(j+1)*3; min: row 4 (r=3), batch 0: -4*(j+1)*3 */
  int ok = 1;
  for (int j = 0; j < cols; j++) {
    if (ch.max[j] != 15.0f * (j + 1) || ch.min[j] != -12.0f * (j + 1)) ok = 0;
    /* sum |x| per column: sum_b [(1+3+5)(b+1) + (2+4)(3-b)] (j+1) = (9*6 + 6*6)(j+1) = 90(j+1) */
    if (ch.abs_sum[j] != 90.0 * (j + 1)) ok = 0;
  }
  CHECK(ok, "channel closed form");
  /* heads of 2 columns: head h covers j = 2h, 2h+1 -> max 15*(2h+2), min -12*(2h+2) */
  for (int h = 0; h < 3; h++) {
    CHECK(hd.max[h] == 15.0f * (2 * h + 2), "head %d max %g", h, hd.max[h]);
    CHECK(hd.min[h] == -12.0f * (2 * h + 2), "head %d min %g", h, hd.min[h]);
    CHECK(hd.abs_sum[h] == 90.0 * ((2 * h + 1) + (2 * h + 2)), "head %d abs_sum %g", h, hd.abs_sum[h]);
  }
  CHECK(tn.max[0] == 90.0f && tn.min[0] == -72.0f, "tensor %g %g", tn.min[0], tn.max[0]);
  CHECK(tn.abs_sum[0] == 90.0 * 21, "tensor abs_sum %g", tn.abs_sum[0]);
  /* memoryless: batch 2 only: max 5*6*3 = 90, min -4*6*1 = -24 */
  CHECK(mem.max[0] == 90.0f && mem.min[0] == -24.0f, "memoryless %g %g", mem.min[0], mem.max[0]);
  CHECK_EQ_INT(tn.tokens, 15);
  /* reset */
  llmc_obs_reset(&tn);
  CHECK_EQ_INT(tn.batches, 0);
  CHECK_EQ_INT(tn.tokens, 0);
  CHECK(tn.abs_sum[0] == 0.0, "reset abs_sum");
  float one[6] = {1, -2, 0.5f, 0, 0, 0};
  llmc_obs_update(&tn, one, LLMC_F32, 1, 6);
  CHECK(tn.max[0] == 1.0f && tn.min[0] == -2.0f, "after reset %g %g", tn.min[0], tn.max[0]);
  llmc_obs_free(&ch);
  llmc_obs_free(&hd);
  llmc_obs_free(&tn);
  llmc_obs_free(&mem);
  llmc_obs_free(&mem);   /* idempotent */
}

/* compressed-tensors-format.md §7: key absmax 3.016, 2.891, 3.563, 3.563 in
** bf16, EMA c = 0.01 -> stays 3.015625.  Hand-computed steps:
**   3.015625*0.99 = 2.98546875 -> bf16 2.984375 ; 2.890625*0.01 -> bf16 0.0289306640625
**   sum 3.0133056640625 -> bf16 3.015625 (spacing 1/64 in [2, 4)) */
static void test_ema_example(void) {
  llmc_obs o;
  CHECK(llmc_obs_init(&o, LLMC_OBS_TENSOR, LLMC_OBS_MINMAX, 4, 0, 0.01, LLMC_BF16) == 0, "init");
  const float amax[4] = {3.016f, 2.891f, 3.563f, 3.563f};
  for (int b = 0; b < 4; b++) {
    float x[8] = {0.5f, -1.0f, amax[b], 0.25f, -0.5f, 1.0f, 2.0f, -2.0f};
    CHECK(llmc_obs_update(&o, x, LLMC_F32, 2, 4) == 0, "update");
    CHECK(o.max[0] == 3.015625f, "batch %d max %.9g", b, o.max[0]);
  }
  /* min: -2 every batch: -2*0.99 = -1.98 -> bf16 -1.9765625 (spacing 1/128 in [1, 2));
  ** -2*0.01 = -0.02 -> bf16 -0.0200195; sum -1.99658 -> bf16 -2: a fixed point */
  CHECK(o.min[0] == -2.0f, "ema min %.9g", o.min[0]);
  CHECK_EQ_INT(o.batches, 4);
  llmc_obs_free(&o);

  /* f32, c = 0.5: 2, 4, 8 -> 3, then 5.5 */
  CHECK(llmc_obs_init(&o, LLMC_OBS_TENSOR, LLMC_OBS_MINMAX, 1, 0, 0.5, LLMC_F32) == 0, "init");
  float v[3] = {2, 4, 8};
  for (int b = 0; b < 3; b++) llmc_obs_update(&o, v + b, LLMC_F32, 1, 1);
  CHECK(o.max[0] == 5.5f && o.min[0] == 5.5f, "f32 ema %g %g", o.min[0], o.max[0]);
  llmc_obs_free(&o);
}

/* f16 statistics: an f32 value rounds to f16 (1 + 2^-11 + 2^-13 -> 1 + 2^-10) */
static void test_rounding(void) {
  llmc_obs o;
  CHECK(llmc_obs_init(&o, LLMC_OBS_TENSOR, LLMC_OBS_STATIC_MINMAX, 2, 0, 0, LLMC_F16) == 0, "init");
  float x[2] = {1.0f + 0x1p-11f + 0x1p-13f, -65536.0f};
  llmc_obs_update(&o, x, LLMC_F32, 1, 2);
  CHECK(o.max[0] == 1.0f + 0x1p-10f, "f16 max %.9g", o.max[0]);
  CHECK(isinf(o.min[0]) && o.min[0] < 0, "f16 overflow to -inf %g", o.min[0]);
  llmc_obs_free(&o);
  CHECK(llmc_obs_init(&o, LLMC_OBS_TENSOR, LLMC_OBS_STATIC_MINMAX, 2, 0, 0, LLMC_BF16) == 0, "init");
  float y[2] = {1.00390625f, -1.01171875f};   /* 1 + 2^-8 -> 1 (tie to even); -(1 + 3*2^-8) -> -1.015625 */
  llmc_obs_update(&o, y, LLMC_F32, 1, 2);
  CHECK(o.max[0] == 1.0f && o.min[0] == -1.015625f, "bf16 rounding %.9g %.9g", o.min[0], o.max[0]);
  llmc_obs_free(&o);
}

static void test_nan(void) {
  llmc_obs s, m;
  CHECK(llmc_obs_init(&s, LLMC_OBS_CHANNEL, LLMC_OBS_STATIC_MINMAX, 3, 0, 0, LLMC_BF16) == 0, "init");
  CHECK(llmc_obs_init(&m, LLMC_OBS_CHANNEL, LLMC_OBS_MEMORYLESS_MINMAX, 3, 0, 0, LLMC_BF16) == 0, "init");
  float x[6] = {1, NAN, 3, -1, 2, -3};
  llmc_obs_update(&s, x, LLMC_F32, 2, 3);
  llmc_obs_update(&m, x, LLMC_F32, 2, 3);
  CHECK(isnan(s.min[1]) && isnan(s.max[1]), "NaN column");
  CHECK(s.min[0] == -1 && s.max[0] == 1 && s.min[2] == -3 && s.max[2] == 3, "other columns");
  float y[3] = {5, 5, 5};
  llmc_obs_update(&s, y, LLMC_F32, 1, 3);
  llmc_obs_update(&m, y, LLMC_F32, 1, 3);
  CHECK(isnan(s.min[1]) && isnan(s.max[1]), "static keeps NaN");
  CHECK(s.max[0] == 5 && s.min[0] == -1, "static col 0 %g %g", s.min[0], s.max[0]);
  CHECK(m.min[1] == 5 && m.max[1] == 5, "memoryless replaces NaN");
  llmc_obs_free(&s);
  llmc_obs_free(&m);
  /* NaN in the first row of a column whose later rows are finite still wins */
  llmc_obs t;
  CHECK(llmc_obs_init(&t, LLMC_OBS_TENSOR, LLMC_OBS_MINMAX, 2, 0, 0.01, LLMC_F32) == 0, "init");
  float z[4] = {NAN, 1, 7, -7};
  llmc_obs_update(&t, z, LLMC_F32, 2, 2);
  CHECK(isnan(t.min[0]) && isnan(t.max[0]), "tensor NaN");
  llmc_obs_free(&t);
}

/* identical bytes for 1, 2 and 3 threads on a batch big enough to be split */
static void test_threads(void) {
  const int64_t rows = 97, cols = 1100;   /* 5 column blocks, 106700 elements */
  float *x = malloc((size_t)(rows * cols) * sizeof(float));
  for (int64_t i = 0; i < rows * cols; i++) x[i] = urand(1.0f) * (float)(1 + i % 13);
  float mn[3][1100], mx[3][1100];
  double as[3][1100];
  llmc_obs_reduce reds[3] = {LLMC_OBS_CHANNEL, LLMC_OBS_HEAD, LLMC_OBS_TENSOR};
  for (int ri = 0; ri < 3; ri++) {
    for (int t = 0; t < 3; t++) {
      omp_set_num_threads(t + 1);
      llmc_obs o;
      CHECK(llmc_obs_init(&o, reds[ri], LLMC_OBS_MINMAX, cols, 11, 0.01, LLMC_BF16) == 0, "init");
      for (int b = 0; b < 3; b++) llmc_obs_update(&o, x, LLMC_F32, rows - b, cols);
      memcpy(mn[t], o.min, (size_t)o.nstats * sizeof(float));
      memcpy(mx[t], o.max, (size_t)o.nstats * sizeof(float));
      memcpy(as[t], o.abs_sum, (size_t)o.nstats * sizeof(double));
      int64_t ns = o.nstats;
      llmc_obs_free(&o);
      if (t > 0) {
        CHECK(memcmp(mn[t], mn[0], (size_t)ns * sizeof(float)) == 0, "min differs with %d threads", t + 1);
        CHECK(memcmp(mx[t], mx[0], (size_t)ns * sizeof(float)) == 0, "max differs with %d threads", t + 1);
        CHECK(memcmp(as[t], as[0], (size_t)ns * sizeof(double)) == 0, "abs_sum differs with %d threads", t + 1);
      }
    }
  }
  omp_set_num_threads(2);
  free(x);
}

static void test_errors(void) {
  llmc_obs o;
  float x[8] = {0};
  CHECK(llmc_obs_init(&o, LLMC_OBS_HEAD, LLMC_OBS_STATIC_MINMAX, 10, 3, 0, LLMC_BF16) < 0, "heads 3 of 10");
  CHECK(strstr(llmc_errmsg(), "heads (3)") && strstr(llmc_errmsg(), "cols (10)"), "msg: %s", llmc_errmsg());
  CHECK(llmc_obs_init(&o, LLMC_OBS_HEAD, LLMC_OBS_STATIC_MINMAX, 10, 0, 0, LLMC_BF16) < 0, "heads 0");
  CHECK(llmc_obs_init(&o, LLMC_OBS_TENSOR, LLMC_OBS_STATIC_MINMAX, 4, 0, 0, LLMC_I8) < 0, "dtype i8");
  CHECK(strstr(llmc_errmsg(), "int8") != NULL, "msg: %s", llmc_errmsg());
  CHECK(llmc_obs_init(&o, LLMC_OBS_TENSOR, LLMC_OBS_MINMAX, 4, 0, 0.0, LLMC_BF16) < 0, "c = 0");
  CHECK(llmc_obs_init(&o, LLMC_OBS_TENSOR, LLMC_OBS_STATIC_MINMAX, 0, 0, 0, LLMC_BF16) < 0, "cols 0");
  CHECK(llmc_obs_init(&o, (llmc_obs_reduce)7, LLMC_OBS_STATIC_MINMAX, 4, 0, 0, LLMC_BF16) < 0, "reduce 7");
  CHECK(llmc_obs_init(&o, LLMC_OBS_TENSOR, LLMC_OBS_STATIC_MINMAX, 4, 0, 0, LLMC_BF16) == 0, "init");
  CHECK(llmc_obs_update(&o, x, LLMC_F32, 2, 3) < 0, "cols mismatch");
  CHECK(strstr(llmc_errmsg(), "3 columns") && strstr(llmc_errmsg(), "made for 4"), "msg: %s", llmc_errmsg());
  CHECK(llmc_obs_update(&o, x, LLMC_F32, 0, 4) < 0, "rows 0");
  CHECK(llmc_obs_update(&o, x, LLMC_I32, 2, 4) < 0, "input dtype");
  CHECK(strstr(llmc_errmsg(), "int32") != NULL, "msg: %s", llmc_errmsg());
  CHECK_EQ_INT(o.batches, 0);
  llmc_obs_free(&o);
  CHECK(llmc_obs_update(&o, x, LLMC_F32, 2, 4) < 0, "update after free");
  CHECK(llmc_obs_reduce_from_name("head") == LLMC_OBS_HEAD, "name");
  CHECK(llmc_obs_update_from_name("memoryless_minmax") == LLMC_OBS_MEMORYLESS_MINMAX, "name");
  CHECK(llmc_obs_update_from_name("mse") == -1, "unknown name");
}

int main(void) {
  llmc_dtype_init();
  test_against_reference();
  test_closed_form();
  test_ema_example();
  test_rounding();
  test_nan();
  test_threads();
  test_errors();
  return check_summary();
}
