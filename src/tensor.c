/*
** tensor.c — storages, tensors, views and copies (see tensor.h for the
** ownership rules).
*/
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#ifdef LLMC_HAVE_CUDA
#include "cuda_backend.h"
#endif

/* ---- host byte accounting ---------------------------------------------------- */

static atomic_size_t host_in_use, host_peak;

size_t llmc_host_bytes_in_use(void) { return atomic_load(&host_in_use); }
size_t llmc_host_bytes_peak(void) { return atomic_load(&host_peak); }
void llmc_host_bytes_reset_peak(void) { atomic_store(&host_peak, atomic_load(&host_in_use)); }

static void account(size_t add, size_t sub) {
  size_t now = atomic_fetch_add(&host_in_use, add) + add;
  atomic_fetch_sub(&host_in_use, sub);
  size_t peak = atomic_load(&host_peak);
  while (now > peak && !atomic_compare_exchange_weak(&host_peak, &peak, now)) {}
}

/* ---- storages ------------------------------------------------------------------ */

static llmc_storage *storage_new_host(size_t nbytes, int zero) {
  llmc_storage *s = calloc(1, sizeof *s);
  if (!s) { llmc_err("out of memory (storage header)"); return NULL; }
  size_t alloc = (nbytes + 63) & ~(size_t)63;
  if (alloc == 0) alloc = 64;
  s->data = aligned_alloc(64, alloc);
  if (!s->data) {
    free(s);
    llmc_err("out of host memory: %zu bytes requested, %zu in use", nbytes, llmc_host_bytes_in_use());
    return NULL;
  }
  if (zero) memset(s->data, 0, alloc);
  atomic_init(&s->refcount, 1);
  s->kind = LLMC_STORAGE_HOST;
  s->device = -1;
  s->nbytes = nbytes;
  account(nbytes, 0);
  return s;
}

static void storage_release(llmc_storage *s) {
  if (!s || atomic_fetch_sub(&s->refcount, 1) != 1) return;
  switch (s->kind) {
    case LLMC_STORAGE_HOST: free(s->data); account(0, s->nbytes); break;
    case LLMC_STORAGE_MAPPED: if (s->release) s->release(s->owner); break;
    case LLMC_STORAGE_CUDA:
#ifdef LLMC_HAVE_CUDA
      llmc_cuda_free(s->data, s->nbytes, s->device);
#endif
      break;
  }
  free(s);
}

/* ---- tensors -------------------------------------------------------------------- */

static void set_contiguous_strides(llmc_tensor *t) {
  int64_t st = 1;
  for (int d = t->ndim - 1; d >= 0; d--) { t->stride[d] = st; st *= t->shape[d]; }
}

static int check_shape(int ndim, const int64_t *shape, int64_t *numel) {
  if (ndim < 0 || ndim > LLMC_MAX_DIMS) return llmc_err("tensor: %d dims (at most %d)", ndim, LLMC_MAX_DIMS);
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0) return llmc_err("tensor: negative size %lld in dim %d", (long long)shape[d], d);
    if (shape[d] && n > INT64_MAX / 16 / shape[d]) return llmc_err("tensor: shape too large");
    n *= shape[d];
  }
  *numel = n;
  return 0;
}

static llmc_tensor *tensor_alloc(llmc_dtype dt, int ndim, const int64_t *shape) {
  llmc_tensor *t = calloc(1, sizeof *t);
  if (!t) { llmc_err("out of memory (tensor header)"); return NULL; }
  atomic_init(&t->refcount, 1);
  t->dtype = dt;
  t->ndim = ndim;
  for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
  set_contiguous_strides(t);
  return t;
}

static llmc_tensor *tensor_new_host(llmc_dtype dt, int ndim, const int64_t *shape, int zero) {
  int64_t n = 0;
  if ((unsigned)dt >= LLMC_DTYPE_COUNT) { llmc_err("tensor: invalid dtype %d", (int)dt); return NULL; }
  if (check_shape(ndim, shape, &n) < 0) return NULL;
  llmc_tensor *t = tensor_alloc(dt, ndim, shape);
  if (!t) return NULL;
  t->storage = storage_new_host((size_t)n * llmc_dtype_size(dt), zero);
  if (!t->storage) { free(t); return NULL; }
  return t;
}

llmc_tensor *llmc_tensor_empty(llmc_dtype dt, int ndim, const int64_t *shape) {
  return tensor_new_host(dt, ndim, shape, 0);
}

llmc_tensor *llmc_tensor_zeros(llmc_dtype dt, int ndim, const int64_t *shape) {
  return tensor_new_host(dt, ndim, shape, 1);
}

llmc_tensor *llmc_tensor_full(llmc_dtype dt, int ndim, const int64_t *shape, double value) {
  llmc_tensor *t = tensor_new_host(dt, ndim, shape, 0);
  if (!t) return NULL;
  size_t is = llmc_dtype_size(dt);
  unsigned char one[8];
  llmc_store_from_f64(one, dt, value);
  int64_t n = llmc_tensor_numel(t);
  char *p = t->storage->data;
  #pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) memcpy(p + (size_t)i * is, one, is);
  return t;
}

llmc_tensor *llmc_tensor_arange(llmc_dtype dt, double start, double stop, double step) {
  if (step == 0 || !isfinite(start) || !isfinite(stop) || !isfinite(step)) {
    llmc_err("arange: invalid range (%g, %g, %g)", start, stop, step);
    return NULL;
  }
  double cnt = ceil((stop - start) / step);
  int64_t n = cnt > 0 ? (int64_t)cnt : 0;
  llmc_tensor *t = tensor_new_host(dt, 1, &n, 0);
  if (!t) return NULL;
  size_t is = llmc_dtype_size(dt);
  for (int64_t i = 0; i < n; i++)
    llmc_store_from_f64((char *)t->storage->data + (size_t)i * is, dt, start + (double)i * step);
  return t;
}

/* Counter-based generator: splitmix64 of (seed, index).  Element i's value
** depends on nothing else, so results are identical for any thread count. */
static inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static inline double uniform01(uint64_t seed, uint64_t i) {
  return (double)(mix64(seed * 0x2545f4914f6cdd1dull ^ mix64(i)) >> 11) * 0x1p-53;
}

static llmc_tensor *tensor_random(llmc_dtype dt, int ndim, const int64_t *shape, uint64_t seed, int normal) {
  llmc_tensor *t = tensor_new_host(dt, ndim, shape, 0);
  if (!t) return NULL;
  int64_t n = llmc_tensor_numel(t);
  size_t is = llmc_dtype_size(dt);
  char *p = t->storage->data;
  #pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    double v;
    if (normal) {
      double u1 = uniform01(seed, 2 * (uint64_t)i), u2 = uniform01(seed, 2 * (uint64_t)i + 1);
      if (u1 < 1e-300) u1 = 1e-300;
      v = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
    } else {
      v = uniform01(seed, (uint64_t)i);
    }
    llmc_store_from_f64(p + (size_t)i * is, dt, dt == LLMC_F64 ? v : (double)(float)v);
  }
  return t;
}

llmc_tensor *llmc_tensor_rand(llmc_dtype dt, int ndim, const int64_t *shape, uint64_t seed) {
  return tensor_random(dt, ndim, shape, seed, 0);
}
llmc_tensor *llmc_tensor_randn(llmc_dtype dt, int ndim, const int64_t *shape, uint64_t seed) {
  return tensor_random(dt, ndim, shape, seed, 1);
}

llmc_tensor *llmc_tensor_from_mapped(llmc_dtype dt, int ndim, const int64_t *shape, void *data,
                                     size_t nbytes, void *owner, void (*release)(void *owner)) {
  int64_t n = 0;
  if (check_shape(ndim, shape, &n) < 0) return NULL;
  if ((size_t)n * llmc_dtype_size(dt) != nbytes) {
    llmc_err("tensor: %zu bytes do not hold %lld elements of %s", nbytes, (long long)n, llmc_dtype_name(dt));
    return NULL;
  }
  llmc_tensor *t = tensor_alloc(dt, ndim, shape);
  llmc_storage *s = t ? calloc(1, sizeof *s) : NULL;
  if (!s) { free(t); llmc_err("out of memory"); return NULL; }
  atomic_init(&s->refcount, 1);
  s->kind = LLMC_STORAGE_MAPPED;
  s->device = -1;
  s->data = data;
  s->nbytes = nbytes;
  s->owner = owner;
  s->release = release;
  t->storage = s;
  return t;
}

llmc_tensor *llmc_tensor_from_bytes(llmc_dtype dt, int ndim, const int64_t *shape, const void *bytes,
                                    size_t nbytes) {
  llmc_tensor *t = tensor_new_host(dt, ndim, shape, 0);
  if (!t) return NULL;
  if (llmc_tensor_nbytes(t) != nbytes) {
    llmc_err("tensor: %zu bytes given for a %s tensor of %zu bytes", nbytes, llmc_dtype_name(dt), llmc_tensor_nbytes(t));
    llmc_tensor_free(t);
    return NULL;
  }
  memcpy(t->storage->data, bytes, nbytes);
  return t;
}

llmc_tensor *llmc_tensor_retain(llmc_tensor *t) {
  if (t) atomic_fetch_add(&t->refcount, 1);
  return t;
}

void llmc_tensor_free(llmc_tensor *t) {
  if (!t || atomic_fetch_sub(&t->refcount, 1) != 1) return;
  storage_release(t->storage);
  free(t);
}

/* ---- queries ---------------------------------------------------------------------- */

int64_t llmc_tensor_numel(const llmc_tensor *t) {
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
  return n;
}

size_t llmc_tensor_nbytes(const llmc_tensor *t) {
  return (size_t)llmc_tensor_numel(t) * llmc_dtype_size(t->dtype);
}

int llmc_tensor_is_contiguous(const llmc_tensor *t) {
  int64_t st = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->shape[d] != 1 && t->stride[d] != st) return 0;
    st *= t->shape[d];
  }
  return 1;
}

int llmc_tensor_same_shape(const llmc_tensor *a, const llmc_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int d = 0; d < a->ndim; d++) if (a->shape[d] != b->shape[d]) return 0;
  return 1;
}

char *llmc_shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
  size_t k = 0;
  k += (size_t)snprintf(buf + k, n - k, "[");
  for (int d = 0; d < ndim && k < n; d++)
    k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

int64_t llmc_tensor_flat_offset(const llmc_tensor *t, int64_t i) {
  int64_t off = t->offset;
  for (int d = t->ndim - 1; d >= 0; d--) {
    int64_t sz = t->shape[d] ? t->shape[d] : 1;
    off += (i % sz) * t->stride[d];
    i /= sz;
  }
  return off;
}

double llmc_tensor_get_flat(const llmc_tensor *t, int64_t i) {
  size_t is = llmc_dtype_size(t->dtype);
  return llmc_load_as_f64((char *)t->storage->data + (size_t)llmc_tensor_flat_offset(t, i) * is, t->dtype);
}

int llmc_tensor_set_flat(llmc_tensor *t, int64_t i, double v) {
  if (llmc_tensor_make_writable(t) < 0) return -1;
  size_t is = llmc_dtype_size(t->dtype);
  llmc_store_from_f64((char *)t->storage->data + (size_t)llmc_tensor_flat_offset(t, i) * is, t->dtype, v);
  return 0;
}

/* ---- views ---------------------------------------------------------------------------- */

static int norm_dim(const llmc_tensor *t, int dim, int extra) {
  int n = t->ndim + extra;
  if (dim < 0) dim += n;
  if (dim < 0 || dim >= n) return llmc_err("dimension %d out of range for a %d-dim tensor", dim, t->ndim);
  return dim;
}

static llmc_tensor *view_of(llmc_tensor *t) {
  llmc_tensor *v = calloc(1, sizeof *v);
  if (!v) { llmc_err("out of memory"); return NULL; }
  *v = *t;
  atomic_init(&v->refcount, 1);
  atomic_fetch_add(&t->storage->refcount, 1);
  return v;
}

llmc_tensor *llmc_tensor_view(llmc_tensor *t) { return view_of(t); }

llmc_tensor *llmc_tensor_narrow(llmc_tensor *t, int dim, int64_t start, int64_t len) {
  if ((dim = norm_dim(t, dim, 0)) < 0) return NULL;
  if (start < 0) start += t->shape[dim];
  if (start < 0 || len < 0 || start + len > t->shape[dim]) {
    llmc_err("narrow: range [%lld, %lld) out of bounds for dim %d of size %lld", (long long)start,
             (long long)(start + len), dim, (long long)t->shape[dim]);
    return NULL;
  }
  llmc_tensor *v = view_of(t);
  if (!v) return NULL;
  v->offset += start * t->stride[dim];
  v->shape[dim] = len;
  return v;
}

llmc_tensor *llmc_tensor_select(llmc_tensor *t, int dim, int64_t index) {
  if ((dim = norm_dim(t, dim, 0)) < 0) return NULL;
  if (index < 0) index += t->shape[dim];
  if (index < 0 || index >= t->shape[dim]) {
    llmc_err("index %lld out of range for dim %d of size %lld", (long long)index, dim, (long long)t->shape[dim]);
    return NULL;
  }
  llmc_tensor *v = view_of(t);
  if (!v) return NULL;
  v->offset += index * t->stride[dim];
  for (int d = dim; d < t->ndim - 1; d++) { v->shape[d] = t->shape[d + 1]; v->stride[d] = t->stride[d + 1]; }
  v->ndim--;
  return v;
}

llmc_tensor *llmc_tensor_transpose(llmc_tensor *t, int d0, int d1) {
  if ((d0 = norm_dim(t, d0, 0)) < 0 || (d1 = norm_dim(t, d1, 0)) < 0) return NULL;
  llmc_tensor *v = view_of(t);
  if (!v) return NULL;
  v->shape[d0] = t->shape[d1]; v->stride[d0] = t->stride[d1];
  v->shape[d1] = t->shape[d0]; v->stride[d1] = t->stride[d0];
  return v;
}

llmc_tensor *llmc_tensor_permute(llmc_tensor *t, const int *dims) {
  int seen[LLMC_MAX_DIMS] = {0};
  for (int d = 0; d < t->ndim; d++) {
    int s = dims[d] < 0 ? dims[d] + t->ndim : dims[d];
    if (s < 0 || s >= t->ndim || seen[s]++) { llmc_err("permute: invalid dims"); return NULL; }
  }
  llmc_tensor *v = view_of(t);
  if (!v) return NULL;
  for (int d = 0; d < t->ndim; d++) {
    int s = dims[d] < 0 ? dims[d] + t->ndim : dims[d];
    v->shape[d] = t->shape[s];
    v->stride[d] = t->stride[s];
  }
  return v;
}

llmc_tensor *llmc_tensor_unsqueeze(llmc_tensor *t, int dim) {
  if (t->ndim >= LLMC_MAX_DIMS) { llmc_err("unsqueeze: too many dims"); return NULL; }
  if ((dim = norm_dim(t, dim, 1)) < 0) return NULL;
  llmc_tensor *v = view_of(t);
  if (!v) return NULL;
  for (int d = t->ndim; d > dim; d--) { v->shape[d] = t->shape[d - 1]; v->stride[d] = t->stride[d - 1]; }
  v->shape[dim] = 1;
  v->stride[dim] = dim < t->ndim ? t->stride[dim] * t->shape[dim] : 1;
  v->ndim++;
  return v;
}

llmc_tensor *llmc_tensor_squeeze(llmc_tensor *t, int dim) {
  if ((dim = norm_dim(t, dim, 0)) < 0) return NULL;
  if (t->shape[dim] != 1) { llmc_err("squeeze: dim %d has size %lld, not 1", dim, (long long)t->shape[dim]); return NULL; }
  return llmc_tensor_select(t, dim, 0);
}

llmc_tensor *llmc_tensor_reshape(llmc_tensor *t, int ndim, const int64_t *shape_in) {
  int64_t shape[LLMC_MAX_DIMS], known = 1, n = llmc_tensor_numel(t);
  int infer = -1;
  if (ndim < 0 || ndim > LLMC_MAX_DIMS) { llmc_err("reshape: %d dims", ndim); return NULL; }
  for (int d = 0; d < ndim; d++) {
    shape[d] = shape_in[d];
    if (shape[d] == -1) {
      if (infer >= 0) { llmc_err("reshape: only one -1 allowed"); return NULL; }
      infer = d;
    } else if (shape[d] < 0) {
      llmc_err("reshape: negative size"); return NULL;
    } else known *= shape[d];
  }
  if (infer >= 0) {
    if (known == 0 || n % known) { llmc_err("reshape: cannot infer -1 for %lld elements", (long long)n); return NULL; }
    shape[infer] = n / known;
    known = n;
  }
  if (known != n) {
    char a[128], b[128];
    llmc_err("reshape: shape %s is invalid for a tensor of shape %s (%lld elements)",
             llmc_shape_str(ndim, shape, a, sizeof a), llmc_shape_str(t->ndim, t->shape, b, sizeof b), (long long)n);
    return NULL;
  }
  llmc_tensor *src = llmc_tensor_contiguous(t);
  if (!src) return NULL;
  llmc_tensor *v = view_of(src);
  llmc_tensor_free(src);
  if (!v) return NULL;
  v->ndim = ndim;
  for (int d = 0; d < ndim; d++) v->shape[d] = shape[d];
  set_contiguous_strides(v);
  return v;
}

llmc_tensor *llmc_tensor_expand(llmc_tensor *t, int ndim, const int64_t *shape) {
  if (ndim < t->ndim || ndim > LLMC_MAX_DIMS) { llmc_err("expand: cannot expand %d dims to %d", t->ndim, ndim); return NULL; }
  llmc_tensor *v = view_of(t);
  if (!v) return NULL;
  int lead = ndim - t->ndim;
  for (int d = 0; d < ndim; d++) {
    int64_t sz = d < lead ? 1 : t->shape[d - lead], st = d < lead ? 0 : t->stride[d - lead];
    int64_t want = shape[d] == -1 ? sz : shape[d];
    if (sz != want) {
      if (sz != 1) { llmc_tensor_free(v); llmc_err("expand: dim %d of size %lld cannot become %lld", d, (long long)sz, (long long)want); return NULL; }
      st = 0;
    }
    v->shape[d] = want;
    v->stride[d] = st;
  }
  v->ndim = ndim;
  return v;
}

/* ---- copies -------------------------------------------------------------------------- */

/* Strided copy with conversion.  The innermost dim is copied as a run; the
** outer index space is split among threads.  Broadcast sources (stride 0)
** are fine. */
/* element gather / scatter with a byte stride; the switch lets the
** compiler emit plain loads and stores for the usual element sizes */
static void gather_elems(char *out, const char *in, size_t stride, size_t es, int64_t m) {
  switch (es) {
    case 1: for (int64_t i = 0; i < m; i++) out[i] = in[(size_t)i * stride]; break;
    case 2: for (int64_t i = 0; i < m; i++) memcpy(out + 2 * i, in + (size_t)i * stride, 2); break;
    case 4: for (int64_t i = 0; i < m; i++) memcpy(out + 4 * i, in + (size_t)i * stride, 4); break;
    case 8: for (int64_t i = 0; i < m; i++) memcpy(out + 8 * i, in + (size_t)i * stride, 8); break;
    default: for (int64_t i = 0; i < m; i++) memcpy(out + es * (size_t)i, in + (size_t)i * stride, es);
  }
}
static void scatter_elems(char *out, const char *in, size_t stride, size_t es, int64_t m) {
  switch (es) {
    case 1: for (int64_t i = 0; i < m; i++) out[(size_t)i * stride] = in[i]; break;
    case 2: for (int64_t i = 0; i < m; i++) memcpy(out + (size_t)i * stride, in + 2 * i, 2); break;
    case 4: for (int64_t i = 0; i < m; i++) memcpy(out + (size_t)i * stride, in + 4 * i, 4); break;
    case 8: for (int64_t i = 0; i < m; i++) memcpy(out + (size_t)i * stride, in + 8 * i, 8); break;
    default: for (int64_t i = 0; i < m; i++) memcpy(out + (size_t)i * stride, in + es * (size_t)i, es);
  }
}

int llmc_tensor_copy_(llmc_tensor *dst, const llmc_tensor *src) {
  if (llmc_tensor_is_cuda(dst) || llmc_tensor_is_cuda(src)) {
#ifdef LLMC_HAVE_CUDA
    return llmc_cuda_copy(dst, src);
#else
    return llmc_err("copy: CUDA tensors need a CUDA build");
#endif
  }
  llmc_tensor *s = (llmc_tensor *)src, *bs = NULL;
  if (!llmc_tensor_same_shape(dst, src)) {
    bs = llmc_tensor_expand(s, dst->ndim, dst->shape);
    if (!bs) return llmc_err_prefix("copy: ");
    s = bs;
  }
  if (llmc_tensor_make_writable(dst) < 0) { llmc_tensor_free(bs); return -1; }
  int64_t n = llmc_tensor_numel(dst);
  if (n == 0) { llmc_tensor_free(bs); return 0; }
  if (llmc_tensor_is_contiguous(dst) && llmc_tensor_is_contiguous(s)) {
    llmc_convert(llmc_tensor_data(dst), dst->dtype, llmc_tensor_data(s), s->dtype, (size_t)n);
    llmc_tensor_free(bs);
    return 0;
  }
  int nd = dst->ndim;
  int64_t inner = nd ? dst->shape[nd - 1] : 1;
  int64_t outer = n / inner;
  int64_t ds_in = nd ? dst->stride[nd - 1] : 1, ss_in = nd ? s->stride[nd - 1] : 1;
  size_t dis = llmc_dtype_size(dst->dtype), sis = llmc_dtype_size(s->dtype);
  char *dbase = dst->storage->data;
  const char *sbase = s->storage->data;
  #pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t o = 0; o < outer; o++) {
    int64_t doff = dst->offset, soff = s->offset, rem = o;
    for (int d = nd - 2; d >= 0; d--) {
      int64_t idx = rem % dst->shape[d];
      rem /= dst->shape[d];
      doff += idx * dst->stride[d];
      soff += idx * s->stride[d];
    }
    if (ds_in == 1 && ss_in == 1) {
      llmc_convert(dbase + (size_t)doff * dis, dst->dtype, sbase + (size_t)soff * sis, s->dtype, (size_t)inner);
    } else {
      /* strided innermost dim (a transpose): gather a chunk into a
      ** contiguous buffer, convert it with one call, scatter it — a
      ** conversion call per element costs ~100x more than the copy */
      enum { CHUNK = 512 };
      _Alignas(16) char sbuf[CHUNK * 8], dbuf[CHUNK * 8];
      for (int64_t i0 = 0; i0 < inner; i0 += CHUNK) {
        int64_t m = inner - i0 < CHUNK ? inner - i0 : CHUNK;
        const char *sp = sbase + (size_t)(soff + i0 * ss_in) * sis;
        if (ss_in == 1) memcpy(sbuf, sp, (size_t)m * sis);
        else gather_elems(sbuf, sp, (size_t)(ss_in * (int64_t)sis), sis, m);
        char *dp = dbase + (size_t)(doff + i0 * ds_in) * dis;
        if (ds_in == 1) {
          llmc_convert(dp, dst->dtype, sbuf, s->dtype, (size_t)m);
        } else {
          llmc_convert(dbuf, dst->dtype, sbuf, s->dtype, (size_t)m);
          scatter_elems(dp, dbuf, (size_t)(ds_in * (int64_t)dis), dis, m);
        }
      }
    }
  }
  llmc_tensor_free(bs);
  return 0;
}

llmc_tensor *llmc_tensor_clone(const llmc_tensor *t) {
  llmc_tensor *c = tensor_new_host(t->dtype, t->ndim, t->shape, 0);
  if (!c) return NULL;
  if (llmc_tensor_copy_(c, t) < 0) { llmc_tensor_free(c); return NULL; }
  return c;
}

llmc_tensor *llmc_tensor_contiguous(llmc_tensor *t) {
  if (llmc_tensor_is_contiguous(t) && !llmc_tensor_is_cuda(t)) return llmc_tensor_retain(t);
  return llmc_tensor_clone(t);
}

llmc_tensor *llmc_tensor_to_dtype(llmc_tensor *t, llmc_dtype dt) {
  if (t->dtype == dt) return llmc_tensor_contiguous(t);
  llmc_tensor *c = tensor_new_host(dt, t->ndim, t->shape, 0);
  if (!c) return NULL;
  if (llmc_tensor_copy_(c, t) < 0) { llmc_tensor_free(c); return NULL; }
  return c;
}

llmc_tensor *llmc_tensor_to_device(const llmc_tensor *t, int device) {
#ifdef LLMC_HAVE_CUDA
  return llmc_cuda_to_device(t, device);
#else
  if (device < 0) return llmc_tensor_clone(t);
  llmc_err("device cuda:%d requested, but this llmc was built without CUDA", device);
  return NULL;
#endif
}

int llmc_tensor_make_writable(llmc_tensor *t) {
  if (t->storage->kind == LLMC_STORAGE_CUDA) return 0;
  llmc_storage *s = t->storage;
  if (s->kind != LLMC_STORAGE_MAPPED) return 0;
  /* Copy-on-write at storage granularity: every view of this storage sees
  ** the private copy from now on, and the file is never written. */
  size_t alloc = s->nbytes ? (s->nbytes + 63) & ~(size_t)63 : 64;
  void *copy = aligned_alloc(64, alloc);
  if (!copy) return llmc_err("out of host memory: %zu bytes for a copy-on-write", s->nbytes);
  memcpy(copy, s->data, s->nbytes);
  if (s->release) s->release(s->owner);
  s->owner = NULL;
  s->release = NULL;
  s->data = copy;
  s->kind = LLMC_STORAGE_HOST;
  account(s->nbytes, 0);
  return 0;
}
