/*
** test_safetensors.c — reader, sets, writer, corrupt files, disk full.
**
** References: the tiny-llama header and value statistics come from
** tests/c/tiny_llama_expected.py (standard-library Python: struct + json);
** the writer's output is compared byte for byte with the fixtures written by
** the Python safetensors library (model.safetensors, golden.safetensors);
** the index JSON text is transformers' (json.dumps(indent=2, sort_keys=True)).
*/
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "error.h"
#include "safetensors.h"

static char tmpdir[256];

/* ---- helpers ---------------------------------------------------------------- */

static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tmpdir, name); }

static int write_file(const char *path, const void *buf, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t k = fwrite(buf, 1, n, f);
  fclose(f);
  return k == n ? 0 : -1;
}

static unsigned char *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc(len > 0 ? (size_t)len : 1);
  if (b && fread(b, 1, (size_t)len, f) != (size_t)len) { free(b); b = NULL; }
  fclose(f);
  *n = (size_t)len;
  return b;
}

static int exists(const char *p) { struct stat st; return stat(p, &st) == 0; }

/* number of entries of dir whose name contains sub */
static int count_matching(const char *dir, const char *sub) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) n += strstr(e->d_name, sub) != NULL;
  closedir(d);
  return n;
}

static int rm_cb(const char *p, const struct stat *s, int flag, struct FTW *f) {
  (void)s; (void)flag; (void)f;
  return remove(p);
}

/* a safetensors image: 8-byte length + header (as given, unpadded) + data */
static unsigned char *image(const char *hdr, size_t datalen, unsigned char fill, size_t *n) {
  size_t h = strlen(hdr);
  *n = 8 + h + datalen;
  unsigned char *b = malloc(*n);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)h >> (8 * i));
  memcpy(b + 8, hdr, h);
  for (size_t i = 0; i < datalen; i++) b[8 + h + i] = (unsigned char)(fill + i);
  return b;
}

/* deterministic bytes */
static void fill_bytes(unsigned char *p, size_t n, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 12345u;
  for (size_t i = 0; i < n; i++) {
    x = x * 1664525u + 1013904223u;
    p[i] = (unsigned char)(x >> 24);
  }
}

static const char *bundled(void) {
  const char *b = getenv("LLMC_BUNDLED");
  return b && *b ? b : "fixtures";
}

/* ---- 1. the tiny-llama fixture against the independent script --------------- */

typedef struct { const char *name, *dtype; int ndim; int64_t shape[2]; uint64_t begin, end; } exp_entry;

/* output of: python3 tests/c/tiny_llama_expected.py
** header_len = 4160, data_size = 22680064, metadata = {"format": "pt"}, 38 tensors */
static const exp_entry tiny_llama[] = {
  {"model.embed_tokens.weight", "BF16", 2, {32000, 256}, 0, 16384000},
  {"model.layers.0.input_layernorm.weight", "BF16", 1, {256}, 16384000, 16384512},
  {"model.layers.0.mlp.down_proj.weight", "BF16", 2, {256, 768}, 16384512, 16777728},
  {"model.layers.0.mlp.gate_proj.weight", "BF16", 2, {768, 256}, 16777728, 17170944},
  {"model.layers.0.mlp.up_proj.weight", "BF16", 2, {768, 256}, 17170944, 17564160},
  {"model.layers.0.post_attention_layernorm.weight", "BF16", 1, {256}, 17564160, 17564672},
  {"model.layers.0.self_attn.k_proj.weight", "BF16", 2, {128, 256}, 17564672, 17630208},
  {"model.layers.0.self_attn.o_proj.weight", "BF16", 2, {256, 256}, 17630208, 17761280},
  {"model.layers.0.self_attn.q_proj.weight", "BF16", 2, {256, 256}, 17761280, 17892352},
  {"model.layers.0.self_attn.v_proj.weight", "BF16", 2, {128, 256}, 17892352, 17957888},
  {"model.layers.1.input_layernorm.weight", "BF16", 1, {256}, 17957888, 17958400},
  {"model.layers.1.mlp.down_proj.weight", "BF16", 2, {256, 768}, 17958400, 18351616},
  {"model.layers.1.mlp.gate_proj.weight", "BF16", 2, {768, 256}, 18351616, 18744832},
  {"model.layers.1.mlp.up_proj.weight", "BF16", 2, {768, 256}, 18744832, 19138048},
  {"model.layers.1.post_attention_layernorm.weight", "BF16", 1, {256}, 19138048, 19138560},
  {"model.layers.1.self_attn.k_proj.weight", "BF16", 2, {128, 256}, 19138560, 19204096},
  {"model.layers.1.self_attn.o_proj.weight", "BF16", 2, {256, 256}, 19204096, 19335168},
  {"model.layers.1.self_attn.q_proj.weight", "BF16", 2, {256, 256}, 19335168, 19466240},
  {"model.layers.1.self_attn.v_proj.weight", "BF16", 2, {128, 256}, 19466240, 19531776},
  {"model.layers.2.input_layernorm.weight", "BF16", 1, {256}, 19531776, 19532288},
  {"model.layers.2.mlp.down_proj.weight", "BF16", 2, {256, 768}, 19532288, 19925504},
  {"model.layers.2.mlp.gate_proj.weight", "BF16", 2, {768, 256}, 19925504, 20318720},
  {"model.layers.2.mlp.up_proj.weight", "BF16", 2, {768, 256}, 20318720, 20711936},
  {"model.layers.2.post_attention_layernorm.weight", "BF16", 1, {256}, 20711936, 20712448},
  {"model.layers.2.self_attn.k_proj.weight", "BF16", 2, {128, 256}, 20712448, 20777984},
  {"model.layers.2.self_attn.o_proj.weight", "BF16", 2, {256, 256}, 20777984, 20909056},
  {"model.layers.2.self_attn.q_proj.weight", "BF16", 2, {256, 256}, 20909056, 21040128},
  {"model.layers.2.self_attn.v_proj.weight", "BF16", 2, {128, 256}, 21040128, 21105664},
  {"model.layers.3.input_layernorm.weight", "BF16", 1, {256}, 21105664, 21106176},
  {"model.layers.3.mlp.down_proj.weight", "BF16", 2, {256, 768}, 21106176, 21499392},
  {"model.layers.3.mlp.gate_proj.weight", "BF16", 2, {768, 256}, 21499392, 21892608},
  {"model.layers.3.mlp.up_proj.weight", "BF16", 2, {768, 256}, 21892608, 22285824},
  {"model.layers.3.post_attention_layernorm.weight", "BF16", 1, {256}, 22285824, 22286336},
  {"model.layers.3.self_attn.k_proj.weight", "BF16", 2, {128, 256}, 22286336, 22351872},
  {"model.layers.3.self_attn.o_proj.weight", "BF16", 2, {256, 256}, 22351872, 22482944},
  {"model.layers.3.self_attn.q_proj.weight", "BF16", 2, {256, 256}, 22482944, 22614016},
  {"model.layers.3.self_attn.v_proj.weight", "BF16", 2, {128, 256}, 22614016, 22679552},
  {"model.norm.weight", "BF16", 1, {256}, 22679552, 22680064},
};

/* same script: name, count, fsum of values, fsum of squares */
static const struct { const char *name; int64_t count; double sum, sumsq; } tiny_stats[] = {
  {"model.norm.weight", 256, 311.23828125, 379.50306701660156},
  {"model.layers.0.self_attn.q_proj.weight", 65536, 0.20132558792829514, 65.07251828234743},
  {"model.layers.3.mlp.down_proj.weight", 196608, 4.776492728153244, 147.60248277180872},
  {"model.embed_tokens.weight", 8192000, -76987.33777046716, 315856.51661800325},
};

static void test_tiny_llama(void) {
  char path[1100], dir[1024];
  snprintf(dir, sizeof dir, "%s/models/tiny-llama", bundled());
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  llmc_st_file *f = llmc_st_open(path);
  CHECK(f != NULL, "open %s: %s", path, llmc_errmsg());
  if (!f) return;
  size_t ne = sizeof tiny_llama / sizeof tiny_llama[0];
  CHECK_EQ_INT(llmc_st_count(f), ne);
  for (size_t i = 0; i < ne && i < llmc_st_count(f); i++) {
    const llmc_st_info *e = llmc_st_info_at(f, i);
    const exp_entry *x = &tiny_llama[i];
    int ok = strcmp(e->name, x->name) == 0 && strcmp(llmc_dtype_table[e->dtype].st_name, x->dtype) == 0 &&
             e->ndim == x->ndim && e->begin == x->begin && e->end == x->end && e->nbytes == x->end - x->begin;
    for (int d = 0; ok && d < x->ndim; d++) ok = e->shape[d] == x->shape[d];
    CHECK(ok, "entry %zu: got %s %s ndim=%d [%" PRIu64 ",%" PRIu64 "), expected %s", i, e->name,
          llmc_dtype_name(e->dtype), e->ndim, e->begin, e->end, x->name);
    CHECK(llmc_st_find(f, x->name) == e, "find %s", x->name);
  }
  CHECK(llmc_st_find(f, "model.nope") == NULL, "absent name found");
  size_t nm;
  const llmc_st_kv *m = llmc_st_metadata(f, &nm);
  CHECK(nm == 1 && strcmp(m[0].key, "format") == 0 && strcmp(m[0].value, "pt") == 0, "metadata n=%zu", nm);
  CHECK(llmc_st_metadata_get(f, "format") && strcmp(llmc_st_metadata_get(f, "format"), "pt") == 0, "format");

  /* values, through tensors that outlive the file handle */
  llmc_tensor *t[4];
  for (int k = 0; k < 4; k++) t[k] = llmc_st_get(f, tiny_stats[k].name);
  const llmc_st_info *norm = llmc_st_find(f, "model.norm.weight");
  CHECK(t[0] && t[0]->storage->kind == LLMC_STORAGE_MAPPED && llmc_tensor_data(t[0]) == llmc_st_data(f, norm),
        "norm weight is a view of the mapping");
  llmc_st_file_release(f);   /* the tensors keep the mapping */
  for (int k = 0; k < 4; k++) {
    CHECK(t[k] != NULL, "get %s: %s", tiny_stats[k].name, llmc_errmsg());
    if (!t[k]) continue;
    CHECK_EQ_INT(llmc_tensor_numel(t[k]), tiny_stats[k].count);
    const uint16_t *p = llmc_tensor_data(t[k]);
    long double s = 0, s2 = 0;
    for (int64_t i = 0; i < llmc_tensor_numel(t[k]); i++) {
      long double v = llmc_bf16_to_f32(p[i]);
      s += v;
      s2 += v * v;
    }
    CHECK_NEAR((double)s, tiny_stats[k].sum, 1e-9 * fmax(1.0, fabs(tiny_stats[k].sum)));
    CHECK_NEAR((double)s2, tiny_stats[k].sumsq, 1e-9 * tiny_stats[k].sumsq);
    llmc_tensor_free(t[k]);
  }
  llmc_st_set *s = llmc_st_set_open(dir);
  CHECK(s != NULL, "set_open %s: %s", dir, llmc_errmsg());
  if (s) {
    CHECK_EQ_INT(llmc_st_set_count(s), ne);
    CHECK_EQ_INT(llmc_st_set_nfiles(s), 1);
    llmc_st_file *sf = NULL;
    const llmc_st_info *e = llmc_st_set_find(s, "model.layers.2.mlp.up_proj.weight", &sf);
    CHECK(e && sf && e->begin == 20318720 && strcmp(llmc_st_path(sf), path) == 0, "set find");
    llmc_st_set_free(s);
  }
}

/* ---- 2. the writer reproduces the Python library's files byte for byte ------- */

static void rewrite_identical(const char *name) {
  char src[1024], dst[1024];
  snprintf(src, sizeof src, "%s/models/tiny-llama/%s", bundled(), name);
  tmp_path(dst, sizeof dst, name);
  llmc_st_file *f = llmc_st_open(src);
  CHECK(f != NULL, "open %s: %s", src, llmc_errmsg());
  if (!f) return;
  llmc_st_writer *w = llmc_st_writer_new(dst, 0);
  size_t n = llmc_st_count(f), nm;
  const llmc_st_kv *m = llmc_st_metadata(f, &nm);
  int rc = 0;
  for (size_t i = 0; i < nm; i++) rc |= llmc_st_writer_set_metadata(w, m[i].key, m[i].value);
  /* reverse order: the layout must not depend on declaration order */
  for (size_t i = n; i-- > 0;) {
    const llmc_st_info *e = llmc_st_info_at(f, i);
    rc |= llmc_st_writer_declare(w, e->name, e->dtype, e->ndim, e->shape);
  }
  rc |= llmc_st_writer_begin(w);
  for (size_t i = 0; i < n && rc == 0; i++) {
    const llmc_st_info *e = llmc_st_info_at(f, i);
    if (i % 2) {
      rc |= llmc_st_writer_write(w, e->name, llmc_st_data(f, e), e->nbytes);
    } else {   /* half of them as tensors, in two parts */
      llmc_tensor *t = llmc_st_get(f, e->name);
      size_t h = e->nbytes / 2;
      rc |= llmc_st_writer_write_part(w, e->name, h, (const char *)llmc_tensor_data(t) + h, e->nbytes - h);
      rc |= llmc_st_writer_write_part(w, e->name, 0, llmc_tensor_data(t), h);
      llmc_tensor_free(t);
    }
  }
  rc |= llmc_st_writer_finish(w);
  CHECK(rc == 0, "rewrite %s: %s", name, llmc_errmsg());
  llmc_st_writer_free(w);
  llmc_st_file_release(f);
  size_t na, nb;
  unsigned char *a = read_file(src, &na), *b = read_file(dst, &nb);
  CHECK(a && b && na == nb && memcmp(a, b, na) == 0, "%s rewritten differs from the Python library's (%zu vs %zu bytes)",
        name, na, nb);
  free(a);
  free(b);
  unlink(dst);
}

/* ---- 3. round trips ------------------------------------------------------------ */

typedef struct { char name[32]; llmc_dtype dt; int ndim; int64_t shape[3]; size_t nbytes; unsigned char *bytes; } rt_tensor;

static int make_rt_set(rt_tensor *ts) {
  int n = 0;
  for (int d = 0; d < LLMC_DTYPE_COUNT; d++) {
    /* a matrix, a scalar and an empty tensor of every dtype */
    int64_t shapes[3][3] = {{3, 5, 0}, {0, 0, 0}, {0, 4, 0}};
    int ndims[3] = {2, 0, 2};
    for (int k = 0; k < 3; k++) {
      rt_tensor *t = &ts[n];
      snprintf(t->name, sizeof t->name, "%s.%c", llmc_dtype_name((llmc_dtype)d), "msz"[k]);
      t->dt = (llmc_dtype)d;
      t->ndim = ndims[k];
      int64_t numel = 1;
      for (int i = 0; i < t->ndim; i++) numel *= (t->shape[i] = shapes[k][i]);
      t->nbytes = (size_t)numel * llmc_dtype_size(t->dt);
      t->bytes = malloc(t->nbytes ? t->nbytes : 1);
      fill_bytes(t->bytes, t->nbytes, (uint32_t)n + 1);
      n++;
    }
  }
  return n;
}

static int write_rt(const char *path, uint64_t max_shard, rt_tensor *ts, int n) {
  llmc_st_writer *w = llmc_st_writer_new(path, max_shard);
  int rc = llmc_st_writer_set_metadata(w, "format", "pt");
  rc |= llmc_st_writer_set_metadata(w, "note", "d\xc3\xa9j\xc3\xa0 \"vu\"");
  for (int i = 0; i < n; i++) rc |= llmc_st_writer_declare(w, ts[i].name, ts[i].dt, ts[i].ndim, ts[i].shape);
  rc |= llmc_st_writer_begin(w);
  for (int i = n; i-- > 0 && rc == 0;) rc |= llmc_st_writer_write(w, ts[i].name, ts[i].bytes, ts[i].nbytes);
  rc |= llmc_st_writer_finish(w);
  llmc_st_writer_free(w);
  return rc;
}

static void check_rt_set(llmc_st_set *s, rt_tensor *ts, int n, const char *what) {
  CHECK_EQ_INT(llmc_st_set_count(s), n);
  int bad = 0;
  for (int i = 0; i < n; i++) {
    llmc_st_file *f = NULL;
    const llmc_st_info *e = llmc_st_set_find(s, ts[i].name, &f);
    if (!e) { bad++; fprintf(stderr, "%s: %s missing\n", what, ts[i].name); continue; }
    int ok = e->dtype == ts[i].dt && e->ndim == ts[i].ndim && e->nbytes == ts[i].nbytes;
    for (int d = 0; ok && d < e->ndim; d++) ok = e->shape[d] == ts[i].shape[d];
    /* every tensor aligned to its itemsize in the mapping */
    ok = ok && (uintptr_t)llmc_st_data(f, e) % llmc_dtype_size(e->dtype) == 0;
    llmc_tensor *t = llmc_st_set_get(s, ts[i].name);
    ok = ok && t && t->dtype == ts[i].dt && llmc_tensor_nbytes(t) == ts[i].nbytes &&
         memcmp(llmc_tensor_data(t), ts[i].bytes, ts[i].nbytes) == 0 &&
         (ts[i].nbytes == 0 || t->storage->kind == LLMC_STORAGE_MAPPED);
    llmc_tensor_free(t);
    if (!ok) { bad++; fprintf(stderr, "%s: %s differs\n", what, ts[i].name); }
  }
  CHECK(bad == 0, "%s: %d tensors differ", what, bad);
  size_t nm;
  const llmc_st_kv *m = llmc_st_set_metadata(s, &nm);
  CHECK(nm == 2 && strcmp(m[0].key, "format") == 0 && strcmp(m[0].value, "pt") == 0 &&
        strcmp(m[1].key, "note") == 0 && strcmp(m[1].value, "d\xc3\xa9j\xc3\xa0 \"vu\"") == 0,
        "%s: metadata", what);
}

static void test_roundtrip(void) {
  rt_tensor ts[3 * LLMC_DTYPE_COUNT];
  int n = make_rt_set(ts);
  char path[1024];

  /* single file */
  tmp_path(path, sizeof path, "rt.safetensors");
  CHECK(write_rt(path, 0, ts, n) == 0, "write single: %s", llmc_errmsg());
  llmc_st_set *s = llmc_st_set_open(path);
  CHECK(s != NULL, "open single: %s", llmc_errmsg());
  if (s) { check_rt_set(s, ts, n, "single"); llmc_st_set_free(s); }
  char tmpl[64];
  snprintf(tmpl, sizeof tmpl, ".tmp.%ld", (long)getpid());
  CHECK_EQ_INT(count_matching(tmpdir, tmpl), 0);

  /* sharded: 64-byte shards -> several files */
  tmp_path(path, sizeof path, "rt-sharded");
  CHECK(write_rt(path, 64, ts, n) == 0, "write sharded: %s", llmc_errmsg());
  s = llmc_st_set_open(path);
  CHECK(s != NULL, "open sharded: %s", llmc_errmsg());
  if (s) {
    CHECK(llmc_st_set_nfiles(s) > 3, "nfiles %zu", llmc_st_set_nfiles(s));
    check_rt_set(s, ts, n, "sharded");
    llmc_st_set_free(s);
  }
  CHECK_EQ_INT(count_matching(path, ".tmp."), 0);
  for (int i = 0; i < n; i++) free(ts[i].bytes);
}

/* a hand-planned sharding, its index text as transformers writes it */
static void test_index(void) {
  char dir[1024], p[1200];
  tmp_path(dir, sizeof dir, "planned");
  /* declaration order: a 40 B, b 40 B, c 30 B, d 160 B, e 8 B; max 100 B:
  ** {a, b} (c would make 110), {c} (d would make 190), {d} (alone, > max), {e} */
  struct { const char *name; llmc_dtype dt; int64_t n; } decl[] = {
    {"a", LLMC_F32, 10}, {"b", LLMC_F32, 10}, {"c", LLMC_I8, 30}, {"d", LLMC_F64, 20}, {"e", LLMC_BF16, 4}};
  unsigned char buf[5][160];
  llmc_st_writer *w = llmc_st_writer_new(dir, 100);
  int rc = 0;
  for (int i = 0; i < 5; i++) {
    rc |= llmc_st_writer_declare(w, decl[i].name, decl[i].dt, 1, &decl[i].n);
    fill_bytes(buf[i], sizeof buf[i], 100u + (uint32_t)i);
  }
  rc |= llmc_st_writer_begin(w);
  CHECK_EQ_INT(llmc_st_writer_nshards(w), 4);
  snprintf(p, sizeof p, "%s/model-00003-of-00004.safetensors", dir);
  CHECK(llmc_st_writer_shard_path(w, 2) && strcmp(llmc_st_writer_shard_path(w, 2), p) == 0, "shard path");
  for (int i = 0; i < 5; i++)
    rc |= llmc_st_writer_write(w, decl[i].name, buf[i], (size_t)decl[i].n * llmc_dtype_size(decl[i].dt));
  rc |= llmc_st_writer_finish(w);
  CHECK(rc == 0, "planned write: %s", llmc_errmsg());
  llmc_st_writer_free(w);
  static const char expected[] =
      "{\n"
      "  \"metadata\": {\n"
      "    \"total_size\": 278\n"
      "  },\n"
      "  \"weight_map\": {\n"
      "    \"a\": \"model-00001-of-00004.safetensors\",\n"
      "    \"b\": \"model-00001-of-00004.safetensors\",\n"
      "    \"c\": \"model-00002-of-00004.safetensors\",\n"
      "    \"d\": \"model-00003-of-00004.safetensors\",\n"
      "    \"e\": \"model-00004-of-00004.safetensors\"\n"
      "  }\n"
      "}\n";
  snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
  size_t n;
  unsigned char *txt = read_file(p, &n);
  CHECK(txt && n == sizeof expected - 1 && memcmp(txt, expected, n) == 0, "index text:\n%.*s", (int)n,
        txt ? (char *)txt : "");
  free(txt);
  /* open through the index file, check shard membership and bytes */
  llmc_st_set *s = llmc_st_set_open(p);
  CHECK(s != NULL, "open index: %s", llmc_errmsg());
  if (s) {
    CHECK_EQ_INT(llmc_st_set_nfiles(s), 4);
    const char *shard_of[5] = {"00001", "00001", "00002", "00003", "00004"};
    for (int i = 0; i < 5; i++) {
      llmc_st_file *f;
      const llmc_st_info *e = llmc_st_set_find(s, decl[i].name, &f);
      CHECK(e && strstr(llmc_st_path(f), shard_of[i]) &&
            memcmp(llmc_st_data(f, e), buf[i], e->nbytes) == 0, "planned tensor %s", decl[i].name);
    }
    llmc_st_set_free(s);
  }
  /* a single-shard save into the same directory removes the stale index and shards */
  w = llmc_st_writer_new(dir, 1u << 20);
  rc = llmc_st_writer_declare(w, "z", decl[0].dt, 1, &decl[0].n);
  rc |= llmc_st_writer_begin(w);
  rc |= llmc_st_writer_write(w, "z", buf[0], 40);
  rc |= llmc_st_writer_finish(w);
  llmc_st_writer_free(w);
  CHECK(rc == 0, "single-shard resave: %s", llmc_errmsg());
  CHECK(!exists(p), "stale index left");
  CHECK_EQ_INT(count_matching(dir, "-of-"), 0);
  s = llmc_st_set_open(dir);
  CHECK(s && llmc_st_set_count(s) == 1 && llmc_st_set_find(s, "z", NULL), "resaved dir: %s", llmc_errmsg());
  llmc_st_set_free(s);
}

/* ---- 4. threads, parts, incomplete, abort, misuse ------------------------------ */

typedef struct { llmc_st_writer *w; const unsigned char *src; int part, nparts; size_t chunk; int rc; } thr_arg;

static void *thr_write(void *p) {
  thr_arg *a = p;
  for (int k = a->part; k < a->nparts; k += 2)
    a->rc |= llmc_st_writer_write_part(a->w, "big", (uint64_t)k * a->chunk, a->src + (size_t)k * a->chunk, a->chunk);
  return NULL;
}

/* RssFile of this process, KiB (/proc/self/status), -1 when unreadable */
static long rss_file_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "RssFile: %ld", &v) == 1) break;
  fclose(f);
  return v;
}

static void test_writer_parts(void) {
  char path[1024];
  tmp_path(path, sizeof path, "parts.safetensors");
  enum { N = 1 << 20, PARTS = 64 };
  unsigned char *src = malloc(N);
  fill_bytes(src, N, 7);
  int64_t shape[1] = {N / 4};
  llmc_st_writer *w = llmc_st_writer_new(path, 0);
  int rc = llmc_st_writer_declare(w, "big", LLMC_F32, 1, shape);
  int64_t s2[2] = {3, 4};
  rc |= llmc_st_writer_declare(w, "tr", LLMC_I16, 2, s2);
  rc |= llmc_st_writer_begin(w);
  thr_arg a[2] = {{w, src, 0, PARTS, N / PARTS, 0}, {w, src, 1, PARTS, N / PARTS, 0}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, thr_write, &a[i]);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  CHECK(rc == 0 && a[0].rc == 0 && a[1].rc == 0, "threaded parts: %s", llmc_errmsg());
  /* misuse is reported, not fatal */
  CHECK(llmc_st_writer_write_part(w, "big", 0, src, 16) < 0 && strstr(llmc_errmsg(), "written twice") &&
        strstr(llmc_errmsg(), "parts.safetensors"), "overlap: %s", llmc_errmsg());
  CHECK(llmc_st_writer_write_part(w, "big", N - 8, src, 16) < 0 && strstr(llmc_errmsg(), "outside"),
        "past end: %s", llmc_errmsg());
  CHECK(llmc_st_writer_write(w, "nope", src, 4) < 0 && strstr(llmc_errmsg(), "undeclared tensor 'nope'"),
        "undeclared: %s", llmc_errmsg());
  CHECK(llmc_st_writer_write(w, "tr", src, 4) < 0 && strstr(llmc_errmsg(), "24"), "size: %s", llmc_errmsg());
  /* a non-contiguous tensor is written as its contiguous copy */
  int64_t s43[2] = {4, 3};
  llmc_tensor *base = llmc_tensor_empty(LLMC_I16, 2, s43);
  int16_t *bp = llmc_tensor_data(base);
  for (int i = 0; i < 12; i++) bp[i] = (int16_t)(i * 7 - 20);
  llmc_tensor *tr = llmc_tensor_transpose(base, 0, 1);   /* [3, 4], strided */
  CHECK(!llmc_tensor_is_contiguous(tr), "transpose view is strided");
  llmc_tensor *wrong = llmc_tensor_empty(LLMC_I16, 2, s43);
  CHECK(llmc_st_writer_write_tensor(w, "tr", wrong) < 0 && strstr(llmc_errmsg(), "shape"), "shape mismatch: %s",
        llmc_errmsg());
  CHECK(llmc_st_writer_write_tensor(w, "tr", tr) == 0, "write_tensor: %s", llmc_errmsg());
  CHECK(llmc_st_writer_finish(w) == 0, "finish: %s", llmc_errmsg());
  llmc_st_writer_free(w);
  llmc_st_file *f = llmc_st_open(path);
  CHECK(f != NULL, "reopen parts: %s", llmc_errmsg());
  if (f) {
    const llmc_st_info *e = llmc_st_find(f, "big");
    CHECK(e && memcmp(llmc_st_data(f, e), src, N) == 0, "threaded bytes");
    e = llmc_st_find(f, "tr");
    const int16_t *q = e ? llmc_st_data(f, e) : NULL;
    int ok = q != NULL;
    for (int i = 0; ok && i < 3; i++)
      for (int j = 0; j < 4; j++) ok &= q[i * 4 + j] == bp[j * 3 + i];
    CHECK(ok, "transposed bytes");
    llmc_st_file_release(f);
  }
  /* drop_pages: the 1 MiB tensor's pages leave the resident set (RssFile
  ** falls), its bytes stay readable through the same view, and names
  ** that are absent or smaller than a page drop nothing */
  {
    llmc_st_set *s = llmc_st_set_open(path);
    llmc_tensor *t = s ? llmc_st_set_get(s, "big") : NULL;
    CHECK(t != NULL, "set get big: %s", llmc_errmsg());
    if (t) {
      const unsigned char *d = llmc_tensor_data(t);
      unsigned long sum = 0;
      for (int i = 0; i < N; i += 4096) sum += d[i];   /* touch every page */
      long before = rss_file_kib();
      int64_t dropped = llmc_st_set_drop_pages(s, "big");
      long after = rss_file_kib();
      long page = sysconf(_SC_PAGESIZE);
      CHECK(dropped >= N - 2 * page && dropped <= N && dropped % page == 0, "dropped %lld bytes of 1 MiB",
            (long long)dropped);
      CHECK(before - after >= (N / 1024) / 2, "RssFile %ld -> %ld KiB after dropping 1 MiB (sum %lu)", before,
            after, sum);
      CHECK(memcmp(d, src, N) == 0, "bytes readable again after drop_pages");
      CHECK(llmc_st_set_drop_pages(s, "tr") == 0 && llmc_st_set_drop_pages(s, "nope") == 0,
            "tiny or absent tensors drop nothing");
      llmc_tensor_free(t);
    }
    llmc_st_set_free(s);
  }
  llmc_tensor_free(tr);
  llmc_tensor_free(base);
  llmc_tensor_free(wrong);
  unlink(path);

  /* incomplete: finish fails, nothing left */
  w = llmc_st_writer_new(path, 0);
  rc = llmc_st_writer_declare(w, "big", LLMC_F32, 1, shape);
  rc |= llmc_st_writer_begin(w);
  rc |= llmc_st_writer_write_part(w, "big", 0, src, N / 2);
  CHECK(rc == 0, "half write: %s", llmc_errmsg());
  CHECK(llmc_st_writer_finish(w) < 0 && strstr(llmc_errmsg(), "'big' incomplete") &&
        strstr(llmc_errmsg(), "524288 of 1048576"), "incomplete: %s", llmc_errmsg());
  CHECK(!exists(path), "final file after failed finish");
  CHECK_EQ_INT(count_matching(tmpdir, ".tmp."), 0);
  CHECK(llmc_st_writer_write_part(w, "big", N / 2, src, N / 2) < 0, "write after failure accepted");
  llmc_st_writer_free(w);

  /* abort removes the temporaries */
  w = llmc_st_writer_new(path, 0);
  rc = llmc_st_writer_declare(w, "big", LLMC_F32, 1, shape);
  rc |= llmc_st_writer_begin(w);
  CHECK(rc == 0 && count_matching(tmpdir, ".tmp.") == 1, "temporary exists while writing");
  llmc_st_writer_abort(w);
  CHECK_EQ_INT(count_matching(tmpdir, ".tmp."), 0);
  CHECK(llmc_st_writer_finish(w) < 0, "finish after abort accepted");
  llmc_st_writer_free(w);
  CHECK(!exists(path), "final after abort");

  /* declaration errors */
  w = llmc_st_writer_new(path, 0);
  CHECK(llmc_st_writer_declare(w, "__metadata__", LLMC_F32, 1, shape) < 0, "reserved name accepted");
  CHECK(llmc_st_writer_declare(w, "bad\xff", LLMC_F32, 1, shape) < 0 && strstr(llmc_errmsg(), "UTF-8"),
        "invalid UTF-8 name: %s", llmc_errmsg());
  int64_t neg = -1;
  CHECK(llmc_st_writer_declare(w, "neg", LLMC_F32, 1, &neg) < 0, "negative dim accepted");
  rc = llmc_st_writer_declare(w, "x", LLMC_F32, 1, shape) | llmc_st_writer_declare(w, "x", LLMC_U8, 1, shape);
  CHECK(rc == 0, "declare");
  CHECK(llmc_st_writer_begin(w) < 0 && strstr(llmc_errmsg(), "'x' declared twice"), "dup: %s", llmc_errmsg());
  llmc_st_writer_free(w);
  CHECK(!exists(path) && count_matching(tmpdir, ".tmp.") == 0, "nothing after failed begin");
  free(src);
}

/* ---- 5. corrupt files ---------------------------------------------------------- */

static void expect_bad(const char *tag, const unsigned char *buf, size_t n, const char *what, const char *tensor) {
  char path[1024];
  snprintf(path, sizeof path, "%s/bad-%s.safetensors", tmpdir, tag);
  write_file(path, buf, n);
  llmc_st_file *f = llmc_st_open(path);
  const char *msg = llmc_errmsg();
  CHECK(f == NULL && strstr(msg, path) && strstr(msg, what) && (!tensor || strstr(msg, tensor)),
        "%s: opened=%d, message \"%s\" should name the file and contain \"%s\"%s%s", tag, f != NULL, msg, what,
        tensor ? " and " : "", tensor ? tensor : "");
  llmc_st_file_release(f);
  /* the in-memory entry point shares the validation */
  f = llmc_st_open_memory(buf, n, tag);
  CHECK(f == NULL && strstr(llmc_errmsg(), tag) && strstr(llmc_errmsg(), what), "%s (memory): %s", tag,
        llmc_errmsg());
  llmc_st_file_release(f);
  unlink(path);
}

static void bad_hdr(const char *tag, const char *hdr, size_t datalen, const char *what, const char *tensor) {
  size_t n;
  unsigned char *b = image(hdr, datalen, 1, &n);
  expect_bad(tag, b, n, what, tensor);
  free(b);
}

static void test_corrupt(void) {
  const char *good = "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                     "\"b\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[16,20]}}";
  size_t n;
  unsigned char *b = image(good, 20, 0, &n);
  llmc_st_file *f = llmc_st_open_memory(b, n, "good");
  CHECK(f && llmc_st_count(f) == 2, "the base image is valid: %s", llmc_errmsg());
  llmc_st_file_release(f);
  expect_bad("truncated", b, n - 1, "truncated", "'b'");
  expect_bad("short", b, 5, "shorter than the 8-byte", NULL);
  unsigned char *c = malloc(n + 3);
  memcpy(c, b, n);
  memset(c + n, 0, 3);
  expect_bad("trailing", c, n + 3, "3 stray bytes", "'b'");
  memcpy(c, b, n);
  c[0] = 0xff; c[1] = 0x7f;   /* header length 32767 > file */
  expect_bad("hdr-past-eof", c, n, "runs past the end", NULL);
  memcpy(c, b, n);
  c[7] = 0x40;                /* 2^62-ish */
  expect_bad("hdr-absurd", c, n, "exceeds the 100000000-byte limit", NULL);
  free(c);
  free(b);

  bad_hdr("overlap", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                     "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, "overlap", "'v'");
  bad_hdr("gap", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20, "gap", "'v'");
  bad_hdr("gap-start", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "gap", "'w'");
  bad_hdr("no-tensors-data", "{}", 4, "no tensors but 4 bytes", NULL);
  bad_hdr("dtype", "{\"w\":{\"dtype\":\"F7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype 'F7'", "'w'");
  bad_hdr("dtype-lower", "{\"w\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype", "'w'");
  bad_hdr("size", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "span 8 bytes but F32 shape needs 12",
          "'w'");
  bad_hdr("neg-shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape[0] is not a non-negative",
          "'w'");
  bad_hdr("float-shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "shape[0]", "'w'");
  bad_hdr("dims", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, "9 dims", "'w'");
  bad_hdr("overflow", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,0],\"data_offsets\":[0,0]}}", 0,
          "overflows", "'w'");
  bad_hdr("overflow-bytes", "{\"w\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]}}", 0,
          "overflows", "'w'");
  bad_hdr("reversed", "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, "end before", "'w'");
  bad_hdr("past-data", "{\"w\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 4, "past the data region", "'w'");
  bad_hdr("offsets-arity", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4,8]}}", 4, "[begin, end]", "'w'");
  bad_hdr("offsets-neg", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[-4,0]}}", 4, "non-negative", "'w'");
  bad_hdr("no-shape", "{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,4]}}", 4, "\"shape\"", "'w'");
  bad_hdr("no-dtype", "{\"w\":{\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "\"dtype\"", "'w'");
  bad_hdr("entry-type", "{\"w\":[1,2]}", 0, "not a JSON object", "'w'");
  bad_hdr("array-header", "[1,2,3]", 0, "not an object", NULL);
  bad_hdr("bad-json", "{\"w\":{\"dtype\":\"U8\",", 0, "invalid JSON header", NULL);
  bad_hdr("empty-header", "", 0, "invalid JSON header", NULL);
  bad_hdr("utf8", "{\"w\xff\xfe\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, "invalid JSON header", NULL);
  bad_hdr("dup", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                 "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, "duplicate", NULL);
  bad_hdr("meta-value", "{\"__metadata__\":{\"format\":1}}", 0, "__metadata__ value of 'format'", NULL);
  bad_hdr("meta-type", "{\"__metadata__\":[\"pt\"]}", 0, "__metadata__ must be an object", NULL);

  /* accepted edge cases: BOOL, zero-size tensors at one offset, null metadata,
  ** entries listed out of offset order, padding after the JSON */
  const char *edge = "{\"__metadata__\":null,\"z2\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[3,3]},"
                     "\"m\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]},"
                     "\"z1\":{\"dtype\":\"I64\",\"shape\":[5,0],\"data_offsets\":[3,3]}}     ";
  b = image(edge, 3, 0, &n);
  f = llmc_st_open_memory(b, n, "edge");
  CHECK(f && llmc_st_count(f) == 3, "edge cases rejected: %s", llmc_errmsg());
  if (f) {
    const llmc_st_info *e = llmc_st_find(f, "m");
    CHECK(e && e->dtype == LLMC_BOOL && e->nbytes == 3, "bool entry");
    size_t nm;
    llmc_st_metadata(f, &nm);
    CHECK_EQ_INT(nm, 0);
    llmc_tensor *t = llmc_st_get(f, "z1");
    CHECK(t && llmc_tensor_numel(t) == 0 && t->ndim == 2 && t->shape[0] == 5, "empty tensor: %s", llmc_errmsg());
    llmc_tensor_free(t);
    CHECK(llmc_st_get(f, "zz") == NULL && strstr(llmc_errmsg(), "edge: no tensor named 'zz'"), "missing: %s",
          llmc_errmsg());
    llmc_st_file_release(f);
  }
  free(b);
  CHECK(llmc_st_open("/nonexistent/x.safetensors") == NULL && strstr(llmc_errmsg(), "/nonexistent/x.safetensors"),
        "missing file: %s", llmc_errmsg());
  CHECK(llmc_st_open(tmpdir) == NULL && strstr(llmc_errmsg(), "directory"), "dir: %s", llmc_errmsg());
}

/* unaligned data: copies instead of misaligned views */
static void test_unaligned(void) {
  /* a header padded so that the F32 data starts at an odd file offset */
  char hdr[128] = "{\"v\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}";
  while ((8 + strlen(hdr)) % 4 != 1) strcat(hdr, " ");
  size_t n;
  unsigned char *b = image(hdr, 0, 0, &n);
  float vals[3] = {1.5f, -2.25f, 1e30f};
  unsigned char *img = malloc(n + 12);
  memcpy(img, b, n);
  memcpy(img + n, vals, 12);
  CHECK((8 + strlen(hdr)) % 4 != 0, "header chosen to misalign");
  char path[1024];
  tmp_path(path, sizeof path, "unaligned.safetensors");
  write_file(path, img, n + 12);
  llmc_st_file *f = llmc_st_open(path);
  CHECK(f != NULL, "open unaligned: %s", llmc_errmsg());
  if (f) {
    llmc_tensor *t = llmc_st_get(f, "v");
    CHECK(t && t->storage->kind == LLMC_STORAGE_HOST && (uintptr_t)llmc_tensor_data(t) % 4 == 0 &&
          memcmp(llmc_tensor_data(t), vals, 12) == 0, "unaligned tensor is an aligned host copy");
    llmc_tensor_free(t);
    llmc_st_file_release(f);
  }
  unlink(path);
  free(img);
  free(b);
}

/* ---- 6. sharded index errors ----------------------------------------------------- */

static void write_st(const char *path, const char *name) {
  llmc_st_writer *w = llmc_st_writer_new(path, 0);
  int64_t s = 2;
  unsigned char d[2] = {1, 2};
  llmc_st_writer_declare(w, name, LLMC_U8, 1, &s);
  llmc_st_writer_begin(w);
  llmc_st_writer_write(w, name, d, 2);
  CHECK(llmc_st_writer_finish(w) == 0, "write %s: %s", path, llmc_errmsg());
  llmc_st_writer_free(w);
}

static void index_case(const char *tag, const char *json, const char *what) {
  char p[1024];
  snprintf(p, sizeof p, "%s/idx/%s.index.json", tmpdir, tag);
  write_file(p, json, strlen(json));
  llmc_st_set *s = llmc_st_set_open(p);
  CHECK(s == NULL && strstr(llmc_errmsg(), p) && strstr(llmc_errmsg(), what), "%s: %s", tag, llmc_errmsg());
  llmc_st_set_free(s);
}

static void test_index_errors(void) {
  char d[1024], p[1100];
  snprintf(d, sizeof d, "%s/idx", tmpdir);
  mkdir(d, 0777);
  snprintf(p, sizeof p, "%s/s1.safetensors", d);
  write_st(p, "x");
  snprintf(p, sizeof p, "%s/s2.safetensors", d);
  write_st(p, "y");
  index_case("ok-but-missing", "{\"weight_map\":{\"x\":\"s1.safetensors\",\"y\":\"gone.safetensors\"}}",
             "shard 'gone.safetensors'");
  index_case("not-in-shard", "{\"weight_map\":{\"x\":\"s1.safetensors\",\"y\":\"s1.safetensors\"}}",
             "maps tensor 'y' to 's1.safetensors', which has no such tensor");
  index_case("escape", "{\"weight_map\":{\"x\":\"../s1.safetensors\"}}", "relative path");
  index_case("no-map", "{\"metadata\":{\"total_size\":4}}", "no \"weight_map\"");
  index_case("dup", "{\"weight_map\":{\"x\":\"s1.safetensors\",\"x\":\"s1.safetensors\"}}", "duplicate");
  index_case("value", "{\"weight_map\":{\"x\":3}}", "not a string");
  /* a shard holding a tensor the index does not list for it */
  snprintf(p, sizeof p, "%s/s3.safetensors", d);
  {
    llmc_st_writer *w = llmc_st_writer_new(p, 0);
    int64_t s = 1;
    unsigned char v = 9;
    llmc_st_writer_declare(w, "x3", LLMC_U8, 1, &s);
    llmc_st_writer_declare(w, "extra", LLMC_U8, 1, &s);
    llmc_st_writer_begin(w);
    llmc_st_writer_write(w, "x3", &v, 1);
    llmc_st_writer_write(w, "extra", &v, 1);
    llmc_st_writer_finish(w);
    llmc_st_writer_free(w);
  }
  index_case("extra", "{\"weight_map\":{\"x3\":\"s3.safetensors\"}}", "holds tensor 'extra', which the index does not list");
  snprintf(p, sizeof p, "%s/good.index.json", d);
  const char *ok = "{\"metadata\":{\"total_size\":4},\"weight_map\":{\"y\":\"s2.safetensors\",\"x\":\"s1.safetensors\"}}";
  write_file(p, ok, strlen(ok));
  llmc_st_set *s = llmc_st_set_open(p);
  CHECK(s && llmc_st_set_count(s) == 2 && llmc_st_set_nfiles(s) == 2, "good index: %s", llmc_errmsg());
  if (s) {
    llmc_st_file *f;
    const llmc_st_info *e = llmc_st_set_info_at(s, 1, &f);
    CHECK(e && strcmp(e->name, "y") == 0 && strstr(llmc_st_path(f), "s2.safetensors"), "sorted set entries");
    llmc_tensor *t = llmc_st_set_get(s, "y");
    CHECK(t && ((unsigned char *)llmc_tensor_data(t))[1] == 2, "set get");
    llmc_st_set_free(s);
    /* the tensor outlives the set */
    CHECK(t && ((unsigned char *)llmc_tensor_data(t))[0] == 1, "tensor after set free");
    llmc_tensor_free(t);
  }
  CHECK(llmc_st_set_open(d) == NULL && strstr(llmc_errmsg(), "no model.safetensors"), "empty dir: %s", llmc_errmsg());
}

/* ---- 7. disk full: a file-size limit -------------------------------------------- */

static void test_disk_full(void) {
  char path[1024], dir[1024];
  tmp_path(path, sizeof path, "full.safetensors");
  tmp_path(dir, sizeof dir, "full-dir");
  signal(SIGXFSZ, SIG_IGN);   /* else the kernel kills us instead of returning EFBIG */
  struct rlimit old, lim;
  getrlimit(RLIMIT_FSIZE, &old);
  lim = old;
  lim.rlim_cur = 4096;
  enum { N = 1 << 16 };
  unsigned char *src = calloc(1, N);
  int64_t shape[1] = {N};

  /* the limit hits when the temporary is reserved (begin) */
  CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit: %s", strerror(errno));
  llmc_st_writer *w = llmc_st_writer_new(path, 0);
  llmc_st_writer_declare(w, "t", LLMC_U8, 1, shape);
  int rc = llmc_st_writer_begin(w);
  setrlimit(RLIMIT_FSIZE, &old);
  CHECK(rc < 0 && strstr(llmc_errmsg(), path) && strstr(llmc_errmsg(), strerror(EFBIG)), "begin under limit: %s",
        llmc_errmsg());
  CHECK(llmc_st_writer_finish(w) < 0, "finish after failed begin accepted");
  llmc_st_writer_free(w);
  CHECK(!exists(path), "final file left");
  CHECK_EQ_INT(count_matching(tmpdir, ".tmp."), 0);

  /* the limit hits while writing tensor bytes (sharded, two shards) */
  w = llmc_st_writer_new(dir, N);
  llmc_st_writer_set_metadata(w, "format", "pt");
  llmc_st_writer_declare(w, "a", LLMC_U8, 1, shape);
  llmc_st_writer_declare(w, "b", LLMC_U8, 1, shape);
  rc = llmc_st_writer_begin(w);
  CHECK(rc == 0 && llmc_st_writer_nshards(w) == 2, "begin: %s", llmc_errmsg());
  CHECK(llmc_st_writer_write(w, "a", src, N) == 0, "write a: %s", llmc_errmsg());
  setrlimit(RLIMIT_FSIZE, &lim);
  rc = llmc_st_writer_write(w, "b", src, N);
  setrlimit(RLIMIT_FSIZE, &old);
  CHECK(rc < 0 && strstr(llmc_errmsg(), "model-00002-of-00002.safetensors") && strstr(llmc_errmsg(), "'b'") &&
        strstr(llmc_errmsg(), strerror(EFBIG)), "write under limit: %s", llmc_errmsg());
  CHECK(llmc_st_writer_finish(w) < 0 && strstr(llmc_errmsg(), "failed"), "finish after failed write: %s", llmc_errmsg());
  llmc_st_writer_free(w);
  CHECK_EQ_INT(count_matching(dir, "safetensors"), 0);
  free(src);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/llmc-test-st-XXXXXX");
  if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
  test_tiny_llama();
  rewrite_identical("model.safetensors");
  rewrite_identical("golden.safetensors");
  test_roundtrip();
  test_index();
  test_writer_parts();
  test_corrupt();
  test_unaligned();
  test_index_errors();
  test_disk_full();
  nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  return check_summary();
}
