/*
** test_tokenizer.c — the tokenizer against independent references:
**   - fixtures/tokenizers/{mistral,llama3,qwen3}/cases.jsonl (ids with and
**     without special tokens, decode(ids_no_special) == decoded_raw), made by
**     the transformers.js port and cross-checked against the Rust library;
**   - the DIVERGENCES.md probe strings (the Hugging Face Rust column);
**   - small synthetic tokenizer.json files whose expected pieces are the
**     examples of the Rust library's own documentation/tests (Split
**     behaviours, Metaspace) or worked out by hand from its rules (BPE merge
**     order, byte fallback, unk fusing, added-token stripping, decoders);
**   - Unicode facts for NFC/NFD;
**   - malformed files and invalid UTF-8: a clear error, never a crash.
** llama3/qwen3 come from ${LLMC_FIXTURES:-$LLMC_ROOT/../shared/fixtures}
** and are skipped (printed) when absent.
*/
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "check.h"
#include "error.h"
#include "tokenizer.h"
#include "tokenizer_internal.h"

static char *path_join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = malloc(n);
  snprintf(p, n, "%s/%s", a, b);
  return p;
}

static int file_exists(const char *p) {
  FILE *f = fopen(p, "rb");
  if (f) fclose(f);
  return f != NULL;
}

static int ids_equal(const int32_t *got, size_t n, const json_t *want) {
  if (!json_is_array(want) || n != json_array_size(want)) return 0;
  for (size_t i = 0; i < n; i++)
    if (got[i] != json_integer_value(json_array_get(want, i))) return 0;
  return 1;
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
  fprintf(stderr, "  %s:", label);
  for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
  fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* ---- fixture cases ---------------------------------------------------------------- */

typedef struct {
  json_t **cases;
  size_t n;
} caseset;

static int load_cases(const char *path, caseset *cs) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char *line = NULL;
  size_t cap = 0;
  cs->cases = NULL;
  cs->n = 0;
  while (getline(&line, &cap, f) > 0) {
    json_error_t e;
    json_t *j = json_loads(line, JSON_ALLOW_NUL, &e);
    if (!j) continue;
    cs->cases = realloc(cs->cases, (cs->n + 1) * sizeof *cs->cases);
    cs->cases[cs->n++] = j;
  }
  free(line);
  fclose(f);
  return 0;
}

static void free_cases(caseset *cs) {
  for (size_t i = 0; i < cs->n; i++) json_decref(cs->cases[i]);
  free(cs->cases);
}

/* every case: ids, ids_no_special, decode(ids_no_special) == decoded_raw */
static void run_cases(const char *name, llmc_tok *tok, const char *dir, size_t expect_cases) {
  char *cp = path_join(dir, "cases.jsonl");
  caseset cs;
  int have = load_cases(cp, &cs) == 0;
  CHECK(have, "%s: cannot read %s", name, cp);
  if (!have) { free(cp); return; }
  CHECK_EQ_INT(cs.n, expect_cases);
  size_t pass = 0;
  for (size_t i = 0; i < cs.n; i++) {
    const json_t *c = cs.cases[i];
    const json_t *text = json_object_get(c, "text");
    const char *s = json_string_value(text);
    size_t len = json_string_length(text);
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    int ok = llmc_tok_encode(tok, s, len, 1, &a, &na) == 0 && llmc_tok_encode(tok, s, len, 0, &b, &nb) == 0;
    int ids_ok = ok && ids_equal(a, na, json_object_get(c, "ids"));
    int nos_ok = ok && ids_equal(b, nb, json_object_get(c, "ids_no_special"));
    char *d = NULL;
    size_t dn = 0;
    int dec_ok = ok && llmc_tok_decode(tok, b, nb, 0, &d, &dn) == 0;
    const json_t *raw = json_object_get(c, "decoded_raw");
    dec_ok = dec_ok && dn == json_string_length(raw) && memcmp(d, json_string_value(raw), dn) == 0;
    if (ids_ok && nos_ok && dec_ok) {
      pass++;
    } else {
      fprintf(stderr, "FAIL %s case %zu: %.60s%s\n", name, i, s, len > 60 ? "..." : "");
      if (!ok) fprintf(stderr, "  error: %s\n", llmc_errmsg());
      if (ok && !ids_ok) print_ids("ids got", a, na);
      if (ok && !nos_ok) print_ids("ids_no_special got", b, nb);
      if (ok && !dec_ok) fprintf(stderr, "  decoded_raw got: %.*s\n", (int)(dn > 200 ? 200 : dn), d ? d : "");
    }
    CHECK(ids_ok && nos_ok && dec_ok, "%s case %zu", name, i);
    free(a);
    free(b);
    free(d);
  }
  printf("%s: %zu/%zu cases pass\n", name, pass, cs.n);

  /* the same through encode_batch (threads, cache carried across documents) */
  const char **texts = malloc(cs.n * sizeof *texts);
  size_t *lens = malloc(cs.n * sizeof *lens);
  for (size_t i = 0; i < cs.n; i++) {
    texts[i] = json_string_value(json_object_get(cs.cases[i], "text"));
    lens[i] = json_string_length(json_object_get(cs.cases[i], "text"));
  }
  int32_t *ids;
  size_t *offs;
  for (int sp = 0; sp < 2; sp++) {
    int rc = llmc_tok_encode_batch(tok, texts, lens, cs.n, sp, &ids, &offs);
    CHECK(rc == 0, "%s: encode_batch: %s", name, llmc_errmsg());
    if (rc) continue;
    size_t bad = 0;
    for (size_t i = 0; i < cs.n; i++)
      bad += !ids_equal(ids + offs[i], offs[i + 1] - offs[i], json_object_get(cs.cases[i], sp ? "ids" : "ids_no_special"));
    CHECK(bad == 0, "%s: encode_batch(add_special=%d): %zu documents differ", name, sp, bad);
    free(ids);
    free(offs);
  }
  free(texts);
  free(lens);
  free_cases(&cs);
  free(cp);
}

/* DIVERGENCES.md probes: the Hugging Face Rust column */
static void run_probes(const char *name, llmc_tok *tok, const int32_t want[4][8], const size_t nwant[4]) {
  static const char *probes[4] = {"NEL\xC2\x85" "char", " \xC2\x85x", "\xEF\xBB\xBF" "BOM at start",
                                  "a \xEF\xBB\xBF" "b"};
  for (int k = 0; k < 4; k++) {
    int32_t *ids;
    size_t n;
    int rc = llmc_tok_encode(tok, probes[k], strlen(probes[k]), 0, &ids, &n);
    int ok = rc == 0 && n == nwant[k] && memcmp(ids, want[k], n * sizeof *ids) == 0;
    CHECK(ok, "%s probe %d", name, k);
    if (!ok && rc == 0) print_ids("got", ids, n);
    if (rc == 0) free(ids);
  }
}

/* ---- synthetic tokenizers ---------------------------------------------------------- */

static llmc_tok *mem_tok(const char *json) {
  llmc_tok *t = llmc_tok_load_mem(json, strlen(json), "synthetic.json");
  CHECK(t != NULL, "synthetic tokenizer did not load: %s", llmc_errmsg());
  return t;
}

/* encode text and compare with the ids of the listed token strings */
static void expect_pieces(llmc_tok *t, const char *label, const char *text, int add_special,
                          const char *const *pieces, size_t np) {
  int32_t *ids;
  size_t n;
  if (llmc_tok_encode(t, text, strlen(text), add_special, &ids, &n) < 0) {
    CHECK(0, "%s: encode failed: %s", label, llmc_errmsg());
    return;
  }
  int ok = n == np;
  for (size_t i = 0; ok && i < n; i++) ok = ids[i] == llmc_tok_token_to_id(t, pieces[i], strlen(pieces[i]));
  CHECK(ok, "%s: pieces differ", label);
  if (!ok) {
    fprintf(stderr, "  got:");
    for (size_t i = 0; i < n; i++) {
      size_t L = 0;
      const char *s = llmc_tok_id_to_token(t, ids[i], &L);
      fprintf(stderr, " [%.*s]", (int)L, s ? s : "?");
    }
    fprintf(stderr, "\n");
  }
  free(ids);
}

static void expect_ids(llmc_tok *t, const char *label, const char *text, int add_special,
                       const int32_t *want, size_t nw) {
  int32_t *ids;
  size_t n;
  if (llmc_tok_encode(t, text, strlen(text), add_special, &ids, &n) < 0) {
    CHECK(0, "%s: encode failed: %s", label, llmc_errmsg());
    return;
  }
  int ok = n == nw && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
  CHECK(ok, "%s: ids differ", label);
  if (!ok) print_ids("got", ids, n);
  free(ids);
}

static void expect_decode(llmc_tok *t, const char *label, const int32_t *ids, size_t n, int skip,
                          const char *want) {
  char *s;
  size_t len;
  if (llmc_tok_decode(t, ids, n, skip, &s, &len) < 0) {
    CHECK(0, "%s: decode failed: %s", label, llmc_errmsg());
    return;
  }
  int ok = len == strlen(want) && memcmp(s, want, len) == 0 && s[len] == 0;
  CHECK(ok, "%s: decoded '%s', expected '%s'", label, s, want);
  free(s);
}

/* Split behaviours: the examples of the Rust library's split.rs tests
** (pattern \w+|[^\w\s]+, invert = true, on "How are you doing?") */
static void test_split_behaviors(void) {
  static const char *behav[5] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
  static const char *want[5][8] = {
      {"How", "are", "you", "doing", "?"},
      {"How", " ", "are", " ", "you", " ", "doing", "?"},
      {"How ", "are ", "you ", "doing", "?"},
      {"How", " are", " you", " doing", "?"},
      {"How", " ", "are", " ", "you", " ", "doing?"},
  };
  static const size_t nwant[5] = {5, 8, 5, 5, 7};
  for (int b = 0; b < 5; b++) {
    char json[2048];
    snprintf(json, sizeof json,
             "{\"version\":\"1.0\",\"added_tokens\":[],\"normalizer\":null,"
             "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\w+|[^\\\\w\\\\s]+\"},"
             "\"behavior\":\"%s\",\"invert\":true},\"post_processor\":null,\"decoder\":null,"
             "\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{\"How\":0,\"are\":1,\"you\":2,"
             "\"doing\":3,\"?\":4,\" \":5,\"How \":6,\"are \":7,\"you \":8,\" are\":9,\" you\":10,"
             "\" doing\":11,\"doing?\":12},\"merges\":[]}}",
             behav[b]);
    llmc_tok *t = mem_tok(json);
    if (!t) continue;
    char label[64];
    snprintf(label, sizeof label, "Split %s", behav[b]);
    expect_pieces(t, label, "How are you doing?", 0, want[b], nwant[b]);
    /* no decoder: tokens joined with spaces */
    if (b == 0) {
      int32_t ids[2] = {0, 1};
      expect_decode(t, "no decoder joins with spaces", ids, 2, 0, "How are");
    }
    llmc_tok_free(t);
  }
  /* String pattern, Removed: "Hello Hello Hello" split on " " (split.rs invert test) */
  llmc_tok *t = mem_tok(
      "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Removed\","
      "\"invert\":false},\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{\"Hello\":0},\"merges\":[]}}");
  if (t) {
    static const int32_t w[3] = {0, 0, 0};
    expect_ids(t, "Split String Removed", "Hello Hello Hello", 0, w, 3);
    llmc_tok_free(t);
  }
}

/* Metaspace: examples of the Rust library's metaspace.rs tests */
static void test_metaspace(void) {
  static const char vocab[] =
      "\"vocab\":{\"\\u2581Hey\":0,\"\\u2581\":1,\"\\u2581friend!\":2,\"<s>\":3,\"\\u2581Hey\\u2581my\\u2581friend\\u2581\":4,"
      "\"how\\u2581are\\u2581you\":5,\"\\u2581Hey\\u2581\":6,\"how\":7,\"\\u2581friend\":8}";
  char json[2048];
  snprintf(json, sizeof json,
           "{\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"always\","
           "\"split\":true},\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":"
           "\"always\",\"split\":true},\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,%s,\"merges\":[]}}",
           vocab);
  llmc_tok *t = mem_tok(json);
  if (t) {
    static const char *w1[] = {"\xE2\x96\x81Hey", ("\xE2\x96\x81" "friend!")};
    expect_pieces(t, "Metaspace always/split", "Hey friend!", 0, w1, 2);
    static const char *w2[] = {"\xE2\x96\x81Hey", "\xE2\x96\x81", "\xE2\x96\x81", ("\xE2\x96\x81" "friend!")};
    expect_pieces(t, "Metaspace multiple spaces", "Hey   friend!", 0, w2, 4);
    /* decoder: every replacement of the first token is dropped, the others become spaces */
    int32_t ids[3] = {0, 1, 8};
    expect_decode(t, "Metaspace decoder", ids, 3, 0, "Hey  friend");
    llmc_tok_free(t);
  }
  snprintf(json, sizeof json,
           "{\"added_tokens\":[{\"id\":3,\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,"
           "\"rstrip\":false,\"normalized\":false,\"special\":true}],"
           "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"first\","
           "\"split\":false},\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,%s,\"merges\":[]}}",
           vocab);
  t = mem_tok(json);
  if (t) {
    static const char *w3[] = {"\xE2\x96\x81Hey\xE2\x96\x81my\xE2\x96\x81" "friend\xE2\x96\x81", "<s>",
                               "how\xE2\x96\x81" "are\xE2\x96\x81you"};
    expect_pieces(t, "Metaspace first, after <s>", "Hey my friend <s>how\xE2\x96\x81" "are you", 0, w3, 3);
    static const char *w4[] = {"\xE2\x96\x81Hey\xE2\x96\x81", "<s>", "how"};
    expect_pieces(t, "Metaspace first, leading space", " Hey <s>how", 0, w4, 3);
    llmc_tok_free(t);
  }
}

/* BPE merge order, byte fallback, unk and fuse_unk, worked out by hand */
static void test_bpe_rules(void) {
  static const char base[] =
      "{\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":%s,\"byte_fallback\":true,"
      "\"vocab\":{\"<unk>\":0,\"a\":1,\"b\":2,\"ab\":3,\"<0xC3>\":4,\"<0xA9>\":5,\"c\":6,\"abc\":7,\"bc\":8,"
      "\"aa\":9},\"merges\":[\"a b\",[\"b\",\"c\"],\"ab c\",\"a a\"]},"
      "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]}}";
  char json[1024];
  snprintf(json, sizeof json, base, "true");
  llmc_tok *t = mem_tok(json);
  if (t) {
    /* a b c: (a,b) rank 0 first, then (ab,c) rank 2 */
    expect_ids(t, "bpe abc", "abc", 0, (const int32_t[]){7}, 1);
    /* b c a b: (a,b) rank 0 at position 2 beats (b,c) rank 1 at 0; then (b,c) */
    expect_ids(t, "bpe bcab", "bcab", 0, (const int32_t[]){8, 3}, 2);
    /* a a a: equal ranks merge leftmost first */
    expect_ids(t, "bpe aaa", "aaa", 0, (const int32_t[]){9, 1}, 2);
    /* e-acute is not in the vocab: its UTF-8 bytes C3 A9 */
    expect_ids(t, "byte fallback", "\xC3\xA9", 0, (const int32_t[]){4, 5}, 2);
    /* euro sign E2 82 AC: no byte tokens -> unk; consecutive unks fuse */
    expect_ids(t, "unk fused", "\xE2\x82\xAC\xE2\x82\xAC" "a", 0, (const int32_t[]){0, 1}, 2);
    /* Rust quirk kept: a pending (fused) unk is emitted after byte-fallback tokens */
    expect_ids(t, "unk then byte fallback", "\xE2\x82\xAC\xC3\xA9", 0, (const int32_t[]){4, 5, 0}, 3);
    /* ByteFallback decoder: valid group -> text; invalid group -> one U+FFFD per byte */
    expect_decode(t, "bytefallback valid", (const int32_t[]){4, 5, 1}, 3, 0, "\xC3\xA9" "a");
    expect_decode(t, "bytefallback invalid", (const int32_t[]){5, 4, 1}, 3, 0,
                  "\xEF\xBF\xBD\xEF\xBF\xBD" "a");
    expect_decode(t, "bytefallback truncated", (const int32_t[]){1, 4}, 2, 0, "a\xEF\xBF\xBD");
    llmc_tok_free(t);
  }
  snprintf(json, sizeof json, base, "false");
  t = mem_tok(json);
  if (t) {
    expect_ids(t, "unk not fused", "\xE2\x82\xAC\xE2\x82\xAC", 0, (const int32_t[]){0, 0}, 2);
    llmc_tok_free(t);
  }
  /* no unk token and no byte fallback: unknown characters are dropped (Rust) */
  t = mem_tok("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}");
  if (t) {
    expect_ids(t, "unknown dropped", "xax", 0, (const int32_t[]){0}, 1);
    llmc_tok_free(t);
  }
  /* continuing_subword_prefix / end_of_word_suffix */
  t = mem_tok("{\"model\":{\"type\":\"BPE\",\"continuing_subword_prefix\":\"##\",\"end_of_word_suffix\":\"</w>\","
              "\"vocab\":{\"a\":0,\"##b\":1,\"##c</w>\":2,\"ab\":3,\"abc</w>\":4,\"b</w>\":5},"
              "\"merges\":[\"a ##b\",\"ab ##c</w>\"]}}");
  if (t) {
    expect_ids(t, "affixes abc", "abc", 0, (const int32_t[]){4}, 1);
    expect_ids(t, "affixes b", "b", 0, (const int32_t[]){5}, 1);
    llmc_tok_free(t);
  }
}

/* added tokens: lstrip / rstrip / single_word, special vs not, templates */
static void test_added_tokens(void) {
  static const char base[] =
      "{\"added_tokens\":[{\"id\":10,\"content\":\"<m>\",\"single_word\":%s,\"lstrip\":%s,\"rstrip\":%s,"
      "\"normalized\":false,\"special\":true},{\"id\":11,\"content\":\"<mm>\",\"normalized\":false,\"special\":false}],"
      "\"post_processor\":{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\"},"
      "{\"type\":\"BertProcessing\",\"sep\":[\"b\",1],\"cls\":[\"a\",0]},"
      "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"X\",\"type_id\":0}},"
      "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":\"Y\",\"type_id\":0}}],"
      "\"special_tokens\":{\"X\":{\"id\":\"X\",\"ids\":[2,2],\"tokens\":[\" \",\" \"]},"
      "\"Y\":{\"id\":\"Y\",\"ids\":[5],\"tokens\":[\"a \"]}}}]},"
      "\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{\"a\":0,\"b\":1,\" \":2,\" b\":3,"
      "\"a \":4,\"<\":5,\"m\":6,\">\":7,\"am\":8},\"merges\":[]}}";
  char json[2048];
  snprintf(json, sizeof json, base, "false", "false", "false");
  llmc_tok *t = mem_tok(json);
  if (t) {
    expect_ids(t, "added plain", "a <m> b", 0, (const int32_t[]){4, 10, 3}, 3);
    /* leftmost-longest: <mm> wins over <m> */
    expect_ids(t, "added longest", "a<mm>", 0, (const int32_t[]){0, 11}, 2);
    /* Sequence(ByteLevel, Bert, Template): the later processor wraps the earlier */
    expect_ids(t, "post Sequence", "b", 1, (const int32_t[]){2, 2, 0, 1, 1, 5}, 6);
    CHECK_EQ_INT(llmc_tok_is_special(t, 10), 1);
    CHECK_EQ_INT(llmc_tok_is_special(t, 11), 0);
    CHECK_EQ_INT(llmc_tok_vocab_size(t), 11);
    CHECK_EQ_INT(llmc_tok_id_limit(t), 12);
    expect_decode(t, "skip special", (const int32_t[]){0, 10, 11, 1}, 4, 1, "a <mm> b");
    llmc_tok_free(t);
  }
  snprintf(json, sizeof json, base, "false", "true", "false");
  t = mem_tok(json);
  if (t) {
    expect_ids(t, "added lstrip", "a <m> b", 0, (const int32_t[]){0, 10, 3}, 3);
    llmc_tok_free(t);
  }
  snprintf(json, sizeof json, base, "false", "false", "true");
  t = mem_tok(json);
  if (t) {
    expect_ids(t, "added rstrip", "a <m> b", 0, (const int32_t[]){4, 10, 1}, 3);
    llmc_tok_free(t);
  }
  snprintf(json, sizeof json, base, "true", "false", "false");
  t = mem_tok(json);
  if (t) {
    /* single_word: not matched inside a word */
    expect_ids(t, "single_word inside", "a<m>b", 0, (const int32_t[]){0, 5, 6, 7, 1}, 5);
    expect_ids(t, "single_word alone", "a <m> b", 0, (const int32_t[]){4, 10, 3}, 3);
    llmc_tok_free(t);
  }
}

/* ByteLevel pre-tokenizer (GPT-2 regex, prefix space), decoder and lossy UTF-8 */
static void test_bytelevel(void) {
  llmc_tok *t = mem_tok(
      "{\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true},"
      "\"decoder\":{\"type\":\"ByteLevel\"},"
      "\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{\"\\u0120Hello\":0,\"\\u0120world\":1,"
      "\"\\u00e2\":2,\"\\u0124\":3,\"\\u00ac\":4,\"\\u0122\":5,\"\\u0120\":6,\"'s\":7,\"\\u010a\":8},\"merges\":[]}}");
  if (!t) return;
  expect_ids(t, "bytelevel words", "Hello world", 0, (const int32_t[]){0, 1}, 2);
  /* "'s" is its own pre-token; "\n" maps to U+010A */
  expect_ids(t, "bytelevel contraction", "Hello's\n", 0, (const int32_t[]){0, 7, 8}, 3);
  expect_decode(t, "bytelevel decode", (const int32_t[]){0, 1}, 2, 0, " Hello world");
  /* E2 82 AC = euro; E2 82 alone is one maximal invalid prefix -> one U+FFFD */
  expect_decode(t, "bytelevel euro", (const int32_t[]){2, 3, 4}, 3, 0, "\xE2\x82\xAC");
  expect_decode(t, "bytelevel truncated", (const int32_t[]){2, 3, 6}, 3, 0, "\xEF\xBF\xBD ");
  expect_decode(t, "bytelevel lone continuation", (const int32_t[]){5, 5}, 2, 0, "\xEF\xBF\xBD\xEF\xBF\xBD");
  llmc_tok_free(t);
}

/* normalizers: NFC / NFD / Replace / Prepend / Strip; Digits; decoders Strip/Replace */
static void test_normalizers(void) {
  llmc_tok *t = mem_tok(
      "{\"normalizer\":{\"type\":\"NFC\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\u00e9\":0,\"e\":1,"
      "\"\\u0301\":2,\"\\uac00\":3,\"\\u1ead\":4},\"merges\":[]}}");
  if (t) {
    expect_ids(t, "NFC e+acute", "e\xCC\x81", 0, (const int32_t[]){0}, 1);
    expect_ids(t, "NFC hangul L+V", "\xE1\x84\x80\xE1\x85\xA1", 0, (const int32_t[]){3}, 1);
    /* a + U+0323 + U+0302 and a + U+0302 + U+0323 both compose to U+1EAD */
    expect_ids(t, "NFC reorder 1", "a\xCC\xA3\xCC\x82", 0, (const int32_t[]){4}, 1);
    expect_ids(t, "NFC reorder 2", "a\xCC\x82\xCC\xA3", 0, (const int32_t[]){4}, 1);
    llmc_tok_free(t);
  }
  t = mem_tok(
      "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFD\"},{\"type\":\"Strip\","
      "\"strip_left\":true,\"strip_right\":true},{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"\\\\s+\"},"
      "\"content\":\"_\"},{\"type\":\"Prepend\",\"prepend\":\">\"}]},"
      "\"pre_tokenizer\":{\"type\":\"Digits\",\"individual_digits\":true},"
      "\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{\"e\":0,\"\\u0301\":1,\">ab_c\":2,\"1\":3,\"2\":4,"
      "\">\":5,\"x\":6},\"merges\":[]},"
      "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\">\"},"
      "\"content\":\"<<\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\"<\",\"start\":1,\"stop\":2}]}}");
  if (t) {
    /* U+00E9 -> e + U+0301 (NFD) */
    expect_ids(t, "NFD", "\xC3\xA9", 0, (const int32_t[]){5, 0, 1}, 3);
    /* strip (NEL and NBSP are White_Space), whitespace runs -> "_", prepend ">" */
    expect_ids(t, "strip/replace/prepend", "\xC2\x85 ab \xC2\xA0\tc \xC2\xA0", 0, (const int32_t[]){2}, 1);
    expect_ids(t, "digits individual", "x12", 0, (const int32_t[]){5, 6, 3, 4}, 4);
    /* Replace ">" -> "<<" per token, fuse, strip one "<" in front, up to two behind */
    expect_decode(t, "decoder strip", (const int32_t[]){5, 6, 5}, 3, 0, "<x");
    llmc_tok_free(t);
  }
  /* direct checks of the normalization routine */
  struct { const char *in, *nfc, *nfd; } cases[] = {
      {"\xC3\x85", "\xC3\x85", "A\xCC\x8A"},                       /* A-ring */
      {"\xE2\x84\xAB", "\xC3\x85", "A\xCC\x8A"},                   /* Angstrom sign: singleton */
      {"\xEA\xB0\x81", "\xEA\xB0\x81", "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"}, /* Hangul LVT */
      {"\xCC\x81" "a", "\xCC\x81" "a", "\xCC\x81" "a"},            /* leading combining mark */
      {"plain ascii", "plain ascii", "plain ascii"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    for (int comp = 0; comp < 2; comp++) {
      llmc_tok_buf o = {0};
      const char *want = comp ? cases[i].nfc : cases[i].nfd;
      int rc = llmc_tok_normalize(cases[i].in, strlen(cases[i].in), comp, &o);
      CHECK(rc == 0 && o.n == strlen(want) && memcmp(o.p, want, o.n) == 0, "normalize case %zu (%s)", i,
            comp ? "NFC" : "NFD");
      free(o.p);
    }
  }
}

/* ---- errors ---------------------------------------------------------------------------- */

static void expect_load_error(const char *label, const char *json, size_t len, const char *needle) {
  llmc_tok *t = llmc_tok_load_mem(json, len, "bad.json");
  const char *msg = llmc_errmsg();
  CHECK(t == NULL, "%s: loaded", label);
  CHECK(strstr(msg, "bad.json") != NULL, "%s: message does not name the file: %s", label, msg);
  CHECK(strstr(msg, needle) != NULL, "%s: message lacks '%s': %s", label, needle, msg);
  llmc_tok_free(t);
}

#define BAD(label, json, needle) expect_load_error(label, json, strlen(json), needle)

static void test_malformed(const char *mistral_path) {
  BAD("not an object", "[1,2]", "object");
  BAD("truncated", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0", "invalid JSON");
  BAD("no model", "{\"version\":\"1.0\"}", "model");
  BAD("bad version", "{\"version\":\"2.0\",\"model\":{\"vocab\":{},\"merges\":[]}}", "version");
  BAD("vocab array", "{\"model\":{\"type\":\"BPE\",\"vocab\":[1],\"merges\":[]}}", "model.vocab");
  BAD("vocab string id", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"0\"},\"merges\":[]}}", "model.vocab");
  BAD("huge id", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1099511627776},\"merges\":[]}}", "out of range");
  BAD("negative id", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", "out of range");
  BAD("duplicate id", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", "given to both");
  BAD("merge unknown", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a zz\"]}}", "model.merges[0]");
  BAD("merge unknown names token", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a zz\"]}}", "zz");
  BAD("merged unknown", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[[\"a\",\"b\"]]}}",
      "merged token 'ab'");
  BAD("merge three parts", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a a a\"]}}", "one space");
  BAD("merge wrong type", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[7]}}", "model.merges[0]");
  BAD("merges object", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":{}}}", "model.merges");
  BAD("wordpiece", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "model.type");
  BAD("dropout", "{\"model\":{\"type\":\"BPE\",\"dropout\":0.1,\"vocab\":{},\"merges\":[]}}", "dropout");
  BAD("bool type", "{\"model\":{\"type\":\"BPE\",\"byte_fallback\":1,\"vocab\":{},\"merges\":[]}}", "byte_fallback");
  BAD("added huge id", "{\"added_tokens\":[{\"id\":99999999999,\"content\":\"x\"}],\"model\":{\"vocab\":{},\"merges\":[]}}",
      "added_tokens[0]");
  BAD("added no content", "{\"added_tokens\":[{\"id\":0}],\"model\":{\"vocab\":{},\"merges\":[]}}", "content");
  BAD("added clash", "{\"added_tokens\":[{\"id\":0,\"content\":\"x\"}],\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}",
      "already the token");
  BAD("bad regex", "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},\"behavior\":\"Isolated\"},"
      "\"model\":{\"vocab\":{},\"merges\":[]}}", "pre_tokenizer");
  BAD("bad behavior", "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\"a\"},\"behavior\":\"Odd\"},"
      "\"model\":{\"vocab\":{},\"merges\":[]}}", "Odd");
  BAD("seq not array", "{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":3},\"model\":{\"vocab\":{},\"merges\":[]}}",
      "pretokenizers");
  BAD("nested field", "{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Nope\"}]},"
      "\"model\":{\"vocab\":{},\"merges\":[]}}", "pre_tokenizer.pretokenizers[0]");
  BAD("normalizer unsupported", "{\"normalizer\":{\"type\":\"NFKC\"},\"model\":{\"vocab\":{},\"merges\":[]}}", "NFKC");
  BAD("metaspace two chars", "{\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"ab\"},"
      "\"model\":{\"vocab\":{},\"merges\":[]}}", "replacement");
  BAD("decoder unsupported", "{\"decoder\":{\"type\":\"WordPiece\"},\"model\":{\"vocab\":{},\"merges\":[]}}", "WordPiece");
  BAD("template unknown special", "{\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":["
      "{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
      "\"special_tokens\":{}},\"model\":{\"vocab\":{},\"merges\":[]}}", "<s>");
  BAD("template id range", "{\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":["
      "{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
      "\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[5],\"tokens\":[\"<s>\"]}}},"
      "\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}", "out of range");
  {
    char deep[4096] = "{\"normalizer\":";
    for (int k = 0; k < 40; k++) strcat(deep, "{\"type\":\"Sequence\",\"normalizers\":[");
    strcat(deep, "{\"type\":\"NFC\"}");
    for (int k = 0; k < 40; k++) strcat(deep, "]}");
    strcat(deep, ",\"model\":{\"vocab\":{},\"merges\":[]}}");
    BAD("deep nesting", deep, "too deep");
  }
  BAD("empty input", "", "invalid JSON");

  /* every prefix of a real file is an error, never a crash (sampled) */
  FILE *f = fopen(mistral_path, "rb");
  if (f) {
    char *buf = malloc(300000);
    size_t n = fread(buf, 1, 300000, f);
    fclose(f);
    int all = 1;
    for (size_t cut = 0; cut < n; cut += 9973) {
      llmc_tok *t = llmc_tok_load_mem(buf, cut, "bad.json");
      all &= t == NULL && strstr(llmc_errmsg(), "bad.json") != NULL;
      llmc_tok_free(t);
    }
    CHECK(all, "truncated copies of the mistral file must fail cleanly");
    free(buf);
  }
  llmc_tok *t = llmc_tok_load("/nonexistent/dir/tokenizer.json");
  CHECK(t == NULL && strstr(llmc_errmsg(), "/nonexistent/dir/tokenizer.json"), "missing file: %s", llmc_errmsg());
}

static void test_invalid_utf8(llmc_tok *tok) {
  static const struct { const char *s; size_t n; size_t off; } bad[] = {
      {"ab\x80", 3, 2},          /* lone continuation */
      {"\xC0\x80", 2, 0},        /* overlong NUL */
      {"x\xED\xA0\x80", 4, 1},   /* surrogate U+D800 */
      {"\xE2\x82", 2, 0},        /* truncated */
      {"\xF5\x80\x80\x80", 4, 0},/* above U+10FFFF */
      {"ok\xFF", 3, 2},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int32_t *ids = (int32_t *)1;
    size_t n = 7;
    int rc = llmc_tok_encode(tok, bad[i].s, bad[i].n, 1, &ids, &n);
    char want[64];
    snprintf(want, sizeof want, "byte offset %zu", bad[i].off);
    CHECK(rc == -1 && ids == NULL && n == 0, "invalid UTF-8 %zu accepted", i);
    CHECK(strstr(llmc_errmsg(), "UTF-8") && strstr(llmc_errmsg(), want), "invalid UTF-8 %zu: %s", i, llmc_errmsg());
  }
  /* the largest code point and an embedded NUL are valid */
  int32_t *ids;
  size_t n;
  CHECK(llmc_tok_encode(tok, "a\xF4\x8F\xBF\xBF", 5, 0, &ids, &n) == 0, "U+10FFFF: %s", llmc_errmsg());
  if (n) free(ids);
  CHECK(llmc_tok_encode(tok, "a\0b", 3, 0, &ids, &n) == 0 && n >= 3, "embedded NUL");
  free(ids);
  /* encode_batch: an error names the document; an empty batch is fine */
  const char *texts[3] = {"fine", "bad\xC3", "fine"};
  size_t lens[3] = {4, 4, 4}, *offs;
  CHECK(llmc_tok_encode_batch(tok, texts, lens, 3, 0, &ids, &offs) == -1 && strstr(llmc_errmsg(), "document 1") &&
            strstr(llmc_errmsg(), "UTF-8"),
        "encode_batch error: %s", llmc_errmsg());
  CHECK(llmc_tok_encode_batch(tok, texts, lens, 0, 1, &ids, &offs) == 0 && offs[0] == 0 && ids != NULL,
        "empty batch: %s", llmc_errmsg());
  free(ids);
  free(offs);
  /* decode: out-of-range ids are errors */
  char *s;
  size_t len;
  int32_t badid[2] = {1, 32000}, neg[1] = {-1};
  CHECK(llmc_tok_decode(tok, badid, 2, 0, &s, &len) == -1 && strstr(llmc_errmsg(), "32000"), "decode id 32000");
  CHECK(llmc_tok_decode(tok, neg, 1, 0, &s, &len) == -1, "decode id -1");
  CHECK(llmc_tok_decode(tok, NULL, 0, 0, &s, &len) == 0 && len == 0 && s && s[0] == 0, "decode nothing");
  free(s);
}

static void test_mistral_api(llmc_tok *t) {
  CHECK_EQ_INT(llmc_tok_vocab_size(t), 32000);
  CHECK_EQ_INT(llmc_tok_id_limit(t), 32000);
  CHECK_EQ_INT(llmc_tok_token_to_id(t, "\xE2\x96\x81Hello", 8), 22557); /* SOURCES.md */
  CHECK_EQ_INT(llmc_tok_token_to_id(t, "\xE2\x96\x81", 3), 28705);
  CHECK_EQ_INT(llmc_tok_token_to_id(t, "<s>", 3), 1);
  CHECK_EQ_INT(llmc_tok_token_to_id(t, "no such token", 13), -1);
  size_t len = 0;
  const char *s = llmc_tok_id_to_token(t, 2, &len);
  CHECK(s && len == 4 && !memcmp(s, "</s>", 4), "id_to_token(2)");
  CHECK(llmc_tok_id_to_token(t, 32000, &len) == NULL, "id_to_token(32000)");
  CHECK_EQ_INT(llmc_tok_n_added(t), 3);
  const char *c;
  int32_t id;
  int sp;
  CHECK(llmc_tok_added_token(t, 1, &c, &len, &id, &sp) == 0 && len == 3 && !memcmp(c, "<s>", 3) && id == 1 && sp == 1,
        "added_token(1)");
  CHECK(llmc_tok_added_token(t, 3, &c, &len, &id, &sp) == -1, "added_token(3)");
  CHECK_EQ_INT(llmc_tok_is_special(t, 1), 1);
  CHECK_EQ_INT(llmc_tok_is_special(t, 22557), 0);
  /* README example; skip_special_tokens drops BOS, the Strip decoder the space */
  expect_ids(t, "mistral hello", "Hello world", 1, (const int32_t[]){1, 22557, 1526}, 3);
  expect_decode(t, "mistral skip special", (const int32_t[]){1, 22557, 1526}, 3, 1, "Hello world");
  expect_decode(t, "mistral keep special", (const int32_t[]){1, 22557, 1526}, 3, 0, "<s> Hello world");
  /* empty text: only the template */
  expect_ids(t, "mistral empty", "", 1, (const int32_t[]){1}, 1);
  expect_ids(t, "mistral empty no special", "", 0, NULL, 0);
  /* <0xE2><0x82><0xAC> = euro; <0xE2><0x82> alone -> two U+FFFD */
  int32_t e2 = llmc_tok_token_to_id(t, "<0xE2>", 6), x82 = llmc_tok_token_to_id(t, "<0x82>", 6),
          xac = llmc_tok_token_to_id(t, "<0xAC>", 6);
  CHECK(e2 == 3 + 0xE2 && x82 == 3 + 0x82 && xac == 3 + 0xAC, "byte tokens at 3 + byte");
  expect_decode(t, "mistral bytes euro", (const int32_t[]){e2, x82, xac}, 3, 0, "\xE2\x82\xAC");
  expect_decode(t, "mistral bytes invalid", (const int32_t[]){e2, x82, 22557}, 3, 0,
                "\xEF\xBF\xBD\xEF\xBF\xBD Hello");
  /* a long text without pre-tokenizer is one BPE word: must still be exact */
  size_t reps = 2000;
  char *big = malloc(12 * reps + 1);
  for (size_t i = 0; i < reps; i++) memcpy(big + 12 * i, "Hello world ", 12);
  int32_t *ids;
  size_t n;
  int rc = llmc_tok_encode(t, big, 12 * reps - 1, 0, &ids, &n);
  int ok = rc == 0 && n == 2 * reps;
  for (size_t i = 0; ok && i < reps; i++) ok = ids[2 * i] == 22557 && ids[2 * i + 1] == 1526;
  CHECK(ok, "long repeated text (%zu ids)", n);
  if (rc == 0) free(ids);
  free(big);
}

int main(void) {
  const char *root = getenv("LLMC_ROOT");
  const char *bundled = getenv("LLMC_BUNDLED");
  const char *fixtures = getenv("LLMC_FIXTURES");
  char *bundled_own = NULL, *fixtures_own = NULL;
  if (!bundled) bundled = bundled_own = path_join(root ? root : ".", "fixtures");
  if (!fixtures) fixtures = fixtures_own = path_join(root ? root : ".", "../shared/fixtures");

  char *mistral_dir = path_join(bundled, "tokenizers/mistral");
  char *mistral_json = path_join(mistral_dir, "tokenizer.json");
  if (!file_exists(mistral_json)) {
    printf("SKIP: bundled mistral tokenizer not found at %s\n", mistral_json);
    return CHECK_SKIP;
  }
  static const int32_t mp[4][8] = {{418, 2980, 31363, 3040}, {259, 31363, 28744},
                                   {28705, 31759, 28760, 4341, 438, 1149}, {264, 28705, 31759, 28726}};
  static const size_t mpn[4] = {4, 3, 6, 4};
  llmc_tok *mis = llmc_tok_load(mistral_json);
  CHECK(mis != NULL, "%s", llmc_errmsg());
  if (mis) {
    run_cases("mistral", mis, mistral_dir, 210);
    run_probes("mistral", mis, mp, mpn);
    test_mistral_api(mis);
    test_invalid_utf8(mis);
    llmc_tok_free(mis);
  }
  /* the tiny models ship the same tokenizer */
  char *tiny = path_join(bundled, "models/tiny-llama/tokenizer.json");
  llmc_tok *tt = llmc_tok_load(tiny);
  CHECK(tt != NULL, "tiny-llama tokenizer: %s", llmc_errmsg());
  if (tt) {
    expect_ids(tt, "tiny-llama hello", "Hello, world!", 1, (const int32_t[]){1, 22557, 28725, 1526, 28808}, 5);
    llmc_tok_free(tt);
  }
  free(tiny);

  static const struct { const char *name; int32_t probes[4][8]; size_t n[4]; } big[2] = {
      {"llama3", {{82951, 116360, 1799}, {220, 116360, 87}, {3305, 33, 1937, 520, 1212}, {64, 76880, 65}}, {3, 3, 5, 3}},
      {"qwen3", {{81851, 126, 227, 1762}, {220, 126, 227, 87}, {3225, 33, 1898, 518, 1191}, {64, 75780, 65}}, {4, 4, 5, 3}},
  };
  for (int k = 0; k < 2; k++) {
    char sub[64];
    snprintf(sub, sizeof sub, "tokenizers/%s", big[k].name);
    char *dir = path_join(fixtures, sub);
    char *tj = path_join(dir, "tokenizer.json");
    if (!file_exists(tj)) {
      printf("SKIP %s: %s not found (set LLMC_FIXTURES)\n", big[k].name, tj);
    } else {
      llmc_tok *t = llmc_tok_load(tj);
      CHECK(t != NULL, "%s: %s", big[k].name, llmc_errmsg());
      if (t) {
        run_cases(big[k].name, t, dir, 210);
        run_probes(big[k].name, t, big[k].probes, big[k].n);
        CHECK_EQ_INT(llmc_tok_vocab_size(t), k == 0 ? 128256 : 151669);
        if (k == 1) {
          CHECK_EQ_INT(llmc_tok_token_to_id(t, "<think>", 7), 151667);
          CHECK_EQ_INT(llmc_tok_is_special(t, 151667), 0);
          CHECK_EQ_INT(llmc_tok_is_special(t, 151643), 1);
        }
        llmc_tok_free(t);
      }
    }
    free(tj);
    free(dir);
  }

  test_split_behaviors();
  test_metaspace();
  test_bpe_rules();
  test_added_tokens();
  test_bytelevel();
  test_normalizers();
  test_malformed(mistral_json);

  free(mistral_json);
  free(mistral_dir);
  free(bundled_own);
  free(fixtures_own);
  return check_summary();
}
