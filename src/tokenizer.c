/*
** tokenizer.c — loading tokenizer.json, the encode pipeline and the decoder
** chain (the BPE model is in tokenizer_bpe.c, Unicode helpers in
** tokenizer_unicode.c).  The behaviour follows the Hugging Face Rust
** `tokenizers` library step by step (docs/tokenizer.md lists the parts and
** the few documented differences):
**
**   encode: added tokens matched on the raw text (leftmost-longest)
**           -> normalizer on each remaining piece -> added tokens with
**           normalized=true matched on the normalized pieces
**           -> pre-tokenizer splits -> BPE per pre-token -> template ids.
**   decode: ids -> token strings (special ones optionally dropped)
**           -> decoder chain over the list of strings -> concatenation.
**
** All per-call state (pieces, arena, regex match data, BPE scratch and word
** cache) lives in an `ectx` on the caller's stack, so concurrent calls on one
** tokenizer need no lock.  Strings produced while encoding live in an arena of
** blocks that never move, so pieces can point into it (or into the caller's
** text) while new strings are appended.
*/
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "error.h"
#include "tokenizer_internal.h"

#define MAX_AFFIX 64 /* continuing_subword_prefix / end_of_word_suffix bytes */

/* ======================================================================
** Per-call context: arena, piece lists, regex match data
** ====================================================================== */

typedef struct ablock {
  struct ablock *next;
  size_t used, cap;
  char data[];
} ablock;

typedef struct {
  const char *s;
  size_t n;
  int32_t id;    /* >= 0: an added token, final */
  uint8_t first; /* starts at offset 0 of the original text (Metaspace "first") */
} piece;

typedef struct {
  piece *p;
  size_t n, cap;
} plist;

typedef struct {
  size_t s, e;
  int m;
} mrange;

typedef struct {
  mrange *p;
  size_t n, cap;
} mlist;

typedef struct {
  const llmc_tok *tok;
  ablock *arena;
  pcre2_match_data *md;
  llmc_tok_buf tmp;
  mlist ml, ml2;
} ectx;

static char *arena_alloc(ectx *c, size_t n) {
  ablock *b = c->arena;
  if (!b || b->cap - b->used < n) {
    size_t cap = n > 65536 ? n : 65536;
    ablock *nb = malloc(sizeof *nb + cap);
    if (!nb) { llmc_err("tokenizer: out of memory (%zu bytes)", cap); return NULL; }
    nb->next = b;
    nb->used = 0;
    nb->cap = cap;
    c->arena = b = nb;
  }
  char *p = b->data + b->used;
  b->used += n;
  return p;
}

static const char *arena_dup(ectx *c, const char *s, size_t n) {
  char *p = arena_alloc(c, n ? n : 1);
  if (p && n) memcpy(p, s, n);
  return p;
}

static int ectx_init(ectx *c, const llmc_tok *tok) {
  memset(c, 0, sizeof *c);
  c->tok = tok;
  c->md = pcre2_match_data_create(1, NULL);
  if (!c->md) return llmc_err("tokenizer: out of memory (regex match data)");
  return 0;
}

static void ectx_free(ectx *c) {
  for (ablock *b = c->arena, *nx; b; b = nx) {
    nx = b->next;
    free(b);
  }
  pcre2_match_data_free(c->md);
  free(c->tmp.p);
  free(c->ml.p);
  free(c->ml2.p);
}

static int plist_push(plist *l, const char *s, size_t n, int32_t id, int first) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    piece *p = realloc(l->p, cap * sizeof *p);
    if (!p) return llmc_err("tokenizer: out of memory");
    l->p = p;
    l->cap = cap;
  }
  l->p[l->n++] = (piece){s, n, id, (uint8_t)(first != 0)};
  return 0;
}

static int mlist_push(mlist *l, size_t s, size_t e, int m) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    mrange *p = realloc(l->p, cap * sizeof *p);
    if (!p) return llmc_err("tokenizer: out of memory");
    l->p = p;
    l->cap = cap;
  }
  l->p[l->n++] = (mrange){s, e, m};
  return 0;
}

/* ======================================================================
** Patterns and splitting (NormalizedString::split / Pattern::find_matches)
** ====================================================================== */

/* One regex search from `start`: 1 and the match, 0 none, -1 error. */
static int re_search(ectx *c, pcre2_code *re, const char *s, size_t n, size_t start, size_t *ms,
                     size_t *me) {
  int rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, c->md, NULL);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* deep backtracking: the interpreter has a heap stack */
    rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, c->md, NULL);
  if (rc == PCRE2_ERROR_NOMATCH) return 0;
  if (rc < 0) {
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return llmc_err("%s: regex match failed: %s", c->tok->name, (const char *)msg);
  }
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
  *ms = ov[0];
  *me = ov[1];
  if (*me < *ms) *me = *ms; /* \K can put the start after the end */
  return 1;
}

/* Rust Pattern::find_matches: the whole string as (range, is_match) pieces.
** Regex iteration follows the onig crate: an empty match right where the
** previous match ended is skipped by moving one character on. */
static int find_matches(ectx *c, const llmc_tok_pattern *p, const char *s, size_t n, mlist *out) {
  out->n = 0;
  if (n == 0) return mlist_push(out, 0, 0, 0);
  size_t prev = 0;
  if (p->lit) {
    size_t L = p->lit_len;
    for (size_t i = 0; L && i + L <= n;) {
      const char *f = memmem(s + i, n - i, p->lit, L);
      if (!f) break;
      size_t ms = (size_t)(f - s);
      if (ms > prev && mlist_push(out, prev, ms, 0) < 0) return -1;
      if (mlist_push(out, ms, ms + L, 1) < 0) return -1;
      prev = i = ms + L;
    }
  } else {
    size_t pos = 0, last_end = SIZE_MAX;
    while (pos <= n) {
      size_t ms, me;
      int r = re_search(c, p->re, s, n, pos, &ms, &me);
      if (r < 0) return -1;
      if (r == 0) break;
      if (ms == me && last_end == me) {
        if (pos >= n) break;
        pos += llmc_tok_utf8_len((unsigned char)s[pos]);
        continue;
      }
      pos = last_end = me;
      if (ms > prev && mlist_push(out, prev, ms, 0) < 0) return -1;
      if (mlist_push(out, ms, me, 1) < 0) return -1;
      prev = me;
      if (me == n && ms == me) break;
    }
  }
  if (prev < n && mlist_push(out, prev, n, 0) < 0) return -1;
  return 0;
}

/* The char-predicate pattern of Rust (used by Metaspace): every occurrence of
** the character `ch` (UTF-8 bytes) is its own match. */
static int find_char_matches(const char *s, size_t n, const char *ch, size_t chn, mlist *out) {
  out->n = 0;
  if (n == 0) return mlist_push(out, 0, 0, 0);
  size_t last = 0;
  for (size_t i = 0; i < n;) {
    size_t cl = llmc_tok_utf8_len((unsigned char)s[i]);
    if (cl == chn && memcmp(s + i, ch, chn) == 0) {
      if (last < i && mlist_push(out, last, i, 0) < 0) return -1;
      if (mlist_push(out, i, i + cl, 1) < 0) return -1;
      last = i + cl;
    }
    i += cl;
  }
  if (n > last && mlist_push(out, last, n, 0) < 0) return -1;
  return 0;
}

/* SplitDelimiterBehavior applied to find_matches output (in->m = is_match);
** the result's m means "remove this range". */
static int apply_behavior(const mlist *in, int behavior, mlist *out) {
  out->n = 0;
  int prev_match = 0;
  switch (behavior) {
  case LLMC_TOK_SPLIT_ISOLATED:
    for (size_t i = 0; i < in->n; i++)
      if (mlist_push(out, in->p[i].s, in->p[i].e, 0) < 0) return -1;
    return 0;
  case LLMC_TOK_SPLIT_REMOVED:
    for (size_t i = 0; i < in->n; i++)
      if (mlist_push(out, in->p[i].s, in->p[i].e, in->p[i].m) < 0) return -1;
    return 0;
  case LLMC_TOK_SPLIT_CONTIGUOUS:
    for (size_t i = 0; i < in->n; i++) {
      int m = in->p[i].m;
      if (m == prev_match && out->n) out->p[out->n - 1].e = in->p[i].e;
      else if (mlist_push(out, in->p[i].s, in->p[i].e, 0) < 0) return -1;
      prev_match = m;
    }
    return 0;
  case LLMC_TOK_SPLIT_MERGED_PREV:
    for (size_t i = 0; i < in->n; i++) {
      int m = in->p[i].m;
      if (m && !prev_match && out->n) out->p[out->n - 1].e = in->p[i].e;
      else if (mlist_push(out, in->p[i].s, in->p[i].e, 0) < 0) return -1;
      prev_match = m;
    }
    return 0;
  case LLMC_TOK_SPLIT_MERGED_NEXT:
    /* built back to front, then reversed */
    for (size_t k = in->n; k-- > 0;) {
      int m = in->p[k].m;
      if (m && !prev_match && out->n) out->p[out->n - 1].s = in->p[k].s;
      else if (mlist_push(out, in->p[k].s, in->p[k].e, 0) < 0) return -1;
      prev_match = m;
    }
    for (size_t i = 0, j = out->n ? out->n - 1 : 0; i < j; i++, j--) {
      mrange t = out->p[i];
      out->p[i] = out->p[j];
      out->p[j] = t;
    }
    return 0;
  }
  return llmc_err("tokenizer: bad split behavior %d", behavior);
}

/* Emit the kept, non-empty ranges of `r` over piece `pc` into `out`. */
static int emit_ranges(const piece *pc, const mlist *r, plist *out) {
  for (size_t i = 0; i < r->n; i++) {
    const mrange *m = &r->p[i];
    if (m->m || m->e <= m->s) continue;
    if (plist_push(out, pc->s + m->s, m->e - m->s, -1, pc->first && m->s == 0) < 0) return -1;
  }
  return 0;
}

static int split_piece(ectx *c, const piece *pc, const llmc_tok_pattern *pat, int behavior,
                       int invert, plist *out) {
  if (find_matches(c, pat, pc->s, pc->n, &c->ml) < 0) return -1;
  if (invert)
    for (size_t i = 0; i < c->ml.n; i++) c->ml.p[i].m = !c->ml.p[i].m;
  if (apply_behavior(&c->ml, behavior, &c->ml2) < 0) return -1;
  return emit_ranges(pc, &c->ml2, out);
}

/* ======================================================================
** Added tokens: trie and matching (AddedVocabulary::find_matches)
** ====================================================================== */

static int trie_add(llmc_tok_trie *t, const char *s, size_t n, int32_t token) {
  int32_t parent = -1; /* -1: the root table */
  for (size_t i = 0; i < n; i++) {
    unsigned char b = (unsigned char)s[i];
    int32_t head = parent < 0 ? t->root[b] : t->nodes[parent].child, found = -1;
    for (int32_t k = head; k >= 0; k = t->nodes[k].sibling)
      if (t->nodes[k].byte == b) { found = k; break; }
    if (found < 0) {
      if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        llmc_tok_tnode *p = realloc(t->nodes, cap * sizeof *p);
        if (!p) return llmc_err("tokenizer: out of memory");
        t->nodes = p;
        t->cap = cap;
      }
      found = (int32_t)t->n++;
      t->nodes[found] = (llmc_tok_tnode){-1, head, -1, b};
      if (parent < 0) t->root[b] = found;
      else t->nodes[parent].child = found;
    }
    parent = found;
  }
  t->nodes[parent].token = token;
  t->empty = 0;
  return 0;
}

/* longest token starting at s[0..n): its index and length, or -1 */
static int32_t trie_longest(const llmc_tok_trie *t, const char *s, size_t n, size_t *len) {
  int32_t best = -1;
  int32_t k = t->root[(unsigned char)s[0]];
  for (size_t i = 0; i < n && k >= 0;) {
    const llmc_tok_tnode *nd = &t->nodes[k];
    if (nd->byte != (unsigned char)s[i]) { k = nd->sibling; continue; }
    i++;
    if (nd->token >= 0) { best = nd->token; *len = i; }
    if (i < n) {
      k = nd->child;
    } else break;
  }
  return best;
}

static uint32_t last_cp(const char *s, size_t n) {
  size_t i = n;
  while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;
  if (i > 0) i--;
  return llmc_tok_utf8_next(s, &i);
}

/* \w (Rust regex, Unicode) test of one character, through the PCRE2 class */
static int is_word_cp(ectx *c, uint32_t cp) {
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
  char b[4];
  size_t k = llmc_tok_utf8_encode(cp, b);
  size_t ms, me;
  int r = re_search(c, c->tok->word_re, b, k, 0, &ms, &me);
  return r > 0;
}

static int added_split(ectx *c, const llmc_tok_trie *tr, const piece *pc, plist *out) {
  const llmc_tok *t = c->tok;
  const char *s = pc->s;
  size_t n = pc->n, start_off = 0;
  if (tr->empty) return plist_push(out, s, n, -1, pc->first);
  for (size_t i = 0; i < n;) {
    if (tr->root[(unsigned char)s[i]] < 0) { i++; continue; }
    size_t L = 0;
    int32_t k = trie_longest(tr, s + i, n - i, &L);
    if (k < 0) { i++; continue; }
    const llmc_tok_added *a = &t->added[k];
    size_t start = i, stop = i + L;
    i = stop; /* leftmost-longest matches do not overlap */
    if (a->single_word) {
      int start_space = start == 0 || !is_word_cp(c, last_cp(s, start));
      size_t j = stop;
      int stop_space = stop == n || !is_word_cp(c, llmc_tok_utf8_next(s, &j));
      if (!start_space || !stop_space) continue;
    }
    if (a->lstrip) {
      size_t ns = start;
      while (ns > 0) {
        size_t j = ns;
        while (j > 0 && ((unsigned char)s[j - 1] & 0xC0) == 0x80) j--;
        if (j > 0) j--;
        size_t q = j;
        if (!llmc_tok_is_white_space(llmc_tok_utf8_next(s, &q))) break;
        ns = j;
      }
      start = ns > start_off ? ns : start_off;
    }
    if (a->rstrip) {
      while (stop < n) {
        size_t q = stop;
        if (!llmc_tok_is_white_space(llmc_tok_utf8_next(s, &q))) break;
        stop = q;
      }
      i = stop;
    }
    if (start_off < start && plist_push(out, s + start_off, start - start_off, -1, pc->first && start_off == 0) < 0)
      return -1;
    if (plist_push(out, s + start, stop - start, a->id, 0) < 0) return -1;
    start_off = stop;
  }
  if (start_off < n && plist_push(out, s + start_off, n - start_off, -1, pc->first && start_off == 0) < 0)
    return -1;
  return 0;
}

/* ======================================================================
** Normalizers
** ====================================================================== */

/* Replace every (non-overlapping) match of pat in s by rep, into c->tmp. */
static int replace_all(ectx *c, const llmc_tok_pattern *pat, const char *s, size_t n,
                       const char *rep, size_t rn, llmc_tok_buf *o) {
  if (find_matches(c, pat, s, n, &c->ml) < 0) return -1;
  for (size_t i = 0; i < c->ml.n; i++) {
    const mrange *m = &c->ml.p[i];
    if (m->m) { if (llmc_tok_buf_put(o, rep, rn) < 0) return -1; }
    else if (llmc_tok_buf_put(o, s + m->s, m->e - m->s) < 0) return -1;
  }
  return 0;
}

static int bytelevel_map(const char *s, size_t n, llmc_tok_buf *o) {
  if (llmc_tok_buf_reserve(o, 2 * n) < 0) return -1;
  for (size_t i = 0; i < n; i++)
    o->n += llmc_tok_utf8_encode(llmc_tok_byte_to_cp((unsigned char)s[i]), o->p + o->n);
  return 0;
}

/* Apply a normalizer to *s / *n (the result may point into the arena). */
static int normalize(ectx *c, const llmc_tok_node *nd, const char **s, size_t *n) {
  llmc_tok_buf *o = &c->tmp;
  o->n = 0;
  switch (nd->type) {
  case LLMC_TOK_NORM_SEQ:
    for (size_t k = 0; k < nd->n_kids; k++)
      if (normalize(c, &nd->kids[k], s, n) < 0) return -1;
    return 0;
  case LLMC_TOK_NORM_PREPEND:
    if (*n == 0) return 0;
    if (llmc_tok_buf_put(o, nd->str, nd->str_len) < 0 || llmc_tok_buf_put(o, *s, *n) < 0) return -1;
    break;
  case LLMC_TOK_NORM_REPLACE:
    if (replace_all(c, &nd->pat, *s, *n, nd->str, nd->str_len, o) < 0) return -1;
    break;
  case LLMC_TOK_NORM_NFC:
  case LLMC_TOK_NORM_NFD:
    if (llmc_tok_normalize(*s, *n, nd->type == LLMC_TOK_NORM_NFC, o) < 0) return -1;
    break;
  case LLMC_TOK_NORM_STRIP: {
    size_t a = 0, b = *n;
    if (nd->left)
      while (a < b) {
        size_t q = a;
        if (!llmc_tok_is_white_space(llmc_tok_utf8_next(*s, &q))) break;
        a = q;
      }
    if (nd->right)
      while (b > a) {
        size_t j = b;
        while (j > a && ((unsigned char)(*s)[j - 1] & 0xC0) == 0x80) j--;
        if (j > a) j--;
        size_t q = j;
        if (!llmc_tok_is_white_space(llmc_tok_utf8_next(*s, &q))) break;
        b = j;
      }
    *s += a;
    *n = b - a;
    return 0;
  }
  case LLMC_TOK_NORM_BYTELEVEL:
    if (bytelevel_map(*s, *n, o) < 0) return -1;
    break;
  default:
    return llmc_err("tokenizer: bad normalizer node");
  }
  const char *r = arena_dup(c, o->p, o->n);
  if (!r) return -1;
  *s = r;
  *n = o->n;
  return 0;
}

/* ======================================================================
** Pre-tokenizers: each maps a piece list to a new one
** ====================================================================== */

static int pretok_piece(ectx *c, const llmc_tok_node *nd, const piece *pc, plist *out) {
  llmc_tok_buf *o = &c->tmp;
  switch (nd->type) {
  case LLMC_TOK_PT_SPLIT:
    return split_piece(c, pc, &nd->pat, nd->behavior, nd->invert, out);
  case LLMC_TOK_PT_METASPACE: {
    o->n = 0;
    /* spaces -> replacement, then the prepend scheme */
    int prepend = 0;
    if (nd->scheme != LLMC_TOK_PREPEND_NEVER) {
      int starts = pc->n >= nd->str_len && memcmp(pc->s, nd->str, nd->str_len) == 0;
      /* the test is on the text after replacing spaces, which starts with the
      ** replacement if it started with a space */
      starts = starts || (pc->n && pc->s[0] == ' ');
      prepend = !starts && (nd->scheme == LLMC_TOK_PREPEND_ALWAYS || pc->first);
    }
    if (prepend && llmc_tok_buf_put(o, nd->str, nd->str_len) < 0) return -1;
    for (size_t i = 0; i < pc->n; i++) {
      if (pc->s[i] == ' ') { if (llmc_tok_buf_put(o, nd->str, nd->str_len) < 0) return -1; }
      else if (llmc_tok_buf_put(o, pc->s + i, 1) < 0) return -1;
    }
    const char *r = arena_dup(c, o->p, o->n);
    if (!r) return -1;
    piece np = {r, o->n, -1, pc->first};
    if (!nd->split) return plist_push(out, np.s, np.n, -1, np.first);
    if (find_char_matches(np.s, np.n, nd->str, nd->str_len, &c->ml) < 0) return -1;
    if (apply_behavior(&c->ml, LLMC_TOK_SPLIT_MERGED_NEXT, &c->ml2) < 0) return -1;
    return emit_ranges(&np, &c->ml2, out);
  }
  case LLMC_TOK_PT_BYTELEVEL: {
    piece np = *pc;
    if (nd->add_prefix_space && !(pc->n && pc->s[0] == ' ')) {
      char *r = arena_alloc(c, pc->n + 1);
      if (!r) return -1;
      r[0] = ' ';
      memcpy(r + 1, pc->s, pc->n);
      np.s = r;
      np.n = pc->n + 1;
    }
    size_t from = out->n;
    if (nd->pat.re) {
      if (split_piece(c, &np, &nd->pat, LLMC_TOK_SPLIT_ISOLATED, 0, out) < 0) return -1;
    } else if (plist_push(out, np.s, np.n, -1, np.first) < 0) {
      return -1;
    }
    for (size_t k = from; k < out->n; k++) {
      o->n = 0;
      if (bytelevel_map(out->p[k].s, out->p[k].n, o) < 0) return -1;
      const char *r = arena_dup(c, o->p, o->n);
      if (!r) return -1;
      out->p[k].s = r;
      out->p[k].n = o->n;
    }
    return 0;
  }
  }
  return llmc_err("tokenizer: bad pre-tokenizer node");
}

/* apply pre-tokenizer nd to *l (swapping with *spare) */
static int pretokenize(ectx *c, const llmc_tok_node *nd, plist *l, plist *spare) {
  if (nd->type == LLMC_TOK_PT_SEQ) {
    for (size_t k = 0; k < nd->n_kids; k++)
      if (pretokenize(c, &nd->kids[k], l, spare) < 0) return -1;
    return 0;
  }
  spare->n = 0;
  for (size_t i = 0; i < l->n; i++) {
    const piece *pc = &l->p[i];
    if (pc->id >= 0) {
      if (plist_push(spare, pc->s, pc->n, pc->id, pc->first) < 0) return -1;
    } else if (pretok_piece(c, nd, pc, spare) < 0) {
      return -1;
    }
  }
  plist t = *l;
  *l = *spare;
  *spare = t;
  return 0;
}

/* ======================================================================
** Encode
** ====================================================================== */

/* Everything one encoding thread needs; reused across the documents of a
** batch so that the BPE word cache carries over from one to the next. */
typedef struct {
  ectx c;
  plist a, b;
  llmc_tok_bpe_scratch *sc;
} worker;

static int worker_init(worker *w, const llmc_tok *tok) {
  memset(w, 0, sizeof *w);
  if (ectx_init(&w->c, tok) < 0) return -1;
  w->sc = llmc_tok_bpe_scratch_new();
  return w->sc ? 0 : -1;
}

static void worker_free(worker *w) {
  free(w->a.p);
  free(w->b.p);
  llmc_tok_bpe_scratch_free(w->sc);
  ectx_free(&w->c);
}

/* drop the strings of the previous document, keeping one arena block */
static void worker_reset(worker *w) {
  ablock *b = w->c.arena;
  if (!b) return;
  while (b->next) {
    ablock *nx = b->next;
    b->next = nx->next;
    free(nx);
  }
  b->used = 0;
}

/* Encode one text, appending its ids to out. */
static int encode_one(worker *w, const char *text, size_t len, int add_special_tokens, llmc_tok_ivec *out) {
  const llmc_tok *tok = w->c.tok;
  if (!text && len) return llmc_err("llmc_tok_encode: NULL text");
  size_t valid = llmc_tok_utf8_valid_prefix(text, len);
  if (valid != len)
    return llmc_err("%s: encode: text is not valid UTF-8 (byte offset %zu)", tok->name, valid);
  worker_reset(w);
  ectx *c = &w->c;
  plist *a = &w->a, *b = &w->b;
  a->n = b->n = 0;
  /* 1. added tokens on the raw text */
  piece whole = {len ? text : "", len, -1, 1};
  if (len && added_split(c, &tok->trie_raw, &whole, a) < 0) return -1;
  /* 2. normalizer, then added tokens on the normalized text */
  for (size_t i = 0; i < a->n; i++) {
    piece pc = a->p[i];
    if (pc.id >= 0) {
      if (plist_push(b, pc.s, pc.n, pc.id, 0) < 0) return -1;
      continue;
    }
    if (tok->normalizer && normalize(c, tok->normalizer, &pc.s, &pc.n) < 0) return -1;
    if (pc.n && added_split(c, &tok->trie_norm, &pc, b) < 0) return -1;
  }
  /* 3. pre-tokenizer */
  if (tok->pre_tokenizer && pretokenize(c, tok->pre_tokenizer, b, a) < 0) return -1;
  /* 4. model, 5. template */
  if (add_special_tokens && tok->post.active)
    for (size_t i = 0; i < tok->post.n_pre; i++)
      if (llmc_tok_ivec_push(out, tok->post.pre[i]) < 0) return -1;
  for (size_t i = 0; i < b->n; i++) {
    const piece *pc = &b->p[i];
    if (pc->id >= 0) {
      if (llmc_tok_ivec_push(out, pc->id) < 0) return -1;
    } else if (pc->n && llmc_tok_bpe(tok, w->sc, pc->s, pc->n, out) < 0) {
      return -1;
    }
  }
  if (add_special_tokens && tok->post.active)
    for (size_t i = 0; i < tok->post.n_post; i++)
      if (llmc_tok_ivec_push(out, tok->post.post[i]) < 0) return -1;
  return 0;
}

/* hand an ivec to the caller, never as NULL */
static int32_t *ivec_take(llmc_tok_ivec *v) {
  if (!v->p && llmc_tok_ivec_push(v, 0) == 0) v->n = 0;
  int32_t *p = v->p;
  v->p = NULL;
  return p;
}

int llmc_tok_encode(const llmc_tok *tok, const char *text, size_t len, int add_special_tokens,
                    int32_t **ids, size_t *n) {
  *ids = NULL;
  *n = 0;
  if (!tok) return llmc_err("llmc_tok_encode: NULL tokenizer");
  worker w;
  llmc_tok_ivec out = {0};
  int rc = -1;
  if (worker_init(&w, tok) == 0 && encode_one(&w, text, len, add_special_tokens, &out) == 0) {
    size_t k = out.n;
    if ((*ids = ivec_take(&out))) {
      *n = k;
      rc = 0;
    }
  }
  free(out.p);
  worker_free(&w);
  return rc;
}

int llmc_tok_encode_batch(const llmc_tok *tok, const char *const *texts, const size_t *lens, size_t count,
                          int add_special_tokens, int32_t **ids, size_t **offsets) {
  *ids = NULL;
  *offsets = NULL;
  if (!tok) return llmc_err("llmc_tok_encode_batch: NULL tokenizer");
  if (count && (!texts || !lens)) return llmc_err("llmc_tok_encode_batch: NULL texts");
  size_t *off = malloc((count + 1) * sizeof *off);
  if (!off) return llmc_err("tokenizer: out of memory");
  /* each thread encodes a contiguous run of documents into its own vector;
  ** the runs are then concatenated in order */
  int nt = 1;
#ifdef _OPENMP
  nt = omp_get_max_threads();
  if ((size_t)nt > count / 8 + 1) nt = (int)(count / 8 + 1); /* small batches: fewer threads */
#endif
  llmc_tok_ivec *parts = calloc((size_t)nt, sizeof *parts);
  char errbuf[512] = "";
  int failed = 0;
  if (!parts) { free(off); return llmc_err("tokenizer: out of memory"); }
#pragma omp parallel num_threads(nt)
  {
    int t = 0, T = 1;
#ifdef _OPENMP
    t = omp_get_thread_num();
    T = omp_get_num_threads();
#endif
    size_t lo = count * (size_t)t / (size_t)T, hi = count * (size_t)(t + 1) / (size_t)T;
    worker w;
    int ok = worker_init(&w, tok) == 0, init_ok = ok;
    for (size_t i = lo; ok && i < hi; i++) {
      off[i + 1] = parts[t].n;
      ok = encode_one(&w, texts[i], lens[i], add_special_tokens, &parts[t]) == 0;
      if (!ok) {
        char m[480];
        snprintf(m, sizeof m, "%s", llmc_errmsg());
#pragma omp critical(llmc_tok_batch_err)
        if (!failed) {
          failed = 1;
          snprintf(errbuf, sizeof errbuf, "document %zu: %s", i, m);
        }
      }
      off[i + 1] = parts[t].n - off[i + 1]; /* this document's count */
    }
    if (!init_ok) {
#pragma omp critical(llmc_tok_batch_err)
      if (!failed) {
        failed = 1;
        snprintf(errbuf, sizeof errbuf, "%s", llmc_errmsg());
      }
    }
    worker_free(&w);
  }
  int rc = -1;
  llmc_tok_ivec all = {0};
  if (failed) {
    llmc_err("%s", errbuf);
    goto done;
  }
  off[0] = 0;
  for (size_t i = 0; i < count; i++) off[i + 1] += off[i];
  all.cap = off[count] ? off[count] : 1;
  if (!(all.p = malloc(all.cap * sizeof *all.p))) { llmc_err("tokenizer: out of memory"); goto done; }
  for (int t = 0; t < nt; t++) {
    if (parts[t].n) memcpy(all.p + all.n, parts[t].p, parts[t].n * sizeof *all.p);
    all.n += parts[t].n;
  }
  *ids = ivec_take(&all);
  *offsets = off;
  off = NULL;
  rc = 0;
done:
  for (int t = 0; t < nt; t++) free(parts[t].p);
  free(parts);
  free(all.p);
  free(off);
  return rc;
}

/* ======================================================================
** Decode
** ====================================================================== */

typedef struct {
  const char *s;
  size_t n;
} str;

typedef struct {
  str *p;
  size_t n, cap;
} slist;

static int slist_push(slist *l, const char *s, size_t n) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    str *p = realloc(l->p, cap * sizeof *p);
    if (!p) return llmc_err("tokenizer: out of memory");
    l->p = p;
    l->cap = cap;
  }
  l->p[l->n++] = (str){s, n};
  return 0;
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* "<0xNN>" -> byte (Rust u8::from_str_radix on the two characters, which
** also takes a '+' sign), else -1 */
static int byte_token(const str *t) {
  if (t->n != 6 || memcmp(t->s, "<0x", 3) != 0 || t->s[5] != '>') return -1;
  int h = hexval(t->s[3]), l = hexval(t->s[4]);
  if (t->s[3] == '+' && l >= 0) return l;
  if (h < 0 || l < 0) return -1;
  return h * 16 + l;
}

static int flush_bytes(ectx *c, llmc_tok_buf *bytes, slist *out) {
  if (!bytes->n) return 0;
  if (llmc_tok_utf8_valid_prefix(bytes->p, bytes->n) == bytes->n) {
    const char *r = arena_dup(c, bytes->p, bytes->n);
    if (!r || slist_push(out, r, bytes->n) < 0) return -1;
  } else {
    for (size_t k = 0; k < bytes->n; k++)
      if (slist_push(out, "\xEF\xBF\xBD", 3) < 0) return -1;
  }
  bytes->n = 0;
  return 0;
}

static int decode_step(ectx *c, const llmc_tok_node *nd, slist *l, slist *spare) {
  if (nd->type == LLMC_TOK_DEC_SEQ) {
    for (size_t k = 0; k < nd->n_kids; k++)
      if (decode_step(c, &nd->kids[k], l, spare) < 0) return -1;
    return 0;
  }
  llmc_tok_buf *o = &c->tmp;
  spare->n = 0;
  switch (nd->type) {
  case LLMC_TOK_DEC_REPLACE:
    for (size_t i = 0; i < l->n; i++) {
      o->n = 0;
      if (l->p[i].n) {
        if (replace_all(c, &nd->pat, l->p[i].s, l->p[i].n, nd->str, nd->str_len, o) < 0) return -1;
      }
      const char *r = arena_dup(c, o->p, o->n);
      if (!r || slist_push(spare, r, o->n) < 0) return -1;
    }
    break;
  case LLMC_TOK_DEC_BYTEFALLBACK: {
    llmc_tok_buf bytes = {0};
    int rc = 0;
    for (size_t i = 0; i < l->n && rc == 0; i++) {
      int bt = byte_token(&l->p[i]);
      if (bt >= 0) {
        unsigned char ch = (unsigned char)bt;
        rc = llmc_tok_buf_put(&bytes, &ch, 1);
      } else {
        rc = flush_bytes(c, &bytes, spare);
        if (rc == 0) rc = slist_push(spare, l->p[i].s, l->p[i].n);
      }
    }
    if (rc == 0) rc = flush_bytes(c, &bytes, spare);
    free(bytes.p);
    if (rc < 0) return -1;
    break;
  }
  case LLMC_TOK_DEC_FUSE: {
    o->n = 0;
    for (size_t i = 0; i < l->n; i++)
      if (llmc_tok_buf_put(o, l->p[i].s, l->p[i].n) < 0) return -1;
    const char *r = arena_dup(c, o->p, o->n);
    if (!r || slist_push(spare, r, o->n) < 0) return -1;
    break;
  }
  case LLMC_TOK_DEC_STRIP: {
    char ch[4];
    size_t chn = llmc_tok_utf8_encode(nd->cp, ch);
    for (size_t i = 0; i < l->n; i++) {
      const char *s = l->p[i].s;
      size_t a = 0, b = l->p[i].n;
      for (int k = 0; k < nd->left && b - a >= chn && memcmp(s + a, ch, chn) == 0; k++) a += chn;
      for (int k = 0; k < nd->right && b - a >= chn && memcmp(s + b - chn, ch, chn) == 0; k++) b -= chn;
      if (slist_push(spare, s + a, b - a) < 0) return -1;
    }
    break;
  }
  case LLMC_TOK_DEC_BYTELEVEL: {
    llmc_tok_buf raw = {0};
    int rc = 0;
    for (size_t i = 0; i < l->n && rc == 0; i++) {
      const char *s = l->p[i].s;
      size_t n = l->p[i].n, mark = raw.n;
      for (size_t j = 0; j < n && rc == 0;) {
        int byte = llmc_tok_cp_to_byte(llmc_tok_utf8_next(s, &j));
        if (byte < 0) { /* a character outside the map: the token's own bytes */
          raw.n = mark;
          rc = llmc_tok_buf_put(&raw, s, n);
          break;
        }
        unsigned char u = (unsigned char)byte;
        rc = llmc_tok_buf_put(&raw, &u, 1);
      }
    }
    o->n = 0;
    if (rc == 0) rc = llmc_tok_utf8_lossy(raw.p, raw.n, o);
    free(raw.p);
    if (rc < 0) return -1;
    const char *r = arena_dup(c, o->p, o->n);
    if (!r || slist_push(spare, r, o->n) < 0) return -1;
    break;
  }
  case LLMC_TOK_DEC_METASPACE:
    for (size_t i = 0; i < l->n; i++) {
      o->n = 0;
      const char *s = l->p[i].s;
      size_t n = l->p[i].n;
      int drop = i == 0 && nd->scheme != LLMC_TOK_PREPEND_NEVER;
      for (size_t j = 0; j < n;) {
        size_t cl = llmc_tok_utf8_len((unsigned char)s[j]);
        if (cl == nd->str_len && memcmp(s + j, nd->str, cl) == 0) {
          if (!drop && llmc_tok_buf_put(o, " ", 1) < 0) return -1;
        } else if (llmc_tok_buf_put(o, s + j, cl) < 0) {
          return -1;
        }
        j += cl;
      }
      const char *r = arena_dup(c, o->p, o->n);
      if (!r || slist_push(spare, r, o->n) < 0) return -1;
    }
    break;
  default:
    return llmc_err("tokenizer: bad decoder node");
  }
  slist t = *l;
  *l = *spare;
  *spare = t;
  return 0;
}

int llmc_tok_decode(const llmc_tok *tok, const int32_t *ids, size_t n, int skip_special_tokens,
                    char **text, size_t *len) {
  *text = NULL;
  *len = 0;
  if (!tok) return llmc_err("llmc_tok_decode: NULL tokenizer");
  if (!ids && n) return llmc_err("llmc_tok_decode: NULL ids");
  ectx c;
  slist l = {0}, spare = {0};
  llmc_tok_buf out = {0};
  int rc = -1;
  if (ectx_init(&c, tok) < 0) goto done;
  for (size_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (id < 0 || (size_t)id >= tok->id_limit) {
      llmc_err("%s: decode: id %d at position %zu is out of range [0, %zu)", tok->name, (int)id, i,
               tok->id_limit);
      goto done;
    }
    if (tok->id_len[id] == UINT32_MAX) continue;
    if (skip_special_tokens && (tok->id_flags[id] & 2)) continue;
    if (slist_push(&l, tok->pool.p + tok->id_off[id], tok->id_len[id]) < 0) goto done;
  }
  if (tok->decoder) {
    if (decode_step(&c, tok->decoder, &l, &spare) < 0) goto done;
    for (size_t i = 0; i < l.n; i++)
      if (llmc_tok_buf_put(&out, l.p[i].s, l.p[i].n) < 0) goto done;
  } else {
    for (size_t i = 0; i < l.n; i++) /* Rust joins with spaces when there is no decoder */
      if ((i && llmc_tok_buf_put(&out, " ", 1) < 0) || llmc_tok_buf_put(&out, l.p[i].s, l.p[i].n) < 0)
        goto done;
  }
  if (llmc_tok_buf_put(&out, "", 1) < 0) goto done;
  *text = out.p;
  *len = out.n - 1;
  out.p = NULL;
  rc = 0;
done:
  free(out.p);
  free(l.p);
  free(spare.p);
  ectx_free(&c);
  return rc;
}

/* ======================================================================
** Lookups
** ====================================================================== */

int32_t llmc_tok_token_to_id(const llmc_tok *tok, const char *s, size_t n) {
  if (!tok || (!s && n)) return -1;
  uint64_t h = llmc_tok_hash(s, n);
  const llmc_tok_sslot *sl = llmc_tok_smap_get(&tok->added_map, tok->pool.p, s, n, h);
  if (!sl) sl = llmc_tok_smap_get(&tok->vocab, tok->pool.p, s, n, h);
  return sl ? sl->val : -1;
}

const char *llmc_tok_id_to_token(const llmc_tok *tok, int32_t id, size_t *len) {
  if (!tok || id < 0 || (size_t)id >= tok->id_limit || tok->id_len[id] == UINT32_MAX) return NULL;
  if (len) *len = tok->id_len[id];
  return tok->pool.p + tok->id_off[id];
}

size_t llmc_tok_vocab_size(const llmc_tok *tok) { return tok ? tok->vocab_size : 0; }
size_t llmc_tok_id_limit(const llmc_tok *tok) { return tok ? tok->id_limit : 0; }
size_t llmc_tok_n_added(const llmc_tok *tok) { return tok ? tok->n_added : 0; }

int llmc_tok_added_token(const llmc_tok *tok, size_t i, const char **content, size_t *len,
                         int32_t *id, int *special) {
  if (!tok || i >= tok->n_added)
    return llmc_err("llmc_tok_added_token: index %zu out of range (%zu added tokens)", i,
                    tok ? tok->n_added : 0);
  const llmc_tok_added *a = &tok->added[i];
  if (content) *content = tok->pool.p + a->off;
  if (len) *len = a->len;
  if (id) *id = a->id;
  if (special) *special = a->special;
  return 0;
}

int llmc_tok_is_special(const llmc_tok *tok, int32_t id) {
  return tok && id >= 0 && (size_t)id < tok->id_limit && (tok->id_flags[id] & 2) != 0;
}

/* ======================================================================
** Loading
** ====================================================================== */

static void node_free(llmc_tok_node *nd) {
  if (!nd) return;
  for (size_t k = 0; k < nd->n_kids; k++) node_free(&nd->kids[k]);
  free(nd->kids);
  free(nd->pat.lit);
  pcre2_code_free(nd->pat.re);
  free(nd->str);
}

void llmc_tok_free(llmc_tok *t) {
  if (!t) return;
  free(t->name);
  free(t->pool.p);
  free(t->id_off);
  free(t->id_len);
  free(t->id_flags);
  free(t->cp_ids);
  llmc_tok_smap_free(&t->vocab);
  llmc_tok_smap_free(&t->added_map);
  llmc_tok_mmap_free(&t->merges);
  free(t->cont_prefix);
  free(t->eow_suffix);
  free(t->unk_token);
  free(t->added);
  free(t->trie_raw.nodes);
  free(t->trie_norm.nodes);
  pcre2_code_free(t->word_re);
  if (t->normalizer) { node_free(t->normalizer); free(t->normalizer); }
  if (t->pre_tokenizer) { node_free(t->pre_tokenizer); free(t->pre_tokenizer); }
  if (t->decoder) { node_free(t->decoder); free(t->decoder); }
  free(t->post.pre);
  free(t->post.post);
  free(t);
}

/* error naming the file and the JSON field */
static int ferr(const llmc_tok *t, const char *path, const char *fmt, ...) LLMC_PRINTF(3, 4);
static int ferr(const llmc_tok *t, const char *path, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return llmc_err("%s: field '%s': %s", t->name, path, msg);
}

static const char *jtype(const json_t *j) {
  switch (json_typeof(j)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a number";
  case JSON_TRUE: case JSON_FALSE: return "a boolean";
  default: return "null";
  }
}

/* String field: 1 found, 0 absent or null (when allowed), -1 error. */
static int get_str(const llmc_tok *t, const json_t *o, const char *key, const char *path, int required,
                   const char **s, size_t *n) {
  const json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) {
    if (required) return ferr(t, path, "missing field '%s'", key);
    return 0;
  }
  if (!json_is_string(v)) return ferr(t, path, "'%s' must be a string, not %s", key, jtype(v));
  *s = json_string_value(v);
  *n = json_string_length(v);
  return 1;
}

/* Boolean field with a default (absent or null). */
static int get_bool(const llmc_tok *t, const json_t *o, const char *key, const char *path, int def,
                    int *out) {
  const json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) { *out = def; return 0; }
  if (!json_is_boolean(v)) return ferr(t, path, "'%s' must be a boolean, not %s", key, jtype(v));
  *out = json_is_true(v);
  return 0;
}

static int get_uint(const llmc_tok *t, const json_t *o, const char *key, const char *path, int def,
                    int max, int *out) {
  const json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) { *out = def; return 0; }
  if (!json_is_integer(v)) return ferr(t, path, "'%s' must be an integer, not %s", key, jtype(v));
  json_int_t x = json_integer_value(v);
  if (x < 0 || x > max) return ferr(t, path, "'%s' = %lld is out of range [0, %d]", key, (long long)x, max);
  *out = (int)x;
  return 0;
}

static char *xstrndup(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (!p) { llmc_err("tokenizer: out of memory"); return NULL; }
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

/* the one character of a string field (Metaspace replacement, Strip content) */
static int one_char(const llmc_tok *t, const char *path, const char *key, const char *s, size_t n,
                    uint32_t *cp) {
  if (n == 0 || llmc_tok_utf8_valid_prefix(s, n) != n || llmc_tok_utf8_len((unsigned char)s[0]) != n)
    return ferr(t, path, "'%s' must be exactly one character", key);
  size_t i = 0;
  *cp = llmc_tok_utf8_next(s, &i);
  return 0;
}

/* Rewrite a regex written for Oniguruma (what the Rust library uses) for
** PCRE2: `\s` / `\S` become Unicode White_Space (PCRE2's UCP \s also matches
** U+180E, Oniguruma's does not), inside and outside classes. */
static char *onig_to_pcre2(const char *p, size_t n, size_t *on) {
  llmc_tok_buf b = {0};
  int ok = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '\\' && i + 1 < n) {
      char e = p[i + 1];
      if (e == 's') ok = llmc_tok_buf_put(&b, "\\p{White_Space}", 15);
      else if (e == 'S') ok = llmc_tok_buf_put(&b, "\\P{White_Space}", 15);
      else if (e == 'Q') { /* quoted literal: copy through \E untouched */
        const char *end = memmem(p + i, n - i, "\\E", 2);
        size_t stop = end ? (size_t)(end - p) + 2 : n;
        ok = llmc_tok_buf_put(&b, p + i, stop - i);
        i = stop - 1;
        if (ok < 0) break;
        continue;
      } else ok = llmc_tok_buf_put(&b, p + i, 2);
      i++;
    } else {
      ok = llmc_tok_buf_put(&b, p + i, 1);
    }
    if (ok < 0) break;
  }
  if (ok < 0 || llmc_tok_buf_put(&b, "", 1) < 0) { free(b.p); return NULL; }
  *on = b.n - 1;
  return b.p;
}

static int compile_re(const llmc_tok *t, const char *path, const char *pat, size_t n, uint32_t extra,
                      pcre2_code **out) {
  size_t pn = n;
  char *p = onig_to_pcre2(pat, n, &pn);
  if (!p) return -1;
  int ec;
  PCRE2_SIZE eo;
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)p, pn, PCRE2_UTF | PCRE2_UCP | extra, &ec, &eo, NULL);
  free(p);
  if (!re) {
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(ec, msg, sizeof msg);
    return ferr(t, path, "bad regex '%.*s': %s (at offset %zu)", (int)(n > 200 ? 200 : n), pat,
                (const char *)msg, (size_t)eo);
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter when unavailable */
  *out = re;
  return 0;
}

/* {"String": s} or {"Regex": r} */
static int parse_pattern(const llmc_tok *t, const json_t *o, const char *path, llmc_tok_pattern *p) {
  const json_t *v = json_object_get(o, "pattern");
  if (!v || !json_is_object(v)) return ferr(t, path, "'pattern' must be an object {\"String\"|\"Regex\": ...}");
  const json_t *s = json_object_get(v, "String"), *r = json_object_get(v, "Regex");
  if (s && json_is_string(s)) {
    size_t n = json_string_length(s);
    if (n == 0) return ferr(t, path, "empty String pattern");
    /* a String pattern is the escaped string as a regex in Rust: plain substring search */
    p->lit = xstrndup(json_string_value(s), n);
    if (!p->lit) return -1;
    p->lit_len = n;
    return 0;
  }
  if (r && json_is_string(r))
    return compile_re(t, path, json_string_value(r), json_string_length(r), 0, &p->re);
  return ferr(t, path, "'pattern' must hold a string \"String\" or \"Regex\"");
}

static const char *node_type(const llmc_tok *t, const json_t *o, const char *path) {
  if (!json_is_object(o)) { ferr(t, path, "must be an object or null, not %s", jtype(o)); return NULL; }
  const json_t *ty = json_object_get(o, "type");
  if (!ty || !json_is_string(ty)) { ferr(t, path, "missing string field 'type'"); return NULL; }
  return json_string_value(ty);
}

static int parse_kids(llmc_tok *t, const json_t *o, const char *key, const char *path, llmc_tok_node *nd,
                      int (*parse)(llmc_tok *, const json_t *, const char *, llmc_tok_node *, int),
                      int depth) {
  const json_t *arr = json_object_get(o, key);
  if (!arr || !json_is_array(arr)) return ferr(t, path, "'%s' must be an array", key);
  size_t n = json_array_size(arr);
  nd->kids = calloc(n ? n : 1, sizeof *nd->kids);
  if (!nd->kids) return llmc_err("tokenizer: out of memory");
  for (size_t i = 0; i < n; i++) {
    char sub[256];
    snprintf(sub, sizeof sub, "%s.%s[%zu]", path, key, i);
    nd->n_kids = i + 1;
    if (parse(t, json_array_get(arr, i), sub, &nd->kids[i], depth + 1) < 0) return -1;
  }
  return 0;
}

#define MAX_DEPTH 16

static int parse_normalizer(llmc_tok *t, const json_t *o, const char *path, llmc_tok_node *nd, int depth) {
  if (depth > MAX_DEPTH) return ferr(t, path, "Sequence nesting too deep");
  const char *ty = node_type(t, o, path);
  if (!ty) return -1;
  const char *s = NULL;
  size_t n = 0;
  if (!strcmp(ty, "Sequence")) {
    nd->type = LLMC_TOK_NORM_SEQ;
    return parse_kids(t, o, "normalizers", path, nd, parse_normalizer, depth);
  }
  if (!strcmp(ty, "Prepend")) {
    nd->type = LLMC_TOK_NORM_PREPEND;
    if (get_str(t, o, "prepend", path, 1, &s, &n) < 0) return -1;
    nd->str = xstrndup(s, n);
    nd->str_len = n;
    return nd->str ? 0 : -1;
  }
  if (!strcmp(ty, "Replace")) {
    nd->type = LLMC_TOK_NORM_REPLACE;
    if (get_str(t, o, "content", path, 1, &s, &n) < 0) return -1;
    nd->str = xstrndup(s, n);
    nd->str_len = n;
    if (!nd->str) return -1;
    return parse_pattern(t, o, path, &nd->pat);
  }
  if (!strcmp(ty, "NFC")) { nd->type = LLMC_TOK_NORM_NFC; return 0; }
  if (!strcmp(ty, "NFD")) { nd->type = LLMC_TOK_NORM_NFD; return 0; }
  if (!strcmp(ty, "ByteLevel")) { nd->type = LLMC_TOK_NORM_BYTELEVEL; return 0; }
  if (!strcmp(ty, "Strip")) {
    nd->type = LLMC_TOK_NORM_STRIP;
    if (get_bool(t, o, "strip_left", path, 1, &nd->left) < 0) return -1;
    return get_bool(t, o, "strip_right", path, 1, &nd->right);
  }
  return ferr(t, path, "normalizer type '%s' is not supported (supported: Sequence, Prepend, "
                       "Replace, NFC, NFD, Strip, ByteLevel)", ty);
}

static int behavior_of(const llmc_tok *t, const json_t *o, const char *path, int def, int *out) {
  const char *s = NULL;
  size_t n = 0;
  int r = get_str(t, o, "behavior", path, 0, &s, &n);
  if (r < 0) return -1;
  if (r == 0) { *out = def; return 0; }
  static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
  for (int k = 0; k < 5; k++)
    if (!strcmp(s, names[k])) { *out = k + 1; return 0; }
  return ferr(t, path, "unknown behavior '%s'", s);
}

/* Pre-tokenizers defined by a character predicate in Rust, as one-character regexes. */
#define RE_WORD "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}"
static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_pretok(llmc_tok *t, const json_t *o, const char *path, llmc_tok_node *nd, int depth) {
  if (depth > MAX_DEPTH) return ferr(t, path, "Sequence nesting too deep");
  const char *ty = node_type(t, o, path);
  if (!ty) return -1;
  const char *s = NULL;
  size_t n = 0;
  if (!strcmp(ty, "Sequence")) {
    nd->type = LLMC_TOK_PT_SEQ;
    return parse_kids(t, o, "pretokenizers", path, nd, parse_pretok, depth);
  }
  if (!strcmp(ty, "Split")) {
    nd->type = LLMC_TOK_PT_SPLIT;
    if (behavior_of(t, o, path, 0, &nd->behavior) < 0) return -1;
    if (!nd->behavior) return ferr(t, path, "missing field 'behavior'");
    if (get_bool(t, o, "invert", path, 0, &nd->invert) < 0) return -1;
    return parse_pattern(t, o, path, &nd->pat);
  }
  if (!strcmp(ty, "Metaspace")) {
    nd->type = LLMC_TOK_PT_METASPACE;
    if (get_str(t, o, "replacement", path, 1, &s, &n) < 0) return -1;
    if (one_char(t, path, "replacement", s, n, &nd->cp) < 0) return -1;
    nd->str = xstrndup(s, n);
    nd->str_len = n;
    if (!nd->str) return -1;
    nd->scheme = LLMC_TOK_PREPEND_ALWAYS;
    int r = get_str(t, o, "prepend_scheme", path, 0, &s, &n);
    if (r < 0) return -1;
    if (r) {
      if (!strcmp(s, "always")) nd->scheme = LLMC_TOK_PREPEND_ALWAYS;
      else if (!strcmp(s, "first")) nd->scheme = LLMC_TOK_PREPEND_FIRST;
      else if (!strcmp(s, "never")) nd->scheme = LLMC_TOK_PREPEND_NEVER;
      else return ferr(t, path, "unknown prepend_scheme '%s' (always, first, never)", s);
    }
    int aps = 0;
    if (get_bool(t, o, "add_prefix_space", path, 1, &aps) < 0) return -1;
    if (!aps) {
      if (r && nd->scheme != LLMC_TOK_PREPEND_NEVER)
        return ferr(t, path, "add_prefix_space does not match declared prepend_scheme");
      nd->scheme = LLMC_TOK_PREPEND_NEVER;
    }
    return get_bool(t, o, "split", path, 1, &nd->split);
  }
  if (!strcmp(ty, "ByteLevel")) {
    nd->type = LLMC_TOK_PT_BYTELEVEL;
    int use_regex = 0;
    if (get_bool(t, o, "add_prefix_space", path, 1, &nd->add_prefix_space) < 0 ||
        get_bool(t, o, "use_regex", path, 1, &use_regex) < 0)
      return -1;
    if (use_regex) return compile_re(t, path, RE_GPT2, sizeof RE_GPT2 - 1, 0, &nd->pat.re);
    return 0;
  }
  const char *re = NULL;
  nd->type = LLMC_TOK_PT_SPLIT;
  if (!strcmp(ty, "Digits")) {
    int individual = 0;
    if (get_bool(t, o, "individual_digits", path, 0, &individual) < 0) return -1;
    re = "\\p{N}";
    nd->behavior = individual ? LLMC_TOK_SPLIT_ISOLATED : LLMC_TOK_SPLIT_CONTIGUOUS;
  } else if (!strcmp(ty, "WhitespaceSplit")) {
    re = "\\p{White_Space}";
    nd->behavior = LLMC_TOK_SPLIT_REMOVED;
  } else if (!strcmp(ty, "Whitespace")) {
    re = "[" RE_WORD "]+|[^" RE_WORD "\\p{White_Space}]+";
    nd->behavior = LLMC_TOK_SPLIT_REMOVED;
    nd->invert = 1;
  } else if (!strcmp(ty, "Punctuation")) {
    re = "[\\p{P}!-/:-@\\[-`{-~]";
    if (behavior_of(t, o, path, LLMC_TOK_SPLIT_ISOLATED, &nd->behavior) < 0) return -1;
  } else {
    return ferr(t, path, "pre_tokenizer type '%s' is not supported (supported: Sequence, Split, "
                         "Metaspace, ByteLevel, Digits, Whitespace, WhitespaceSplit, Punctuation)", ty);
  }
  return compile_re(t, path, re, strlen(re), 0, &nd->pat.re);
}

static int parse_decoder(llmc_tok *t, const json_t *o, const char *path, llmc_tok_node *nd, int depth) {
  if (depth > MAX_DEPTH) return ferr(t, path, "Sequence nesting too deep");
  const char *ty = node_type(t, o, path);
  if (!ty) return -1;
  const char *s = NULL;
  size_t n = 0;
  if (!strcmp(ty, "Sequence")) {
    nd->type = LLMC_TOK_DEC_SEQ;
    return parse_kids(t, o, "decoders", path, nd, parse_decoder, depth);
  }
  if (!strcmp(ty, "Replace")) {
    nd->type = LLMC_TOK_DEC_REPLACE;
    if (get_str(t, o, "content", path, 1, &s, &n) < 0) return -1;
    nd->str = xstrndup(s, n);
    nd->str_len = n;
    if (!nd->str) return -1;
    return parse_pattern(t, o, path, &nd->pat);
  }
  if (!strcmp(ty, "ByteFallback")) { nd->type = LLMC_TOK_DEC_BYTEFALLBACK; return 0; }
  if (!strcmp(ty, "Fuse")) { nd->type = LLMC_TOK_DEC_FUSE; return 0; }
  if (!strcmp(ty, "ByteLevel")) { nd->type = LLMC_TOK_DEC_BYTELEVEL; return 0; }
  if (!strcmp(ty, "Strip")) {
    nd->type = LLMC_TOK_DEC_STRIP;
    if (get_str(t, o, "content", path, 1, &s, &n) < 0) return -1;
    if (one_char(t, path, "content", s, n, &nd->cp) < 0) return -1;
    if (get_uint(t, o, "start", path, 0, 1 << 20, &nd->left) < 0) return -1;
    return get_uint(t, o, "stop", path, 0, 1 << 20, &nd->right);
  }
  if (!strcmp(ty, "Metaspace")) {
    /* same fields as the pre-tokenizer */
    if (parse_pretok(t, o, path, nd, depth) < 0) return -1;
    nd->type = LLMC_TOK_DEC_METASPACE;
    return 0;
  }
  return ferr(t, path, "decoder type '%s' is not supported (supported: Sequence, Replace, "
                       "ByteFallback, Fuse, Strip, ByteLevel, Metaspace)", ty);
}

static int check_id(const llmc_tok *t, const char *path, json_int_t id) {
  if (id < 0 || (size_t)id >= t->id_limit)
    return ferr(t, path, "token id %lld is out of range [0, %zu)", (long long)id, t->id_limit);
  return 0;
}

static int ids_push(int32_t **v, size_t *n, int32_t id) {
  int32_t *p = realloc(*v, (*n + 1) * sizeof *p);
  if (!p) return llmc_err("tokenizer: out of memory");
  p[(*n)++] = id;
  *v = p;
  return 0;
}

/* one post-processor into (pre, post) id lists; Sequence composes them */
static int parse_post(llmc_tok *t, const json_t *o, const char *path, llmc_tok_template *tp, int depth) {
  if (depth > MAX_DEPTH) return ferr(t, path, "Sequence nesting too deep");
  const char *ty = node_type(t, o, path);
  if (!ty) return -1;
  if (!strcmp(ty, "ByteLevel")) return 0;
  if (!strcmp(ty, "Sequence")) {
    const json_t *arr = json_object_get(o, "processors");
    if (!arr || !json_is_array(arr)) return ferr(t, path, "'processors' must be an array");
    for (size_t i = 0; i < json_array_size(arr); i++) {
      char sub[256];
      snprintf(sub, sizeof sub, "%s.processors[%zu]", path, i);
      llmc_tok_template one = {0};
      int rc = parse_post(t, json_array_get(arr, i), sub, &one, depth + 1);
      /* processors run in order: a later one wraps what the earlier produced */
      for (size_t k = 0; rc == 0 && k < tp->n_pre; k++) rc = ids_push(&one.pre, &one.n_pre, tp->pre[k]);
      for (size_t k = 0; rc == 0 && k < one.n_post; k++) rc = ids_push(&tp->post, &tp->n_post, one.post[k]);
      free(tp->pre);
      tp->pre = one.pre;
      tp->n_pre = one.n_pre;
      free(one.post);
      if (rc < 0) return -1;
    }
    return 0;
  }
  if (!strcmp(ty, "BertProcessing") || !strcmp(ty, "RobertaProcessing")) {
    static const char *keys[2] = {"cls", "sep"};
    for (int k = 0; k < 2; k++) {
      const json_t *v = json_object_get(o, keys[k]);
      const json_t *id = json_is_array(v) && json_array_size(v) == 2 ? json_array_get(v, 1) : NULL;
      if (!id || !json_is_integer(id)) return ferr(t, path, "'%s' must be [token, id]", keys[k]);
      if (check_id(t, path, json_integer_value(id)) < 0) return -1;
      int32_t x = (int32_t)json_integer_value(id);
      if (k == 0 ? ids_push(&tp->pre, &tp->n_pre, x) : ids_push(&tp->post, &tp->n_post, x)) return -1;
    }
    return 0;
  }
  if (!strcmp(ty, "TemplateProcessing")) {
    const json_t *single = json_object_get(o, "single");
    const json_t *specials = json_object_get(o, "special_tokens");
    if (!single || !json_is_array(single)) return ferr(t, path, "'single' must be an array");
    if (specials && !json_is_object(specials) && !json_is_null(specials))
      return ferr(t, path, "'special_tokens' must be an object");
    int seen_a = 0;
    for (size_t i = 0; i < json_array_size(single); i++) {
      char sub[256];
      snprintf(sub, sizeof sub, "%s.single[%zu]", path, i);
      const json_t *it = json_array_get(single, i);
      const json_t *sp = json_is_object(it) ? json_object_get(it, "SpecialToken") : NULL;
      const json_t *sq = json_is_object(it) ? json_object_get(it, "Sequence") : NULL;
      if (sq) {
        const json_t *id = json_is_object(sq) ? json_object_get(sq, "id") : NULL;
        if (!id || !json_is_string(id) || strcmp(json_string_value(id), "A") || seen_a)
          return ferr(t, sub, "a single-sequence template takes Sequence A once");
        seen_a = 1;
        continue;
      }
      const json_t *name = sp && json_is_object(sp) ? json_object_get(sp, "id") : NULL;
      if (!name || !json_is_string(name))
        return ferr(t, sub, "must be {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": {...}}");
      const json_t *def = specials && json_is_object(specials) ? json_object_get(specials, json_string_value(name)) : NULL;
      const json_t *ids = def && json_is_object(def) ? json_object_get(def, "ids") : NULL;
      if (!ids || !json_is_array(ids))
        return ferr(t, sub, "special token '%s' is not defined in special_tokens (with an 'ids' array)",
                    json_string_value(name));
      for (size_t k = 0; k < json_array_size(ids); k++) {
        const json_t *x = json_array_get(ids, k);
        if (!json_is_integer(x)) return ferr(t, sub, "special token ids must be integers");
        if (check_id(t, sub, json_integer_value(x)) < 0) return -1;
        int32_t v = (int32_t)json_integer_value(x);
        if ((seen_a ? ids_push(&tp->post, &tp->n_post, v) : ids_push(&tp->pre, &tp->n_pre, v)) < 0) return -1;
      }
    }
    if (!seen_a) return ferr(t, path, "the single template has no Sequence A");
    return 0;
  }
  return ferr(t, path, "post_processor type '%s' is not supported (supported: TemplateProcessing, "
                       "ByteLevel, BertProcessing, RobertaProcessing, Sequence)", ty);
}

static int pool_add(llmc_tok *t, const char *s, size_t n, uint32_t *off) {
  if (t->pool.n + n >= UINT32_MAX) return llmc_err("%s: token strings exceed 4 GiB", t->name);
  *off = (uint32_t)t->pool.n;
  return llmc_tok_buf_put(&t->pool, s, n);
}

/* merges entry i -> the two token strings */
static int merge_parts(const llmc_tok *t, const json_t *m, size_t i, const char **a, size_t *an,
                       const char **b, size_t *bn) {
  char path[64];
  snprintf(path, sizeof path, "model.merges[%zu]", i);
  if (json_is_string(m)) {
    const char *s = json_string_value(m);
    size_t n = json_string_length(m);
    const char *sp = memchr(s, ' ', n);
    if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp - s) - 1))
      return ferr(t, path, "'%.*s' must be two tokens separated by one space", (int)(n > 80 ? 80 : n), s);
    *a = s;
    *an = (size_t)(sp - s);
    *b = sp + 1;
    *bn = n - *an - 1;
    return 0;
  }
  if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
      json_is_string(json_array_get(m, 1))) {
    *a = json_string_value(json_array_get(m, 0));
    *an = json_string_length(json_array_get(m, 0));
    *b = json_string_value(json_array_get(m, 1));
    *bn = json_string_length(json_array_get(m, 1));
    return 0;
  }
  return ferr(t, path, "must be a string \"a b\" or a pair [\"a\", \"b\"], not %s", jtype(m));
}

static int32_t vocab_lookup(const llmc_tok *t, const char *s, size_t n) {
  const llmc_tok_sslot *sl = llmc_tok_smap_get(&t->vocab, t->pool.p, s, n, llmc_tok_hash(s, n));
  return sl ? sl->val : -1;
}

static int parse_model(llmc_tok *t, const json_t *root, const json_t *added) {
  const json_t *m = json_object_get(root, "model");
  if (!m || !json_is_object(m)) return ferr(t, "model", "missing or not an object");
  const char *s = NULL;
  size_t n = 0;
  int r = get_str(t, m, "type", "model", 0, &s, &n);
  if (r < 0) return -1;
  if (r && strcmp(s, "BPE"))
    return ferr(t, "model.type", "model type '%s' is not supported (only BPE)", s);
  const json_t *dr = json_object_get(m, "dropout");
  if (dr && !json_is_null(dr)) {
    if (!json_is_number(dr)) return ferr(t, "model.dropout", "must be a number or null");
    if (json_number_value(dr) != 0.0)
      return ferr(t, "model.dropout", "BPE dropout %g is not supported (encoding must be deterministic)",
                  json_number_value(dr));
  }
  if (get_bool(t, m, "fuse_unk", "model", 0, &t->fuse_unk) < 0 ||
      get_bool(t, m, "byte_fallback", "model", 0, &t->byte_fallback) < 0 ||
      get_bool(t, m, "ignore_merges", "model", 0, &t->ignore_merges) < 0)
    return -1;
  static const char *affix[2] = {"continuing_subword_prefix", "end_of_word_suffix"};
  for (int k = 0; k < 2; k++) {
    r = get_str(t, m, affix[k], "model", 0, &s, &n);
    if (r < 0) return -1;
    if (r && n) {
      if (n > MAX_AFFIX) return ferr(t, "model", "'%s' longer than %d bytes", affix[k], MAX_AFFIX);
      char *d = xstrndup(s, n);
      if (!d) return -1;
      if (k == 0) { t->cont_prefix = d; t->cont_prefix_len = n; }
      else { t->eow_suffix = d; t->eow_suffix_len = n; }
    }
  }
  r = get_str(t, m, "unk_token", "model", 0, &s, &n);
  if (r < 0) return -1;
  if (r) {
    if (!(t->unk_token = xstrndup(s, n))) return -1;
    t->unk_len = n;
  }

  /* vocab */
  const json_t *vocab = json_object_get(m, "vocab");
  if (!vocab || !json_is_object(vocab)) return ferr(t, "model.vocab", "missing or not an object");
  size_t nv = json_object_size(vocab), na = added ? json_array_size(added) : 0;
  if (nv > (1u << 26)) return ferr(t, "model.vocab", "%zu entries is too many", nv);
  /* ids must be dense enough for an id -> token table */
  size_t id_cap = 2 * (nv + na) + 1024;
  json_int_t max_id = -1;
  const char *key;
  size_t klen;
  json_t *val;
  json_object_keylen_foreach((json_t *)vocab, key, klen, val) {
    if (!json_is_integer(val))
      return ferr(t, "model.vocab", "id of token '%.*s' must be an integer, not %s", (int)(klen > 80 ? 80 : klen), key, jtype(val));
    json_int_t id = json_integer_value(val);
    if (id < 0 || (size_t)id >= id_cap)
      return ferr(t, "model.vocab", "id %lld of token '%.*s' is out of range [0, %zu) for %zu entries",
                  (long long)id, (int)(klen > 80 ? 80 : klen), key, id_cap, nv);
    if (llmc_tok_utf8_valid_prefix(key, klen) != klen)
      return ferr(t, "model.vocab", "token with id %lld is not valid UTF-8", (long long)id);
    if (id > max_id) max_id = id;
  }
  for (size_t i = 0; i < na; i++) {
    const json_t *a = json_array_get(added, i);
    const json_t *id = json_is_object(a) ? json_object_get(a, "id") : NULL;
    char path[64];
    snprintf(path, sizeof path, "added_tokens[%zu]", i);
    if (!id || !json_is_integer(id)) return ferr(t, path, "'id' must be an integer");
    json_int_t x = json_integer_value(id);
    if (x < 0 || (size_t)x >= id_cap)
      return ferr(t, path, "id %lld is out of range [0, %zu) for a vocabulary of %zu + %zu tokens",
                  (long long)x, id_cap, nv, na);
    if (x > max_id) max_id = x;
  }
  t->id_limit = (size_t)(max_id + 1);
  size_t L = t->id_limit ? t->id_limit : 1;
  t->id_off = malloc(L * sizeof *t->id_off);
  t->id_len = malloc(L * sizeof *t->id_len);
  t->id_flags = calloc(L, 1);
  if (!t->id_off || !t->id_len || !t->id_flags) return llmc_err("tokenizer: out of memory");
  for (size_t i = 0; i < L; i++) t->id_len[i] = UINT32_MAX;
  if (llmc_tok_smap_init(&t->vocab, nv) < 0 || llmc_tok_smap_init(&t->added_map, na) < 0) return -1;
  json_object_keylen_foreach((json_t *)vocab, key, klen, val) {
    int32_t id = (int32_t)json_integer_value(val);
    if (t->id_len[id] != UINT32_MAX)
      return ferr(t, "model.vocab", "id %d is given to both '%.*s' and '%.*s'", (int)id,
                  (int)(t->id_len[id] > 80 ? 80 : t->id_len[id]), t->pool.p + t->id_off[id],
                  (int)(klen > 80 ? 80 : klen), key);
    uint32_t off = 0;
    if (pool_add(t, key, klen, &off) < 0) return -1;
    t->id_off[id] = off;
    t->id_len[id] = (uint32_t)klen;
    t->id_flags[id] = 4;
    if (llmc_tok_smap_put(&t->vocab, t->pool.p, off, (uint32_t)klen, llmc_tok_hash(key, klen), id) < 0)
      return -1;
  }
  t->vocab_size = nv;
  for (int b = 0; b < 256; b++) {
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", b);
    t->byte_ids[b] = vocab_lookup(t, name, 6);
  }
  if (!(t->cp_ids = malloc(0x10000 * sizeof *t->cp_ids))) return llmc_err("tokenizer: out of memory");
  for (size_t i = 0; i < 0x10000; i++) t->cp_ids[i] = -1;
  json_object_keylen_foreach((json_t *)vocab, key, klen, val) {
    size_t j = 0;
    if (klen && klen < 4 && llmc_tok_utf8_len((unsigned char)key[0]) == klen)
      t->cp_ids[llmc_tok_utf8_next(key, &j)] = (int32_t)json_integer_value(val);
  }
  t->unk_id = t->unk_token ? vocab_lookup(t, t->unk_token, t->unk_len) : -1;

  /* merges */
  const json_t *merges = json_object_get(m, "merges");
  if (merges && !json_is_array(merges)) return ferr(t, "model.merges", "must be an array");
  size_t nm = merges ? json_array_size(merges) : 0;
  if (llmc_tok_mmap_init(&t->merges, nm) < 0) return -1;
  char buf[2 * 1024];
  uint32_t rank = 0;
  for (size_t i = 0; i < nm; i++) {
    const char *a = NULL, *b = NULL;
    size_t an = 0, bn = 0;
    const json_t *mj = json_array_get(merges, i);
    if (merge_parts(t, mj, i, &a, &an, &b, &bn) < 0) return -1;
    if (json_is_string(mj) && an >= 8 && !memcmp(a, "#version", 8)) continue; /* header line */
    char path[64];
    snprintf(path, sizeof path, "model.merges[%zu]", i);
    int32_t ia = vocab_lookup(t, a, an), ib = vocab_lookup(t, b, bn);
    if (ia < 0 || ib < 0) {
      const char *u = ia < 0 ? a : b;
      size_t un = ia < 0 ? an : bn;
      return ferr(t, path, "token '%.*s' is not in the vocab", (int)(un > 80 ? 80 : un), u);
    }
    size_t pl = t->cont_prefix_len;
    if (pl && (bn < pl || memcmp(b, t->cont_prefix, pl)))
      return ferr(t, path, "second token does not start with continuing_subword_prefix");
    if (an + bn - pl > sizeof buf)
      return ferr(t, path, "merged token longer than %zu bytes", sizeof buf);
    memcpy(buf, a, an);
    memcpy(buf + an, b + pl, bn - pl);
    int32_t id = vocab_lookup(t, buf, an + bn - pl);
    if (id < 0)
      return ferr(t, path, "merged token '%.*s' is not in the vocab", (int)(an + bn - pl > 80 ? 80 : an + bn - pl), buf);
    if (llmc_tok_mmap_put(&t->merges, ia, ib, rank++, id) < 0) return -1;
  }
  return 0;
}

static int parse_added(llmc_tok *t, const json_t *added) {
  size_t na = added ? json_array_size(added) : 0;
  t->added = calloc(na ? na : 1, sizeof *t->added);
  if (!t->added) return llmc_err("tokenizer: out of memory");
  for (size_t i = 0; i < na; i++) {
    const json_t *a = json_array_get(added, i);
    char path[64];
    snprintf(path, sizeof path, "added_tokens[%zu]", i);
    if (!json_is_object(a)) return ferr(t, path, "must be an object, not %s", jtype(a));
    const char *s = NULL;
    size_t n = 0;
    if (get_str(t, a, "content", path, 1, &s, &n) < 0) return -1;
    if (llmc_tok_utf8_valid_prefix(s, n) != n) return ferr(t, path, "content is not valid UTF-8");
    if (n == 0) continue; /* Rust ignores empty added tokens */
    int32_t id = (int32_t)json_integer_value(json_object_get(a, "id")); /* range-checked in parse_model */
    int sp = 0, sw = 0, ls = 0, rs = 0, nz = 0;
    if (get_bool(t, a, "special", path, 0, &sp) < 0 || get_bool(t, a, "single_word", path, 0, &sw) < 0 ||
        get_bool(t, a, "lstrip", path, 0, &ls) < 0 || get_bool(t, a, "rstrip", path, 0, &rs) < 0 ||
        get_bool(t, a, "normalized", path, !sp, &nz) < 0)
      return -1;
    uint64_t h = llmc_tok_hash(s, n);
    if (llmc_tok_smap_get(&t->added_map, t->pool.p, s, n, h))
      return ferr(t, path, "content '%.*s' is listed twice", (int)(n > 80 ? 80 : n), s);
    /* a token of the model vocab keeps its vocab id (as in Rust) */
    int32_t vid = vocab_lookup(t, s, n);
    if (vid >= 0) id = vid;
    else if (t->id_len[id] != UINT32_MAX)
      return ferr(t, path, "id %d of '%.*s' is already the token '%.*s'", (int)id, (int)(n > 80 ? 80 : n), s,
                  (int)(t->id_len[id] > 80 ? 80 : t->id_len[id]), t->pool.p + t->id_off[id]);
    uint32_t off = 0;
    if (pool_add(t, s, n, &off) < 0) return -1;
    if (vid < 0) {
      t->id_off[id] = off;
      t->id_len[id] = (uint32_t)n;
      t->vocab_size++;
    }
    t->id_flags[id] |= (uint8_t)(1 | (sp ? 2 : 0));
    if (llmc_tok_smap_put(&t->added_map, t->pool.p, off, (uint32_t)n, h, id) < 0) return -1;
    llmc_tok_added *d = &t->added[t->n_added++];
    *d = (llmc_tok_added){off, (uint32_t)n, id, (uint8_t)sp, (uint8_t)sw, (uint8_t)ls, (uint8_t)rs, (uint8_t)nz, off,
                          (uint32_t)n};
  }
  return 0;
}

/* tries of added tokens: raw ones, and normalized ones matched in normalized form */
static int build_tries(llmc_tok *t) {
  for (int k = 0; k < 256; k++) t->trie_raw.root[k] = t->trie_norm.root[k] = -1;
  t->trie_raw.empty = t->trie_norm.empty = 1;
  int need_word = 0;
  ectx c;
  if (ectx_init(&c, t) < 0) return -1;
  int rc = -1;
  for (size_t i = 0; i < t->n_added; i++) {
    llmc_tok_added *a = &t->added[i];
    need_word |= a->single_word;
    if (a->normalized && t->normalizer) {
      const char *s = t->pool.p + a->off;
      size_t n = a->len;
      if (normalize(&c, t->normalizer, &s, &n) < 0) goto done;
      uint32_t off = 0;
      if (n == 0) continue;
      if (pool_add(t, s, n, &off) < 0) goto done;
      a->match_off = off;
      a->match_len = (uint32_t)n;
    }
    llmc_tok_trie *tr = a->normalized ? &t->trie_norm : &t->trie_raw;
    if (trie_add(tr, t->pool.p + a->match_off, a->match_len, (int32_t)i) < 0) goto done;
  }
  if (need_word) {
    static const char re[] = "[" RE_WORD "]";
    if (compile_re(t, "added_tokens", re, sizeof re - 1, 0, &t->word_re) < 0) goto done;
  }
  rc = 0;
done:
  ectx_free(&c);
  return rc;
}

llmc_tok *llmc_tok_load_mem(const char *json, size_t len, const char *name) {
  llmc_tok *t = calloc(1, sizeof *t);
  if (!t) { llmc_err("tokenizer: out of memory"); return NULL; }
  t->name = xstrndup(name ? name : "<memory>", strlen(name ? name : "<memory>"));
  if (!t->name) { free(t); return NULL; }
  json_error_t je;
  json_t *root = json_loadb(json, len, JSON_ALLOW_NUL, &je);
  if (!root) {
    llmc_err("%s: invalid JSON at line %d column %d: %s", t->name, je.line, je.column, je.text);
    llmc_tok_free(t);
    return NULL;
  }
  int rc = -1;
  if (!json_is_object(root)) { llmc_err("%s: top level must be a JSON object", t->name); goto done; }
  const json_t *ver = json_object_get(root, "version");
  if (ver && (!json_is_string(ver) || strcmp(json_string_value(ver), "1.0"))) {
    ferr(t, "version", "unknown tokenizer version (expected \"1.0\")");
    goto done;
  }
  const json_t *added = json_object_get(root, "added_tokens");
  if (added && json_is_null(added)) added = NULL;
  if (added && !json_is_array(added)) { ferr(t, "added_tokens", "must be an array"); goto done; }
  if (parse_model(t, root, added) < 0) goto done;
  const json_t *j;
  if ((j = json_object_get(root, "normalizer")) && !json_is_null(j)) {
    if (!(t->normalizer = calloc(1, sizeof *t->normalizer))) { llmc_err("tokenizer: out of memory"); goto done; }
    if (parse_normalizer(t, j, "normalizer", t->normalizer, 0) < 0) goto done;
  }
  if ((j = json_object_get(root, "pre_tokenizer")) && !json_is_null(j)) {
    if (!(t->pre_tokenizer = calloc(1, sizeof *t->pre_tokenizer))) { llmc_err("tokenizer: out of memory"); goto done; }
    if (parse_pretok(t, j, "pre_tokenizer", t->pre_tokenizer, 0) < 0) goto done;
  }
  if ((j = json_object_get(root, "decoder")) && !json_is_null(j)) {
    if (!(t->decoder = calloc(1, sizeof *t->decoder))) { llmc_err("tokenizer: out of memory"); goto done; }
    if (parse_decoder(t, j, "decoder", t->decoder, 0) < 0) goto done;
  }
  if (parse_added(t, added) < 0) goto done;
  if ((j = json_object_get(root, "post_processor")) && !json_is_null(j)) {
    if (parse_post(t, j, "post_processor", &t->post, 0) < 0) goto done;
    t->post.active = 1;
  }
  if (build_tries(t) < 0) goto done;
  rc = 0;
done:
  json_decref(root);
  if (rc < 0) {
    llmc_tok_free(t);
    return NULL;
  }
  return t;
}

llmc_tok *llmc_tok_load(const char *path) {
  if (!path) { llmc_err("llmc_tok_load: NULL path"); return NULL; }
  FILE *f = fopen(path, "rb");
  if (!f) { llmc_err("%s: %s", path, strerror(errno)); return NULL; }
  llmc_tok_buf b = {0};
  char chunk[1 << 16];
  size_t k;
  while ((k = fread(chunk, 1, sizeof chunk, f)) > 0)
    if (llmc_tok_buf_put(&b, chunk, k) < 0) { fclose(f); free(b.p); return NULL; }
  int err = ferror(f);
  fclose(f);
  if (err) { free(b.p); llmc_err("%s: read error", path); return NULL; }
  llmc_tok *t = llmc_tok_load_mem(b.p ? b.p : "", b.n, path);
  free(b.p);
  return t;
}
