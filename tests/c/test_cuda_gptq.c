/*
** test_cuda_gptq.c — the GPU GPTQ path (cuda/gptq.cu) against the CPU
** implementation (src/gptq.c), which is the reference (itself checked
** against an fp64 unblocked solve in test_gptq.c).
**
**   - Hessian: f32 / bf16 / f16 host batches and an f32 device batch, in
**     several upload chunks, equal to llmc_hessian_add within 1e-5 of
**     max|H| (cuBLAS sums in another order); counts equal.
**   - Solve, GPU vs CPU on the same Hessian: W4A16 (int4 group 128, dead
**     columns, actorder on and off, host and device Hessian, bf16 and f32
**     weights), W4A16_ASYM (zero points), W8A8 (int8 channel), FP8 (fp8
**     tensor), FP8_BLOCK, NVFP4A16 (global scale), and blocks of 1024 and
**     2048 columns (the kernel's opt-in shared-memory and global-memory
**     paths): at most 1% of the codes differ (fp32 summation order in the
**     Cholesky / sgemm flips a rounding now and then), loss within 1%, every
**     output a fixed point of fake-quantization (on the grid), dead columns
**     zero and counted alike.
**   - Cholesky failure (a rank-one Hessian with dampening 0, an indefinite
**     one): RTN fallback flagged as on the CPU, and then the result is the
**     CPU's bit for bit (U = I leaves no rounding to differ).
**   - Errors: no samples, shape mismatch, no Hessian, a missing device.
** Skips with the reason where there is no CUDA build or no GPU.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "gptq.h"
#include "quant.h"
#include "tensor.h"
#ifdef LLMC_HAVE_CUDA
#include "cuda_backend.h"
#include "cuda_gptq.h"
#endif

#ifdef LLMC_HAVE_CUDA
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {   /* xorshift64*, uniform in [0, 1) */
  rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
  return (double)((rng * 2685821657736338717ull) >> 11) * 0x1p-53;
}
static double nrand(void) {
  double u1 = urand() + 1e-300, u2 = urand();
  return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* activations [tokens, cols] with channel scales 1..7 and `dead` zero columns */
static float *make_x(int64_t tokens, int64_t cols, int64_t dead) {
  float *x = malloc(sizeof(float) * (size_t)(tokens * cols));
  for (int64_t t = 0; t < tokens; t++)
    for (int64_t c = 0; c < cols; c++) x[t * cols + c] = c < dead ? 0.0f : (float)(nrand() * (double)(1 + c % 7));
  return x;
}

/* largest |a - b| over the full matrices relative to max |b| */
static double hessian_rel_err(const float *gpu_full, const float *cpu_upper, int64_t C) {
  double hmax = 0, err = 0;
  for (int64_t i = 0; i < C; i++)
    for (int64_t j = i; j < C; j++)
      if (fabs(cpu_upper[i * C + j]) > hmax) hmax = fabs(cpu_upper[i * C + j]);
  for (int64_t i = 0; i < C; i++)
    for (int64_t j = 0; j < C; j++) {
      double ref = i <= j ? cpu_upper[i * C + j] : cpu_upper[j * C + i];
      double d = fabs(gpu_full[i * C + j] - ref);
      if (d > err) err = d;
    }
  return hmax > 0 ? err / hmax : err;
}

static void test_hessian(void) {
  const int64_t C = 192;
  llmc_hessian hc;
  llmc_cuda_hessian hg;
  CHECK(llmc_hessian_init(&hc, C) == 0, "cpu init");
  CHECK(llmc_cuda_hessian_init(&hg, C, 0) == 0, "gpu init: %s", llmc_errmsg());
  hg.chunk = 37 * C;   /* several chunks per batch, the last one ragged */
  /* f32 host: 2 sequences x 50 tokens */
  float *x1 = make_x(100, C, 0);
  CHECK(llmc_hessian_add(&hc, x1, 2, 50) == 0, "cpu add f32");
  CHECK(llmc_cuda_hessian_add(&hg, x1, LLMC_F32, 2, 50) == 0, "gpu add f32: %s", llmc_errmsg());
  /* bf16 and f16 host: 3 x 40 */
  float *x2 = make_x(120, C, 0);
  uint16_t *b2 = malloc(2 * (size_t)(120 * C)), *h2 = malloc(2 * (size_t)(120 * C));
  for (int64_t i = 0; i < 120 * C; i++) { b2[i] = llmc_f32_to_bf16(x2[i]); h2[i] = llmc_f32_to_f16(x2[i] * 0.25f); }
  CHECK(llmc_hessian_add_any(&hc, b2, LLMC_BF16, 3, 40) == 0, "cpu add bf16");
  CHECK(llmc_cuda_hessian_add(&hg, b2, LLMC_BF16, 3, 40) == 0, "gpu add bf16: %s", llmc_errmsg());
  CHECK(llmc_hessian_add_any(&hc, h2, LLMC_F16, 3, 40) == 0, "cpu add f16");
  CHECK(llmc_cuda_hessian_add(&hg, h2, LLMC_F16, 3, 40) == 0, "gpu add f16: %s", llmc_errmsg());
  /* f32 already on the device: 1 x 64 */
  float *x3 = make_x(64, C, 0);
  llmc_tensor *t3 = llmc_tensor_from_bytes(LLMC_F32, 2, (int64_t[]){64, C}, x3, sizeof(float) * (size_t)(64 * C));
  llmc_tensor *d3 = t3 ? llmc_tensor_to_device(t3, 0) : NULL;
  CHECK(d3 != NULL, "upload: %s", llmc_errmsg());
  CHECK(llmc_hessian_add(&hc, x3, 1, 64) == 0, "cpu add device batch");
  if (d3) CHECK(llmc_cuda_hessian_add(&hg, llmc_tensor_data(d3), LLMC_F32, 1, 64) == 0, "gpu add device: %s", llmc_errmsg());
  CHECK_EQ_INT(hg.nsamples, hc.nsamples);
  CHECK_EQ_INT(hg.ntokens, hc.ntokens);
  float *full = malloc(sizeof(float) * (size_t)(C * C));
  CHECK(llmc_cuda_hessian_download(&hg, full) == 0, "download: %s", llmc_errmsg());
  double rel = hessian_rel_err(full, hc.H, C);
  printf("Hessian %lldx%lld, %lld tokens in chunks of 37 rows: max |GPU - CPU| = %.3g of max|H|\n", (long long)C,
         (long long)C, (long long)hc.ntokens, rel);
  CHECK(rel <= 1e-5, "Hessian GPU vs CPU: %g of max|H|", rel);
  int asym = 0;
  for (int64_t i = 0; i < C; i++)
    for (int64_t j = 0; j < i; j++) asym += full[i * C + j] != full[j * C + i];
  CHECK(asym == 0, "downloaded Hessian symmetric (%d mismatches)", asym);
  llmc_hessian back;
  CHECK(llmc_cuda_hessian_to_host(&hg, &back) == 0, "to_host: %s", llmc_errmsg());
  CHECK(back.nsamples == hc.nsamples && memcmp(back.H, full, sizeof(float) * (size_t)(C * C)) == 0,
        "to_host = download, same counts");
  llmc_hessian_free(&back);
  CHECK(llmc_cuda_hessian_add(&hg, x1, LLMC_I32, 1, 1) < 0 && strstr(llmc_errmsg(), "f32, bf16 or f16"),
        "bad dtype rejected: %s", llmc_errmsg());
  CHECK(llmc_cuda_hessian_add(&hg, x1, LLMC_F32, 0, 5) < 0, "empty batch rejected");
  free(full);
  llmc_tensor_free(d3);
  llmc_tensor_free(t3);
  free(x1); free(x2); free(x3); free(b2); free(h2);
  llmc_cuda_hessian_free(&hg);
  llmc_cuda_hessian_free(&hg);   /* idempotent */
  llmc_hessian_free(&hc);
}

typedef struct {
  const char *scheme;
  int64_t rows, cols, tokens, dead, block;
  int actorder, device_hessian;
  llmc_dtype wdt;
} solve_case;

/* codes of an output: int8 / fp8 byte / fp4 nibble per element */
static uint8_t *codes_of(const llmc_qparams *qp, const float *W, int64_t n) {
  uint8_t *c = malloc((size_t)n);
  if (llmc_q_quantize(qp, W, LLMC_F32, c) < 0) { free(c); return NULL; }
  return c;
}

static void run_solve(const solve_case *sc) {
  llmc_qargs wa, ia;
  int hw, hi;
  CHECK(llmc_q_preset(sc->scheme, &wa, &ia, &hw, &hi) == 0, "preset %s: %s", sc->scheme, llmc_errmsg());
  int64_t rows = sc->rows, cols = sc->cols, n = rows * cols;
  char tag[160];
  snprintf(tag, sizeof tag, "%s %lldx%lld B=%lld actorder=%d %s Hessian, %s weight", sc->scheme, (long long)rows,
           (long long)cols, (long long)sc->block, sc->actorder, sc->device_hessian ? "device" : "host",
           llmc_dtype_name(sc->wdt));
  uint16_t *wb = malloc(2 * (size_t)n);
  float *W = malloc(4 * (size_t)n), *Wg = malloc(4 * (size_t)n);
  for (int64_t i = 0; i < n; i++) {
    wb[i] = llmc_f32_to_bf16((float)(0.05 * nrand() * (i % 97 == 0 ? 8 : 1)));
    W[i] = llmc_bf16_to_f32(wb[i]);
  }
  float *x = make_x(sc->tokens, cols, sc->dead);
  llmc_hessian h;
  llmc_cuda_hessian hd;
  memset(&hd, 0, sizeof hd);
  CHECK(llmc_hessian_init(&h, cols) == 0, "cpu hessian");
  CHECK(llmc_hessian_add(&h, x, 2, sc->tokens / 2) == 0, "cpu hessian add");
  if (sc->device_hessian) {
    CHECK(llmc_cuda_hessian_init(&hd, cols, 0) == 0, "gpu hessian: %s", llmc_errmsg());
    CHECK(llmc_cuda_hessian_add(&hd, x, LLMC_F32, 2, sc->tokens / 2) == 0, "gpu hessian add: %s", llmc_errmsg());
  }
  llmc_qparams qp;
  CHECK(llmc_q_qparams_compute(&qp, &wa, wb, LLMC_BF16, rows, cols, NULL) == 0, "qparams: %s", llmc_errmsg());
  llmc_gptq_opts o;
  llmc_gptq_opts_init(&o);
  o.block_size = sc->block;
  o.actorder = sc->actorder;
  llmc_gptq_result rc, rg;
  CHECK(llmc_gptq_solve(W, rows, cols, &h, &qp, &o, &rc) == 0, "cpu solve: %s", llmc_errmsg());
  const void *win = sc->wdt == LLMC_F32 ? (const void *)Wg : (const void *)wb;
  if (sc->wdt == LLMC_F32)
    for (int64_t i = 0; i < n; i++) Wg[i] = llmc_bf16_to_f32(wb[i]);   /* in place: out aliases w */
  int ok = llmc_cuda_gptq_solve(win, sc->wdt, Wg, rows, cols, sc->device_hessian ? NULL : &h,
                                sc->device_hessian ? &hd : NULL, &qp, &o, &rg, 0) == 0;
  CHECK(ok, "%s: gpu solve: %s", tag, llmc_errmsg());
  if (ok) {
    CHECK(!rc.rtn_fallback && !rg.rtn_fallback, "%s: Cholesky succeeded on both (cpu %d gpu %d)", tag, rc.rtn_fallback,
          rg.rtn_fallback);
    CHECK_EQ_INT(rg.dead_columns, rc.dead_columns);
    CHECK_EQ_INT(rg.dead_columns, sc->dead);
    uint8_t *cc = codes_of(&qp, W, n), *cg = codes_of(&qp, Wg, n);
    CHECK(cc && cg, "quantize outputs: %s", llmc_errmsg());
    if (cc && cg) {
      int64_t differ = 0;
      for (int64_t i = 0; i < n; i++) differ += cc[i] != cg[i];
      double frac = (double)differ / (double)n;
      printf("%s: %lld of %lld codes differ (%.3f%%), loss %.6g vs CPU %.6g, %.1f ms\n", tag, (long long)differ,
             (long long)n, 100 * frac, rg.loss, rc.loss, 1e3 * rg.seconds);
      CHECK(frac <= 0.01, "%s: %.3f%% of the codes differ from the CPU", tag, 100 * frac);
    }
    free(cc); free(cg);
    CHECK(fabs(rg.loss - rc.loss) <= 0.01 * rc.loss, "%s: loss %g vs CPU %g", tag, rg.loss, rc.loss);
    /* on the grid: fake-quantizing the output gives it back */
    float *fq = malloc(4 * (size_t)n);
    CHECK(llmc_q_fake_quantize(&qp, Wg, LLMC_F32, fq) == 0, "fake quantize: %s", llmc_errmsg());
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) off += fq[i] != Wg[i];
    CHECK(off == 0, "%s: %lld outputs off the quantization grid", tag, (long long)off);
    free(fq);
    int64_t nz = 0;
    for (int64_t r = 0; r < rows; r++) for (int64_t c = 0; c < sc->dead; c++) nz += Wg[r * cols + c] != 0.0f;
    CHECK(nz == 0, "%s: dead columns zeroed", tag);
  }
  llmc_q_qparams_free(&qp);
  if (sc->device_hessian) llmc_cuda_hessian_free(&hd);
  llmc_hessian_free(&h);
  free(wb); free(W); free(Wg); free(x);
}

/* H for which the Cholesky fails: both paths fall back to RTN, identically */
static void run_fallback(const char *what, llmc_hessian *h, llmc_cuda_hessian *hd) {
  int64_t rows = 16, cols = h->cols, n = rows * cols;
  llmc_qargs wa, ia;
  int hw, hi;
  llmc_q_preset("W8A8", &wa, &ia, &hw, &hi);
  uint16_t *wb = malloc(2 * (size_t)n);
  float *W = malloc(4 * (size_t)n), *Wg = malloc(4 * (size_t)n);
  for (int64_t i = 0; i < n; i++) { wb[i] = llmc_f32_to_bf16((float)(0.1 * nrand())); W[i] = llmc_bf16_to_f32(wb[i]); }
  llmc_qparams qp;
  CHECK(llmc_q_qparams_compute(&qp, &wa, wb, LLMC_BF16, rows, cols, NULL) == 0, "qparams");
  llmc_gptq_opts o;
  llmc_gptq_opts_init(&o);
  o.dampening_frac = 0.0;
  o.block_size = 8;
  llmc_gptq_result rc, rg;
  CHECK(llmc_gptq_solve(W, rows, cols, h, &qp, &o, &rc) == 0, "cpu solve: %s", llmc_errmsg());
  CHECK(rc.rtn_fallback == 1, "%s: the CPU falls back to RTN (the reference this case is built on)", what);
  int ok = llmc_cuda_gptq_solve(wb, LLMC_BF16, Wg, rows, cols, hd ? NULL : h, hd, &qp, &o, &rg, 0) == 0;
  CHECK(ok, "%s: gpu solve: %s", what, llmc_errmsg());
  if (ok) {
    CHECK(rg.rtn_fallback == 1, "%s: GPU flags the RTN fallback", what);
    int64_t differ = 0;
    for (int64_t i = 0; i < n; i++) differ += W[i] != Wg[i];
    CHECK(differ == 0, "%s: RTN result equals the CPU's (%lld differ)", what, (long long)differ);
    CHECK(rg.loss == rc.loss, "%s: loss %.17g vs CPU %.17g", what, rg.loss, rc.loss);
    /* RTN: GPTQ quantizes w / s unrounded (fp32), which is CT's fused
    ** rounding: dequantize(quantize_fused(w)) */
    llmc_qparams qf = qp;
    qf.args.rounding = LLMC_QROUND_FUSED;
    uint8_t *codes = malloc((size_t)n);
    float *rtn = malloc(4 * (size_t)n);
    CHECK(llmc_q_quantize(&qf, wb, LLMC_BF16, codes) == 0 && llmc_q_dequantize(&qf, codes, rtn, LLMC_F32) == 0,
          "rtn: %s", llmc_errmsg());
    int64_t d2 = 0;
    for (int64_t i = 0; i < n; i++) d2 += rtn[i] != Wg[i];
    CHECK(d2 == 0, "%s: fallback equals RTN (%lld differ)", what, (long long)d2);
    free(codes); free(rtn);
  }
  llmc_q_qparams_free(&qp);
  free(wb); free(W); free(Wg);
}

static void test_fallback(void) {
  /* rank one: every token is the same vector, chosen so that the scaled
  ** X = fp32(sqrt(2) * x) is exactly 1 (x = 0x3f3504f4, the float just above
  ** 1/sqrt(2)); every sum is then an exact integer, H / n = 4 everywhere in
  ** any summation order, and the second pivot of any Cholesky is exactly 0 */
  const int64_t C = 32;
  const uint32_t xbits = 0x3f3504f4u;
  float xv;
  memcpy(&xv, &xbits, sizeof xv);
  float *ones = malloc(sizeof(float) * (size_t)(8 * C));
  for (int64_t i = 0; i < 8 * C; i++) ones[i] = xv;
  llmc_hessian h;
  llmc_cuda_hessian hd;
  llmc_hessian_init(&h, C);
  llmc_hessian_add(&h, ones, 2, 4);
  CHECK(llmc_cuda_hessian_init(&hd, C, 0) == 0, "gpu hessian: %s", llmc_errmsg());
  CHECK(llmc_cuda_hessian_add(&hd, ones, LLMC_F32, 2, 4) == 0, "gpu add: %s", llmc_errmsg());
  run_fallback("rank-one H, host", &h, NULL);
  run_fallback("rank-one H, device", &h, &hd);
  /* indefinite: 2x2 blocks [[1, 2], [2, 1]] on the diagonal */
  memset(h.H, 0, sizeof(float) * (size_t)(C * C));
  for (int64_t i = 0; i < C; i++) h.H[i * C + i] = 1.0f;
  for (int64_t i = 0; i + 1 < C; i += 2) h.H[i * C + i + 1] = 2.0f;
  run_fallback("indefinite H", &h, NULL);
  llmc_cuda_hessian_free(&hd);
  llmc_hessian_free(&h);
  free(ones);
}

static void test_errors(void) {
  llmc_qargs wa, ia;
  int hw, hi;
  llmc_q_preset("W8A8", &wa, &ia, &hw, &hi);
  uint16_t wb[32] = {0};
  float W[32];
  llmc_qparams qp;
  llmc_q_qparams_compute(&qp, &wa, wb, LLMC_BF16, 4, 8, NULL);
  llmc_gptq_opts o;
  llmc_gptq_opts_init(&o);
  llmc_gptq_result r;
  llmc_hessian h;
  llmc_hessian_init(&h, 8);
  CHECK(llmc_cuda_gptq_solve(wb, LLMC_BF16, W, 4, 8, &h, NULL, &qp, &o, &r, 0) < 0 &&
        strstr(llmc_errmsg(), "no calibration samples"), "no samples: %s", llmc_errmsg());
  CHECK(llmc_cuda_gptq_solve(wb, LLMC_BF16, W, 4, 8, NULL, NULL, &qp, &o, &r, 0) < 0 &&
        strstr(llmc_errmsg(), "exactly one Hessian"), "no Hessian: %s", llmc_errmsg());
  /* all-zero inputs: every column dead, H = (1 + 0.01) I, the CPU's result */
  float zeros[8 * 4] = {0};
  llmc_hessian_add(&h, zeros, 1, 4);
  float Wc[32];
  llmc_gptq_result rc;
  memset(Wc, 0, sizeof Wc);
  llmc_gptq_solve(Wc, 4, 8, &h, &qp, &o, &rc);
  CHECK(llmc_cuda_gptq_solve(wb, LLMC_BF16, W, 4, 8, &h, NULL, &qp, &o, &r, 0) == 0 && r.dead_columns == 8 &&
        memcmp(W, Wc, sizeof W) == 0, "all-dead Hessian handled as on the CPU: %s", llmc_errmsg());
  llmc_hessian h2;
  llmc_hessian_init(&h2, 16);
  h2.nsamples = 1;
  CHECK(llmc_cuda_gptq_solve(wb, LLMC_BF16, W, 4, 8, &h2, NULL, &qp, &o, &r, 0) < 0 &&
        strstr(llmc_errmsg(), "do not match"), "shape mismatch: %s", llmc_errmsg());
  CHECK(llmc_cuda_gptq_solve(wb, LLMC_BF16, W, 4, 8, &h, NULL, &qp, &o, &r, 99) < 0 &&
        strstr(llmc_errmsg(), "not available"), "missing device: %s", llmc_errmsg());
  llmc_cuda_hessian hd;
  CHECK(llmc_cuda_hessian_init(&hd, 0, 0) < 0, "zero-size device Hessian rejected");
  CHECK(llmc_cuda_hessian_init(&hd, 8, 99) < 0 && strstr(llmc_errmsg(), "not available"), "missing device: %s",
        llmc_errmsg());
  llmc_hessian_free(&h2);
  llmc_hessian_free(&h);
  llmc_q_qparams_free(&qp);
}
#endif

int main(void) {
#ifndef LLMC_HAVE_CUDA
  printf("SKIP: built without CUDA\n");
  return CHECK_SKIP;
#else
  if (llmc_cuda_device_count() == 0) {
    printf("SKIP: no CUDA device on this machine: the GPU GPTQ path was compiled, not run\n");
    return CHECK_SKIP;
  }
  llmc_dtype_init();
  char name[256];
  llmc_cuda_device_name(0, name, sizeof name);
  printf("CUDA device 0: %s\n", name);
  test_hessian();
  const solve_case cases[] = {
    {"W4A16", 48, 256, 256, 3, 32, 1, 0, LLMC_BF16},
    {"W4A16", 48, 256, 256, 3, 128, 0, 1, LLMC_F32},
    {"W4A16", 48, 256, 256, 0, 128, 1, 1, LLMC_BF16},
    {"W4A16_ASYM", 32, 256, 256, 0, 64, 1, 0, LLMC_BF16},
    {"W8A8", 32, 96, 192, 0, 32, 1, 0, LLMC_BF16},
    {"W8A8", 32, 96, 192, 2, 32, 0, 0, LLMC_F32},
    {"FP8", 40, 160, 256, 0, 64, 1, 0, LLMC_BF16},
    {"FP8", 40, 160, 256, 1, 64, 0, 1, LLMC_BF16},
    {"FP8_BLOCK", 128, 256, 256, 0, 128, 1, 0, LLMC_BF16},
    {"NVFP4A16", 32, 128, 256, 0, 32, 1, 0, LLMC_BF16},
    {"W4A16", 16, 1024, 512, 0, 1024, 1, 0, LLMC_BF16},   /* opt-in shared memory (131 KB) */
    {"W4A16", 16, 2048, 512, 0, 2048, 1, 0, LLMC_BF16},   /* global-memory rows (262 KB) */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_solve(&cases[i]);
  test_fallback();
  test_errors();
  return check_summary();
#endif
}
