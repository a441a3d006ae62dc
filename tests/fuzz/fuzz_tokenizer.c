/*
** fuzz_tokenizer.c — libFuzzer target for the tokenizer (tokenizer.h).
**
** The first byte of the input picks the mode (low two bits):
**   0, 3: the rest is a tokenizer.json; if it loads, encode a few fixed
**         strings (with and without special tokens, one batch), decode the
**         ids, and decode every id of the vocabulary once;
**   1:    the rest is text (any bytes, invalid UTF-8 included) encoded with
**         the bundled Mistral tokenizer; valid text must survive
**         decode(encode(text)) unchanged unless it contains what the Mistral
**         pipeline rewrites (U+2581, "<0x" byte-token spelling, the special
**         tokens, after which a new piece gets its own U+2581);
**   2:    the rest is little-endian int32 ids decoded with the Mistral
**         tokenizer (out-of-range ids must be an error, not a crash).
** Mistral is found at $LLMC_BUNDLED/tokenizers/mistral/tokenizer.json, else
** relative to this source file (the repository's fixtures/); modes 1-2 are
** no-ops when it cannot be found.
**
**   clang -fsanitize=fuzzer,address,undefined ... (cmake -DLLMC_FUZZ=ON)
**   ./fuzz_tokenizer -max_total_time=300 tests/fuzz/corpus/fuzz_tokenizer
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer.h"

static llmc_tok *mistral;
static int mistral_tried;

static llmc_tok *get_mistral(void) {
  if (mistral_tried) return mistral;
  mistral_tried = 1;
  char path[4096];
  const char *b = getenv("LLMC_BUNDLED");
  if (b && *b) {
    snprintf(path, sizeof path, "%s/tokenizers/mistral/tokenizer.json", b);
  } else {
    const char *src = __FILE__, *cut = strstr(src, "tests/fuzz/fuzz_tokenizer.c");
    int n = cut ? (int)(cut - src) : 0;
    snprintf(path, sizeof path, "%.*sfixtures/tokenizers/mistral/tokenizer.json", n, src);
  }
  mistral = llmc_tok_load(path);
  return mistral;
}

static void roundtrip(const llmc_tok *t, const int32_t *ids, size_t n) {
  for (int skip = 0; skip < 2; skip++) {
    char *s;
    size_t len;
    if (llmc_tok_decode(t, ids, n, skip, &s, &len) == 0) {
      if (s[len] != 0) abort(); /* decode promises a NUL terminator */
      free(s);
    }
  }
}

static void mode_json(const uint8_t *data, size_t size) {
  llmc_tok *t = llmc_tok_load_mem((const char *)data, size, "fuzz.json");
  if (!t) {
    if (!llmc_errmsg()[0]) abort(); /* a failure must say why */
    return;
  }
  static const char *texts[] = {"Hello world", "  two  spaces\n\ttab", "<s>x</s>", "\xC3\xA9t\xC3\xA9 \xE2\x82\xAC 123",
                                "a", "", "\xF0\x9F\x98\x80!!", "e\xCC\x81\xCC\xA3"};
  size_t lens[8];
  for (int k = 0; k < 8; k++) {
    lens[k] = strlen(texts[k]);
    for (int sp = 0; sp < 2; sp++) {
      int32_t *ids;
      size_t n;
      if (llmc_tok_encode(t, texts[k], lens[k], sp, &ids, &n) == 0) {
        for (size_t i = 0; i < n; i++)
          if (ids[i] < 0 || (size_t)ids[i] >= llmc_tok_id_limit(t)) abort(); /* ids are always valid */
        roundtrip(t, ids, n);
        free(ids);
      }
    }
  }
  int32_t *ids;
  size_t *offs;
  if (llmc_tok_encode_batch(t, texts, lens, 8, 1, &ids, &offs) == 0) {
    free(ids);
    free(offs);
  }
  size_t lim = llmc_tok_id_limit(t);
  if (lim > 0 && lim < 100000) {
    int32_t *all = malloc(lim * sizeof *all);
    if (all) {
      for (size_t i = 0; i < lim; i++) all[i] = (int32_t)i;
      roundtrip(t, all, lim);
      free(all);
    }
  }
  for (size_t i = 0; i < llmc_tok_n_added(t); i++) {
    const char *c;
    size_t len;
    int32_t id;
    int sp;
    if (llmc_tok_added_token(t, i, &c, &len, &id, &sp) == 0 && llmc_tok_token_to_id(t, c, len) != id) abort();
  }
  llmc_tok_free(t);
}

static void mode_text(const uint8_t *data, size_t size) {
  llmc_tok *t = get_mistral();
  if (!t) return;
  const char *s = (const char *)data;
  int32_t *ids;
  size_t n;
  if (llmc_tok_encode(t, s, size, 0, &ids, &n) < 0) return; /* invalid UTF-8: an error */
  char *d;
  size_t len;
  if (llmc_tok_decode(t, ids, n, 0, &d, &len) < 0) abort(); /* encoder output always decodes */
  /* U+2581 decodes to a space; a special token also starts a new piece that
  ** gets its own prepended U+2581 */
  int rewritten = memmem(s, size, "\xE2\x96\x81", 3) || memmem(s, size, "<0x", 3) || memmem(s, size, "<s>", 3) ||
                  memmem(s, size, "</s>", 4) || memmem(s, size, "<unk>", 5);
  if (!rewritten && (len != size || memcmp(d, s, size) != 0)) abort();
  free(d);
  free(ids);
}

static void mode_ids(const uint8_t *data, size_t size) {
  llmc_tok *t = get_mistral();
  if (!t) return;
  size_t n = size / 4;
  int32_t *ids = malloc(n ? n * sizeof *ids : 1);
  if (!ids) return;
  for (size_t i = 0; i < n; i++) {
    uint32_t v = (uint32_t)data[4 * i] | (uint32_t)data[4 * i + 1] << 8 | (uint32_t)data[4 * i + 2] << 16 |
                 (uint32_t)data[4 * i + 3] << 24;
    ids[i] = (int32_t)(v % 40000u) - 1000; /* mostly in range, some out */
  }
  roundtrip(t, ids, n);
  free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  switch (data[0] & 3) {
  case 1: mode_text(data + 1, size - 1); break;
  case 2: mode_ids(data + 1, size - 1); break;
  default: mode_json(data + 1, size - 1); break;
  }
  return 0;
}
