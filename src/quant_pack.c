/*
** quant_pack.c — bit layouts of compressed tensors (spec §4.4, §4.5, §3.8):
** pack-quantized int32 words, FP4 nibble bytes, E8M0 scale bytes.
*/
/* The loops below select between computed values with float compares; GCC
** only if-converts (and so vectorises) them when float compares are not
** treated as trapping.  llmc never reads the FP exception flags, and the
** option changes no result. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <math.h>
#include <string.h>

#include "error.h"
#include "quant_internal.h"

int64_t llmc_q_packed_cols(int64_t cols, int bits) { return (cols * bits + 31) / 32; }

/* One row: element c occupies bits [c*b, c*b + b) of a little-endian bit
** stream cut into 32-bit words; an element that does not fit in its word
** continues at bit 0 of the next.  The stream has exactly ceil(cols*b/32)
** words: the all-padding words of the last 32-element chunk are dropped. */
void q_pack_row_int32(const int8_t *q, int64_t cols, int bits, int32_t *out) {
  int64_t pc = llmc_q_packed_cols(cols, bits);
  uint32_t off = 1u << (bits - 1), mask = (1u << bits) - 1u;
  uint32_t *o = (uint32_t *)out;
  memset(o, 0, (size_t)pc * 4);
  if (bits == 4 || bits == 8 || bits == 2 || bits == 1) {
    /* no element straddles a word: build each word in a register */
    int per = 32 / bits;
    for (int64_t w = 0; w < pc; w++) {
      uint32_t acc = 0;
      int64_t c0 = w * per;
      int m = cols - c0 < per ? (int)(cols - c0) : per;
      for (int k = 0; k < m; k++) acc |= (((uint32_t)(q[c0 + k] + (int)off)) & mask) << (k * bits);
      o[w] = acc;
    }
    return;
  }
  for (int64_t c = 0; c < cols; c++) {
    uint32_t u = ((uint32_t)(q[c] + (int)off)) & mask;
    int64_t bit = c * bits;
    int64_t w = bit >> 5;
    int sh = (int)(bit & 31);
    o[w] |= u << sh;
    if (sh + bits > 32) o[w + 1] |= u >> (32 - sh);
  }
}

static void unpack_row_int32(const int32_t *p, int64_t cols, int bits, int8_t *q) {
  const uint32_t *in = (const uint32_t *)p;
  uint32_t mask = (1u << bits) - 1u;
  int off = 1 << (bits - 1);
  for (int64_t c = 0; c < cols; c++) {
    int64_t bit = c * bits;
    int64_t w = bit >> 5;
    int sh = (int)(bit & 31);
    uint32_t u = in[w] >> sh;
    if (sh + bits > 32) u |= in[w + 1] << (32 - sh);
    q[c] = (int8_t)((int)(u & mask) - off);
  }
}

static int check_pack_args(const char *what, int64_t rows, int64_t cols, int bits) {
  if (rows < 0 || cols < 0)
    return llmc_err("%s: bad shape [%lld, %lld]", what, (long long)rows, (long long)cols);
  if (bits < 1 || bits > 8) return llmc_err("%s: num_bits must be 1..8 (got %d)", what, bits);
  return 0;
}

int llmc_q_pack_int32(const int8_t *q, int64_t rows, int64_t cols, int bits, int32_t *out) {
  if (check_pack_args("pack_int32", rows, cols, bits) < 0) return -1;
  int64_t pc = llmc_q_packed_cols(cols, bits);
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; r++) q_pack_row_int32(q + r * cols, cols, bits, out + r * pc);
  return 0;
}

int llmc_q_unpack_int32(const int32_t *p, int64_t rows, int64_t cols, int bits, int8_t *q) {
  if (check_pack_args("unpack_int32", rows, cols, bits) < 0) return -1;
  int64_t pc = llmc_q_packed_cols(cols, bits);
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; r++) unpack_row_int32(p + r * pc, cols, bits, q + r * cols);
  return 0;
}

/* Dim-0 packing (zero points): column g of q is packed as one stream into
** column g of out [packed_cols(rows), cols].  Small tensors: a gather into a
** contiguous column is simplest. */
int llmc_q_pack_int32_dim0(const int8_t *q, int64_t rows, int64_t cols, int bits, int32_t *out) {
  if (check_pack_args("pack_int32_dim0", rows, cols, bits) < 0) return -1;
  int64_t pr = llmc_q_packed_cols(rows, bits);
  int8_t col[4096];
  int32_t words[1024];
  for (int64_t g = 0; g < cols; g++) {
    for (int64_t r0 = 0; r0 < rows; r0 += 4096) {
      /* chunks of 4096 rows = 128 * b words, a whole number of words */
      int64_t n = rows - r0 < 4096 ? rows - r0 : 4096;
      for (int64_t r = 0; r < n; r++) col[r] = q[(r0 + r) * cols + g];
      q_pack_row_int32(col, n, bits, words);
      int64_t w0 = r0 / 32 * bits, nw = llmc_q_packed_cols(n, bits);
      for (int64_t w = 0; w < nw && w0 + w < pr; w++) out[(w0 + w) * cols + g] = words[w];
    }
  }
  return 0;
}

int llmc_q_unpack_int32_dim0(const int32_t *p, int64_t rows, int64_t cols, int bits, int8_t *q) {
  if (check_pack_args("unpack_int32_dim0", rows, cols, bits) < 0) return -1;
  int8_t col[4096];
  int32_t words[1024];
  for (int64_t g = 0; g < cols; g++) {
    for (int64_t r0 = 0; r0 < rows; r0 += 4096) {
      int64_t n = rows - r0 < 4096 ? rows - r0 : 4096;
      int64_t w0 = r0 / 32 * bits, nw = llmc_q_packed_cols(n, bits);
      for (int64_t w = 0; w < nw; w++) words[w] = p[(w0 + w) * cols + g];
      unpack_row_int32(words, n, bits, col);
      for (int64_t r = 0; r < n; r++) q[(r0 + r) * cols + g] = col[r];
    }
  }
  return 0;
}

/* ---- FP4 nibbles ------------------------------------------------------ */

void q_pack_row_fp4(const uint8_t *nib, int64_t cols, uint8_t *out) {
  for (int64_t j = 0; j < cols / 2; j++)
    out[j] = (uint8_t)((nib[2 * j] & 0xfu) | ((nib[2 * j + 1] & 0xfu) << 4));
}

int llmc_q_pack_fp4(const uint8_t *nib, int64_t rows, int64_t cols, uint8_t *out) {
  if (rows < 0 || cols < 0 || cols % 2)
    return llmc_err("pack_fp4: tensor must have an even number of columns (got %lld)",
                    (long long)cols);
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; r++) q_pack_row_fp4(nib + r * cols, cols, out + r * (cols / 2));
  return 0;
}

int llmc_q_unpack_fp4(const uint8_t *p, int64_t rows, int64_t cols, uint8_t *nib) {
  if (rows < 0 || cols < 0 || cols % 2)
    return llmc_err("unpack_fp4: tensor must have an even number of columns (got %lld)",
                    (long long)cols);
  int64_t n = rows * cols / 2;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t j = 0; j < n; j++) {
    nib[2 * j] = p[j] & 0xfu;
    nib[2 * j + 1] = (uint8_t)(p[j] >> 4);
  }
  return 0;
}

/* ---- E8M0 ---------------------------------------------------------------- */

uint8_t llmc_q_e8m0_from_scale(float s) {
  /* CT compress_mx_scale: 127 + floor(log2(s)); llmc clamps to [0, 255]
  ** where CT would wrap (never reached by MX scales, which are 2^(b-127)) */
  if (!(s > 0.0f)) return 0;
  if (isinf(s)) return 255;
  int e;
  frexpf(s, &e);   /* s = m * 2^e, m in [0.5, 1): floor(log2 s) = e - 1 */
  int b = 127 + e - 1;
  return (uint8_t)(b < 0 ? 0 : b > 255 ? 255 : b);
}

float llmc_q_e8m0_to_scale(uint8_t b) { return qm_e8m0_value(b); }
