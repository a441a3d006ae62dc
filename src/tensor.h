/*
** tensor.h — one tensor type for every dtype and device.
**
** A tensor is a strided view (shape, stride in elements, offset in
** elements; up to LLMC_MAX_DIMS dims) over a refcounted storage.  A storage
** is host memory (malloc), a mapped file region (e.g. a safetensors file,
** kept alive by its owner's refcount) or device memory (CUDA).
**
** Ownership rules (the whole core follows them):
**   - Every function returning `llmc_tensor *` returns a NEW reference that
**     the caller must drop with llmc_tensor_free().  Views share storage.
**   - Functions taking `const llmc_tensor *` / `llmc_tensor *` arguments
**     BORROW them; they never free their arguments.
**   - llmc_tensor_free(NULL) is a no-op.  Refcounts are atomic, so tensors
**     may be shared between threads; their bytes are not locked.
**   - Mapped storages are copy-on-write: llmc_tensor_make_writable() (called
**     by every in-place op) moves a mapped storage's bytes to host memory
**     first, so writing never reaches the file (and a read-only mapping is
**     never written).
** Errors: NULL / -1 with llmc_err() set (error.h).
**
**   int64_t shape[2] = {4, 8};
**   llmc_tensor *t = llmc_tensor_zeros(LLMC_F32, 2, shape);
**   llmc_tensor *row = llmc_tensor_narrow(t, 0, 1, 1);   // view, shares bytes
**   llmc_tensor_free(row); llmc_tensor_free(t);
*/
#ifndef LLMC_TENSOR_H
#define LLMC_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#define LLMC_MAX_DIMS 8

/* The CUDA side (C++) includes this header but never touches refcounts;
** C's atomic_int has int's size and alignment on every target we build. */
#ifdef __cplusplus
typedef int llmc_refcount;
#else
#include <stdatomic.h>
typedef atomic_int llmc_refcount;
#endif

typedef enum llmc_storage_kind {
  LLMC_STORAGE_HOST = 0,   /* malloc'd, owned */
  LLMC_STORAGE_MAPPED,     /* bytes owned by `owner` (a mapped file), read-only */
  LLMC_STORAGE_CUDA,       /* device memory (cuda/), owned */
} llmc_storage_kind;

typedef struct llmc_storage {
  llmc_refcount refcount;
  llmc_storage_kind kind;
  int device;                       /* CUDA device index; -1 for host */
  void *data;
  size_t nbytes;
  void *owner;                      /* MAPPED: what keeps `data` alive */
  void (*release)(void *owner);     /* MAPPED: drops one reference of owner */
} llmc_storage;

typedef struct llmc_tensor {
  llmc_refcount refcount;
  llmc_dtype dtype;
  int ndim;
  int64_t shape[LLMC_MAX_DIMS];
  int64_t stride[LLMC_MAX_DIMS];    /* in elements */
  int64_t offset;                   /* in elements, into storage */
  llmc_storage *storage;
} llmc_tensor;

/* ---- bytes accounting (host storages, for peak-memory reports) ------------ */
size_t llmc_host_bytes_in_use(void);
size_t llmc_host_bytes_peak(void);
void llmc_host_bytes_reset_peak(void);

/* ---- construction ---------------------------------------------------------- */
llmc_tensor *llmc_tensor_empty(llmc_dtype dt, int ndim, const int64_t *shape);  /* uninitialised */
llmc_tensor *llmc_tensor_zeros(llmc_dtype dt, int ndim, const int64_t *shape);
llmc_tensor *llmc_tensor_full(llmc_dtype dt, int ndim, const int64_t *shape, double value);
llmc_tensor *llmc_tensor_arange(llmc_dtype dt, double start, double stop, double step);
/* rand: uniform [0,1); randn: standard normal.  Deterministic for a seed,
** whatever the thread count (counter-based generator: element i's value
** depends on (seed, i) only). */
llmc_tensor *llmc_tensor_rand(llmc_dtype dt, int ndim, const int64_t *shape, uint64_t seed);
llmc_tensor *llmc_tensor_randn(llmc_dtype dt, int ndim, const int64_t *shape, uint64_t seed);
/* Wrap bytes owned by someone else (contiguous).  `release(owner)` is called
** once when the storage dies; the caller hands over one reference of owner. */
llmc_tensor *llmc_tensor_from_mapped(llmc_dtype dt, int ndim, const int64_t *shape,
                                     void *data, size_t nbytes,
                                     void *owner, void (*release)(void *owner));
/* Copy n bytes from host memory into a new contiguous host tensor. */
llmc_tensor *llmc_tensor_from_bytes(llmc_dtype dt, int ndim, const int64_t *shape,
                                    const void *bytes, size_t nbytes);

llmc_tensor *llmc_tensor_retain(llmc_tensor *t);   /* returns t */
void llmc_tensor_free(llmc_tensor *t);

/* ---- queries ---------------------------------------------------------------- */
int64_t llmc_tensor_numel(const llmc_tensor *t);
size_t llmc_tensor_nbytes(const llmc_tensor *t);            /* numel * itemsize */
int llmc_tensor_is_contiguous(const llmc_tensor *t);
static inline void *llmc_tensor_data(const llmc_tensor *t) {
  return (char *)t->storage->data + (size_t)t->offset * llmc_dtype_size(t->dtype);
}
static inline int llmc_tensor_is_cuda(const llmc_tensor *t) {
  return t->storage->kind == LLMC_STORAGE_CUDA;
}
int llmc_tensor_same_shape(const llmc_tensor *a, const llmc_tensor *b);
/* "[4, 8]" into buf; returns buf */
char *llmc_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);

/* ---- views (share storage; negative dims count from the end) ---------------- */
llmc_tensor *llmc_tensor_view(llmc_tensor *t);                      /* alias */
llmc_tensor *llmc_tensor_narrow(llmc_tensor *t, int dim, int64_t start, int64_t len);
llmc_tensor *llmc_tensor_select(llmc_tensor *t, int dim, int64_t index);  /* drops dim */
llmc_tensor *llmc_tensor_transpose(llmc_tensor *t, int d0, int d1);
llmc_tensor *llmc_tensor_permute(llmc_tensor *t, const int *dims);
llmc_tensor *llmc_tensor_unsqueeze(llmc_tensor *t, int dim);
llmc_tensor *llmc_tensor_squeeze(llmc_tensor *t, int dim);
/* reshape: a view when strides allow, else a contiguous copy; one -1 allowed */
llmc_tensor *llmc_tensor_reshape(llmc_tensor *t, int ndim, const int64_t *shape);
/* expand size-1 dims to `shape` with stride 0 (read-only use) */
llmc_tensor *llmc_tensor_expand(llmc_tensor *t, int ndim, const int64_t *shape);

/* ---- copies and conversions ------------------------------------------------- */
/* new contiguous host tensor with dtype dt (dt < 0: keep dtype) */
llmc_tensor *llmc_tensor_contiguous(llmc_tensor *t);      /* retains t if already contiguous on host */
llmc_tensor *llmc_tensor_to_dtype(llmc_tensor *t, llmc_dtype dt);  /* retains t if same dtype+contiguous */
llmc_tensor *llmc_tensor_clone(const llmc_tensor *t);     /* always a fresh contiguous copy */
/* dst[...] = convert(src[...]); shapes equal (or src broadcastable); any strides */
int llmc_tensor_copy_(llmc_tensor *dst, const llmc_tensor *src);
/* New contiguous copy on `device` (-1 = host, 0.. = CUDA device); fails
** clearly in a build without CUDA or on a machine without a GPU. */
llmc_tensor *llmc_tensor_to_device(const llmc_tensor *t, int device);
/* Make t's storage private host memory (copy-on-write of mapped bytes). */
int llmc_tensor_make_writable(llmc_tensor *t);

/* element access by flat logical index (slow; for tests, printing, Lua) */
double llmc_tensor_get_flat(const llmc_tensor *t, int64_t i);
int llmc_tensor_set_flat(llmc_tensor *t, int64_t i, double v);
/* byte offset (in elements) of logical flat index i */
int64_t llmc_tensor_flat_offset(const llmc_tensor *t, int64_t i);

#endif
