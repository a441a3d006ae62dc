/*
** bench_safetensors.c — open/validate latency and writer throughput.
**
**   bench_safetensors [dir]        (dir defaults to /tmp; needs ~1 GB free,
**                                    plus a 4 GB sparse file)
**
** 1. A 4 GB checkpoint (16 BF16 tensors of 256 MB; the header is written
**    for real, the data region is a sparse hole made by ftruncate) is opened
**    and validated 10 times: median ms.  Likewise a header of 50,000 small
**    tensors (the size class of a large MoE checkpoint's shard headers).
** 2. The writer saves 1 GB (4 tensors of 256 MB) with finish()'s fsync
**    included: one thread writing whole tensors, then 2 threads writing
**    16 MB parts; a plain write()+fsync of the same bytes is the baseline.
** Figures are printed with units; every timing is the median of its runs.
**
** Build (CMake builds scripts/bench/bench_*.c against llmc_core), or by hand:
**   cmake -B build && cmake --build build --target llmc_core
**   gcc -std=c11 -D_GNU_SOURCE -O2 -fopenmp -Isrc scripts/bench/bench_safetensors.c \
**       build/libllmc_core.a -ljansson -lpcre2-8 -llapacke -lopenblas -lm -lpthread \
**       -o build/bench_safetensors
*/
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "safetensors.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void die(const char *what) {
  fprintf(stderr, "bench_safetensors: %s: %s\n", what, llmc_errmsg());
  exit(1);
}

/* a file with `n` tensors of the given shape (BF16), data region sparse */
static size_t make_sparse(const char *path, int n, int64_t rows, int64_t cols) {
  json_t *root = json_object();
  json_object_set_new(root, "__metadata__", json_pack("{s:s}", "format", "pt"));
  uint64_t off = 0, nb = (uint64_t)rows * (uint64_t)cols * 2;
  for (int i = 0; i < n; i++) {
    char name[64];
    snprintf(name, sizeof name, "model.layers.%d.weight", i);
    json_object_set_new(root, name, json_pack("{s:s, s:[I, I], s:[I, I]}", "dtype", "BF16", "shape",
                                              (json_int_t)rows, (json_int_t)cols, "data_offsets",
                                              (json_int_t)off, (json_int_t)(off + nb)));
    off += nb;
  }
  char *h = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  size_t hl = strlen(h), padded = (hl + 7) & ~(size_t)7;
  FILE *f = fopen(path, "wb");
  if (!f) { perror(path); exit(1); }
  unsigned char len8[8];
  for (int b = 0; b < 8; b++) len8[b] = (unsigned char)((uint64_t)padded >> (8 * b));
  fwrite(len8, 1, 8, f);
  fwrite(h, 1, hl, f);
  for (size_t i = hl; i < padded; i++) fputc(' ', f);
  fclose(f);
  free(h);
  if (truncate(path, (off_t)(8 + padded + off)) != 0) { perror("truncate"); exit(1); }
  return padded;
}

static double bench_open(const char *path, int runs, size_t expect) {
  double t[32];
  for (int r = 0; r < runs; r++) {
    double t0 = now();
    llmc_st_file *f = llmc_st_open(path);
    if (!f) die("open");
    if (llmc_st_count(f) != expect) { fprintf(stderr, "wrong count\n"); exit(1); }
    llmc_st_file_release(f);
    t[r] = now() - t0;
  }
  return median(t, runs) * 1e3;
}

enum { NT = 4 };
static const uint64_t TENSOR_BYTES = 256ull << 20, PART = 16ull << 20;

typedef struct { llmc_st_writer *w; const unsigned char *src; int id, nthreads, rc; } part_arg;

static void *write_parts(void *p) {
  part_arg *a = p;
  uint64_t nparts = TENSOR_BYTES / PART;
  for (uint64_t k = (uint64_t)a->id; k < NT * nparts; k += (uint64_t)a->nthreads) {
    char name[32];
    snprintf(name, sizeof name, "t%d", (int)(k / nparts));
    uint64_t off = (k % nparts) * PART;
    a->rc |= llmc_st_writer_write_part(a->w, name, off, a->src + off, PART);
  }
  return NULL;
}

static double bench_write(const char *path, const unsigned char *src, int nthreads) {
  double t0 = now();
  llmc_st_writer *w = llmc_st_writer_new(path, 0);
  int64_t shape[2] = {(int64_t)(TENSOR_BYTES / 2 / 8192), 8192};
  llmc_st_writer_set_metadata(w, "format", "pt");
  for (int i = 0; i < NT; i++) {
    char name[32];
    snprintf(name, sizeof name, "t%d", i);
    if (llmc_st_writer_declare(w, name, LLMC_BF16, 2, shape) < 0) die("declare");
  }
  if (llmc_st_writer_begin(w) < 0) die("begin");
  if (nthreads == 1) {
    for (int i = 0; i < NT; i++) {
      char name[32];
      snprintf(name, sizeof name, "t%d", i);
      if (llmc_st_writer_write(w, name, src, TENSOR_BYTES) < 0) die("write");
    }
  } else {
    pthread_t th[8];
    part_arg a[8];
    for (int i = 0; i < nthreads; i++) {
      a[i] = (part_arg){w, src, i, nthreads, 0};
      pthread_create(&th[i], NULL, write_parts, &a[i]);
    }
    for (int i = 0; i < nthreads; i++) {
      pthread_join(th[i], NULL);
      if (a[i].rc) die("write_part");
    }
  }
  if (llmc_st_writer_finish(w) < 0) die("finish");
  llmc_st_writer_free(w);
  double dt = now() - t0;
  unlink(path);
  return dt;
}

static double bench_plain(const char *path, const unsigned char *src) {
  double t0 = now();
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) { perror(path); exit(1); }
  for (int i = 0; i < NT; i++)
    for (uint64_t off = 0; off < TENSOR_BYTES;) {
      ssize_t k = write(fd, src + off, TENSOR_BYTES - off);
      if (k <= 0) { perror("write"); exit(1); }
      off += (uint64_t)k;
    }
  fsync(fd);
  close(fd);
  double dt = now() - t0;
  unlink(path);
  return dt;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "/tmp";
  char p[4096];
  llmc_dtype_init();

  snprintf(p, sizeof p, "%s/llmc-bench-4g.safetensors", dir);
  make_sparse(p, 16, 16384, 8192);   /* 16 x 256 MB = 4 GiB */
  printf("open+validate 4 GiB file, 16 tensors:      %8.3f ms (median of 10)\n", bench_open(p, 10, 16));
  unlink(p);
  snprintf(p, sizeof p, "%s/llmc-bench-50k.safetensors", dir);
  size_t hb = make_sparse(p, 50000, 64, 64);
  printf("open+validate 50,000 tensors (%.1f MB header): %8.3f ms (median of 10)\n", (double)hb / 1e6,
         bench_open(p, 10, 50000));
  unlink(p);

  unsigned char *src = malloc(TENSOR_BYTES);
  if (!src) { fprintf(stderr, "out of memory\n"); return 1; }
  for (uint64_t i = 0; i < TENSOR_BYTES; i++) src[i] = (unsigned char)(i * 2654435761u >> 13);
  snprintf(p, sizeof p, "%s/llmc-bench-1g.safetensors", dir);
  double gb = (double)(NT * TENSOR_BYTES) / 1e9, t1[3], t2[3], t0[3];
  for (int r = 0; r < 3; r++) {
    t0[r] = bench_plain(p, src);
    t1[r] = bench_write(p, src, 1);
    t2[r] = bench_write(p, src, 2);
  }
  printf("plain write()+fsync 1.07 GB:               %8.2f GB/s (median of 3)\n", gb / median(t0, 3));
  printf("writer 1.07 GB, 1 thread, whole tensors:   %8.2f GB/s (median of 3)\n", gb / median(t1, 3));
  printf("writer 1.07 GB, 2 threads, 16 MiB parts:   %8.2f GB/s (median of 3)\n", gb / median(t2, 3));
  free(src);
  return 0;
}
