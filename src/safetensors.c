/*
** safetensors.c — mmap reader, sharded sets, streaming atomic writer
** (see safetensors.h for the format rules and ownership).
*/
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

/* ============================================================================
** small helpers
** ========================================================================== */

static char *dupstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

/* "dir/name" (dir may be "" or end with '/') */
static char *path_join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  int slash = a > 0 && dir[a - 1] != '/';
  char *p = malloc(a + (size_t)slash + b + 1);
  if (!p) return NULL;
  memcpy(p, dir, a);
  if (slash) p[a] = '/';
  memcpy(p + a + (size_t)slash, name, b + 1);
  return p;
}

/* directory part of a path ("." when there is none) */
static char *path_dir(const char *path) {
  const char *s = strrchr(path, '/');
  if (!s) return dupstr(".");
  if (s == path) return dupstr("/");
  size_t n = (size_t)(s - path);
  char *p = malloc(n + 1);
  if (!p) return NULL;
  memcpy(p, path, n);
  p[n] = 0;
  return p;
}

static uint64_t le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static int cmp_str_ptr(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ============================================================================
** one file: parsing and validation
** ========================================================================== */

struct llmc_st_file {
  atomic_int refcount;
  char *path;
  const uint8_t *base;      /* whole image */
  size_t size;
  int mapped;               /* base is our mmap: munmap on free */
  const uint8_t *data;      /* data region = base + 8 + header length */
  uint64_t data_size;
  size_t n;
  llmc_st_info *infos;      /* sorted by name */
  size_t nmeta;
  llmc_st_kv *meta;         /* sorted by key */
  char *arena;              /* every name, key and value */
};

static void file_destroy(llmc_st_file *f) {
  if (!f) return;
  if (f->mapped && f->base) munmap((void *)f->base, f->size);
  free(f->path);
  free(f->infos);
  free(f->meta);
  free(f->arena);
  free(f);
}

static int cmp_info_name(const void *a, const void *b) {
  return strcmp(((const llmc_st_info *)a)->name, ((const llmc_st_info *)b)->name);
}

static int cmp_info_offset(const void *a, const void *b) {
  const llmc_st_info *x = *(const llmc_st_info *const *)a, *y = *(const llmc_st_info *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

static int cmp_kv(const void *a, const void *b) {
  return strcmp(((const llmc_st_kv *)a)->key, ((const llmc_st_kv *)b)->key);
}

/* copy s into the arena at *pos */
static const char *arena_put(char *arena, size_t *pos, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = arena + *pos;
  memcpy(p, s, n);
  *pos += n;
  return p;
}

static int parse_metadata(llmc_st_file *f, json_t *m, char *arena, size_t *pos) {
  if (json_is_null(m)) return 0;   /* the Rust crate reads null as "no metadata" */
  if (!json_is_object(m))
    return llmc_err("%s: __metadata__ must be an object of strings, got a JSON %s", f->path,
                    json_is_array(m) ? "array" : json_is_string(m) ? "string" : "scalar");
  size_t cnt = json_object_size(m), i = 0;
  f->meta = calloc(cnt ? cnt : 1, sizeof *f->meta);
  if (!f->meta) return llmc_err("%s: out of memory", f->path);
  const char *key;
  json_t *v;
  json_object_foreach(m, key, v) {
    if (!json_is_string(v))
      return llmc_err("%s: __metadata__ value of '%s' is not a string", f->path, key);
    f->meta[i].key = arena_put(arena, pos, key);
    f->meta[i].value = arena_put(arena, pos, json_string_value(v));
    i++;
  }
  f->nmeta = cnt;
  qsort(f->meta, cnt, sizeof *f->meta, cmp_kv);
  return 0;
}

/* a JSON integer >= 0, else -1 */
static int64_t json_nonneg(json_t *v) {
  if (!json_is_integer(v)) return -1;
  json_int_t x = json_integer_value(v);
  return x < 0 ? -1 : (int64_t)x;
}

static int parse_entry(llmc_st_file *f, const char *name, json_t *v, llmc_st_info *e) {
  const char *p = f->path;
  if (!json_is_object(v)) return llmc_err("%s: tensor '%s': entry is not a JSON object", p, name);
  json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
         *jo = json_object_get(v, "data_offsets");
  if (!json_is_string(jd)) return llmc_err("%s: tensor '%s': missing or non-string \"dtype\"", p, name);
  int dt = llmc_dtype_from_st_name(json_string_value(jd));
  if (dt < 0)
    return llmc_err("%s: tensor '%s': unknown dtype '%s'", p, name, json_string_value(jd));
  e->dtype = (llmc_dtype)dt;

  if (!json_is_array(js)) return llmc_err("%s: tensor '%s': missing or non-array \"shape\"", p, name);
  size_t nd = json_array_size(js);
  if (nd > LLMC_MAX_DIMS)
    return llmc_err("%s: tensor '%s': shape has %zu dims, more than the %d supported", p, name, nd,
                    LLMC_MAX_DIMS);
  e->ndim = (int)nd;
  uint64_t numel = 1;
  int overflow = 0;
  for (size_t i = 0; i < nd; i++) {
    int64_t d = json_nonneg(json_array_get(js, i));
    if (d < 0)
      return llmc_err("%s: tensor '%s': shape[%zu] is not a non-negative integer", p, name, i);
    e->shape[i] = d;
    /* overflow is an error even when a later dim is 0, as in the Rust crate */
    if (__builtin_mul_overflow(numel, (uint64_t)d, &numel)) overflow = 1;
  }
  uint64_t nbytes;
  if (overflow || numel > (uint64_t)INT64_MAX ||
      __builtin_mul_overflow(numel, (uint64_t)llmc_dtype_size(e->dtype), &nbytes))
    return llmc_err("%s: tensor '%s': shape overflows 64-bit sizes", p, name);

  if (!json_is_array(jo) || json_array_size(jo) != 2)
    return llmc_err("%s: tensor '%s': \"data_offsets\" must be [begin, end]", p, name);
  int64_t b = json_nonneg(json_array_get(jo, 0)), en = json_nonneg(json_array_get(jo, 1));
  if (b < 0 || en < 0)
    return llmc_err("%s: tensor '%s': data_offsets must be non-negative integers", p, name);
  e->begin = (uint64_t)b;
  e->end = (uint64_t)en;
  if (e->begin > e->end)
    return llmc_err("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
                    p, name, e->begin, e->end);
  if (e->end > f->data_size)
    return llmc_err("%s: tensor '%s': data_offsets end %" PRIu64
                    " is past the data region (%" PRIu64 " bytes; file truncated?)",
                    p, name, e->end, f->data_size);
  if (e->end - e->begin != nbytes)
    return llmc_err("%s: tensor '%s': data_offsets span %" PRIu64 " bytes but %s shape needs %" PRIu64,
                    p, name, e->end - e->begin, llmc_dtype_table[e->dtype].st_name, nbytes);
  e->nbytes = (size_t)nbytes;
  return 0;
}

/* The entries, sorted by offset, must tile [0, data_size) exactly. */
static int check_tiling(llmc_st_file *f) {
  const llmc_st_info **ord = malloc((f->n ? f->n : 1) * sizeof *ord);
  if (!ord) return llmc_err("%s: out of memory", f->path);
  for (size_t i = 0; i < f->n; i++) ord[i] = &f->infos[i];
  qsort(ord, f->n, sizeof *ord, cmp_info_offset);
  uint64_t expect = 0;
  int rc = 0;
  for (size_t i = 0; i < f->n && rc == 0; i++) {
    const llmc_st_info *e = ord[i];
    if (e->begin < expect)
      rc = llmc_err("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                    "] overlap tensor '%s' (which ends at %" PRIu64 ")",
                    f->path, e->name, e->begin, e->end, ord[i - 1]->name, expect);
    else if (e->begin > expect)
      rc = llmc_err("%s: tensor '%s': data_offsets begin at %" PRIu64 ", leaving a gap after %s%s%s (at %" PRIu64 ")",
                    f->path, e->name, e->begin, i ? "tensor '" : "the start of the data region",
                    i ? ord[i - 1]->name : "", i ? "'" : "", expect);
    expect = e->end;
  }
  if (rc == 0 && expect != f->data_size) {
    if (f->n)
      rc = llmc_err("%s: %" PRIu64 " stray bytes after the last tensor '%s' (data ends at %" PRIu64
                    ", file data region is %" PRIu64 " bytes)",
                    f->path, f->data_size - expect, ord[f->n - 1]->name, expect, f->data_size);
    else
      rc = llmc_err("%s: no tensors but %" PRIu64 " bytes of data", f->path, f->data_size);
  }
  free(ord);
  return rc;
}

/* Validate the image f->base[0..size) and fill f.  Nothing is exposed on
** failure: the caller destroys f. */
static int parse_image(llmc_st_file *f) {
  const char *p = f->path;
  if (f->size < 8)
    return llmc_err("%s: not a safetensors file: %zu bytes, shorter than the 8-byte header length",
                    p, f->size);
  uint64_t hlen = le64(f->base);
  if (hlen > LLMC_ST_MAX_HEADER)
    return llmc_err("%s: header length %" PRIu64 " exceeds the %u-byte limit (corrupt or not a safetensors file)",
                    p, hlen, LLMC_ST_MAX_HEADER);
  if (hlen > f->size - 8)
    return llmc_err("%s: header length %" PRIu64 " runs past the end of the file (%zu bytes; truncated?)",
                    p, hlen, f->size);
  f->data = f->base + 8 + hlen;
  f->data_size = f->size - 8 - hlen;

  json_error_t je;
  json_t *root = json_loadb((const char *)f->base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
  if (!root)
    return llmc_err("%s: invalid JSON header: %s (at header byte %d)", p, je.text, je.position);
  int rc = -1;
  if (!json_is_object(root)) {
    llmc_err("%s: header is a JSON %s, not an object", p, json_is_array(root) ? "array" : "value");
    goto out;
  }
  /* one arena for every string, so that the JSON tree can go */
  size_t need = 1, cnt = 0;
  const char *key;
  json_t *v;
  json_object_foreach(root, key, v) {
    need += strlen(key) + 1;
    if (strcmp(key, "__metadata__") == 0) {
      const char *mk;
      json_t *mv;
      if (json_is_object(v))
        json_object_foreach(v, mk, mv) {
          need += strlen(mk) + 1 + (json_is_string(mv) ? strlen(json_string_value(mv)) + 1 : 0);
        }
    } else {
      cnt++;
    }
  }
  f->arena = malloc(need);
  f->infos = calloc(cnt ? cnt : 1, sizeof *f->infos);
  if (!f->arena || !f->infos) { llmc_err("%s: out of memory", p); goto out; }
  size_t pos = 0, i = 0;
  json_object_foreach(root, key, v) {
    if (strcmp(key, "__metadata__") == 0) {
      if (parse_metadata(f, v, f->arena, &pos) < 0) goto out;
      continue;
    }
    llmc_st_info *e = &f->infos[i];
    e->name = arena_put(f->arena, &pos, key);
    if (parse_entry(f, e->name, v, e) < 0) goto out;
    i++;
  }
  f->n = cnt;
  if (check_tiling(f) < 0) goto out;
  qsort(f->infos, f->n, sizeof *f->infos, cmp_info_name);
  rc = 0;
out:
  json_decref(root);
  return rc;
}

static llmc_st_file *file_alloc(const char *name) {
  llmc_st_file *f = calloc(1, sizeof *f);
  if (!f || !(f->path = dupstr(name))) {
    free(f);
    llmc_err("%s: out of memory", name);
    return NULL;
  }
  atomic_init(&f->refcount, 1);
  return f;
}

llmc_st_file *llmc_st_open_memory(const void *buf, size_t len, const char *name) {
  if (!name) name = "<memory>";
  if (!buf && len) { llmc_err("%s: NULL buffer", name); return NULL; }
  llmc_st_file *f = file_alloc(name);
  if (!f) return NULL;
  f->base = buf ? buf : (const uint8_t *)"";
  f->size = len;
  if (parse_image(f) < 0) { file_destroy(f); return NULL; }
  return f;
}

llmc_st_file *llmc_st_open(const char *path) {
  if (!path) { llmc_err("safetensors open: NULL path"); return NULL; }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) { llmc_err("%s: %s", path, strerror(errno)); return NULL; }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    llmc_err("%s: %s", path, strerror(errno));
    close(fd);
    return NULL;
  }
  if (!S_ISREG(st.st_mode)) {
    llmc_err("%s: not a regular file%s", path,
             S_ISDIR(st.st_mode) ? " (a directory: open it as a checkpoint set)" : "");
    close(fd);
    return NULL;
  }
  llmc_st_file *f = file_alloc(path);
  if (!f) { close(fd); return NULL; }
  f->size = (size_t)st.st_size;
  if (f->size > 0) {
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      llmc_err("%s: mmap: %s", path, strerror(errno));
      close(fd);
      file_destroy(f);
      return NULL;
    }
    f->base = m;
    f->mapped = 1;
  } else {
    f->base = (const uint8_t *)"";
  }
  close(fd);   /* the mapping keeps the file */
  if (parse_image(f) < 0) { file_destroy(f); return NULL; }
  return f;
}

llmc_st_file *llmc_st_file_retain(llmc_st_file *f) {
  if (f) atomic_fetch_add(&f->refcount, 1);
  return f;
}

void llmc_st_file_release(void *fv) {
  llmc_st_file *f = fv;
  if (f && atomic_fetch_sub(&f->refcount, 1) == 1) file_destroy(f);
}

const char *llmc_st_path(const llmc_st_file *f) { return f->path; }
size_t llmc_st_count(const llmc_st_file *f) { return f->n; }

const llmc_st_info *llmc_st_info_at(const llmc_st_file *f, size_t i) {
  return i < f->n ? &f->infos[i] : NULL;
}

const llmc_st_info *llmc_st_find(const llmc_st_file *f, const char *name) {
  llmc_st_info key;
  key.name = name;
  return bsearch(&key, f->infos, f->n, sizeof *f->infos, cmp_info_name);
}

const void *llmc_st_data(const llmc_st_file *f, const llmc_st_info *e) {
  return f->data + e->begin;
}

const llmc_st_kv *llmc_st_metadata(const llmc_st_file *f, size_t *n) {
  if (n) *n = f->nmeta;
  return f->meta;
}

static const char *kv_get(const llmc_st_kv *kv, size_t n, const char *key) {
  llmc_st_kv k = {key, NULL};
  const llmc_st_kv *r = bsearch(&k, kv, n, sizeof *kv, cmp_kv);
  return r ? r->value : NULL;
}

const char *llmc_st_metadata_get(const llmc_st_file *f, const char *key) {
  return kv_get(f->meta, f->nmeta, key);
}

static llmc_tensor *entry_tensor(llmc_st_file *f, const llmc_st_info *e) {
  void *p = (void *)(uintptr_t)(f->data + e->begin);   /* read-only: tensors copy on write */
  size_t isz = llmc_dtype_size(e->dtype);
  llmc_tensor *t;
  if ((uintptr_t)p % isz != 0) {
    /* a misaligned view would make every typed load UB: copy instead */
    t = llmc_tensor_from_bytes(e->dtype, e->ndim, e->shape, p, e->nbytes);
  } else {
    llmc_st_file_retain(f);   /* handed to the storage (kept by us if it fails) */
    t = llmc_tensor_from_mapped(e->dtype, e->ndim, e->shape, p, e->nbytes, f, llmc_st_file_release);
    if (!t) llmc_st_file_release(f);
  }
  if (!t) llmc_err_prefix("%s: tensor '%s': ", f->path, e->name);
  return t;
}

llmc_tensor *llmc_st_get(llmc_st_file *f, const char *name) {
  const llmc_st_info *e = llmc_st_find(f, name);
  if (!e) { llmc_err("%s: no tensor named '%s'", f->path, name); return NULL; }
  return entry_tensor(f, e);
}

/* ============================================================================
** sets: one file, a directory, or an index
** ========================================================================== */

typedef struct set_entry {
  const llmc_st_info *info;
  size_t file;
} set_entry;

struct llmc_st_set {
  char *path;
  size_t nfiles;
  llmc_st_file **files;
  size_t n;
  set_entry *entries;       /* sorted by name */
  size_t nmeta;
  llmc_st_kv *meta;         /* points into the files' arenas */
};

void llmc_st_set_free(llmc_st_set *s) {
  if (!s) return;
  for (size_t i = 0; i < s->nfiles; i++) llmc_st_file_release(s->files[i]);
  free(s->files);
  free(s->entries);
  free(s->meta);
  free(s->path);
  free(s);
}

static int cmp_set_entry(const void *a, const void *b) {
  return strcmp(((const set_entry *)a)->info->name, ((const set_entry *)b)->info->name);
}

typedef struct meta_src {
  llmc_st_kv kv;
  size_t file;
} meta_src;

static int cmp_meta_src(const void *a, const void *b) {
  const meta_src *x = a, *y = b;
  int c = strcmp(x->kv.key, y->kv.key);
  if (c) return c;
  return x->file < y->file ? -1 : x->file > y->file;
}

/* after files and entries are set: sort, reject duplicates, merge metadata */
static int set_finalize(llmc_st_set *s) {
  qsort(s->entries, s->n, sizeof *s->entries, cmp_set_entry);
  for (size_t i = 1; i < s->n; i++)
    if (strcmp(s->entries[i].info->name, s->entries[i - 1].info->name) == 0)
      return llmc_err("%s: tensor '%s' is in both %s and %s", s->path, s->entries[i].info->name,
                      s->files[s->entries[i - 1].file]->path, s->files[s->entries[i].file]->path);
  size_t total = 0;
  for (size_t i = 0; i < s->nfiles; i++) total += s->files[i]->nmeta;
  meta_src *all = malloc((total ? total : 1) * sizeof *all);
  s->meta = malloc((total ? total : 1) * sizeof *s->meta);
  if (!all || !s->meta) { free(all); return llmc_err("%s: out of memory", s->path); }
  size_t k = 0;
  for (size_t i = 0; i < s->nfiles; i++)
    for (size_t j = 0; j < s->files[i]->nmeta; j++) all[k++] = (meta_src){s->files[i]->meta[j], i};
  qsort(all, total, sizeof *all, cmp_meta_src);
  for (size_t i = 0; i < total; i++)
    if (i == 0 || strcmp(all[i].kv.key, all[i - 1].kv.key) != 0) s->meta[s->nmeta++] = all[i].kv;
  free(all);
  return 0;
}

static llmc_st_set *set_alloc(const char *path) {
  llmc_st_set *s = calloc(1, sizeof *s);
  if (!s || !(s->path = dupstr(path))) {
    free(s);
    llmc_err("%s: out of memory", path);
    return NULL;
  }
  return s;
}

static llmc_st_set *set_open_single(const char *setpath, const char *file) {
  llmc_st_set *s = set_alloc(setpath);
  if (!s) return NULL;
  llmc_st_file *f = llmc_st_open(file);
  if (!f) { llmc_st_set_free(s); return NULL; }
  s->files = malloc(sizeof *s->files);
  s->entries = malloc((f->n ? f->n : 1) * sizeof *s->entries);
  if (!s->files || !s->entries) {
    llmc_st_file_release(f);
    llmc_st_set_free(s);
    llmc_err("%s: out of memory", file);
    return NULL;
  }
  s->files[0] = f;
  s->nfiles = 1;
  for (size_t i = 0; i < f->n; i++) s->entries[i] = (set_entry){&f->infos[i], 0};
  s->n = f->n;
  if (set_finalize(s) < 0) { llmc_st_set_free(s); return NULL; }
  return s;
}

/* a shard name from an index: relative, no ".." component */
static int shard_name_ok(const char *n) {
  if (!*n || n[0] == '/') return 0;
  for (const char *c = n; *c;) {
    const char *e = strchr(c, '/');
    size_t len = e ? (size_t)(e - c) : strlen(c);
    if (len == 2 && c[0] == '.' && c[1] == '.') return 0;
    if (!e) break;
    c = e + 1;
  }
  return 1;
}

static llmc_st_set *set_open_index(const char *index_path) {
  json_error_t je;
  json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &je);
  if (!root) {
    if (je.line < 0 || strstr(je.text, "unable to open"))
      llmc_err("%s: %s", index_path, je.text);
    else
      llmc_err("%s: invalid JSON: %s (line %d, column %d)", index_path, je.text, je.line, je.column);
    return NULL;
  }
  llmc_st_set *s = NULL;
  char *dir = NULL;
  const char **names = NULL;
  json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
  if (!json_is_object(wm)) {
    llmc_err("%s: not a safetensors index: no \"weight_map\" object", index_path);
    goto fail;
  }
  /* distinct shard names, sorted */
  size_t nw = json_object_size(wm), nn = 0;
  names = malloc((nw ? nw : 1) * sizeof *names);
  if (!names) { llmc_err("%s: out of memory", index_path); goto fail; }
  const char *key;
  json_t *v;
  json_object_foreach(wm, key, v) {
    if (!json_is_string(v)) {
      llmc_err("%s: weight_map entry of tensor '%s' is not a string", index_path, key);
      goto fail;
    }
    if (!shard_name_ok(json_string_value(v))) {
      llmc_err("%s: tensor '%s': shard name '%s' must be a relative path without '..'", index_path,
               key, json_string_value(v));
      goto fail;
    }
    names[nn++] = json_string_value(v);
  }
  qsort(names, nn, sizeof *names, cmp_str_ptr);
  size_t nd = 0;
  for (size_t i = 0; i < nn; i++)
    if (nd == 0 || strcmp(names[i], names[nd - 1]) != 0) names[nd++] = names[i];

  if (!(s = set_alloc(index_path)) || !(dir = path_dir(index_path))) {
    llmc_err("%s: out of memory", index_path);
    goto fail;
  }
  s->files = calloc(nd ? nd : 1, sizeof *s->files);
  s->entries = malloc((nw ? nw : 1) * sizeof *s->entries);
  size_t *counts = calloc(nd ? nd : 1, sizeof *counts);
  if (!s->files || !s->entries || !counts) {
    free(counts);
    llmc_err("%s: out of memory", index_path);
    goto fail;
  }
  for (size_t i = 0; i < nd; i++) {
    char *p = path_join(dir, names[i]);
    if (!p) { free(counts); llmc_err("%s: out of memory", index_path); goto fail; }
    s->files[i] = llmc_st_open(p);
    free(p);
    if (!s->files[i]) {
      free(counts);
      llmc_err_prefix("%s: shard '%s': ", index_path, names[i]);
      goto fail;
    }
    s->nfiles++;
  }
  /* every listed name is in the shard the index names */
  json_object_foreach(wm, key, v) {
    const char *sh = json_string_value(v);
    const char **hit = bsearch(&sh, names, nd, sizeof *names, cmp_str_ptr);
    size_t fi = (size_t)(hit - names);
    const llmc_st_info *e = llmc_st_find(s->files[fi], key);
    if (!e) {
      free(counts);
      llmc_err("%s: the index maps tensor '%s' to '%s', which has no such tensor", index_path, key, sh);
      goto fail;
    }
    s->entries[s->n++] = (set_entry){e, fi};
    counts[fi]++;
  }
  /* and every tensor of a shard is listed for it */
  for (size_t i = 0; i < nd; i++) {
    if (counts[i] == s->files[i]->n) continue;
    for (size_t j = 0; j < s->files[i]->n; j++) {
      const char *tn = s->files[i]->infos[j].name;
      json_t *m = json_object_get(wm, tn);
      if (!m || strcmp(json_string_value(m), names[i]) != 0) {
        llmc_err("%s: shard '%s' holds tensor '%s', which the index %s", index_path, names[i], tn,
                 m ? "maps to another shard" : "does not list");
        break;
      }
    }
    free(counts);
    goto fail;
  }
  free(counts);
  if (set_finalize(s) < 0) goto fail;
  free(names);
  free(dir);
  json_decref(root);
  return s;
fail:
  llmc_st_set_free(s);
  free(names);
  free(dir);
  json_decref(root);
  return NULL;
}

static int is_file(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

llmc_st_set *llmc_st_set_open(const char *path) {
  if (!path) { llmc_err("safetensors open: NULL path"); return NULL; }
  struct stat st;
  if (stat(path, &st) != 0) { llmc_err("%s: %s", path, strerror(errno)); return NULL; }
  if (S_ISDIR(st.st_mode)) {
    /* as transformers: a single model.safetensors first, then the index */
    char *single = path_join(path, SINGLE_NAME), *index = path_join(path, INDEX_NAME);
    llmc_st_set *s = NULL;
    if (!single || !index) llmc_err("%s: out of memory", path);
    else if (is_file(single)) s = set_open_single(path, single);
    else if (is_file(index)) s = set_open_index(index);
    else llmc_err("%s: no " SINGLE_NAME " or " INDEX_NAME " in this directory", path);
    free(single);
    free(index);
    return s;
  }
  size_t n = strlen(path);
  if (n >= 5 && strcmp(path + n - 5, ".json") == 0) return set_open_index(path);
  return set_open_single(path, path);
}

const char *llmc_st_set_path(const llmc_st_set *s) { return s->path; }
size_t llmc_st_set_count(const llmc_st_set *s) { return s->n; }
size_t llmc_st_set_nfiles(const llmc_st_set *s) { return s->nfiles; }
llmc_st_file *llmc_st_set_file(const llmc_st_set *s, size_t i) {
  return i < s->nfiles ? s->files[i] : NULL;
}

const llmc_st_info *llmc_st_set_info_at(const llmc_st_set *s, size_t i, llmc_st_file **file) {
  if (i >= s->n) return NULL;
  if (file) *file = s->files[s->entries[i].file];
  return s->entries[i].info;
}

const llmc_st_info *llmc_st_set_find(const llmc_st_set *s, const char *name, llmc_st_file **file) {
  llmc_st_info ki;
  ki.name = name;
  set_entry k = {&ki, 0};
  const set_entry *r = bsearch(&k, s->entries, s->n, sizeof *s->entries, cmp_set_entry);
  if (!r) return NULL;
  if (file) *file = s->files[r->file];
  return r->info;
}

int64_t llmc_st_set_drop_pages(const llmc_st_set *s, const char *name) {
  llmc_st_file *f = NULL;
  const llmc_st_info *e = llmc_st_set_find(s, name, &f);
  if (!e || !f || !f->mapped || e->nbytes == 0) return 0;
  /* whole pages inside the tensor only: a neighbour's bytes stay resident */
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t p = (uintptr_t)llmc_st_data(f, e);
  const uintptr_t a = (p + page - 1) & ~(page - 1), b = (p + e->nbytes) & ~(page - 1);
  if (b <= a) return 0;
  /* the mapping is PROT_READ and file-backed: dropped pages hold nothing
  ** private, and the next read refaults them from the page cache or disk */
  if (madvise((void *)a, b - a, MADV_DONTNEED) != 0) return 0;
  return (int64_t)(b - a);
}

const llmc_st_kv *llmc_st_set_metadata(const llmc_st_set *s, size_t *n) {
  if (n) *n = s->nmeta;
  return s->meta;
}

llmc_tensor *llmc_st_set_get(llmc_st_set *s, const char *name) {
  llmc_st_file *f;
  const llmc_st_info *e = llmc_st_set_find(s, name, &f);
  if (!e) { llmc_err("%s: no tensor named '%s'", s->path, name); return NULL; }
  return entry_tensor(f, e);
}

/* ============================================================================
** writer
** ========================================================================== */

typedef struct wr_range { uint64_t a, b; } wr_range;

typedef struct wr_tensor {
  char *name;
  llmc_dtype dtype;
  int ndim;
  int64_t shape[LLMC_MAX_DIMS];
  uint64_t nbytes;
  size_t shard;
  uint64_t file_off;        /* absolute offset of its first byte in the shard */
  uint64_t covered;         /* bytes written so far (ranges never overlap) */
  wr_range *ranges;         /* written ranges, sorted, merged */
  size_t nranges, cap;
} wr_tensor;

typedef struct wr_shard {
  char *final_path, *tmp_path;
  int fd;
  int tmp_exists;
  uint64_t data_size;
  size_t ntensors;
} wr_shard;

enum { WR_DECLARING, WR_WRITING, WR_FINISHED, WR_FAILED };

struct llmc_st_writer {
  char *path;
  uint64_t max_shard;
  int state;
  size_t nmeta, capmeta;
  llmc_st_kv *meta;         /* malloc'd keys/values */
  size_t n, cap;
  wr_tensor *t;             /* declaration order */
  size_t *by_name;          /* indices sorted by name (after begin) */
  size_t nshards;
  wr_shard *shards;
  char *index_final, *index_tmp;
  pthread_mutex_t mu;       /* guards ranges, covered and state while writing */
};

/* Rank of the Rust crate's Dtype enum (declared in increasing alignment):
** the Python library lays tensors out by descending rank, then name. */
static int dtype_rank(llmc_dtype d) {
  switch (d) {
    case LLMC_BOOL: return 0;
    case LLMC_U8: return 1;
    case LLMC_I8: return 2;
    case LLMC_F8_E5M2: return 3;
    case LLMC_F8_E4M3: return 4;
    case LLMC_I16: return 5;
    case LLMC_F16: return 6;
    case LLMC_BF16: return 7;
    case LLMC_I32: return 8;
    case LLMC_F32: return 9;
    case LLMC_F64: return 10;
    case LLMC_I64: return 11;
    default: return -1;
  }
}

/* the header is JSON: every string must be UTF-8 (jansson checks it) */
static int utf8_ok(const char *s) {
  json_t *j = json_string(s);
  json_decref(j);
  return j != NULL;
}

llmc_st_writer *llmc_st_writer_new(const char *path, uint64_t max_shard_size) {
  if (!path || !*path) { llmc_err("safetensors writer: empty output path"); return NULL; }
  llmc_st_writer *w = calloc(1, sizeof *w);
  if (!w || !(w->path = dupstr(path))) {
    free(w);
    llmc_err("%s: out of memory", path);
    return NULL;
  }
  w->max_shard = max_shard_size;
  pthread_mutex_init(&w->mu, NULL);
  return w;
}

int llmc_st_writer_set_metadata(llmc_st_writer *w, const char *key, const char *value) {
  if (w->state != WR_DECLARING)
    return llmc_err("%s: metadata must be set before begin", w->path);
  if (!key || !value) return llmc_err("%s: metadata key and value must be strings", w->path);
  if (!utf8_ok(key) || !utf8_ok(value))
    return llmc_err("%s: metadata '%s' is not valid UTF-8", w->path, key);
  for (size_t i = 0; i < w->nmeta; i++)
    if (strcmp(w->meta[i].key, key) == 0) {
      char *v = dupstr(value);
      if (!v) return llmc_err("%s: out of memory", w->path);
      free((char *)w->meta[i].value);
      w->meta[i].value = v;
      return 0;
    }
  if (w->nmeta == w->capmeta) {
    size_t nc = w->capmeta ? 2 * w->capmeta : 8;
    llmc_st_kv *m = realloc(w->meta, nc * sizeof *m);
    if (!m) return llmc_err("%s: out of memory", w->path);
    w->meta = m;
    w->capmeta = nc;
  }
  char *k = dupstr(key), *v = dupstr(value);
  if (!k || !v) { free(k); free(v); return llmc_err("%s: out of memory", w->path); }
  w->meta[w->nmeta++] = (llmc_st_kv){k, v};
  return 0;
}

int llmc_st_writer_declare(llmc_st_writer *w, const char *name, llmc_dtype dt, int ndim,
                           const int64_t *shape) {
  if (w->state != WR_DECLARING)
    return llmc_err("%s: tensor '%s' declared after begin", w->path, name ? name : "?");
  if (!name) return llmc_err("%s: tensor name is NULL", w->path);
  if (!utf8_ok(name)) return llmc_err("%s: tensor name '%s' is not valid UTF-8", w->path, name);
  if (strcmp(name, "__metadata__") == 0)
    return llmc_err("%s: '__metadata__' is reserved and cannot name a tensor", w->path);
  if ((int)dt < 0 || dt >= LLMC_DTYPE_COUNT)
    return llmc_err("%s: tensor '%s': invalid dtype %d", w->path, name, (int)dt);
  if (ndim < 0 || ndim > LLMC_MAX_DIMS)
    return llmc_err("%s: tensor '%s': %d dims (0..%d supported)", w->path, name, ndim, LLMC_MAX_DIMS);
  uint64_t numel = 1, nbytes;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return llmc_err("%s: tensor '%s': negative shape[%d]", w->path, name, i);
    if (__builtin_mul_overflow(numel, (uint64_t)shape[i], &numel))
      return llmc_err("%s: tensor '%s': shape overflows", w->path, name);
  }
  if (__builtin_mul_overflow(numel, (uint64_t)llmc_dtype_size(dt), &nbytes) || nbytes > (uint64_t)INT64_MAX)
    return llmc_err("%s: tensor '%s': shape overflows", w->path, name);
  if (w->n == w->cap) {
    size_t nc = w->cap ? 2 * w->cap : 64;
    wr_tensor *t = realloc(w->t, nc * sizeof *t);
    if (!t) return llmc_err("%s: out of memory", w->path);
    w->t = t;
    w->cap = nc;
  }
  wr_tensor *t = &w->t[w->n];
  memset(t, 0, sizeof *t);
  if (!(t->name = dupstr(name))) return llmc_err("%s: out of memory", w->path);
  t->dtype = dt;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->nbytes = nbytes;
  w->n++;
  return 0;
}

/* sort helpers need the writer's tensors: qsort_r is GNU, fine under _GNU_SOURCE */
static int cmp_by_name(const void *a, const void *b, void *ctx) {
  const wr_tensor *t = ctx;
  return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

static int cmp_layout(const void *a, const void *b, void *ctx) {
  const wr_tensor *t = ctx;
  const wr_tensor *x = &t[*(const size_t *)a], *y = &t[*(const size_t *)b];
  int rx = dtype_rank(x->dtype), ry = dtype_rank(y->dtype);
  if (rx != ry) return rx > ry ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* Remove every temporary; only unlink, since other threads may still hold
** the descriptors (they are closed by abort/free). */
static void wr_unlink_temps(llmc_st_writer *w) {
  for (size_t i = 0; i < w->nshards; i++)
    if (w->shards[i].tmp_exists) {
      unlink(w->shards[i].tmp_path);
      w->shards[i].tmp_exists = 0;
    }
  if (w->index_tmp) unlink(w->index_tmp);
}

static void wr_close_fds(llmc_st_writer *w) {
  for (size_t i = 0; i < w->nshards; i++)
    if (w->shards[i].fd >= 0) {
      close(w->shards[i].fd);
      w->shards[i].fd = -1;
    }
}

static int pwrite_all(int fd, const void *buf, size_t n, uint64_t off) {
  const char *p = buf;
  while (n > 0) {
    ssize_t k = pwrite(fd, p, n, (off_t)off);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (k == 0) { errno = EIO; return -1; }
    p += k;
    n -= (size_t)k;
    off += (uint64_t)k;
  }
  return 0;
}

/* the compact JSON header of shard s, padded with spaces to a multiple of 8 */
static char *wr_header(llmc_st_writer *w, const size_t *order, size_t cnt, size_t *len) {
  json_t *root = json_object();
  if (!root) return NULL;
  int bad = 0;
  if (w->nmeta) {
    /* keys sorted so that the output does not depend on set order */
    llmc_st_kv *m = malloc(w->nmeta * sizeof *m);
    json_t *jm = json_object();
    if (!m || !jm) bad = 1;
    else {
      memcpy(m, w->meta, w->nmeta * sizeof *m);
      qsort(m, w->nmeta, sizeof *m, cmp_kv);
      for (size_t i = 0; i < w->nmeta && !bad; i++)
        bad |= json_object_set_new(jm, m[i].key, json_string(m[i].value)) != 0;
    }
    free(m);
    bad |= !jm || json_object_set_new(root, "__metadata__", jm) != 0;
  }
  uint64_t off = 0;
  for (size_t i = 0; i < cnt && !bad; i++) {
    const wr_tensor *t = &w->t[order[i]];
    json_t *sh = json_array();
    bad |= !sh;
    for (int d = 0; d < t->ndim && !bad; d++) bad |= json_array_append_new(sh, json_integer(t->shape[d])) != 0;
    json_t *e = json_pack("{s:s, s:o, s:[I, I]}", "dtype", llmc_dtype_table[t->dtype].st_name, "shape", sh,
                          "data_offsets", (json_int_t)off, (json_int_t)(off + t->nbytes));
    bad |= !e || json_object_set_new(root, t->name, e) != 0;
    off += t->nbytes;
  }
  char *s = bad ? NULL : json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (!s) return NULL;
  size_t n = strlen(s), padded = (n + 7) & ~(size_t)7;
  char *out = malloc(padded ? padded : 8);
  if (!out) { free(s); return NULL; }
  memcpy(out, s, n);
  memset(out + n, ' ', padded - n);
  free(s);
  *len = padded;
  return out;
}

static int wr_fail(llmc_st_writer *w) {
  w->state = WR_FAILED;
  wr_unlink_temps(w);
  return -1;
}

static int ensure_dir(const char *path) {
  struct stat st;
  if (stat(path, &st) == 0) {
    if (S_ISDIR(st.st_mode)) return 0;
    return llmc_err("%s: exists and is not a directory (sharded output needs a directory)", path);
  }
  if (mkdir(path, 0777) != 0 && errno != EEXIST) return llmc_err("%s: mkdir: %s", path, strerror(errno));
  return 0;
}

/* create a temporary of `size` bytes: space reserved up front, so that a full
** disk or a file-size limit shows at begin, before any tensor is computed */
static int wr_create(wr_shard *s, uint64_t size) {
  s->fd = open(s->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (s->fd < 0) return llmc_err("%s: cannot create %s: %s", s->final_path, s->tmp_path, strerror(errno));
  s->tmp_exists = 1;
  if (fallocate(s->fd, 0, 0, (off_t)size) != 0) {
    if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
      return llmc_err("%s: reserving %" PRIu64 " bytes for %s: %s", s->final_path, size, s->tmp_path,
                      strerror(errno));
    if (ftruncate(s->fd, (off_t)size) != 0)
      return llmc_err("%s: sizing %s to %" PRIu64 " bytes: %s", s->final_path, s->tmp_path, size,
                      strerror(errno));
  }
  return 0;
}

int llmc_st_writer_begin(llmc_st_writer *w) {
  if (w->state != WR_DECLARING) return llmc_err("%s: begin called twice", w->path);
  w->state = WR_FAILED;   /* until it succeeds */
  w->by_name = malloc((w->n ? w->n : 1) * sizeof *w->by_name);
  if (!w->by_name) return llmc_err("%s: out of memory", w->path);
  for (size_t i = 0; i < w->n; i++) w->by_name[i] = i;
  qsort_r(w->by_name, w->n, sizeof *w->by_name, cmp_by_name, w->t);
  for (size_t i = 1; i < w->n; i++)
    if (strcmp(w->t[w->by_name[i]].name, w->t[w->by_name[i - 1]].name) == 0) {
      llmc_err("%s: tensor '%s' declared twice", w->path, w->t[w->by_name[i]].name);
      return wr_fail(w);
    }

  /* shards in declaration order */
  size_t ns = 1;
  uint64_t cur = 0;
  size_t cnt = 0;
  for (size_t i = 0; i < w->n; i++) {
    if (w->max_shard && cnt > 0 && (cur + w->t[i].nbytes > w->max_shard || cur + w->t[i].nbytes < cur)) {
      ns++;
      cur = 0;
      cnt = 0;
    }
    w->t[i].shard = ns - 1;
    cur += w->t[i].nbytes;
    cnt++;
  }
  w->shards = calloc(ns, sizeof *w->shards);
  if (!w->shards) return llmc_err("%s: out of memory", w->path);
  w->nshards = ns;
  for (size_t s = 0; s < ns; s++) w->shards[s].fd = -1;

  /* names */
  if (w->max_shard) {
    if (ensure_dir(w->path) < 0) return wr_fail(w);
  }
  char pid[32];
  snprintf(pid, sizeof pid, ".tmp.%ld", (long)getpid());
  for (size_t s = 0; s < ns; s++) {
    wr_shard *sh = &w->shards[s];
    if (!w->max_shard) {
      sh->final_path = dupstr(w->path);
    } else if (ns == 1) {
      sh->final_path = path_join(w->path, SINGLE_NAME);
    } else {
      char nm[64];
      snprintf(nm, sizeof nm, "model-%05zu-of-%05zu.safetensors", s + 1, ns);
      sh->final_path = path_join(w->path, nm);
    }
    if (sh->final_path) {
      size_t a = strlen(sh->final_path), b = strlen(pid);
      if ((sh->tmp_path = malloc(a + b + 1))) {
        memcpy(sh->tmp_path, sh->final_path, a);
        memcpy(sh->tmp_path + a, pid, b + 1);
      }
    }
    if (!sh->final_path || !sh->tmp_path) { llmc_err("%s: out of memory", w->path); return wr_fail(w); }
  }

  /* layout, headers, temporaries */
  size_t *order = malloc((w->n ? w->n : 1) * sizeof *order);
  if (!order) { llmc_err("%s: out of memory", w->path); return wr_fail(w); }
  for (size_t s = 0; s < ns; s++) {
    wr_shard *sh = &w->shards[s];
    size_t k = 0;
    for (size_t i = 0; i < w->n; i++)
      if (w->t[i].shard == s) order[k++] = i;
    qsort_r(order, k, sizeof *order, cmp_layout, w->t);
    size_t hlen;
    char *hdr = wr_header(w, order, k, &hlen);
    if (!hdr) { free(order); llmc_err("%s: building the header: out of memory", sh->final_path); return wr_fail(w); }
    if (hlen > LLMC_ST_MAX_HEADER) {
      free(hdr);
      free(order);
      llmc_err("%s: header of %zu bytes exceeds the safetensors limit of %u", sh->final_path, hlen,
               LLMC_ST_MAX_HEADER);
      return wr_fail(w);
    }
    uint64_t off = 8 + hlen;
    for (size_t i = 0; i < k; i++) {
      w->t[order[i]].file_off = off;
      off += w->t[order[i]].nbytes;
    }
    sh->data_size = off - 8 - hlen;
    sh->ntensors = k;
    uint8_t len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (uint8_t)((uint64_t)hlen >> (8 * b));
    int rc = wr_create(sh, off);
    if (rc == 0 && (pwrite_all(sh->fd, len8, 8, 0) < 0 || pwrite_all(sh->fd, hdr, hlen, 8) < 0))
      rc = llmc_err("%s: writing the header of %s: %s", sh->final_path, sh->tmp_path, strerror(errno));
    free(hdr);
    if (rc < 0) { free(order); return wr_fail(w); }
  }
  free(order);
  w->state = WR_WRITING;
  return 0;
}

static wr_tensor *wr_find(llmc_st_writer *w, const char *name) {
  size_t lo = 0, hi = w->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(name, w->t[w->by_name[mid]].name);
    if (c == 0) return &w->t[w->by_name[mid]];
    if (c < 0) hi = mid; else lo = mid + 1;
  }
  return NULL;
}

/* record [a, b) as written; -1 when it overlaps a range written before */
static int range_add(wr_tensor *t, uint64_t a, uint64_t b) {
  size_t lo = 0, hi = t->nranges;
  while (lo < hi) {   /* first range with start >= a */
    size_t mid = (lo + hi) / 2;
    if (t->ranges[mid].a < a) lo = mid + 1; else hi = mid;
  }
  if (lo > 0 && t->ranges[lo - 1].b > a) return -1;
  if (lo < t->nranges && t->ranges[lo].a < b) return -1;
  int join_prev = lo > 0 && t->ranges[lo - 1].b == a;
  int join_next = lo < t->nranges && t->ranges[lo].a == b;
  if (join_prev && join_next) {
    t->ranges[lo - 1].b = t->ranges[lo].b;
    memmove(&t->ranges[lo], &t->ranges[lo + 1], (t->nranges - lo - 1) * sizeof *t->ranges);
    t->nranges--;
  } else if (join_prev) {
    t->ranges[lo - 1].b = b;
  } else if (join_next) {
    t->ranges[lo].a = a;
  } else {
    if (t->nranges == t->cap) {
      size_t nc = t->cap ? 2 * t->cap : 4;
      wr_range *r = realloc(t->ranges, nc * sizeof *r);
      if (!r) return -2;
      t->ranges = r;
      t->cap = nc;
    }
    memmove(&t->ranges[lo + 1], &t->ranges[lo], (t->nranges - lo) * sizeof *t->ranges);
    t->ranges[lo] = (wr_range){a, b};
    t->nranges++;
  }
  t->covered += b - a;
  return 0;
}

int llmc_st_writer_write_part(llmc_st_writer *w, const char *name, uint64_t byte_offset,
                              const void *data, size_t nbytes) {
  if (w->state == WR_DECLARING) return llmc_err("%s: write before begin", w->path);
  wr_tensor *t = name ? wr_find(w, name) : NULL;
  if (!t) return llmc_err("%s: write of undeclared tensor '%s'", w->path, name ? name : "(null)");
  wr_shard *sh = &w->shards[t->shard];
  if (byte_offset > t->nbytes || nbytes > t->nbytes - byte_offset)
    return llmc_err("%s: tensor '%s': bytes [%" PRIu64 ", %" PRIu64 ") are outside its %" PRIu64 " bytes",
                    sh->final_path, t->name, byte_offset, byte_offset + (uint64_t)nbytes, t->nbytes);
  if (nbytes == 0) return 0;
  if (!data) return llmc_err("%s: tensor '%s': NULL data", sh->final_path, t->name);
  pthread_mutex_lock(&w->mu);
  int rc = 0;
  if (w->state != WR_WRITING)
    rc = llmc_err("%s: tensor '%s': the writer has %s", sh->final_path, t->name,
                  w->state == WR_FINISHED ? "finished" : "failed or been aborted");
  else {
    int r = range_add(t, byte_offset, byte_offset + nbytes);
    if (r == -1)
      rc = llmc_err("%s: tensor '%s': bytes [%" PRIu64 ", %" PRIu64 ") written twice", sh->final_path,
                    t->name, byte_offset, byte_offset + (uint64_t)nbytes);
    else if (r < 0)
      rc = llmc_err("%s: out of memory", sh->final_path);
  }
  pthread_mutex_unlock(&w->mu);
  if (rc < 0) return rc;
  if (pwrite_all(sh->fd, data, nbytes, t->file_off + byte_offset) < 0) {
    int e = errno;
    llmc_err("%s: writing tensor '%s' to %s: %s", sh->final_path, t->name, sh->tmp_path, strerror(e));
    pthread_mutex_lock(&w->mu);
    wr_fail(w);
    pthread_mutex_unlock(&w->mu);
    return -1;
  }
  return 0;
}

int llmc_st_writer_write(llmc_st_writer *w, const char *name, const void *data, size_t nbytes) {
  if (w->state == WR_DECLARING) return llmc_err("%s: write before begin", w->path);
  wr_tensor *t = name ? wr_find(w, name) : NULL;
  if (!t) return llmc_err("%s: write of undeclared tensor '%s'", w->path, name ? name : "(null)");
  if ((uint64_t)nbytes != t->nbytes)
    return llmc_err("%s: tensor '%s': %zu bytes given, its shape needs %" PRIu64,
                    w->shards[t->shard].final_path, t->name, nbytes, t->nbytes);
  return llmc_st_writer_write_part(w, name, 0, data, nbytes);
}

int llmc_st_writer_write_tensor(llmc_st_writer *w, const char *name, llmc_tensor *x) {
  if (w->state == WR_DECLARING) return llmc_err("%s: write before begin", w->path);
  wr_tensor *t = name ? wr_find(w, name) : NULL;
  if (!t) return llmc_err("%s: write of undeclared tensor '%s'", w->path, name ? name : "(null)");
  const char *fp = w->shards[t->shard].final_path;
  if (x->dtype != t->dtype)
    return llmc_err("%s: tensor '%s': declared %s, given %s", fp, t->name, llmc_dtype_name(t->dtype),
                    llmc_dtype_name(x->dtype));
  int same = x->ndim == t->ndim;
  for (int i = 0; same && i < t->ndim; i++) same = x->shape[i] == t->shape[i];
  if (!same) {
    char a[128], b[128];
    return llmc_err("%s: tensor '%s': declared shape %s, given %s", fp, t->name,
                    llmc_shape_str(t->ndim, t->shape, a, sizeof a), llmc_shape_str(x->ndim, x->shape, b, sizeof b));
  }
  if (!llmc_tensor_is_cuda(x) && llmc_tensor_is_contiguous(x))
    return llmc_st_writer_write(w, name, llmc_tensor_data(x), llmc_tensor_nbytes(x));
  llmc_tensor *c = llmc_tensor_contiguous(x);
  if (!c) return llmc_err_prefix("%s: tensor '%s': ", fp, t->name);
  int rc = llmc_st_writer_write(w, name, llmc_tensor_data(c), llmc_tensor_nbytes(c));
  llmc_tensor_free(c);
  return rc;
}

/* "model-%05d-of-%05d.safetensors" exactly; *of = the shard count */
static int shard_pattern(const char *n, size_t *of) {
  static const char tmpl[] = "model-#####-of-#####.safetensors";
  if (strlen(n) != sizeof tmpl - 1) return 0;
  size_t v = 0;
  for (size_t i = 0; tmpl[i]; i++) {
    if (tmpl[i] == '#') {
      if (n[i] < '0' || n[i] > '9') return 0;
      if (i >= 15) v = v * 10 + (size_t)(n[i] - '0');
    } else if (n[i] != tmpl[i]) {
      return 0;
    }
  }
  *of = v;
  return 1;
}

/* after a successful save, remove the files a previous save left that would
** make the directory inconsistent (a stale index, a single file beside
** shards, shards of another count) */
static void wr_cleanup_stale(llmc_st_writer *w) {
  DIR *d = opendir(w->path);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t of;
    int stale = 0;
    if (shard_pattern(e->d_name, &of))
      stale = w->nshards == 1 || of != w->nshards;
    else if (w->nshards == 1 && strcmp(e->d_name, INDEX_NAME) == 0)
      stale = 1;
    else if (w->nshards > 1 && strcmp(e->d_name, SINGLE_NAME) == 0)
      stale = 1;
    if (stale) {
      char *p = path_join(w->path, e->d_name);
      if (p) unlink(p);
      free(p);
    }
  }
  closedir(d);
}

static int wr_write_index(llmc_st_writer *w) {
  const char *ip = w->index_final;
  json_t *wm = json_object(), *root = NULL;
  uint64_t total = 0;
  int bad = !wm;
  for (size_t i = 0; i < w->n && !bad; i++) {
    const char *fn = strrchr(w->shards[w->t[i].shard].final_path, '/');
    fn = fn ? fn + 1 : w->shards[w->t[i].shard].final_path;
    bad |= json_object_set_new(wm, w->t[i].name, json_string(fn)) != 0;
    total += w->t[i].nbytes;
  }
  if (!bad) root = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", wm);
  else json_decref(wm);
  char *s = root ? json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
  json_decref(root);
  if (!s) return llmc_err("%s: building the index: out of memory", ip);
  int fd = open(w->index_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) { free(s); return llmc_err("%s: cannot create %s: %s", ip, w->index_tmp, strerror(errno)); }
  size_t n = strlen(s);
  int rc = 0;
  if (pwrite_all(fd, s, n, 0) < 0 || pwrite_all(fd, "\n", 1, n) < 0 || fsync(fd) != 0)
    rc = llmc_err("%s: writing %s: %s", ip, w->index_tmp, strerror(errno));
  if (close(fd) != 0 && rc == 0) rc = llmc_err("%s: closing %s: %s", ip, w->index_tmp, strerror(errno));
  free(s);
  return rc;
}

int llmc_st_writer_finish(llmc_st_writer *w) {
  if (w->state != WR_WRITING)
    return llmc_err("%s: finish %s", w->path,
                    w->state == WR_DECLARING ? "before begin"
                    : w->state == WR_FINISHED ? "called twice"
                                              : "after a failed write or an abort");
  for (size_t i = 0; i < w->n; i++)
    if (w->t[i].covered != w->t[i].nbytes) {
      llmc_err("%s: tensor '%s' incomplete: %" PRIu64 " of %" PRIu64 " bytes written",
               w->shards[w->t[i].shard].final_path, w->t[i].name, w->t[i].covered, w->t[i].nbytes);
      wr_close_fds(w);
      return wr_fail(w);
    }
  for (size_t s = 0; s < w->nshards; s++) {
    wr_shard *sh = &w->shards[s];
    int bad = fsync(sh->fd) != 0;
    int e = errno;
    if (close(sh->fd) != 0 && !bad) { bad = 1; e = errno; }
    sh->fd = -1;
    if (bad) {
      llmc_err("%s: flushing %s: %s", sh->final_path, sh->tmp_path, strerror(e));
      wr_close_fds(w);
      return wr_fail(w);
    }
  }
  if (w->nshards > 1) {
    char pid[32];
    snprintf(pid, sizeof pid, ".tmp.%ld", (long)getpid());
    w->index_final = path_join(w->path, INDEX_NAME);
    w->index_tmp = w->index_final ? malloc(strlen(w->index_final) + strlen(pid) + 1) : NULL;
    if (!w->index_tmp) { llmc_err("%s: out of memory", w->path); return wr_fail(w); }
    strcpy(w->index_tmp, w->index_final);
    strcat(w->index_tmp, pid);
    if (wr_write_index(w) < 0) return wr_fail(w);
  }
  /* renames: shards, then the index that points at them */
  for (size_t s = 0; s < w->nshards; s++) {
    wr_shard *sh = &w->shards[s];
    if (rename(sh->tmp_path, sh->final_path) != 0) {
      llmc_err("%s: renaming %s: %s", sh->final_path, sh->tmp_path, strerror(errno));
      for (size_t r = 0; r < s; r++) unlink(w->shards[r].final_path);
      return wr_fail(w);
    }
    sh->tmp_exists = 0;
  }
  if (w->index_tmp && rename(w->index_tmp, w->index_final) != 0) {
    llmc_err("%s: renaming %s: %s", w->index_final, w->index_tmp, strerror(errno));
    for (size_t r = 0; r < w->nshards; r++) unlink(w->shards[r].final_path);
    return wr_fail(w);
  }
  free(w->index_tmp);
  w->index_tmp = NULL;
  /* make the renames durable */
  char *dir = w->max_shard ? dupstr(w->path) : path_dir(w->path);
  if (dir) {
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
    free(dir);
  }
  if (w->max_shard) wr_cleanup_stale(w);
  w->state = WR_FINISHED;
  return 0;
}

void llmc_st_writer_abort(llmc_st_writer *w) {
  if (!w || w->state == WR_FINISHED) return;
  wr_close_fds(w);
  wr_unlink_temps(w);
  w->state = WR_FAILED;
}

void llmc_st_writer_free(llmc_st_writer *w) {
  if (!w) return;
  llmc_st_writer_abort(w);
  wr_close_fds(w);
  for (size_t i = 0; i < w->n; i++) {
    free(w->t[i].name);
    free(w->t[i].ranges);
  }
  free(w->t);
  free(w->by_name);
  for (size_t s = 0; s < w->nshards; s++) {
    free(w->shards[s].final_path);
    free(w->shards[s].tmp_path);
  }
  free(w->shards);
  for (size_t i = 0; i < w->nmeta; i++) {
    free((char *)w->meta[i].key);
    free((char *)w->meta[i].value);
  }
  free(w->meta);
  free(w->index_final);
  free(w->index_tmp);
  free(w->path);
  pthread_mutex_destroy(&w->mu);
  free(w);
}

size_t llmc_st_writer_nshards(const llmc_st_writer *w) { return w->nshards; }

const char *llmc_st_writer_shard_path(const llmc_st_writer *w, size_t i) {
  return i < w->nshards ? w->shards[i].final_path : NULL;
}
