/*
** safetensors.h — read (mmap, zero-copy) and write (streaming, atomic,
** sharded) safetensors checkpoints.
**
** File format: 8-byte little-endian header length N, N bytes of JSON
** header {"__metadata__": {str: str}, "<name>": {"dtype": "BF16",
** "shape": [..], "data_offsets": [begin, end]}, ...}, then the data region;
** offsets are relative to the data region.  The rules this reader enforces
** (the Rust `safetensors` crate's, see docs/safetensors.md):
**   - N <= 100,000,000 and 8 + N <= file size;
**   - the header is UTF-8 JSON (jansson, duplicate keys rejected) whose top
**     level is an object; `__metadata__` is an object of string -> string;
**   - every entry: a known dtype code (dtype.h, plus "BOOL"), a shape of at
**     most LLMC_MAX_DIMS non-negative integers, data_offsets [begin, end]
**     with begin <= end and end - begin == numel * itemsize (overflow
**     checked);
**   - the entries, sorted by offset, tile the data region exactly: the
**     first begins at 0, each begins where the previous ends, and the last
**     ends at the end of the file (no gap, no overlap, no trailing bytes).
** Nothing is exposed before the whole header is validated.  Every error
** (llmc_err, error.h) names the file, and the tensor when there is one.
**
** Ownership:
**   - llmc_st_open / llmc_st_open_memory return an llmc_st_file holding one
**     reference; llmc_st_file_retain adds one, llmc_st_file_release drops one
**     (the mapping is unmapped when the last goes).  Tensors returned by
**     llmc_st_get wrap the mapped bytes and hold their own reference, so they
**     stay valid after the caller releases the file.
**   - llmc_st_open_memory BORROWS `buf`: it must stay alive and unchanged
**     until the file's last reference (tensors included) is gone.
**   - Every `const llmc_st_info *`, name, and metadata pointer returned by a
**     query is owned by the file (or set) and lives as long as it does.
**   - llmc_st_get / llmc_st_set_get return a NEW tensor reference
**     (llmc_tensor_free).  When a tensor's bytes are not aligned to its
**     itemsize in memory, the tensor is a host copy instead of a view.
**   - An llmc_st_set (sharded checkpoint) is not refcounted: free it with
**     llmc_st_set_free; tensors obtained from it keep their shard alive.
** A file whose bytes change or shrink while mapped is undefined behaviour
** (SIGBUS on truncation), as with every mmap reader.
**
** Writer: declare every tensor, begin (layout, temporaries, headers), write
** the bytes in any order from any thread, finish (verify, fsync, rename).
**
**   llmc_st_file *f = llmc_st_open("model.safetensors");
**   if (!f) { fprintf(stderr, "%s\n", llmc_errmsg()); return -1; }
**   llmc_tensor *w = llmc_st_get(f, "model.embed_tokens.weight");
**   llmc_st_file_release(f);            // w keeps the mapping alive
**   ...
**   llmc_tensor_free(w);
**
**   llmc_st_writer *wr = llmc_st_writer_new("out", 5u << 30);   // a directory
**   llmc_st_writer_set_metadata(wr, "format", "pt");
**   llmc_st_writer_declare(wr, "w", LLMC_BF16, 2, shape);
**   if (llmc_st_writer_begin(wr) < 0 ||
**       llmc_st_writer_write(wr, "w", bytes, nbytes) < 0 ||
**       llmc_st_writer_finish(wr) < 0) { ...llmc_errmsg()... }
**   llmc_st_writer_free(wr);           // removes temporaries if unfinished
*/
#ifndef LLMC_SAFETENSORS_H
#define LLMC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "tensor.h"

#define LLMC_ST_MAX_HEADER 100000000u   /* bytes, as the Rust crate */

/* One tensor entry of a file's header. */
typedef struct llmc_st_info {
  const char *name;                 /* owned by the file */
  llmc_dtype dtype;
  int ndim;
  int64_t shape[LLMC_MAX_DIMS];
  uint64_t begin, end;              /* byte offsets in the data region */
  size_t nbytes;                    /* end - begin */
} llmc_st_info;

/* One `__metadata__` pair. */
typedef struct llmc_st_kv {
  const char *key, *value;
} llmc_st_kv;

typedef struct llmc_st_file llmc_st_file;

/* ---- one file ---------------------------------------------------------------- */
llmc_st_file *llmc_st_open(const char *path);
/* Parse an in-memory image (same validation); `name` is used in messages. */
llmc_st_file *llmc_st_open_memory(const void *buf, size_t len, const char *name);
llmc_st_file *llmc_st_file_retain(llmc_st_file *f);        /* returns f */
/* Drops one reference; takes void* so that it can serve as a tensor
** storage's release callback.  NULL is a no-op. */
void llmc_st_file_release(void *f);

const char *llmc_st_path(const llmc_st_file *f);
size_t llmc_st_count(const llmc_st_file *f);
/* entries sorted by name (strcmp), i < llmc_st_count(f) */
const llmc_st_info *llmc_st_info_at(const llmc_st_file *f, size_t i);
/* O(log n); NULL (no error set) when absent */
const llmc_st_info *llmc_st_find(const llmc_st_file *f, const char *name);
/* the entry's bytes inside the mapping (read-only) */
const void *llmc_st_data(const llmc_st_file *f, const llmc_st_info *e);
/* __metadata__ pairs sorted by key; *n set to their count */
const llmc_st_kv *llmc_st_metadata(const llmc_st_file *f, size_t *n);
const char *llmc_st_metadata_get(const llmc_st_file *f, const char *key); /* NULL if absent */
/* new tensor reference: a view of the mapped bytes (or a host copy when
** unaligned); NULL + error naming the file and tensor when absent */
llmc_tensor *llmc_st_get(llmc_st_file *f, const char *name);

/* ---- a checkpoint: one file, a directory, or an index ------------------------ */
/* path may be
**   - a .safetensors file;
**   - a model.safetensors.index.json (weight_map: name -> shard file, shard
**     paths relative to the index's directory);
**   - a directory holding model.safetensors (preferred, as transformers
**     does) or model.safetensors.index.json.
** Every shard is opened and validated; every name the index lists must be
** in the shard it names, and every tensor of a shard must be listed (for
** that shard).  Tensor names are unique across the set. */
typedef struct llmc_st_set llmc_st_set;

llmc_st_set *llmc_st_set_open(const char *path);
void llmc_st_set_free(llmc_st_set *s);                     /* NULL is a no-op */
const char *llmc_st_set_path(const llmc_st_set *s);
size_t llmc_st_set_count(const llmc_st_set *s);
/* entries sorted by name; *file (optional) receives the shard (borrowed) */
const llmc_st_info *llmc_st_set_info_at(const llmc_st_set *s, size_t i, llmc_st_file **file);
const llmc_st_info *llmc_st_set_find(const llmc_st_set *s, const char *name, llmc_st_file **file);
size_t llmc_st_set_nfiles(const llmc_st_set *s);
llmc_st_file *llmc_st_set_file(const llmc_st_set *s, size_t i);  /* borrowed */
/* union of the shards' __metadata__ (the first shard wins a conflict),
** sorted by key */
const llmc_st_kv *llmc_st_set_metadata(const llmc_st_set *s, size_t *n);
llmc_tensor *llmc_st_set_get(llmc_st_set *s, const char *name);
/* Tell the kernel the mapped pages that lie wholly inside tensor `name` are
** not needed now (madvise MADV_DONTNEED): they leave the process's resident
** set, and a later read (through a tensor still viewing them, or a new get)
** maps them again from the page cache or the file.  The sequential
** pipeline calls it for a layer it has finished.  Returns the bytes
** released from the resident set's reach; 0 for an absent name, an
** in-memory image or a tensor smaller than a page. */
int64_t llmc_st_set_drop_pages(const llmc_st_set *s, const char *name);

/* ---- writer ------------------------------------------------------------------- */
/* max_shard_size == 0: `path` is the output file.
** max_shard_size  > 0: `path` is a directory (created if missing); tensors
**   go to shards in declaration order, a new shard starting when the next
**   tensor would push the current one's data past max_shard_size bytes (a
**   tensor larger than that gets a shard of its own).  One shard is written
**   as model.safetensors; N > 1 as model-0000i-of-0000N.safetensors plus
**   model.safetensors.index.json ({"metadata": {"total_size": bytes},
**   "weight_map": {...}}, as transformers writes it).  Stale shard files
**   and index of a previous save with those names are removed at finish.
** Within a shard the data is laid out as the Python library does: by
** descending dtype alignment, then by name; the header lists
** __metadata__ first, then the tensors in data order, compact JSON padded
** with spaces to a multiple of 8 bytes — byte-identical to safetensors'
** save_file for the same tensors and metadata.
** Temporaries are "<final>.tmp.<pid>" next to the finals. */
typedef struct llmc_st_writer llmc_st_writer;

llmc_st_writer *llmc_st_writer_new(const char *path, uint64_t max_shard_size);
/* before begin; a key set twice keeps the last value */
int llmc_st_writer_set_metadata(llmc_st_writer *w, const char *key, const char *value);
/* before begin */
int llmc_st_writer_declare(llmc_st_writer *w, const char *name, llmc_dtype dt,
                           int ndim, const int64_t *shape);
/* Lay out the shards, create the temporaries at their full size and write
** their headers. */
int llmc_st_writer_begin(llmc_st_writer *w);
/* After begin; thread-safe (distinct tensors or distinct byte ranges).
** write: all of the tensor's bytes at once (nbytes must equal its size).
** write_part: bytes [byte_offset, byte_offset + nbytes) of the tensor;
** a range written twice is an error. */
int llmc_st_writer_write(llmc_st_writer *w, const char *name, const void *data, size_t nbytes);
int llmc_st_writer_write_part(llmc_st_writer *w, const char *name, uint64_t byte_offset,
                              const void *data, size_t nbytes);
/* write a tensor whose dtype and shape match the declaration (any strides,
** any device: a contiguous host copy is made when needed) */
int llmc_st_writer_write_tensor(llmc_st_writer *w, const char *name, llmc_tensor *t);
/* Check every byte of every tensor was written, fsync, rename the
** temporaries to their final names, write the index.  On failure nothing
** final is left and the temporaries are removed. */
int llmc_st_writer_finish(llmc_st_writer *w);
/* Remove every temporary (idempotent); later writes fail. */
void llmc_st_writer_abort(llmc_st_writer *w);
/* Aborts when not finished, then frees.  NULL is a no-op. */
void llmc_st_writer_free(llmc_st_writer *w);

/* after begin: the number of shards and their final paths */
size_t llmc_st_writer_nshards(const llmc_st_writer *w);
const char *llmc_st_writer_shard_path(const llmc_st_writer *w, size_t i);

#endif
