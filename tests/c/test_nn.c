/*
** test_nn.c — the fused forward-pass ops (src/nn.c) against naive f64
** references written out here loop by loop, plus hand-computed cases.
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
#include "nn.h"
#include "tensor.h"

static llmc_tensor *randn(int nd, const int64_t *shape, uint64_t seed) {
  return llmc_tensor_randn(LLMC_F32, nd, shape, seed);
}

static float *F(const llmc_tensor *t) { return llmc_tensor_data(t); }

/* max |a-b| / max(|b|, floor) over n values */
static double max_rel(const float *a, const double *b, int64_t n, double floor_) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]) / fmax(fabs(b[i]), floor_);
    if (d > m || d != d) m = d;
  }
  return m;
}

/* ---- linear ------------------------------------------------------------------- */

static void test_linear(void) {
  int64_t in = 96, out = 70;
  int64_t ws[2] = {out, in}, bs[1] = {out};
  llmc_tensor *w = randn(2, ws, 1), *bias = randn(1, bs, 2);
  llmc_tensor *wb = llmc_tensor_to_dtype(w, LLMC_BF16);
  llmc_tensor *wh = llmc_tensor_to_dtype(w, LLMC_F16);
  int64_t row_counts[] = {1, 3, 4, 5, 37};
  for (int rc = 0; rc < 5; rc++) {
    int64_t rows = row_counts[rc];
    int64_t xs[3] = {1, rows, in};
    llmc_tensor *x = randn(3, xs, 10 + (uint64_t)rows);
    llmc_tensor *wts[3] = {w, wb, wh};
    for (int k = 0; k < 3; k++) {
      llmc_tensor *y = llmc_nn_linear(x, wts[k], k == 1 ? bias : NULL);
      CHECK(y != NULL, "linear rows=%lld: %s", (long long)rows, llmc_errmsg());
      if (!y) continue;
      CHECK(y->ndim == 3 && y->shape[2] == out && y->dtype == LLMC_F32, "linear output shape");
      double *ref = malloc(sizeof(double) * (size_t)(rows * out));
      for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
          double s = k == 1 ? F(bias)[o] : 0.0;
          for (int64_t i = 0; i < in; i++) {
            double wv = llmc_tensor_get_flat(wts[k], o * in + i);  /* the rounded weight */
            s += (double)F(x)[r * in + i] * wv;
          }
          ref[r * out + o] = s;
        }
      /* f32 sums of 96 products of size ~1: relative to max(|y|, 1) */
      double e = max_rel(F(y), ref, rows * out, 1.0);
      CHECK(e < 1e-5, "linear rows=%lld wdtype=%s: rel err %g", (long long)rows, llmc_dtype_name(wts[k]->dtype), e);
      free(ref);
      llmc_tensor_free(y);
    }
    llmc_tensor_free(x);
  }
  /* a mismatched shape is an error naming both shapes */
  int64_t bad[2] = {2, in + 1};
  llmc_tensor *xb = randn(2, bad, 3);
  llmc_tensor *y = llmc_nn_linear(xb, w, NULL);
  CHECK(y == NULL && strstr(llmc_errmsg(), "[70, 96]") != NULL, "linear mismatch message: %s", llmc_errmsg());
  llmc_tensor_free(xb);
  llmc_tensor_free(w); llmc_tensor_free(wb); llmc_tensor_free(wh); llmc_tensor_free(bias);
}

/* ---- embedding, rmsnorm ---------------------------------------------------------- */

static void test_embedding_rmsnorm(void) {
  int64_t ws[2] = {10, 6};
  llmc_tensor *w = randn(2, ws, 5), *wb = llmc_tensor_to_dtype(w, LLMC_BF16);
  int64_t is[2] = {2, 3};
  llmc_tensor *ids = llmc_tensor_empty(LLMC_I32, 2, is);
  int32_t idv[6] = {0, 9, 3, 3, 1, 7};
  memcpy(llmc_tensor_data(ids), idv, sizeof idv);
  llmc_tensor *e = llmc_nn_embedding(wb, ids);
  CHECK(e && e->ndim == 3 && e->shape[0] == 2 && e->shape[1] == 3 && e->shape[2] == 6, "embedding shape");
  int ok = 1;
  for (int i = 0; i < 6 && e; i++)
    for (int j = 0; j < 6; j++)
      ok &= F(e)[i * 6 + j] == (float)llmc_tensor_get_flat(wb, idv[i] * 6 + j);
  CHECK(ok, "embedding rows equal the bf16 weight rows exactly");
  llmc_tensor_free(e);
  idv[4] = 10;
  memcpy(llmc_tensor_data(ids), idv, sizeof idv);
  e = llmc_nn_embedding(wb, ids);
  CHECK(e == NULL && strstr(llmc_errmsg(), "token id 10"), "out-of-range id: %s", llmc_errmsg());
  llmc_tensor_free(ids); llmc_tensor_free(w); llmc_tensor_free(wb);

  /* rmsnorm: y = w * x / sqrt(mean(x^2) + eps) */
  int64_t xs[2] = {5, 33}, nws[1] = {33};
  llmc_tensor *x = randn(2, xs, 6), *nw = randn(1, nws, 7);
  llmc_tensor *y = llmc_nn_rmsnorm(x, nw, 1e-5);
  double ref[5 * 33];
  for (int r = 0; r < 5; r++) {
    double ss = 0;
    for (int i = 0; i < 33; i++) ss += (double)F(x)[r * 33 + i] * F(x)[r * 33 + i];
    double inv = 1.0 / sqrt(ss / 33 + 1e-5);
    for (int i = 0; i < 33; i++) ref[r * 33 + i] = F(nw)[i] * F(x)[r * 33 + i] * inv;
  }
  CHECK(y && max_rel(F(y), ref, 5 * 33, 1e-3) < 1e-6, "rmsnorm matches the f64 formula");
  /* hand case: x = (3, 4), w = (1, 2), eps 0: rms = sqrt(12.5) */
  int64_t s2[1] = {2};
  llmc_tensor *hx = llmc_tensor_empty(LLMC_F32, 1, s2), *hw = llmc_tensor_empty(LLMC_F32, 1, s2);
  F(hx)[0] = 3; F(hx)[1] = 4; F(hw)[0] = 1; F(hw)[1] = 2;
  llmc_tensor *hy = llmc_nn_rmsnorm(hx, hw, 0.0);
  CHECK_NEAR(F(hy)[0], 3 / sqrt(12.5), 1e-6);
  CHECK_NEAR(F(hy)[1], 8 / sqrt(12.5), 1e-6);
  llmc_tensor_free(hx); llmc_tensor_free(hw); llmc_tensor_free(hy);
  llmc_tensor_free(x); llmc_tensor_free(nw); llmc_tensor_free(y);
}

/* ---- rope --------------------------------------------------------------------- */

static void test_rope(void) {
  int64_t hd = 8, half = 4, B = 2, T = 3, n = 2;
  int64_t fs[1] = {half};
  llmc_tensor *inv = llmc_tensor_empty(LLMC_F32, 1, fs);
  for (int j = 0; j < half; j++) F(inv)[j] = (float)(1.0 / pow(10000.0, 2.0 * j / (double)hd));
  int64_t ps[2] = {B, T};
  llmc_tensor *pos = llmc_tensor_empty(LLMC_I64, 2, ps);
  int64_t pv[6] = {0, 1, 2, 5, 6, 7};
  memcpy(llmc_tensor_data(pos), pv, sizeof pv);
  llmc_tensor *c, *s;
  CHECK(llmc_nn_rope_tables(inv, pos, 1.0, &c, &s) == 0, "rope tables");
  int64_t xs[4] = {B, T, n, hd};
  llmc_tensor *x = randn(4, xs, 9);
  llmc_tensor *y = llmc_nn_rope(x, c, s);
  CHECK(y != NULL, "rope: %s", llmc_errmsg());
  double *ref = malloc(sizeof(double) * (size_t)(B * T * n * hd));
  for (int64_t bt = 0; bt < B * T; bt++)
    for (int64_t h = 0; h < n; h++)
      for (int64_t j = 0; j < half; j++) {
        double ang = (double)pv[bt] * F(inv)[j];
        const float *xr = F(x) + (bt * n + h) * hd;
        /* rotate the pair (x_j, x_{j+half}) by the angle */
        ref[(bt * n + h) * hd + j] = xr[j] * cos(ang) - xr[j + half] * sin(ang);
        ref[(bt * n + h) * hd + j + half] = xr[j + half] * cos(ang) + xr[j] * sin(ang);
      }
  CHECK(y && max_rel(F(y), ref, B * T * n * hd, 1e-2) < 5e-6, "rope rotates pairs by pos * inv_freq");
  /* position 0 is the identity */
  int ok = 1;
  for (int i = 0; i < n * hd && y; i++) ok &= F(y)[i] == F(x)[i];
  CHECK(ok, "rope at position 0 is the identity");
  free(ref);
  llmc_tensor_free(inv); llmc_tensor_free(pos); llmc_tensor_free(c); llmc_tensor_free(s);
  llmc_tensor_free(x); llmc_tensor_free(y);
}

/* ---- attention -------------------------------------------------------------------- */

/* naive f64 attention on contiguous q [B,T,nh,hd], k/v [B,S,nkv,hd] */
static void ref_attention(const float *q, const float *k, const float *v, const uint8_t *mask, int64_t B, int64_t T,
                          int64_t S, int64_t nh, int64_t nkv, int64_t hd, int64_t qoff, int64_t window, double *out) {
  double *sc = malloc(sizeof(double) * (size_t)S);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < nh; h++)
      for (int64_t t = 0; t < T; t++) {
        int64_t g = h / (nh / nkv);
        double m = -INFINITY;
        for (int64_t j = 0; j < S; j++) {
          int vis = j <= qoff + t && (window <= 0 || qoff + t - j < window) && (!mask || mask[b * S + j]);
          if (!vis) { sc[j] = -INFINITY; continue; }
          double d = 0;
          for (int64_t i = 0; i < hd; i++)
            d += (double)q[((b * T + t) * nh + h) * hd + i] * k[((b * S + j) * nkv + g) * hd + i];
          sc[j] = d / sqrt((double)hd);
          if (sc[j] > m) m = sc[j];
        }
        double sum = 0;
        for (int64_t j = 0; j < S; j++) { sc[j] = sc[j] == -INFINITY ? 0 : exp(sc[j] - m); sum += sc[j]; }
        for (int64_t i = 0; i < hd; i++) {
          double a = 0;
          for (int64_t j = 0; j < S; j++) if (sc[j] != 0) a += sc[j] / sum * v[((b * S + j) * nkv + g) * hd + i];
          out[(b * T + t) * nh * hd + h * hd + i] = sum > 0 ? a : 0;
        }
      }
  free(sc);
}

static void test_attention(void) {
  const int64_t B = 2, nh = 4, nkv = 2, hd = 16;
  struct { int64_t T, S, qoff, window; int masked; } cases[] = {
    {7, 7, 0, 0, 0},     /* prefill */
    {40, 40, 0, 0, 1},   /* prefill with left padding on row 1 */
    {1, 9, 8, 0, 0},     /* one decode step against a cache */
    {3, 12, 9, 0, 1},    /* a few steps with padding */
    {50, 50, 0, 6, 0},   /* sliding window */
  };
  for (int c = 0; c < 5; c++) {
    int64_t T = cases[c].T, S = cases[c].S;
    int64_t qs[4] = {B, T, nh, hd};
    /* k and v live in a larger "cache" [B, S + 5, nkv, hd] and are viewed */
    int64_t cs[4] = {B, S + 5, nkv, hd};
    llmc_tensor *q = randn(4, qs, 20 + (uint64_t)c), *kc = randn(4, cs, 30 + (uint64_t)c), *vc = randn(4, cs, 40 + (uint64_t)c);
    llmc_tensor *k = llmc_tensor_narrow(kc, 1, 0, S), *v = llmc_tensor_narrow(vc, 1, 0, S);
    llmc_tensor *kk = llmc_tensor_clone(k), *vv = llmc_tensor_clone(v);
    int64_t ms[2] = {B, S};
    llmc_tensor *mask = llmc_tensor_full(LLMC_I64, 2, ms, 1.0);
    uint8_t m8[2 * 64];
    for (int64_t i = 0; i < B * S; i++) m8[i] = 1;
    if (cases[c].masked)
      for (int64_t j = 0; j < 3; j++) { llmc_tensor_set_flat(mask, S + j, 0); m8[S + j] = 0; }
    double *ref = malloc(sizeof(double) * (size_t)(B * T * nh * hd));
    ref_attention(F(q), F(kk), F(vv), m8, B, T, S, nh, nkv, hd, cases[c].qoff, cases[c].window, ref);
    llmc_nn_attn_opts o = {1.0 / sqrt((double)hd), cases[c].qoff, 1, cases[c].window, cases[c].masked ? mask : NULL};
    for (int path = 1; path <= 2; path++) {
      llmc_nn_attention_force_path(path);
      llmc_tensor *y = llmc_nn_attention(q, k, v, &o);
      CHECK(y != NULL, "attention: %s", llmc_errmsg());
      if (!y) continue;
      double e = max_rel(F(y), ref, B * T * nh * hd, 0.1);
      CHECK(e < 1e-5, "attention case %d path %s: rel err %g", c, path == 1 ? "loop" : "sgemm", e);
      llmc_tensor_free(y);
    }
    llmc_nn_attention_force_path(0);
    free(ref);
    llmc_tensor_free(q); llmc_tensor_free(kc); llmc_tensor_free(vc); llmc_tensor_free(k); llmc_tensor_free(v);
    llmc_tensor_free(kk); llmc_tensor_free(vv); llmc_tensor_free(mask);
  }
  /* hand case: one head, two keys, q.k = 0 and ln(3) * sqrt(hd)... with hd = 1:
  ** scores (0, ln 3) -> p = (1/4, 3/4), out = 1/4 * 2 + 3/4 * 10 = 8 */
  int64_t q1[4] = {1, 1, 1, 1}, k1[4] = {1, 2, 1, 1};
  llmc_tensor *q = llmc_tensor_full(LLMC_F32, 4, q1, 1.0), *k = llmc_tensor_empty(LLMC_F32, 4, k1),
              *v = llmc_tensor_empty(LLMC_F32, 4, k1);
  F(k)[0] = 0; F(k)[1] = (float)log(3.0); F(v)[0] = 2; F(v)[1] = 10;
  llmc_nn_attn_opts o = {1.0, 1, 1, 0, NULL};
  llmc_tensor *y = llmc_nn_attention(q, k, v, &o);
  CHECK(y && fabs(F(y)[0] - 8.0) < 1e-5, "attention hand case: %g", y ? F(y)[0] : -1);
  llmc_tensor_free(y);
  /* a query that sees no key yields zeros, not NaN */
  int64_t ms[2] = {1, 2};
  llmc_tensor *mask = llmc_tensor_zeros(LLMC_BOOL, 2, ms);
  o.key_mask = mask;
  y = llmc_nn_attention(q, k, v, &o);
  CHECK(y && F(y)[0] == 0.0f, "fully masked query gives 0");
  llmc_tensor_free(y); llmc_tensor_free(mask); llmc_tensor_free(q); llmc_tensor_free(k); llmc_tensor_free(v);
}

/* ---- silu_mul, moe ------------------------------------------------------------------ */

static void test_silu_moe(void) {
  int64_t s[1] = {40001};
  llmc_tensor *g = randn(1, s, 50), *u = randn(1, s, 51);
  for (int i = 0; i < 40; i++) F(g)[i] = (float)(i - 20) * 5.0f;   /* large |x| too */
  llmc_tensor *y = llmc_nn_silu_mul(g, u);
  double *ref = malloc(sizeof(double) * 40001);
  for (int i = 0; i < 40001; i++) ref[i] = F(g)[i] / (1 + exp(-(double)F(g)[i])) * F(u)[i];
  CHECK(y && max_rel(F(y), ref, 40001, 1e-30) < 1e-6, "silu_mul matches x*sigmoid(x)*u");
  free(ref);
  llmc_tensor_free(g); llmc_tensor_free(u); llmc_tensor_free(y);

  /* routing, by hand: logits (0, ln 2, ln 4, ln 4): softmax = (1,2,4,4)/11;
  ** top-2 = experts 2 and 3 (tie: lower id first), weights 4/11 each,
  ** renormalised 1/2 each; row 2: logits (ln 3, 0, 0, ln 6) -> 3 then 0 */
  int64_t ls[2] = {2, 4};
  llmc_tensor *lg = llmc_tensor_empty(LLMC_F32, 2, ls);
  float lv[8] = {0, (float)log(2.0), (float)log(4.0), (float)log(4.0), (float)log(3.0), 0, 0, (float)log(6.0)};
  memcpy(F(lg), lv, sizeof lv);
  llmc_tensor *ids, *w;
  CHECK(llmc_nn_moe_route(lg, 2, 0, &ids, &w) == 0, "moe_route");
  const int64_t *I = llmc_tensor_data(ids);
  CHECK(I[0] == 2 && I[1] == 3 && I[2] == 3 && I[3] == 0, "top-2 ids %lld %lld %lld %lld", (long long)I[0],
        (long long)I[1], (long long)I[2], (long long)I[3]);
  CHECK_NEAR(F(w)[0], 4.0 / 11, 1e-6);
  CHECK_NEAR(F(w)[2], 6.0 / 11, 1e-6);
  CHECK_NEAR(F(w)[3], 3.0 / 11, 1e-6);
  llmc_tensor_free(ids); llmc_tensor_free(w);
  CHECK(llmc_nn_moe_route(lg, 2, 1, &ids, &w) == 0, "moe_route renorm");
  CHECK_NEAR(F(w)[0], 0.5, 1e-6);
  CHECK_NEAR(F(w)[2], 2.0 / 3, 1e-6);
  CHECK_NEAR(F(w)[3], 1.0 / 3, 1e-6);

  int64_t off[5], *tok, *slot;
  CHECK(llmc_nn_moe_dispatch(ids, 4, off, &tok, &slot) == 0, "dispatch");
  /* expert 0: (token 1, slot 1); expert 2: (0, 0); expert 3: (0, 1), (1, 0) */
  CHECK(off[0] == 0 && off[1] == 1 && off[2] == 1 && off[3] == 2 && off[4] == 4, "dispatch offsets");
  CHECK(tok[0] == 1 && slot[0] == 1 && tok[1] == 0 && slot[1] == 0 && tok[2] == 0 && slot[2] == 1 && tok[3] == 1 &&
            slot[3] == 0,
        "dispatch pairs");
  free(tok); free(slot);
  llmc_tensor_free(ids); llmc_tensor_free(w); llmc_tensor_free(lg);

  /* gather + index_add: out[idx] += src * scale, repeated index accumulates */
  int64_t xs[2] = {3, 70};
  llmc_tensor *x = randn(2, xs, 60);
  int64_t is[1] = {3};
  llmc_tensor *idx = llmc_tensor_empty(LLMC_I64, 1, is), *sc = llmc_tensor_empty(LLMC_F32, 1, is);
  int64_t iv[3] = {2, 0, 2};
  memcpy(llmc_tensor_data(idx), iv, sizeof iv);
  F(sc)[0] = 0.5f; F(sc)[1] = 2.0f; F(sc)[2] = -1.0f;
  llmc_tensor *gx = llmc_nn_gather_rows(x, idx);
  CHECK(gx && F(gx)[0] == F(x)[140] && F(gx)[70] == F(x)[0] && F(gx)[209] == F(x)[209], "gather rows");
  llmc_tensor *acc = llmc_tensor_zeros(LLMC_F32, 2, xs);
  CHECK(llmc_nn_index_add_rows_(acc, idx, gx, sc) == 0, "index_add");
  int ok = 1;
  for (int c = 0; c < 70; c++) {
    ok &= F(acc)[c] == F(x)[c] * 2.0f;
    ok &= F(acc)[70 + c] == 0.0f;
    ok &= fabsf(F(acc)[140 + c] - (F(x)[140 + c] * 0.5f - F(x)[140 + c])) < 1e-6f;
  }
  CHECK(ok, "index_add_rows_ values");
  llmc_tensor_free(x); llmc_tensor_free(idx); llmc_tensor_free(sc); llmc_tensor_free(gx); llmc_tensor_free(acc);
}

/* ---- cross entropy, sampling --------------------------------------------------------- */

static void test_ce_sample(void) {
  int64_t ls[2] = {3, 5000};
  llmc_tensor *lg = randn(2, ls, 70);
  for (int i = 0; i < 5000; i++) F(lg)[i] *= 30.0f;   /* a peaked row */
  int64_t ts[1] = {3};
  llmc_tensor *tg = llmc_tensor_empty(LLMC_I64, 1, ts);
  int64_t tv[3] = {17, 4999, -100};
  memcpy(llmc_tensor_data(tg), tv, sizeof tv);
  llmc_tensor *nll, *lse;
  CHECK(llmc_nn_cross_entropy(lg, tg, &nll, &lse) == 0, "cross_entropy");
  const double *N = llmc_tensor_data(nll), *L = llmc_tensor_data(lse);
  for (int r = 0; r < 3; r++) {
    double m = -INFINITY, s = 0;
    for (int i = 0; i < 5000; i++) m = fmax(m, F(lg)[r * 5000 + i]);
    for (int i = 0; i < 5000; i++) s += exp(F(lg)[r * 5000 + i] - m);
    double l = m + log(s);
    CHECK(fabs(L[r] - l) < 1e-5 * fabs(l) + 1e-6, "lse row %d: %.9g vs %.9g", r, L[r], l);
    double want = tv[r] < 0 ? 0 : l - F(lg)[r * 5000 + tv[r]];
    CHECK(fabs(N[r] - want) < 1e-5 * fabs(want) + 2e-6, "nll row %d: %.9g vs %.9g", r, N[r], want);
  }
  llmc_tensor_free(nll); llmc_tensor_free(lse); llmc_tensor_free(tg);

  /* sampling: greedy = argmax; frequencies follow the softmax */
  llmc_tensor *row = llmc_tensor_select(lg, 0, 1);
  uint64_t rng = 1;
  int64_t am = 0;
  for (int i = 1; i < 5000; i++) if (F(lg)[5000 + i] > F(lg)[5000 + am]) am = i;
  CHECK_EQ_INT(llmc_nn_sample(row, 0.0, 0, 1.0, &rng), am);
  CHECK_EQ_INT(llmc_nn_sample(row, 1.0, 1, 1.0, &rng), am);
  llmc_tensor_free(row);
  int64_t s3[1] = {3};
  llmc_tensor *p3 = llmc_tensor_empty(LLMC_F32, 1, s3);
  F(p3)[0] = (float)log(0.2); F(p3)[1] = (float)log(0.5); F(p3)[2] = (float)log(0.3);
  int cnt[3] = {0, 0, 0};
  rng = 42;
  for (int i = 0; i < 20000; i++) cnt[llmc_nn_sample(p3, 1.0, 0, 1.0, &rng)]++;
  /* binomial sd at n = 20000: <= 71; allow 5 sd */
  CHECK(abs(cnt[0] - 4000) < 360 && abs(cnt[1] - 10000) < 360 && abs(cnt[2] - 6000) < 360,
        "sampling frequencies %d %d %d", cnt[0], cnt[1], cnt[2]);
  /* top_p = 0.6 keeps {0.5, 0.3} (0.5 < 0.6), so token 0 never appears */
  cnt[0] = cnt[1] = cnt[2] = 0;
  for (int i = 0; i < 8000; i++) cnt[llmc_nn_sample(p3, 1.0, 0, 0.6, &rng)]++;
  CHECK(cnt[0] == 0 && abs(cnt[1] - 5000) < 300, "top_p: %d %d %d", cnt[0], cnt[1], cnt[2]);
  /* top_k = 1 is greedy; same seed, same draws */
  uint64_t r1 = 7, r2 = 7;
  int same = 1;
  for (int i = 0; i < 50; i++) same &= llmc_nn_sample(p3, 0.7, 0, 1.0, &r1) == llmc_nn_sample(p3, 0.7, 0, 1.0, &r2);
  CHECK(same, "sampling is deterministic for a seed");
  llmc_tensor_free(p3);
  llmc_tensor_free(lg);
}

/* bit-identical results for any thread count (chunking depends on shapes only) */
static void test_thread_independence(void) {
  int64_t xs[2] = {37, 200}, ws[2] = {300, 200}, qs[4] = {2, 40, 4, 16}, ks[4] = {2, 40, 2, 16};
  llmc_tensor *x = randn(2, xs, 80), *w = randn(2, ws, 81), *wb = llmc_tensor_to_dtype(w, LLMC_BF16);
  llmc_tensor *q = randn(4, qs, 82), *k = randn(4, ks, 83), *v = randn(4, ks, 84);
  llmc_nn_attn_opts o = {0.25, 0, 1, 0, NULL};
  llmc_tensor *r[2][3];
  int threads[2] = {1, 3};
  int saved = omp_get_max_threads();
  for (int i = 0; i < 2; i++) {
    omp_set_num_threads(threads[i]);
    r[i][0] = llmc_nn_linear(x, w, NULL);
    r[i][1] = llmc_nn_linear(x, wb, NULL);
    r[i][2] = llmc_nn_attention(q, k, v, &o);
  }
  omp_set_num_threads(saved);
  for (int j = 0; j < 3; j++) {
    CHECK(r[0][j] && r[1][j] && memcmp(llmc_tensor_data(r[0][j]), llmc_tensor_data(r[1][j]),
                                       llmc_tensor_nbytes(r[0][j])) == 0,
          "op %d gives the same bits with 1 and 3 threads", j);
    llmc_tensor_free(r[0][j]);
    llmc_tensor_free(r[1][j]);
  }
  llmc_tensor_free(x); llmc_tensor_free(w); llmc_tensor_free(wb);
  llmc_tensor_free(q); llmc_tensor_free(k); llmc_tensor_free(v);
}

int main(void) {
  llmc_dtype_init();
  test_linear();
  test_embedding_rmsnorm();
  test_rope();
  test_attention();
  test_silu_moe();
  test_ce_sample();
  test_thread_independence();
  return check_summary();
}
