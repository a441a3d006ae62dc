/*
** test_tensor.c — views, copies, conversions, promotion, reductions and
** matmul against closed forms and naive reference loops.
*/
#include <omp.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "ops.h"
#include "tensor.h"

static double at2(const llmc_tensor *t, int64_t i, int64_t j) {
  return llmc_load_as_f64((char *)t->storage->data + (t->offset + i * t->stride[0] + j * t->stride[1]) *
                              llmc_dtype_size(t->dtype), t->dtype);
}

static void test_views(void) {
  int64_t shape[2] = {3, 4};
  llmc_tensor *a = llmc_tensor_arange(LLMC_F32, 0, 12, 1);
  llmc_tensor *m = llmc_tensor_reshape(a, 2, shape);
  CHECK(m && m->storage == a->storage, "reshape of a contiguous tensor is a view");
  CHECK_NEAR(at2(m, 2, 3), 11, 0);
  llmc_tensor *tr = llmc_tensor_transpose(m, 0, 1);
  CHECK(!llmc_tensor_is_contiguous(tr), "transpose is not contiguous");
  CHECK_NEAR(at2(tr, 3, 1), 7, 0);   /* m[1][3] */
  llmc_tensor *c = llmc_tensor_contiguous(tr);
  CHECK(llmc_tensor_is_contiguous(c) && c->storage != m->storage, "contiguous copies");
  CHECK_NEAR(llmc_tensor_get_flat(c, 1), 4, 0);   /* c[0][1] = m[1][0] */
  llmc_tensor *n = llmc_tensor_narrow(m, 1, 1, 2);
  CHECK_NEAR(at2(n, 1, 0), 5, 0);
  CHECK_EQ_INT(n->shape[1], 2);
  llmc_tensor *s = llmc_tensor_select(m, 0, -1);
  CHECK_EQ_INT(s->ndim, 1);
  CHECK_NEAR(llmc_tensor_get_flat(s, 0), 8, 0);
  int64_t bad[2] = {5, 3};
  llmc_tensor *r = llmc_tensor_reshape(m, 2, bad);
  CHECK(r == NULL && strstr(llmc_errmsg(), "invalid for a tensor of shape [3, 4]"), "bad reshape: %s", llmc_errmsg());
  llmc_tensor *nb = llmc_tensor_narrow(m, 1, 3, 2);
  CHECK(nb == NULL, "narrow out of range fails");
  /* reshape of a non-contiguous view copies */
  int64_t flat = -1;
  llmc_tensor *f = llmc_tensor_reshape(tr, 1, &flat);
  CHECK(f && llmc_tensor_get_flat(f, 1) == 4 && f->shape[0] == 12, "reshape(-1) of a transpose");
  /* unsqueeze / expand broadcast */
  llmc_tensor *u = llmc_tensor_unsqueeze(s, 0);
  int64_t ex[2] = {3, 4};
  llmc_tensor *e = llmc_tensor_expand(u, 2, ex);
  CHECK(e && e->stride[0] == 0 && llmc_tensor_get_flat(e, 9) == 9, "expand broadcasts rows");
  llmc_tensor_free(e); llmc_tensor_free(u); llmc_tensor_free(f);
  llmc_tensor_free(s); llmc_tensor_free(n); llmc_tensor_free(c); llmc_tensor_free(tr);
  llmc_tensor_free(m); llmc_tensor_free(a);
}

static int released;
static void release_owner(void *owner) { (void)owner; released++; }

static void test_mapped_cow(void) {
  static float bytes[4] = {1, 2, 3, 4};
  int64_t n = 4;
  llmc_tensor *t = llmc_tensor_from_mapped(LLMC_F32, 1, &n, bytes, sizeof bytes, bytes, release_owner);
  llmc_tensor *v = llmc_tensor_narrow(t, 0, 1, 2);
  CHECK(t->storage->kind == LLMC_STORAGE_MAPPED, "mapped storage");
  CHECK(llmc_tensor_set_flat(v, 0, 42) == 0, "write to a mapped view");
  CHECK(bytes[1] == 2, "copy-on-write: the mapped bytes are untouched");
  CHECK_NEAR(llmc_tensor_get_flat(t, 1), 42, 0);   /* the other view sees the private copy */
  CHECK_EQ_INT(released, 1);                       /* owner released at the copy */
  CHECK(t->storage->kind == LLMC_STORAGE_HOST, "storage became host memory");
  llmc_tensor_free(v);
  llmc_tensor_free(t);
  CHECK_EQ_INT(released, 1);
}

static void test_promotion(void) {
  int64_t s2[1] = {2};
  llmc_tensor *b = llmc_tensor_full(LLMC_BF16, 1, s2, 1.5);
  llmc_tensor *h = llmc_tensor_full(LLMC_F16, 1, s2, 1.5);
  llmc_tensor *f = llmc_tensor_full(LLMC_F32, 1, s2, 1.5);
  llmc_tensor *f0 = llmc_tensor_full(LLMC_F32, 0, NULL, 7.5);
  llmc_tensor *i = llmc_tensor_full(LLMC_I32, 1, s2, 3);
  CHECK_EQ_INT(llmc_promote(b, h), LLMC_F32);
  CHECK_EQ_INT(llmc_promote(b, f), LLMC_F32);
  CHECK_EQ_INT(llmc_promote(b, f0), LLMC_BF16);   /* 0-dim never widens */
  CHECK_EQ_INT(llmc_promote(i, b), LLMC_BF16);
  /* spec §3.4: bf16 1.5 / bf16(0.2001953125) = 7.4927 -> rounded to bf16 7.5 */
  llmc_tensor *s = llmc_tensor_full(LLMC_BF16, 1, s2, 0.2001953125);
  llmc_tensor *q = llmc_binary(LLMC_OP_DIV, b, s);
  CHECK(q && q->dtype == LLMC_BF16 && llmc_tensor_get_flat(q, 0) == 7.5, "bf16 division rounds to bf16");
  /* bf16 / f32 dimensioned: computed and kept in f32 */
  llmc_tensor *sf = llmc_tensor_full(LLMC_F32, 1, s2, 0.2001953125);
  llmc_tensor *q2 = llmc_binary(LLMC_OP_DIV, b, sf);
  CHECK(q2 && q2->dtype == LLMC_F32 && llmc_tensor_get_flat(q2, 0) == (double)(1.5f / 0.2001953125f), "f32 quotient");
  llmc_tensor *d = llmc_binary(LLMC_OP_DIV, i, i);
  CHECK(d && d->dtype == LLMC_F32, "int / int is true division");
  llmc_tensor *r = llmc_unary(LLMC_OP_ROUND, q2);
  llmc_tensor *k = llmc_binary_scalar(LLMC_OP_ADD, b, 0.5, 0);
  CHECK(k && k->dtype == LLMC_BF16 && llmc_tensor_get_flat(k, 0) == 2.0, "scalar keeps bf16");
  llmc_tensor *half = llmc_tensor_full(LLMC_F32, 1, s2, 2.5);
  llmc_tensor *rr = llmc_unary(LLMC_OP_ROUND, half);
  CHECK(llmc_tensor_get_flat(rr, 0) == 2.0, "round half to even");
  llmc_tensor_free(rr); llmc_tensor_free(half); llmc_tensor_free(k); llmc_tensor_free(r);
  llmc_tensor_free(d); llmc_tensor_free(q2); llmc_tensor_free(sf); llmc_tensor_free(q); llmc_tensor_free(s);
  llmc_tensor_free(i); llmc_tensor_free(f0); llmc_tensor_free(f); llmc_tensor_free(h); llmc_tensor_free(b);
}

static void test_reductions_and_matmul(void) {
  int64_t shape[2] = {37, 129};
  llmc_tensor *x = llmc_tensor_randn(LLMC_F32, 2, shape, 7);
  /* randn is a function of (seed, index) only */
  omp_set_num_threads(1);
  llmc_tensor *x1 = llmc_tensor_randn(LLMC_F32, 2, shape, 7);
  llmc_tensor *s1 = llmc_reduce(LLMC_RED_SUM, x, 1, 0);
  llmc_stats st1; llmc_tensor_stats(x, &st1);
  omp_set_num_threads(2);
  llmc_tensor *s2 = llmc_reduce(LLMC_RED_SUM, x, 1, 0);
  llmc_stats st2; llmc_tensor_stats(x, &st2);
  CHECK(memcmp(x->storage->data, x1->storage->data, llmc_tensor_nbytes(x)) == 0, "randn independent of threads");
  CHECK(memcmp(s1->storage->data, s2->storage->data, llmc_tensor_nbytes(s1)) == 0, "sum independent of threads");
  CHECK(st1.std == st2.std && st1.mean == st2.mean, "stats independent of threads");
  CHECK(fabs(st1.mean) < 0.05 && fabs(st1.std - 1) < 0.05, "randn mean %g std %g", st1.mean, st1.std);
  /* naive references */
  int ok = 1;
  for (int i = 0; i < 37; i++) {
    double acc = 0, am = 0;
    int64_t arg = 0;
    double best = -INFINITY;
    for (int j = 0; j < 129; j++) {
      double v = at2(x, i, j);
      acc += v;
      if (fabs(v) > am) am = fabs(v);
      if (v > best) { best = v; arg = j; }
    }
    ok &= fabs(llmc_tensor_get_flat(s1, i) - acc) < 1e-4;
    llmc_tensor *amx = llmc_reduce(LLMC_RED_AMAX, x, 1, 1);
    llmc_tensor *agm = llmc_reduce(LLMC_RED_ARGMAX, x, -1, 0);
    ok &= amx->ndim == 2 && llmc_tensor_get_flat(amx, i) == (double)(float)am;
    ok &= agm->dtype == LLMC_I64 && llmc_tensor_get_flat(agm, i) == (double)arg;
    llmc_tensor_free(amx); llmc_tensor_free(agm);
  }
  CHECK(ok, "row reductions equal naive loops");
  llmc_tensor *c0 = llmc_reduce(LLMC_RED_SUM, x, 0, 0);
  double col = 0;
  for (int i = 0; i < 37; i++) col += at2(x, i, 5);
  CHECK_NEAR(llmc_tensor_get_flat(c0, 5), col, 1e-4);
  /* matmul: x [37,129] @ w^T [129, 17] */
  int64_t wshape[2] = {17, 129};
  llmc_tensor *w = llmc_tensor_randn(LLMC_BF16, 2, wshape, 3);
  llmc_tensor *y = llmc_linear(x, w, NULL);
  llmc_tensor *wt = llmc_tensor_transpose(w, 0, 1);
  llmc_tensor *y2 = llmc_matmul(x, wt);
  double maxerr = 0;
  for (int i = 0; i < 37; i++)
    for (int j = 0; j < 17; j++) {
      double acc = 0;
      for (int k = 0; k < 129; k++) acc += at2(x, i, k) * at2(w, j, k);
      double e1 = fabs(at2(y, i, j) - acc), e2 = fabs(at2(y2, i, j) - acc);
      if (e1 > maxerr) maxerr = e1;
      if (e2 > maxerr) maxerr = e2;
    }
  CHECK(maxerr < 1e-3, "matmul/linear max error %g vs a naive f64 loop", maxerr);
  CHECK_EQ_INT(y->dtype, LLMC_F32);
  llmc_tensor *xs[2] = {x, x};
  llmc_tensor *cat = llmc_cat(xs, 2, 0);
  CHECK(cat && cat->shape[0] == 74 && at2(cat, 40, 3) == at2(x, 3, 3), "cat");
  llmc_tensor_free(cat);
  llmc_tensor_free(y2); llmc_tensor_free(wt); llmc_tensor_free(y); llmc_tensor_free(w); llmc_tensor_free(c0);
  llmc_tensor_free(s1); llmc_tensor_free(s2); llmc_tensor_free(x1); llmc_tensor_free(x);
}

static void test_copy_convert(void) {
  int64_t shape[2] = {2, 3};
  llmc_tensor *x = llmc_tensor_arange(LLMC_F32, 0, 6, 1);
  llmc_tensor *m = llmc_tensor_reshape(x, 2, shape);
  llmc_tensor *t = llmc_tensor_transpose(m, 0, 1);      /* [3, 2] */
  llmc_tensor *b = llmc_tensor_to_dtype(t, LLMC_BF16);
  CHECK(b && b->dtype == LLMC_BF16 && llmc_tensor_is_contiguous(b), "to_dtype contiguous");
  CHECK_NEAR(llmc_tensor_get_flat(b, 1), 3, 0);
  llmc_tensor *z = llmc_tensor_zeros(LLMC_F16, 2, shape);
  CHECK(llmc_tensor_copy_(z, m) == 0 && llmc_tensor_get_flat(z, 5) == 5, "copy_ converts");
  int64_t one[1] = {3};
  llmc_tensor *row = llmc_tensor_full(LLMC_F32, 1, one, 9);
  CHECK(llmc_tensor_copy_(z, row) == 0 && llmc_tensor_get_flat(z, 4) == 9, "copy_ broadcasts");
  CHECK(llmc_host_bytes_in_use() > 0 && llmc_host_bytes_peak() >= llmc_host_bytes_in_use(), "byte accounting");
  llmc_tensor_free(row); llmc_tensor_free(z); llmc_tensor_free(b); llmc_tensor_free(t); llmc_tensor_free(m);
  llmc_tensor_free(x);
}

int main(void) {
  llmc_dtype_init();
  test_views();
  test_mapped_cow();
  test_promotion();
  test_reductions_and_matmul();
  test_copy_convert();
  CHECK_EQ_INT(llmc_host_bytes_in_use(), 0);   /* every tensor above was freed */
  return check_summary();
}
