/*
** bench_tokenizer.c — encode/decode throughput of the tokenizer.
**
** Text: every string of the calibration data sets (the three fixtures/datasets jsonl files:
** text, instruction, output, message contents), repeated until the corpus
** holds at least --mb megabytes (default 4).  Each document is encoded on its
** own (what tokenizing a dataset does); one pass over the corpus is timed,
** several times, and the median is printed in MB/s of UTF-8 input (wall
** clock; for the one-thread loop also per second of process CPU time, which
** is steadier on a shared machine).  Also
** timed: the whole corpus as one string, the documents spread over OpenMP
** threads, llmc_tok_encode_batch (1 thread and all), and decoding.
**
** Build and run (from the repository root):
**   gcc -std=c11 -D_GNU_SOURCE -O2 -fopenmp -Isrc scripts/bench/bench_tokenizer.c \
**       src/tokenizer*.c src/error.c -ljansson -lpcre2-8 -o /tmp/bench_tokenizer
**   /tmp/bench_tokenizer [--mb 4] [--runs 5] tokenizer.json [more tokenizer.json ...]
** Without tokenizer arguments it uses fixtures/tokenizers/mistral/tokenizer.json
** and, when present, ../shared/fixtures/tokenizers/{llama3,qwen3}/tokenizer.json.
*/
#include <jansson.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "tokenizer.h"

typedef struct {
  char **s;
  size_t *n;
  size_t count, cap, bytes;
} corpus;

static void add_doc(corpus *c, const char *s, size_t n) {
  if (c->count == c->cap) {
    c->cap = c->cap ? c->cap * 2 : 1024;
    c->s = realloc(c->s, c->cap * sizeof *c->s);
    c->n = realloc(c->n, c->cap * sizeof *c->n);
    if (!c->s || !c->n) { fprintf(stderr, "out of memory\n"); exit(1); }
  }
  c->s[c->count] = malloc(n + 1);
  memcpy(c->s[c->count], s, n);
  c->s[c->count][n] = 0;
  c->n[c->count++] = n;
  c->bytes += n;
}

/* every string value inside a JSON value */
static void collect(corpus *c, json_t *j) {
  if (json_is_string(j) && json_string_length(j) > 0) {
    add_doc(c, json_string_value(j), json_string_length(j));
  } else if (json_is_object(j)) {
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
      if (strcmp(k, "role")) collect(c, v);
    }
  } else if (json_is_array(j)) {
    for (size_t i = 0; i < json_array_size(j); i++) collect(c, json_array_get(j, i));
  }
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
  double mb = 4;
  int runs = 5;
  const char *paths[16];
  int np = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--mb") && i + 1 < argc) mb = atof(argv[++i]);
    else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
    else if (np < 16) paths[np++] = argv[i];
  }
  if (runs < 1 || runs > 100) runs = 5;
  if (np == 0) {
    paths[np++] = "fixtures/tokenizers/mistral/tokenizer.json";
    static const char *more[] = {"../shared/fixtures/tokenizers/llama3/tokenizer.json",
                                 "../shared/fixtures/tokenizers/qwen3/tokenizer.json"};
    for (int k = 0; k < 2; k++)
      if (access(more[k], R_OK) == 0) paths[np++] = more[k];
  }
  corpus base = {0};
  static const char *sets[] = {"fixtures/datasets/calib_text.jsonl", "fixtures/datasets/calib_instruct.jsonl",
                               "fixtures/datasets/calib_chat.jsonl"};
  for (int k = 0; k < 3; k++) {
    FILE *f = fopen(sets[k], "r");
    if (!f) { fprintf(stderr, "%s: cannot open (run from the repository root)\n", sets[k]); return 1; }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
      json_error_t e;
      json_t *j = json_loads(line, 0, &e);
      if (j) collect(&base, j);
      json_decref(j);
    }
    free(line);
    fclose(f);
  }
  if (!base.count) { fprintf(stderr, "no text found\n"); return 1; }
  corpus c = {0};
  while ((double)c.bytes < mb * 1e6)
    for (size_t i = 0; i < base.count; i++) add_doc(&c, base.s[i], base.n[i]);
  char *all = malloc(c.bytes + 1);
  for (size_t i = 0, o = 0; i < c.count; i++, o += c.n[i - 1]) memcpy(all + o, c.s[i], c.n[i]);
  printf("corpus: %zu documents, %.2f MB (datasets x%.1f), %d runs, median; %d OpenMP threads available\n",
         c.count, c.bytes / 1e6, (double)c.bytes / base.bytes, runs, omp_get_max_threads());

  int nthreads = omp_get_max_threads();
  for (int p = 0; p < np; p++) {
    double t0 = now();
    llmc_tok *tok = llmc_tok_load(paths[p]);
    if (!tok) { fprintf(stderr, "%s\n", llmc_errmsg()); return 1; }
    double tload = now() - t0;
    double times[100], cpu[100];
    size_t ntok = 0;
    int32_t **keep = calloc(c.count, sizeof *keep);
    size_t *keepn = calloc(c.count, sizeof *keepn);
    for (int r = 0; r < runs; r++) {
      t0 = now();
      double c0 = cpu_now();
      ntok = 0;
      for (size_t i = 0; i < c.count; i++) {
        int32_t *ids;
        size_t n;
        if (llmc_tok_encode(tok, c.s[i], c.n[i], 0, &ids, &n) < 0) { fprintf(stderr, "%s\n", llmc_errmsg()); return 1; }
        ntok += n;
        free(keep[i]);
        keep[i] = ids;
        keepn[i] = n;
      }
      times[r] = now() - t0;
      cpu[r] = cpu_now() - c0;
    }
    double t_docs = median(times, runs), c_docs = median(cpu, runs);
    for (int r = 0; r < runs; r++) {
      t0 = now();
      int32_t *ids;
      size_t n;
      if (llmc_tok_encode(tok, all, c.bytes, 0, &ids, &n) < 0) { fprintf(stderr, "%s\n", llmc_errmsg()); return 1; }
      free(ids);
      times[r] = now() - t0;
    }
    double t_one = median(times, runs);
    for (int r = 0; r < runs; r++) {
      t0 = now();
      int fail = 0;
#pragma omp parallel for schedule(dynamic, 16) reduction(| : fail)
      for (size_t i = 0; i < c.count; i++) {
        int32_t *ids;
        size_t n;
        if (llmc_tok_encode(tok, c.s[i], c.n[i], 0, &ids, &n) < 0) fail = 1;
        else free(ids);
      }
      if (fail) { fprintf(stderr, "parallel encode failed\n"); return 1; }
      times[r] = now() - t0;
    }
    double t_par = median(times, runs);
    for (int r = 0; r < runs; r++) {
      t0 = now();
      int32_t *ids;
      size_t *offs;
      omp_set_num_threads(1);
      if (llmc_tok_encode_batch(tok, (const char *const *)c.s, c.n, c.count, 0, &ids, &offs) < 0) {
        fprintf(stderr, "%s\n", llmc_errmsg());
        return 1;
      }
      times[r] = now() - t0;
      if (offs[c.count] != ntok) { fprintf(stderr, "batch gave %zu tokens, not %zu\n", offs[c.count], ntok); return 1; }
      free(ids);
      free(offs);
    }
    double t_batch1 = median(times, runs);
    omp_set_num_threads(nthreads);
    for (int r = 0; r < runs; r++) {
      t0 = now();
      int32_t *ids;
      size_t *offs;
      if (llmc_tok_encode_batch(tok, (const char *const *)c.s, c.n, c.count, 0, &ids, &offs) < 0) {
        fprintf(stderr, "%s\n", llmc_errmsg());
        return 1;
      }
      times[r] = now() - t0;
      free(ids);
      free(offs);
    }
    double t_batch = median(times, runs);
    for (int r = 0; r < runs; r++) {
      t0 = now();
      for (size_t i = 0; i < c.count; i++) {
        char *s;
        size_t n;
        if (llmc_tok_decode(tok, keep[i], keepn[i], 0, &s, &n) < 0) { fprintf(stderr, "%s\n", llmc_errmsg()); return 1; }
        free(s);
      }
      times[r] = now() - t0;
    }
    double t_dec = median(times, runs);
    double MB = c.bytes / 1e6;
    printf("%s\n  load %.2f s; %zu tokens (%.2f bytes/token)\n"
           "  encode per document : %7.2f MB/s  (%.2f Mtok/s; %.2f MB/s of CPU time)\n"
           "  encode one string   : %7.2f MB/s\n"
           "  encode loop, %d thr  : %7.2f MB/s\n"
           "  encode_batch 1 thr  : %7.2f MB/s\n"
           "  encode_batch %d thr  : %7.2f MB/s\n"
           "  decode per document : %7.2f MB/s of text\n",
           paths[p], tload, ntok, (double)c.bytes / ntok, MB / t_docs, ntok / t_docs / 1e6, MB / c_docs, MB / t_one,
           nthreads, MB / t_par, MB / t_batch1, nthreads, MB / t_batch, MB / t_dec);
    for (size_t i = 0; i < c.count; i++) free(keep[i]);
    free(keep);
    free(keepn);
    llmc_tok_free(tok);
  }
  return 0;
}
