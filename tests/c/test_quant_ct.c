/*
** test_quant_ct.c — byte equality of llmc's quantization kernels with
** compressed-tensors 0.19 itself.
**
** tests/c/data/ct_reference.safetensors is written by scripts/ct_reference.py
** (CT on CPU, eager).  Its __metadata__["cases"] lists, per case, the preset,
** the input weight, the mode (eager / oneshot / fused / dynamic), the format
** CT inferred and the tensors CT wrote ("<case>.<suffix>"), plus FNV-1a-64
** hashes of CT's decompress() and fake_quantize() outputs and of tensors kept
** only as hashes.  For every case this test quantizes the same weight with
** llmc and requires: the same format, the same tensor names, dtypes and shapes,
** byte-identical tensors, and identical decompress / fake-quant bytes.
** The safetensors file is parsed here with jansson (bounds-checked).
*/
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "quant.h"

typedef struct {
  unsigned char *data;    /* whole file */
  size_t size, base;      /* base = 8 + header length */
  json_t *hdr;
} stfile;

static int st_open(stfile *f, const char *path) {
  memset(f, 0, sizeof *f);
  FILE *fp = fopen(path, "rb");
  if (!fp) return -1;
  fseek(fp, 0, SEEK_END);
  long n = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  if (n < 8) { fclose(fp); return -1; }
  f->data = malloc((size_t)n);
  f->size = (size_t)n;
  if (!f->data || fread(f->data, 1, f->size, fp) != f->size) { fclose(fp); return -1; }
  fclose(fp);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = hl << 8 | f->data[i];
  if (hl > f->size - 8) return -1;
  f->base = 8 + (size_t)hl;
  json_error_t e;
  f->hdr = json_loadb((const char *)f->data + 8, (size_t)hl, 0, &e);
  return f->hdr ? 0 : -1;
}

/* tensor lookup: returns data pointer, fills dtype / shape / bytes */
static const void *st_get(const stfile *f, const char *name, llmc_dtype *dt, int *ndim,
                          int64_t shape[4], size_t *nbytes) {
  json_t *t = json_object_get(f->hdr, name);
  if (!t) return NULL;
  const char *ds = json_string_value(json_object_get(t, "dtype"));
  json_t *shp = json_object_get(t, "shape"), *off = json_object_get(t, "data_offsets");
  if (!ds || !json_is_array(shp) || json_array_size(off) != 2 || json_array_size(shp) > 4)
    return NULL;
  int d = llmc_dtype_from_st_name(ds);
  if (d < 0) return NULL;
  *dt = (llmc_dtype)d;
  *ndim = (int)json_array_size(shp);
  size_t ne = 1;
  for (int i = 0; i < *ndim; i++) {
    shape[i] = json_integer_value(json_array_get(shp, (size_t)i));
    ne *= (size_t)shape[i];
  }
  size_t b0 = (size_t)json_integer_value(json_array_get(off, 0));
  size_t b1 = (size_t)json_integer_value(json_array_get(off, 1));
  if (b1 < b0 || f->base + b1 > f->size || b1 - b0 != ne * llmc_dtype_size(*dt)) return NULL;
  *nbytes = b1 - b0;
  return f->data + f->base + b0;
}

static uint64_t fnv1a64(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

static int hash_eq(const char *hex, const void *p, size_t n) {
  char buf[17];
  snprintf(buf, sizeof buf, "%016llx", (unsigned long long)fnv1a64(p, n));
  return hex && strcmp(hex, buf) == 0;
}

/* first differing byte, for diagnostics */
static long long first_diff(const void *a, const void *b, size_t n, size_t *ndiff) {
  const unsigned char *x = a, *y = b;
  long long first = -1;
  *ndiff = 0;
  for (size_t i = 0; i < n; i++)
    if (x[i] != y[i]) {
      if (first < 0) first = (long long)i;
      (*ndiff)++;
    }
  return first;
}

static void run_weight_case(const stfile *f, json_t *c) {
  const char *name = json_string_value(json_object_get(c, "name"));
  const char *preset = json_string_value(json_object_get(c, "preset"));
  const char *wname = json_string_value(json_object_get(c, "weight"));
  const char *mode = json_string_value(json_object_get(c, "mode"));
  const char *fmt_name = json_string_value(json_object_get(c, "format"));
  const char *observer = json_string_value(json_object_get(c, "observer"));
  json_t *names = json_object_get(c, "tensors"), *hashes = json_object_get(c, "hashes");
  llmc_qargs wa, ia;
  int hw = 0, hi = 0;
  CHECK(llmc_q_preset(preset, &wa, &ia, &hw, &hi) == 0 && hw, "%s: preset %s", name, preset);
  if (!hw) return;
  wa.rounding = strcmp(mode, "fused") == 0 ? LLMC_QROUND_FUSED : LLMC_QROUND_EAGER;
  wa.force_zero_point = strcmp(mode, "oneshot") == 0;
  if (observer && strcmp(observer, "mse") == 0) wa.observer = LLMC_QOBS_MSE;

  llmc_dtype W;
  int nd;
  int64_t shp[4];
  size_t nb;
  const void *w = st_get(f, wname, &W, &nd, shp, &nb);
  CHECK(w && nd == 2, "%s: weight %s missing", name, wname);
  if (!w || nd != 2) return;
  int64_t rows = shp[0], cols = shp[1];

  llmc_qformat fmt = llmc_q_infer_format(&wa, hi ? &ia : NULL);
  CHECK(strcmp(llmc_q_format_name(fmt), fmt_name) == 0, "%s: format %s, CT %s", name,
        llmc_q_format_name(fmt), fmt_name);

  llmc_qparams qp;
  if (llmc_q_qparams_compute(&qp, &wa, w, W, rows, cols, NULL) < 0) {
    CHECK(0, "%s: qparams: %s", name, llmc_errmsg());
    return;
  }
  llmc_qtensor_desc d[LLMC_Q_MAX_TENSORS];
  int n = llmc_q_layout(fmt, &wa, NULL, NULL, W, rows, cols, d);
  CHECK(n > 0, "%s: layout: %s", name, llmc_errmsg());
  if (n <= 0) { llmc_q_qparams_free(&qp); return; }
  CHECK((size_t)n == json_array_size(names) + json_object_size(hashes),
        "%s: llmc writes %d tensors, CT %zu", name, n,
        json_array_size(names) + json_object_size(hashes));
  void *bufs[LLMC_Q_MAX_TENSORS] = {0};
  for (int i = 0; i < n; i++) bufs[i] = calloc(1, d[i].nbytes ? d[i].nbytes : 1);
  int rc = llmc_q_compress(fmt, &qp, w, W, d, n, bufs);
  CHECK(rc == 0, "%s: compress: %s", name, llmc_errmsg());
  for (int i = 0; i < n && rc == 0; i++) {
    char key[1024];
    snprintf(key, sizeof key, "%s.%s", name, d[i].name);
    llmc_dtype rt;
    int rn;
    int64_t rs[4];
    size_t rb;
    const void *ref = st_get(f, key, &rt, &rn, rs, &rb);
    const char *hx = json_string_value(json_object_get(hashes, d[i].name));
    if (ref) {
      int same_shape = rn == d[i].ndim && rs[0] == d[i].shape[0] &&
                       (rn == 1 || rs[1] == d[i].shape[1]);
      CHECK(rt == d[i].dtype && same_shape, "%s: dtype/shape %s [%lld,%lld] vs CT %s [%lld,%lld]",
            key, llmc_dtype_name(d[i].dtype), (long long)d[i].shape[0],
            (long long)(d[i].ndim > 1 ? d[i].shape[1] : 0), llmc_dtype_name(rt),
            (long long)rs[0], (long long)(rn > 1 ? rs[1] : 0));
      if (rb == d[i].nbytes) {
        size_t ndiff;
        long long fd = first_diff(ref, bufs[i], rb, &ndiff);
        CHECK(fd < 0, "%s: %zu of %zu bytes differ, first at byte %lld (llmc 0x%02x, CT 0x%02x)",
              key, ndiff, rb, fd, fd >= 0 ? ((unsigned char *)bufs[i])[fd] : 0,
              fd >= 0 ? ((const unsigned char *)ref)[fd] : 0);
      } else {
        CHECK(0, "%s: %zu bytes, CT %zu", key, d[i].nbytes, rb);
      }
    } else if (hx) {
      CHECK(hash_eq(hx, bufs[i], d[i].nbytes), "%s: bytes differ from CT (hash)", key);
    } else {
      CHECK(0, "%s: CT wrote no such tensor", key);
    }
  }
  /* decompress(compress(w)) and fake_quantize(w) against CT's */
  const char *dec_fnv = json_string_value(json_object_get(c, "decompressed_fnv"));
  const char *fq_fnv = json_string_value(json_object_get(c, "fake_quant_fnv"));
  if (rc == 0 && dec_fnv) {
    const char *dds = json_string_value(json_object_get(c, "decompressed_dtype"));
    int od = llmc_dtype_from_name(dds ? dds : "");
    CHECK(od >= 0, "%s: decompressed dtype %s", name, dds ? dds : "?");
    if (od >= 0) {
      size_t ob = (size_t)(rows * cols) * llmc_dtype_size((llmc_dtype)od);
      void *out = malloc(ob);
      int r2 = llmc_q_decompress(fmt, &wa, rows, cols, d, n, (const void *const *)bufs, out,
                                 (llmc_dtype)od);
      CHECK(r2 == 0, "%s: decompress: %s", name, llmc_errmsg());
      if (r2 == 0) CHECK(hash_eq(dec_fnv, out, ob), "%s: decompressed weight differs from CT", name);
      free(out);
    }
  }
  if (fq_fnv) {
    size_t ob = (size_t)(rows * cols) * llmc_dtype_size(W);
    void *out = malloc(ob);
    int r3 = llmc_q_fake_quantize(&qp, w, W, out);
    CHECK(r3 == 0 && hash_eq(fq_fnv, out, ob), "%s: fake-quantized weight differs from CT", name);
    free(out);
  }
  for (int i = 0; i < n; i++) free(bufs[i]);
  llmc_q_qparams_free(&qp);
}

static void run_act_case(const stfile *f, json_t *c) {
  const char *name = json_string_value(json_object_get(c, "name"));
  const char *preset = json_string_value(json_object_get(c, "preset"));
  json_t *hashes = json_object_get(c, "hashes");
  llmc_qargs wa, ia;
  int hw = 0, hi = 0;
  CHECK(llmc_q_preset(preset, &wa, &ia, &hw, &hi) == 0 && hi, "%s: preset", name);
  if (!hi) return;
  llmc_dtype xt, st, gt;
  int nd;
  int64_t shp[4];
  size_t nb;
  const void *x = st_get(f, "x_act", &xt, &nd, shp, &nb);
  char key[1024];
  snprintf(key, sizeof key, "%s.scale", name);
  const float *ref_scale = st_get(f, key, &st, &nd, shp, &nb);
  snprintf(key, sizeof key, "%s.global_scale", name);
  int64_t gshp[4];
  size_t gnb;
  int gnd;
  const float *gs = st_get(f, key, &gt, &gnd, gshp, &gnb);
  CHECK(x && ref_scale && st == LLMC_F32, "%s: reference tensors missing", name);
  if (!x || !ref_scale) return;
  int64_t rows = 8, cols = 256;
  llmc_qparams qp;
  llmc_qargs a = ia;
  a.force_zero_point = 1;   /* CT's dynamic path always passes its (zero) zero point */
  int r = llmc_q_qparams_compute(&qp, &a, x, xt, rows, cols, gs);
  CHECK(r == 0, "%s: qparams: %s", name, llmc_errmsg());
  if (r == 0) {
    int64_t ns = qp.srows * qp.scols;
    CHECK((size_t)ns * 4 == nb, "%s: %lld scales, CT %zu", name, (long long)ns, nb / 4);
    if ((size_t)ns * 4 == nb) {
      int bad = 0;
      for (int64_t i = 0; i < ns; i++) bad += memcmp(&qp.scale[i], &ref_scale[i], 4) != 0;
      CHECK(bad == 0, "%s: %d of %lld dynamic scales differ", name, bad, (long long)ns);
    }
    llmc_q_qparams_free(&qp);
  }
  uint16_t *y = malloc((size_t)(rows * cols) * 2);
  r = llmc_q_qdq_dynamic(&ia, x, xt, rows, cols, gs, y);
  CHECK(r == 0, "%s: qdq: %s", name, llmc_errmsg());
  if (r == 0)
    CHECK(hash_eq(json_string_value(json_object_get(hashes, "y")), y, (size_t)(rows * cols) * 2),
          "%s: fake-quantized activation differs from CT", name);
  free(y);
}

int main(void) {
  const char *root = getenv("LLMC_ROOT");
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/c/data/ct_reference.safetensors", root ? root : ".");
  stfile f;
  if (st_open(&f, path) < 0) {
    fprintf(stderr, "cannot read %s\n", path);
    return 1;
  }
  json_t *meta = json_object_get(f.hdr, "__metadata__");
  json_error_t e;
  json_t *cases = json_loads(json_string_value(json_object_get(meta, "cases")), 0, &e);
  CHECK(json_is_array(cases) && json_array_size(cases) > 50, "cases metadata");
  size_t i;
  json_t *c;
  int nweight = 0, nact = 0;
  json_array_foreach(cases, i, c) {
    const char *mode = json_string_value(json_object_get(c, "mode"));
    if (mode && strcmp(mode, "dynamic") == 0) {
      run_act_case(&f, c);
      nact++;
    } else {
      run_weight_case(&f, c);
      nweight++;
    }
  }
  printf("%d weight cases, %d activation cases\n", nweight, nact);
  json_decref(cases);
  json_decref(f.hdr);
  free(f.data);
  return check_summary();
}
