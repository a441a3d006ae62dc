/*
** tokenizer_unicode.c — the byte/UTF-8/Unicode helpers of the tokenizer:
** growable buffers, strict UTF-8 validation, Rust-compatible lossy decoding,
** White_Space, canonical normalization (NFC/NFD) over the generated tables
** of tokenizer_unidata.c, and the string hash map used for vocabularies.
*/
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer_internal.h"

/* ---- buffers ------------------------------------------------------------------ */

int llmc_tok_buf_reserve(llmc_tok_buf *b, size_t extra) {
  if (b->cap - b->n >= extra) return 0;
  if (extra > SIZE_MAX / 2 - b->n) return llmc_err("tokenizer: buffer size overflow");
  size_t cap = b->cap ? b->cap : 64;
  while (cap - b->n < extra) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) return llmc_err("tokenizer: out of memory (%zu bytes)", cap);
  b->p = p;
  b->cap = cap;
  return 0;
}

int llmc_tok_buf_put(llmc_tok_buf *b, const void *s, size_t n) {
  if (llmc_tok_buf_reserve(b, n) < 0) return -1;
  if (n) memcpy(b->p + b->n, s, n);
  b->n += n;
  return 0;
}

int llmc_tok_ivec_push(llmc_tok_ivec *v, int32_t x) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 64;
    int32_t *p = realloc(v->p, cap * sizeof *p);
    if (!p) return llmc_err("tokenizer: out of memory (%zu ids)", cap);
    v->p = p;
    v->cap = cap;
  }
  v->p[v->n++] = x;
  return 0;
}

/* ---- UTF-8 -------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n), 0 when invalid or truncated;
** *bad gets the length of the maximal invalid prefix (at least 1) in that case,
** which is what one U+FFFD replaces in Rust's from_utf8_lossy. */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  unsigned lo = 0x80, hi = 0xBF; /* range of the second byte */
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F; /* no surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    *bad = 1;
    return 0;
  }
  for (size_t k = 1; k < len; k++) {
    if (k >= n) { *bad = k; return 0; }
    unsigned x = s[k];
    unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (x < l || x > h) { *bad = k; return 0; }
  }
  return len;
}

size_t llmc_tok_utf8_valid_prefix(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    /* ASCII fast path, 8 bytes at a time */
    while (i + 8 <= n) {
      uint64_t w;
      memcpy(&w, u + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    size_t bad, k = utf8_seq(u + i, n - i, &bad);
    if (!k) return i;
    i += k;
  }
  return n;
}

uint32_t llmc_tok_utf8_next(const char *s, size_t *i) {
  const unsigned char *u = (const unsigned char *)s + *i;
  uint32_t c = u[0];
  if (c < 0x80) { *i += 1; return c; }
  if (c < 0xE0) { *i += 2; return ((c & 0x1F) << 6) | (u[1] & 0x3F); }
  if (c < 0xF0) { *i += 3; return ((c & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F); }
  *i += 4;
  return ((c & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) | ((uint32_t)(u[2] & 0x3F) << 6) |
         (u[3] & 0x3F);
}

size_t llmc_tok_utf8_encode(uint32_t cp, char *o) {
  unsigned char *u = (unsigned char *)o;
  if (cp < 0x80) { u[0] = (unsigned char)cp; return 1; }
  if (cp < 0x800) {
    u[0] = (unsigned char)(0xC0 | (cp >> 6));
    u[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    u[0] = (unsigned char)(0xE0 | (cp >> 12));
    u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  u[0] = (unsigned char)(0xF0 | (cp >> 18));
  u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
  u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
  u[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

int llmc_tok_buf_put_cp(llmc_tok_buf *b, uint32_t cp) {
  if (llmc_tok_buf_reserve(b, 4) < 0) return -1;
  b->n += llmc_tok_utf8_encode(cp, b->p + b->n);
  return 0;
}

int llmc_tok_utf8_lossy(const char *s, size_t n, llmc_tok_buf *out) {
  const unsigned char *u = (const unsigned char *)s;
  if (llmc_tok_buf_reserve(out, n + 1) < 0) return -1;
  size_t i = 0;
  while (i < n) {
    size_t bad, k = utf8_seq(u + i, n - i, &bad);
    if (k) {
      if (llmc_tok_buf_put(out, s + i, k) < 0) return -1;
      i += k;
    } else {
      if (llmc_tok_buf_put(out, "\xEF\xBF\xBD", 3) < 0) return -1;
      i += bad;
    }
  }
  return 0;
}

int llmc_tok_is_white_space(uint32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ---- canonical normalization -------------------------------------------------------- */

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7,
       LCOUNT = 19, VCOUNT = 21, TCOUNT = 28, NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

static int ccc_of(uint32_t cp) {
  if (cp < 0x300) return 0;
  size_t lo = 0, hi = llmc_tok_n_ccc_ranges;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < llmc_tok_ccc_ranges[mid].lo) hi = mid;
    else if (cp > llmc_tok_ccc_ranges[mid].hi) lo = mid + 1;
    else return llmc_tok_ccc_ranges[mid].ccc;
  }
  return 0;
}

static const llmc_tok_decomp *decomp_of(uint32_t cp) {
  size_t lo = 0, hi = llmc_tok_n_decomps;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < llmc_tok_decomps[mid].cp) hi = mid;
    else if (cp > llmc_tok_decomps[mid].cp) lo = mid + 1;
    else return &llmc_tok_decomps[mid];
  }
  return NULL;
}

/* primary composite of (a, b), or 0 */
static uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
    return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
  if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE &&
      b < TBASE + TCOUNT)
    return a + (b - TBASE);
  size_t lo = 0, hi = llmc_tok_n_comps;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const llmc_tok_comp *c = &llmc_tok_comps[mid];
    if (a < c->a || (a == c->a && b < c->b)) hi = mid;
    else if (a > c->a || b > c->b) lo = mid + 1;
    else return c->c;
  }
  return 0;
}

typedef struct {
  uint32_t *cp;
  uint8_t *cc;
  size_t n, cap;
} cpvec;

static int cp_push(cpvec *v, uint32_t cp) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 256;
    uint32_t *p = realloc(v->cp, cap * sizeof *p);
    if (!p) return llmc_err("tokenizer: out of memory");
    v->cp = p;
    uint8_t *q = realloc(v->cc, cap);
    if (!q) return llmc_err("tokenizer: out of memory");
    v->cc = q;
    v->cap = cap;
  }
  v->cp[v->n] = cp;
  v->cc[v->n] = (uint8_t)ccc_of(cp);
  v->n++;
  return 0;
}

static int decompose_into(cpvec *v, uint32_t cp) {
  if (cp >= SBASE && cp < SBASE + SCOUNT) {
    uint32_t s = cp - SBASE;
    if (cp_push(v, LBASE + s / NCOUNT) < 0 || cp_push(v, VBASE + (s % NCOUNT) / TCOUNT) < 0)
      return -1;
    if (s % TCOUNT) return cp_push(v, TBASE + s % TCOUNT);
    return 0;
  }
  const llmc_tok_decomp *d = cp >= 0xC0 ? decomp_of(cp) : NULL;
  if (!d) return cp_push(v, cp);
  for (unsigned k = 0; k < d->n; k++)
    if (cp_push(v, llmc_tok_decomp_pool[d->off + k]) < 0) return -1;
  return 0;
}

static int nfc_unstable(uint32_t cp) {
  size_t lo = 0, hi = llmc_tok_n_nfc_unstable;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < llmc_tok_nfc_unstable[mid].lo) hi = mid;
    else if (cp > llmc_tok_nfc_unstable[mid].hi) lo = mid + 1;
    else return 1;
  }
  return 0;
}

/* Does the string need normalizing?  The quick check of UAX #15: NFC keeps
** a string whose characters are all starters with NFC_QC=Yes; NFD one whose
** characters have no decomposition and are starters.  Nothing below U+0300
** changes under NFC, nothing below U+00C0 under NFD. */
static int maybe_changes(const char *s, size_t n, int compose) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    if (u[i] < 0xC3) { i++; continue; } /* ASCII, continuation bytes, U+0000-U+00BF */
    uint32_t cp = llmc_tok_utf8_next(s, &i);
    if (compose) {
      if (cp >= 0x300 && nfc_unstable(cp)) return 1;
    } else if (ccc_of(cp) || (cp >= SBASE && cp < SBASE + SCOUNT) || decomp_of(cp)) {
      return 1;
    }
  }
  return 0;
}

int llmc_tok_normalize(const char *s, size_t n, int compose, llmc_tok_buf *out) {
  if (!maybe_changes(s, n, compose)) return llmc_tok_buf_put(out, s, n);
  cpvec v = {0};
  int rc = -1;
  for (size_t i = 0; i < n;)
    if (decompose_into(&v, llmc_tok_utf8_next(s, &i)) < 0) goto done;
  /* canonical ordering: stable sort of each run of non-starters by class */
  for (size_t i = 0; i < v.n;) {
    if (!v.cc[i]) { i++; continue; }
    size_t j = i;
    while (j < v.n && v.cc[j]) j++;
    for (size_t a = i + 1; a < j; a++) { /* insertion sort: runs are short */
      uint32_t cp = v.cp[a];
      uint8_t cc = v.cc[a];
      size_t b = a;
      while (b > i && v.cc[b - 1] > cc) {
        v.cp[b] = v.cp[b - 1];
        v.cc[b] = v.cc[b - 1];
        b--;
      }
      v.cp[b] = cp;
      v.cc[b] = cc;
    }
    i = j;
  }
  if (compose && v.n) {
    /* canonical composition (UAX #15): a character combines with the last
    ** starter unless a character between them blocks it */
    size_t starter = SIZE_MAX, w = 0;
    int last_cc = -1;
    for (size_t r = 0; r < v.n; r++) {
      uint32_t cp = v.cp[r];
      int cc = v.cc[r];
      if (starter != SIZE_MAX) {
        int blocked = last_cc != -1 && (last_cc == 0 || last_cc >= cc);
        if (!blocked) {
          uint32_t c = compose_pair(v.cp[starter], cp);
          if (c) {
            v.cp[starter] = c;
            continue;
          }
        }
      }
      if (cc == 0) {
        starter = w;
        last_cc = -1;
      } else {
        last_cc = cc;
      }
      v.cp[w] = cp;
      v.cc[w] = (uint8_t)cc;
      w++;
    }
    v.n = w;
  }
  if (llmc_tok_buf_reserve(out, v.n * 4) < 0) goto done;
  for (size_t i = 0; i < v.n; i++) out->n += llmc_tok_utf8_encode(v.cp[i], out->p + out->n);
  rc = 0;
done:
  free(v.cp);
  free(v.cc);
  return rc;
}

/* ---- hashing and the string map ----------------------------------------------------------- */

uint64_t llmc_tok_hash(const char *s, size_t n) {
  /* multiply-xorshift over 8-byte words: keys are short token strings */
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 32;
  }
  if (i < n) {
    uint64_t w = 0;
    memcpy(&w, s + i, n - i);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
  }
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return h;
}

int llmc_tok_smap_init(llmc_tok_smap *m, size_t expected) {
  size_t cap = 16;
  while (cap < expected * 2) cap *= 2;
  m->slots = malloc(cap * sizeof *m->slots);
  if (!m->slots) return llmc_err("tokenizer: out of memory (hash map of %zu)", expected);
  for (size_t i = 0; i < cap; i++) m->slots[i].len = UINT32_MAX;
  m->mask = cap - 1;
  m->count = 0;
  return 0;
}

void llmc_tok_smap_free(llmc_tok_smap *m) {
  free(m->slots);
  m->slots = NULL;
  m->mask = m->count = 0;
}

const llmc_tok_sslot *llmc_tok_smap_get(const llmc_tok_smap *m, const char *pool,
                                        const char *s, size_t n, uint64_t h) {
  if (!m->slots) return NULL;
  uint32_t h32 = (uint32_t)(h >> 32);
  for (size_t i = (size_t)h & m->mask;; i = (i + 1) & m->mask) {
    const llmc_tok_sslot *sl = &m->slots[i];
    if (sl->len == UINT32_MAX) return NULL;
    if (sl->h32 == h32 && sl->len == n && memcmp(pool + sl->off, s, n) == 0) return sl;
  }
}

int llmc_tok_smap_put(llmc_tok_smap *m, const char *pool, uint32_t off, uint32_t len,
                      uint64_t h, int32_t val) {
  if ((m->count + 1) * 2 > m->mask + 1) { /* keep the load under 1/2 */
    llmc_tok_smap g;
    if (llmc_tok_smap_init(&g, (m->mask + 1)) < 0) return -1;
    for (size_t i = 0; i <= m->mask; i++) {
      llmc_tok_sslot *sl = &m->slots[i];
      if (sl->len == UINT32_MAX) continue;
      uint64_t hh = llmc_tok_hash(pool + sl->off, sl->len);
      size_t j = (size_t)hh & g.mask;
      while (g.slots[j].len != UINT32_MAX) j = (j + 1) & g.mask;
      g.slots[j] = *sl;
    }
    g.count = m->count;
    free(m->slots);
    *m = g;
  }
  uint32_t h32 = (uint32_t)(h >> 32);
  for (size_t i = (size_t)h & m->mask;; i = (i + 1) & m->mask) {
    llmc_tok_sslot *sl = &m->slots[i];
    if (sl->len == UINT32_MAX) {
      sl->off = off;
      sl->len = len;
      sl->val = val;
      sl->h32 = h32;
      m->count++;
      return 0;
    }
    if (sl->h32 == h32 && sl->len == len && memcmp(pool + sl->off, pool + off, len) == 0) {
      sl->val = val;
      return 0;
    }
  }
}
