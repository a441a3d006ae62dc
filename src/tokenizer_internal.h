/*
** tokenizer_internal.h — shared by the tokenizer_*.c files, not part of the
** public API (see tokenizer.h).  Layout of a loaded tokenizer, the hash maps,
** the Unicode helpers and the BPE model.
*/
#ifndef LLMC_TOKENIZER_INTERNAL_H
#define LLMC_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* ---- growable byte buffer ------------------------------------------------ */
typedef struct {
  char *p;
  size_t n, cap;
} llmc_tok_buf;

int llmc_tok_buf_reserve(llmc_tok_buf *b, size_t extra);       /* -1 + llmc_err on OOM */
int llmc_tok_buf_put(llmc_tok_buf *b, const void *s, size_t n);

/* growable int32 vector */
typedef struct {
  int32_t *p;
  size_t n, cap;
} llmc_tok_ivec;

int llmc_tok_ivec_push(llmc_tok_ivec *v, int32_t x);

/* ---- Unicode -------------------------------------------------------------- */
typedef struct { uint32_t lo, hi; uint8_t ccc; } llmc_tok_ccc_range;
typedef struct { uint32_t cp; uint16_t off; uint8_t n; } llmc_tok_decomp;
typedef struct { uint32_t a, b, c; } llmc_tok_comp;
typedef struct { uint32_t lo, hi; } llmc_tok_cp_range;

extern const char llmc_tok_unicode_version[];
extern const llmc_tok_ccc_range llmc_tok_ccc_ranges[];
extern const size_t llmc_tok_n_ccc_ranges;
extern const uint32_t llmc_tok_decomp_pool[];
extern const llmc_tok_decomp llmc_tok_decomps[];
extern const size_t llmc_tok_n_decomps;
extern const llmc_tok_comp llmc_tok_comps[];
extern const size_t llmc_tok_n_comps;
extern const llmc_tok_cp_range llmc_tok_nfc_unstable[];
extern const size_t llmc_tok_n_nfc_unstable;

/* Length of the longest prefix of s that is strict UTF-8 (no overlongs,
** surrogates or code points above U+10FFFF); == n when all of s is valid. */
size_t llmc_tok_utf8_valid_prefix(const char *s, size_t n);
/* Decode the code point at s[*i] (s must be valid UTF-8) and advance *i. */
uint32_t llmc_tok_utf8_next(const char *s, size_t *i);
/* Bytes of the UTF-8 encoding of the character starting with byte c. */
static inline size_t llmc_tok_utf8_len(unsigned char c) {
  return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}
/* Encode cp into out (at least 4 bytes); returns the byte count. */
size_t llmc_tok_utf8_encode(uint32_t cp, char *out);
int llmc_tok_buf_put_cp(llmc_tok_buf *b, uint32_t cp);
/* Rust String::from_utf8_lossy: each maximal invalid subsequence -> U+FFFD. */
int llmc_tok_utf8_lossy(const char *s, size_t n, llmc_tok_buf *out);
/* Unicode White_Space (= Rust char::is_whitespace = Oniguruma \s). */
int llmc_tok_is_white_space(uint32_t cp);
/* Canonical normalization of valid UTF-8: NFC (compose=1) or NFD (0). */
int llmc_tok_normalize(const char *s, size_t n, int compose, llmc_tok_buf *out);

/* GPT-2 byte <-> printable character map of the ByteLevel components. */
static inline uint32_t llmc_tok_byte_to_cp(unsigned b) {
  if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
  if (b <= 0x20) return 256 + b;
  if (b <= 0xA0) return 256 + 33 + (b - 0x7F);
  return 256 + 67; /* 0xAD */
}
/* the byte of a mapped character, or -1 when cp is not in the map */
static inline int llmc_tok_cp_to_byte(uint32_t cp) {
  if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
    return (int)cp;
  if (cp >= 256 && cp < 256 + 33) return (int)(cp - 256);
  if (cp >= 256 + 33 && cp < 256 + 67) return (int)(0x7F + cp - 256 - 33);
  if (cp == 256 + 67) return 0xAD;
  return -1;
}

/* ---- hashing ---------------------------------------------------------------- */
uint64_t llmc_tok_hash(const char *s, size_t n);

/* String -> int32 map whose keys live in an external byte pool (offsets).
** Open addressing, linear probing; len == UINT32_MAX marks an empty slot. */
typedef struct {
  uint32_t off, len;
  int32_t val;
  uint32_t h32;
} llmc_tok_sslot;
typedef struct {
  llmc_tok_sslot *slots;
  size_t mask, count;
} llmc_tok_smap;

int llmc_tok_smap_init(llmc_tok_smap *m, size_t expected);
void llmc_tok_smap_free(llmc_tok_smap *m);
/* the slot holding key s, or NULL */
const llmc_tok_sslot *llmc_tok_smap_get(const llmc_tok_smap *m, const char *pool,
                                        const char *s, size_t n, uint64_t h);
/* insert (pool[off..off+len) -> val); an existing key gets the new value.
** Grows as needed (-1 on OOM). */
int llmc_tok_smap_put(llmc_tok_smap *m, const char *pool, uint32_t off, uint32_t len,
                      uint64_t h, int32_t val);

/* (left id, right id) -> (rank, merged id) */
typedef struct {
  uint64_t key; /* UINT64_MAX = empty */
  uint32_t rank;
  int32_t id;
} llmc_tok_mslot;
typedef struct {
  llmc_tok_mslot *slots;
  size_t mask, count;
} llmc_tok_mmap;

/* ---- pipeline components ------------------------------------------------------ */
enum {
  LLMC_TOK_NORM_SEQ = 1, LLMC_TOK_NORM_PREPEND, LLMC_TOK_NORM_REPLACE, LLMC_TOK_NORM_NFC,
  LLMC_TOK_NORM_NFD, LLMC_TOK_NORM_STRIP, LLMC_TOK_NORM_BYTELEVEL
};
enum {
  LLMC_TOK_PT_SEQ = 1, LLMC_TOK_PT_SPLIT, LLMC_TOK_PT_METASPACE, LLMC_TOK_PT_BYTELEVEL
};
enum {
  LLMC_TOK_DEC_SEQ = 1, LLMC_TOK_DEC_REPLACE, LLMC_TOK_DEC_BYTEFALLBACK, LLMC_TOK_DEC_FUSE,
  LLMC_TOK_DEC_STRIP, LLMC_TOK_DEC_BYTELEVEL, LLMC_TOK_DEC_METASPACE
};
/* SplitDelimiterBehavior */
enum {
  LLMC_TOK_SPLIT_REMOVED = 1, LLMC_TOK_SPLIT_ISOLATED, LLMC_TOK_SPLIT_MERGED_PREV,
  LLMC_TOK_SPLIT_MERGED_NEXT, LLMC_TOK_SPLIT_CONTIGUOUS
};
enum { LLMC_TOK_PREPEND_ALWAYS = 1, LLMC_TOK_PREPEND_FIRST, LLMC_TOK_PREPEND_NEVER };

/* A pattern: a literal string or a compiled regex (PCRE2, UTF + UCP). */
typedef struct {
  char *lit;          /* literal bytes (NULL for a regex) */
  size_t lit_len;
  pcre2_code *re;     /* regex (NULL for a literal) */
} llmc_tok_pattern;

/* One node of a normalizer / pre-tokenizer / decoder tree. */
typedef struct llmc_tok_node {
  int type;
  struct llmc_tok_node *kids; /* *_SEQ */
  size_t n_kids;
  llmc_tok_pattern pat;       /* Replace, Split */
  char *str;                  /* Prepend text, Replace content, Metaspace replacement */
  size_t str_len;
  uint32_t cp;                /* Strip decoder content char, Metaspace replacement char */
  int behavior, invert;       /* Split */
  int scheme, split;          /* Metaspace */
  int add_prefix_space;       /* ByteLevel */
  int left, right;            /* Strip normalizer flags; Strip decoder start/stop counts */
} llmc_tok_node;

/* Added token. */
typedef struct {
  uint32_t off, len;   /* content, in tok->pool */
  int32_t id;
  uint8_t special, single_word, lstrip, rstrip, normalized;
  uint32_t match_off, match_len; /* what is matched: content, or its normalized form */
} llmc_tok_added;

/* Byte trie of added-token contents, leftmost-longest matching. */
typedef struct {
  int32_t child, sibling; /* node indices, -1 none */
  int32_t token;          /* index into tok->added, -1 none */
  uint8_t byte;
} llmc_tok_tnode;
typedef struct {
  llmc_tok_tnode *nodes;
  size_t n, cap;
  int32_t root[256];      /* first-level children */
  int empty;
} llmc_tok_trie;

/* Post-processing template (TemplateProcessing / Bert / Roberta). */
typedef struct {
  int32_t *pre, *post;   /* ids inserted before / after the sequence */
  size_t n_pre, n_post;
  int active;
} llmc_tok_template;

struct llmc_tok {
  char *name;                 /* file name, for messages */
  llmc_tok_buf pool;          /* every token string */
  /* id -> token (model vocab or added); len UINT32_MAX = no token */
  uint32_t *id_off, *id_len;
  uint8_t *id_flags;          /* bit 0: added, bit 1: special, bit 2: in model vocab */
  size_t id_limit;
  size_t vocab_size;          /* distinct tokens */
  llmc_tok_smap vocab;        /* model vocab */
  llmc_tok_smap added_map;    /* added token content -> id */
  llmc_tok_mmap merges;
  /* BPE options */
  char *cont_prefix, *eow_suffix;
  size_t cont_prefix_len, eow_suffix_len;
  int byte_fallback, fuse_unk, ignore_merges;
  char *unk_token;            /* NULL: none */
  size_t unk_len;
  int32_t unk_id;             /* -1 when unk_token is not in the vocab */
  int32_t byte_ids[256];      /* <0xNN> tokens, -1 absent */
  int32_t *cp_ids;            /* id of the one-character token of each BMP code point, -1 absent */
  /* added tokens */
  llmc_tok_added *added;
  size_t n_added;
  llmc_tok_trie trie_raw, trie_norm;
  pcre2_code *word_re;        /* \w for single_word tokens, when any */
  /* pipeline */
  llmc_tok_node *normalizer, *pre_tokenizer, *decoder;
  llmc_tok_template post;
};

/* ---- BPE (tokenizer_bpe.c) ------------------------------------------------------ */
int llmc_tok_mmap_init(llmc_tok_mmap *m, size_t expected);
void llmc_tok_mmap_free(llmc_tok_mmap *m);
int llmc_tok_mmap_put(llmc_tok_mmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id);
const llmc_tok_mslot *llmc_tok_mmap_get(const llmc_tok_mmap *m, int32_t a, int32_t b);

/* Per-call scratch of the BPE model (symbols, heap, word cache). */
typedef struct llmc_tok_bpe_scratch llmc_tok_bpe_scratch;
llmc_tok_bpe_scratch *llmc_tok_bpe_scratch_new(void);
void llmc_tok_bpe_scratch_free(llmc_tok_bpe_scratch *s);
/* Tokenize one pre-token (valid UTF-8, non-empty) and append its ids. */
int llmc_tok_bpe(const llmc_tok *tok, llmc_tok_bpe_scratch *sc, const char *w, size_t n,
                 llmc_tok_ivec *out);

#endif
