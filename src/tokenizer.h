/*
** tokenizer.h — Hugging Face tokenizer.json (BPE family) in C.
**
** Loads the tokenizer.json that ships with a model (Mistral/Llama-2 style
** SentencePiece BPE with byte fallback, GPT-2/Llama-3/Qwen byte-level BPE)
** and encodes text to token ids and back the way the Hugging Face Rust
** `tokenizers` library does: added tokens are cut out first, then the
** normalizer, the pre-tokenizer, the BPE model and the post-processor run;
** decoding runs the decoder chain.  What is supported, and how each piece
** behaves, is in docs/tokenizer.md.
**
** Ownership:
**   llmc_tok_load / llmc_tok_load_mem return a tokenizer the caller owns and
**     releases with llmc_tok_free (NULL + llmc_err() message on failure).
**   llmc_tok_encode / llmc_tok_decode allocate *ids / *text with malloc; the
**     caller frees them with free().  *text is NUL-terminated (the length
**     excludes the NUL; the text may itself contain NUL bytes).
**   llmc_tok_id_to_token and llmc_tok_added_token return pointers BORROWED
**     from the tokenizer: valid until llmc_tok_free, not NUL-terminated
**     (use the returned length).
**
** Threads: a loaded tokenizer is immutable; any number of threads may call
** encode/decode/lookups on the same tokenizer at once (all scratch memory,
** the BPE word cache and the regex match data are per call).
**
** Text: encode takes UTF-8.  Invalid UTF-8 is rejected with an error naming
** the byte offset (the Rust library cannot be given invalid UTF-8 at all);
** decode always returns valid UTF-8 (byte tokens that do not form UTF-8
** become U+FFFD, as in the Rust library).
**
** Example:
**   llmc_tok *tok = llmc_tok_load("fixtures/tokenizers/mistral/tokenizer.json");
**   if (!tok) { fprintf(stderr, "%s\n", llmc_errmsg()); return -1; }
**   int32_t *ids; size_t n;
**   if (llmc_tok_encode(tok, "Hello world", 11, 1, &ids, &n) < 0) ...;
**   // ids = {1, 22557, 1526}
**   char *s; size_t len;
**   if (llmc_tok_decode(tok, ids, n, 1, &s, &len) < 0) ...;   // "Hello world"
**   free(ids); free(s); llmc_tok_free(tok);
*/
#ifndef LLMC_TOKENIZER_H
#define LLMC_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct llmc_tok llmc_tok;

/* Load a tokenizer.json file.  NULL + llmc_err on failure (the message names
** the file and the JSON field at fault). */
llmc_tok *llmc_tok_load(const char *tokenizer_json_path);

/* The same from a buffer holding the JSON text (need not be NUL-terminated);
** `name` is used in error messages (NULL: "<memory>").  Used by the fuzzer. */
llmc_tok *llmc_tok_load_mem(const char *json, size_t len, const char *name);

void llmc_tok_free(llmc_tok *tok);   /* NULL is a no-op */

/* Encode `len` bytes of UTF-8 text.  add_special_tokens: run the
** post-processor's template (e.g. insert BOS); special tokens written in the
** text are recognised either way, as in Hugging Face.  Returns 0 and sets
** *ids (malloc'd, possibly with *n == 0) or -1 with llmc_err. */
int llmc_tok_encode(const llmc_tok *tok, const char *text, size_t len,
                    int add_special_tokens, int32_t **ids, size_t *n);

/* Encode `count` texts at once, spread over the OpenMP threads (documents
** keep their order; each thread keeps its BPE word cache across its
** documents, which is what makes this faster than a loop of encode calls).
** *ids: every document's ids, one after the other; *offsets: count + 1
** entries, document i is ids[offsets[i] .. offsets[i+1]).  Both malloc'd,
** the caller frees them.  On error (-1) the message names the document. */
int llmc_tok_encode_batch(const llmc_tok *tok, const char *const *texts, const size_t *lens,
                          size_t count, int add_special_tokens, int32_t **ids, size_t **offsets);

/* Decode ids to UTF-8 text.  skip_special_tokens drops ids of added tokens
** marked special.  An id outside [0, llmc_tok_id_limit) is an error; an id
** inside it that names no token is skipped (as Hugging Face does). */
int llmc_tok_decode(const llmc_tok *tok, const int32_t *ids, size_t n,
                    int skip_special_tokens, char **text, size_t *len);

/* id of a token string (added tokens first, then the model vocab); -1 if none. */
int32_t llmc_tok_token_to_id(const llmc_tok *tok, const char *token, size_t len);
/* token string of an id (borrowed, *len set); NULL if the id names no token. */
const char *llmc_tok_id_to_token(const llmc_tok *tok, int32_t id, size_t *len);

/* Number of distinct tokens, model vocab plus added tokens that are not in it
** (Hugging Face get_vocab_size(with_added_tokens=True)). */
size_t llmc_tok_vocab_size(const llmc_tok *tok);
/* One more than the largest id (the size an id table must have). */
size_t llmc_tok_id_limit(const llmc_tok *tok);

/* Added tokens (the "added_tokens" list, in file order). */
size_t llmc_tok_n_added(const llmc_tok *tok);
/* 0 and the i-th added token (content borrowed), or -1 + llmc_err when i is out of range. */
int llmc_tok_added_token(const llmc_tok *tok, size_t i, const char **content,
                         size_t *len, int32_t *id, int *special);
/* 1 if id is an added token marked special, else 0. */
int llmc_tok_is_special(const llmc_tok *tok, int32_t id);

#endif
