/*
** tokenizer_bpe.c — the BPE model of tokenizer.c: the merge table and the
** merge loop.
**
** A pre-token is first cut into symbols (one per character, looked up in the
** vocab; unknown characters go to <0xNN> byte tokens or the unk token), then
** merged: the pair with the lowest merge rank, leftmost on ties, is merged
** until no adjacent pair has a merge.  That is done with a binary heap of
** candidate pairs over a doubly linked list of symbols, O(n log n) per word
** (stale heap entries are recognised because the pair at their position no
** longer merges into the recorded id), exactly the order of the Rust
** library's Word::merge_all.  Results of short words are kept in a cache owned
** by the caller's scratch (one per call or per worker thread), so no locking
** is needed between threads.
*/
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer_internal.h"

/* ---- the merge table ------------------------------------------------------------ */

static inline uint64_t mkey(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static inline size_t mhash(uint64_t k) {
  k ^= k >> 31;
  k *= 0x9E3779B97F4A7C15ull;
  k ^= k >> 29;
  return (size_t)k;
}

int llmc_tok_mmap_init(llmc_tok_mmap *m, size_t expected) {
  size_t cap = 16;
  while (cap < expected * 2) cap *= 2;
  m->slots = malloc(cap * sizeof *m->slots);
  if (!m->slots) return llmc_err("tokenizer: out of memory (merge table of %zu)", expected);
  for (size_t i = 0; i < cap; i++) m->slots[i].key = UINT64_MAX;
  m->mask = cap - 1;
  m->count = 0;
  return 0;
}

void llmc_tok_mmap_free(llmc_tok_mmap *m) {
  free(m->slots);
  m->slots = NULL;
}

int llmc_tok_mmap_put(llmc_tok_mmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id) {
  if ((m->count + 1) * 2 > m->mask + 1) {
    llmc_tok_mmap g;
    if (llmc_tok_mmap_init(&g, m->mask + 1) < 0) return -1;
    for (size_t i = 0; i <= m->mask; i++) {
      if (m->slots[i].key == UINT64_MAX) continue;
      size_t j = mhash(m->slots[i].key) & g.mask;
      while (g.slots[j].key != UINT64_MAX) j = (j + 1) & g.mask;
      g.slots[j] = m->slots[i];
    }
    g.count = m->count;
    free(m->slots);
    *m = g;
  }
  uint64_t k = mkey(a, b);
  for (size_t i = mhash(k) & m->mask;; i = (i + 1) & m->mask) {
    llmc_tok_mslot *s = &m->slots[i];
    if (s->key == UINT64_MAX) {
      s->key = k;
      m->count++;
    } else if (s->key != k) {
      continue;
    }
    /* a repeated pair keeps its last rank, like the Rust HashMap collect */
    s->rank = rank;
    s->id = id;
    return 0;
  }
}

const llmc_tok_mslot *llmc_tok_mmap_get(const llmc_tok_mmap *m, int32_t a, int32_t b) {
  uint64_t k = mkey(a, b);
  for (size_t i = mhash(k) & m->mask;; i = (i + 1) & m->mask) {
    const llmc_tok_mslot *s = &m->slots[i];
    if (s->key == k) return s;
    if (s->key == UINT64_MAX) return NULL;
  }
}

/* ---- per-call scratch ---------------------------------------------------------------- */

typedef struct {
  int32_t id;
  int32_t prev, next;
  uint32_t len; /* bytes; 0 = merged away */
} sym;

/* A candidate merge of the symbol at `pos` with its right neighbour.  `span`
** is the byte length of the pair when it was queued: a pair only ever grows
** (either side absorbing a neighbour), so an unchanged span means the
** candidate is still current.  That is the same test as Rust's "the pair
** still merges into new_id" (distinct strings have distinct ids) without a
** second hash lookup. */
typedef struct {
  uint64_t key; /* rank << 32 | pos: the heap order (lowest rank, then leftmost) */
  uint32_t span;
  int32_t id;
} cand;

#define CACHE_MAX_WORD 256      /* longer words are not cached (as in Rust) */
#define CACHE_MAX_ENTRIES 65536 /* then the cache starts over */

struct llmc_tok_bpe_scratch {
  sym *syms;
  size_t n_syms, cap_syms;
  cand *heap;
  size_t n_heap, cap_heap;
  /* word cache: key bytes in keys, value = offset/count into vals */
  llmc_tok_buf keys;
  llmc_tok_smap cache;     /* word -> index into spans */
  uint32_t *span_off, *span_n;
  size_t n_spans, cap_spans;
  llmc_tok_ivec vals;
};

llmc_tok_bpe_scratch *llmc_tok_bpe_scratch_new(void) {
  llmc_tok_bpe_scratch *s = calloc(1, sizeof *s);
  if (!s) llmc_err("tokenizer: out of memory");
  return s;
}

void llmc_tok_bpe_scratch_free(llmc_tok_bpe_scratch *s) {
  if (!s) return;
  free(s->syms);
  free(s->heap);
  free(s->keys.p);
  llmc_tok_smap_free(&s->cache);
  free(s->span_off);
  free(s->span_n);
  free(s->vals.p);
  free(s);
}

static int sym_add(llmc_tok_bpe_scratch *s, int32_t id, uint32_t len) {
  if (s->n_syms == s->cap_syms) {
    size_t cap = s->cap_syms ? s->cap_syms * 2 : 256;
    if (cap > INT32_MAX) return llmc_err("tokenizer: pre-token too long");
    sym *p = realloc(s->syms, cap * sizeof *p);
    if (!p) return llmc_err("tokenizer: out of memory");
    s->syms = p;
    s->cap_syms = cap;
  }
  int32_t i = (int32_t)s->n_syms;
  s->syms[i] = (sym){id, i - 1, -1, len};
  if (i > 0) s->syms[i - 1].next = i;
  s->n_syms++;
  return 0;
}

/* 4-ary min-heap on cand.key: shallower than a binary heap, so fewer cache
** misses when a long pre-token (a whole document without pre-tokenizer)
** queues millions of candidates. */
static int heap_push(llmc_tok_bpe_scratch *s, cand c) {
  if (s->n_heap == s->cap_heap) {
    size_t cap = s->cap_heap ? s->cap_heap * 2 : 256;
    cand *p = realloc(s->heap, cap * sizeof *p);
    if (!p) return llmc_err("tokenizer: out of memory");
    s->heap = p;
    s->cap_heap = cap;
  }
  size_t i = s->n_heap++;
  while (i > 0) {
    size_t parent = (i - 1) / 4;
    if (c.key >= s->heap[parent].key) break;
    s->heap[i] = s->heap[parent];
    i = parent;
  }
  s->heap[i] = c;
  return 0;
}

static cand heap_pop(llmc_tok_bpe_scratch *s) {
  cand top = s->heap[0];
  cand last = s->heap[--s->n_heap];
  size_t i = 0, n = s->n_heap;
  for (;;) {
    size_t c0 = 4 * i + 1;
    if (c0 >= n) break;
    size_t m = c0, end = c0 + 4 < n ? c0 + 4 : n;
    for (size_t k = c0 + 1; k < end; k++)
      if (s->heap[k].key < s->heap[m].key) m = k;
    if (s->heap[m].key >= last.key) break;
    s->heap[i] = s->heap[m];
    i = m;
  }
  if (n) s->heap[i] = last;
  return top;
}

/* ---- the model ------------------------------------------------------------------------- */

static int32_t vocab_get(const llmc_tok *t, const char *s, size_t n) {
  if (n == 1) return t->cp_ids[(unsigned char)s[0]];
  const llmc_tok_sslot *sl = llmc_tok_smap_get(&t->vocab, t->pool.p, s, n, llmc_tok_hash(s, n));
  return sl ? sl->val : -1;
}

/* Cut w into its initial symbols (Rust BPE::merge_word before merge_all). */
static int initial_symbols(const llmc_tok *t, llmc_tok_bpe_scratch *sc, const char *w, size_t n) {
  int32_t unk_id = -1;
  uint32_t unk_len = 0;
  int have_unk = 0;
  char tmp[256];
  size_t plen = t->cont_prefix_len, slen = t->eow_suffix_len;
  for (size_t i = 0; i < n;) {
    size_t cl = llmc_tok_utf8_len((unsigned char)w[i]);
    int first = i == 0, last = i + cl >= n;
    const char *s = w + i;
    size_t sn = cl;
    if ((!first && plen) || (last && slen)) {
      /* prefix/suffix are at most a few bytes (checked at load) */
      size_t k = 0;
      if (!first && plen) { memcpy(tmp, t->cont_prefix, plen); k = plen; }
      memcpy(tmp + k, w + i, cl);
      k += cl;
      if (last && slen) { memcpy(tmp + k, t->eow_suffix, slen); k += slen; }
      s = tmp;
      sn = k;
    }
    int32_t id;
    if (s == w + i && cl < 4) { /* one BMP character: table lookup */
      size_t j = i;
      id = t->cp_ids[llmc_tok_utf8_next(w, &j)];
    } else {
      id = vocab_get(t, s, sn);
    }
    i += cl;
    if (id >= 0) {
      if (have_unk) {
        if (sym_add(sc, unk_id, unk_len) < 0) return -1;
        have_unk = 0;
      }
      if (sym_add(sc, id, (uint32_t)cl) < 0) return -1;
      continue;
    }
    if (t->byte_fallback) {
      size_t k = 0;
      while (k < sn && t->byte_ids[(unsigned char)s[k]] >= 0) k++;
      if (k == sn) {
        /* as in Rust, a pending unk is not flushed before the byte tokens */
        for (k = 0; k < sn; k++)
          if (sym_add(sc, t->byte_ids[(unsigned char)s[k]], 1) < 0) return -1;
        continue;
      }
    }
    if (t->unk_token) {
      if (t->unk_id < 0)
        return llmc_err("%s: unk_token '%.*s' is not in the vocab", t->name, (int)t->unk_len,
                        t->unk_token);
      if (have_unk && t->fuse_unk) {
        unk_len += (uint32_t)cl;
      } else {
        if (have_unk && sym_add(sc, unk_id, unk_len) < 0) return -1;
        unk_id = t->unk_id;
        unk_len = (uint32_t)cl;
        have_unk = 1;
      }
    }
    /* no byte fallback and no unk token: the character is dropped (as in Rust) */
  }
  if (have_unk && sym_add(sc, unk_id, unk_len) < 0) return -1;
  return 0;
}

static inline int queue(llmc_tok_bpe_scratch *sc, const llmc_tok *t, size_t pos) {
  const sym *a = &sc->syms[pos], *b = &sc->syms[a->next];
  const llmc_tok_mslot *m = llmc_tok_mmap_get(&t->merges, a->id, b->id);
  if (!m) return 0;
  return heap_push(sc, (cand){((uint64_t)m->rank << 32) | pos, a->len + b->len, m->id});
}

static int merge_all(const llmc_tok *t, llmc_tok_bpe_scratch *sc) {
  size_t n = sc->n_syms;
  sc->n_heap = 0;
  for (size_t i = 0; i + 1 < n; i++)
    if (queue(sc, t, i) < 0) return -1;
  while (sc->n_heap) {
    cand c = heap_pop(sc);
    size_t pos = (uint32_t)c.key;
    sym *y = sc->syms, *a = &y[pos];
    if (!a->len || a->next < 0 || a->len + y[a->next].len != c.span) continue; /* stale */
    sym *b = &y[a->next];
    a->id = c.id;
    a->len += b->len;
    a->next = b->next;
    b->len = 0;
    if (a->next >= 0) y[a->next].prev = (int32_t)pos;
    if (a->prev >= 0 && queue(sc, t, (size_t)a->prev) < 0) return -1;
    if (sc->syms[pos].next >= 0 && queue(sc, t, pos) < 0) return -1;
  }
  return 0;
}

static int cache_put(llmc_tok_bpe_scratch *sc, const char *w, size_t n, uint64_t h,
                     const int32_t *ids, size_t k) {
  if (!sc->cache.slots && llmc_tok_smap_init(&sc->cache, 1024) < 0) return -1;
  if (sc->n_spans == sc->cap_spans) {
    size_t cap = sc->cap_spans ? sc->cap_spans * 2 : 1024;
    uint32_t *a = realloc(sc->span_off, cap * sizeof *a);
    if (!a) return llmc_err("tokenizer: out of memory");
    sc->span_off = a;
    uint32_t *b = realloc(sc->span_n, cap * sizeof *b);
    if (!b) return llmc_err("tokenizer: out of memory");
    sc->span_n = b;
    sc->cap_spans = cap;
  }
  size_t off = sc->keys.n;
  if (llmc_tok_buf_put(&sc->keys, w, n) < 0) return -1;
  sc->span_off[sc->n_spans] = (uint32_t)sc->vals.n;
  sc->span_n[sc->n_spans] = (uint32_t)k;
  for (size_t i = 0; i < k; i++)
    if (llmc_tok_ivec_push(&sc->vals, ids[i]) < 0) return -1;
  if (llmc_tok_smap_put(&sc->cache, sc->keys.p, (uint32_t)off, (uint32_t)n, h,
                        (int32_t)sc->n_spans) < 0)
    return -1;
  sc->n_spans++;
  return 0;
}

int llmc_tok_bpe(const llmc_tok *t, llmc_tok_bpe_scratch *sc, const char *w, size_t n,
                 llmc_tok_ivec *out) {
  if (t->ignore_merges) {
    int32_t id = vocab_get(t, w, n);
    if (id >= 0) return llmc_tok_ivec_push(out, id);
  }
  int cacheable = n < CACHE_MAX_WORD;
  uint64_t h = 0;
  if (cacheable) {
    h = llmc_tok_hash(w, n);
    const llmc_tok_sslot *sl = llmc_tok_smap_get(&sc->cache, sc->keys.p, w, n, h);
    if (sl) {
      uint32_t off = sc->span_off[sl->val], k = sc->span_n[sl->val];
      for (uint32_t i = 0; i < k; i++)
        if (llmc_tok_ivec_push(out, sc->vals.p[off + i]) < 0) return -1;
      return 0;
    }
  }
  sc->n_syms = 0;
  if (initial_symbols(t, sc, w, n) < 0 || merge_all(t, sc) < 0) return -1;
  size_t first = out->n;
  for (int32_t i = sc->n_syms ? 0 : -1; i >= 0; i = sc->syms[i].next)
    if (llmc_tok_ivec_push(out, sc->syms[i].id) < 0) return -1;
  if (!cacheable) return 0;
  if (sc->n_spans >= CACHE_MAX_ENTRIES) { /* full: start over rather than grow without bound */
    llmc_tok_smap_free(&sc->cache);
    sc->n_spans = 0;
    sc->keys.n = 0;
    sc->vals.n = 0;
  }
  /* out->p is NULL when the word produced no ids (every character dropped) */
  return cache_put(sc, w, n, h, out->p ? out->p + first : NULL, out->n - first);
}
