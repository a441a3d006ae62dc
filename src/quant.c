/*
** quant.c — quantization args, preset schemes, formats, the on-disk tensor
** layout of each compressed-tensors format, compress and decompress
** (spec §1, §2, §4).  Observers and qparams: quant_observe.c; element
** kernels: quant_kernel.c; bit packing: quant_pack.c.
*/
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "quant_internal.h"

/* ======================================================================
** args
** ==================================================================== */

void llmc_q_args_init(llmc_qargs *a) {
  memset(a, 0, sizeof *a);
  a->num_bits = 8;
  a->type = LLMC_QTYPE_INT;
  a->symmetric = 1;
  a->strategy = LLMC_QS_TENSOR;
  a->dynamic = LLMC_QDYN_STATIC;
  a->observer = LLMC_QOBS_MINMAX;
  a->mse.maxshrink = 0.20;
  a->mse.grid = 100.0;
  a->mse.norm = 2.4;
  a->mse.expand = 1.0;
  a->mse.patience = 5;
  a->scale_dtype = -1;
  a->zp_dtype = -1;
  a->rounding = LLMC_QROUND_EAGER;
  a->force_zero_point = 0;
}

static const char *const strategy_names[LLMC_QS_COUNT] = {
  "tensor", "channel", "group", "block", "token", "tensor_group", "attn_head",
};

const char *llmc_q_strategy_name(llmc_qstrategy s) {
  return (unsigned)s < LLMC_QS_COUNT ? strategy_names[s] : "?";
}

int llmc_q_strategy_from_name(const char *name) {
  for (int i = 0; i < LLMC_QS_COUNT; i++)
    if (strcasecmp(name, strategy_names[i]) == 0) return i;
  return -1;
}

int llmc_q_args_is_mx(const llmc_qargs *a) {
  return a->type == LLMC_QTYPE_FLOAT && (a->num_bits == 4 || a->num_bits == 8) &&
         a->group_size == 32 && a->scale_dtype == LLMC_U8;
}

static int dtype_ok_for_params(int t) {
  switch (t) {
    case LLMC_F32: case LLMC_F16: case LLMC_BF16: case LLMC_F8_E4M3:
    case LLMC_I8: case LLMC_U8: case LLMC_I16: case LLMC_I32:
      return 1;
    default:
      return 0;
  }
}

int llmc_q_args_check(llmc_qargs *a, const char *what) {
  if (!what) what = "quantization args";
  if (a->type != LLMC_QTYPE_INT && a->type != LLMC_QTYPE_FLOAT)
    return llmc_err("%s: type must be int or float", what);
  if (a->type == LLMC_QTYPE_INT && (a->num_bits < 1 || a->num_bits > 8))
    return llmc_err("%s: int num_bits must be 1..8 (got %d)", what, a->num_bits);
  if (a->type == LLMC_QTYPE_FLOAT && a->num_bits != 4 && a->num_bits != 8)
    return llmc_err("%s: float num_bits must be 4 (e2m1) or 8 (e4m3) (got %d)", what,
                    a->num_bits);
  if ((unsigned)a->strategy >= LLMC_QS_COUNT) return llmc_err("%s: bad strategy", what);
  if ((unsigned)a->dynamic > LLMC_QDYN_LOCAL) return llmc_err("%s: bad dynamic value", what);
  if ((unsigned)a->observer > LLMC_QOBS_MSE) return llmc_err("%s: bad observer", what);
  if ((unsigned)a->rounding > LLMC_QROUND_FUSED) return llmc_err("%s: bad rounding mode", what);
  const char *sn = strategy_names[a->strategy];
  if (a->strategy == LLMC_QS_TOKEN && a->dynamic == LLMC_QDYN_STATIC)
    return llmc_err("%s: strategy token requires dynamic quantization", what);
  int grouped = a->strategy == LLMC_QS_GROUP || a->strategy == LLMC_QS_TENSOR_GROUP;
  if (grouped && a->group_size <= 0)
    return llmc_err("%s: strategy %s requires group_size > 0", what, sn);
  if (!grouped) {
    if (a->group_size > 0)
      return llmc_err("%s: group_size %lld given with strategy %s", what,
                      (long long)a->group_size, sn);
    if (a->group_size < -1) return llmc_err("%s: group_size < -1", what);
    a->group_size = 0;
  }
  int has_block = a->block_structure[0] != 0 || a->block_structure[1] != 0;
  if (a->strategy == LLMC_QS_BLOCK) {
    if (a->block_structure[0] <= 0 || a->block_structure[1] <= 0)
      return llmc_err("%s: strategy block requires block_structure of two positive ints", what);
  } else if (has_block) {
    return llmc_err("%s: block_structure given with strategy %s", what, sn);
  }
  if (a->dynamic != LLMC_QDYN_STATIC) {
    if (a->strategy != LLMC_QS_TOKEN && a->strategy != LLMC_QS_TENSOR &&
        a->strategy != LLMC_QS_TENSOR_GROUP && a->strategy != LLMC_QS_GROUP)
      return llmc_err("%s: dynamic quantization is not allowed with strategy %s", what, sn);
    if (a->dynamic == LLMC_QDYN_LOCAL && a->strategy != LLMC_QS_TENSOR_GROUP)
      return llmc_err("%s: dynamic=\"local\" requires strategy tensor_group", what);
  }
  if (!a->symmetric && a->type == LLMC_QTYPE_FLOAT && a->num_bits == 4)
    return llmc_err("%s: asymmetric quantization is not supported for FP4", what);
  if (a->scale_dtype != -1 && !dtype_ok_for_params(a->scale_dtype))
    return llmc_err("%s: unsupported scale_dtype", what);
  if (a->zp_dtype == -1) {
    /* §1.3 step 9 */
    a->zp_dtype = a->type == LLMC_QTYPE_FLOAT ? LLMC_F8_E4M3 : LLMC_I8;
  } else if (!dtype_ok_for_params(a->zp_dtype)) {
    return llmc_err("%s: unsupported zp_dtype", what);
  }
  if (a->observer == LLMC_QOBS_MSE) {
    if (!(a->mse.expand >= 1.0)) return llmc_err("%s: MSE expand must be >= 1.0", what);
    if (!(a->mse.grid > 0)) return llmc_err("%s: MSE grid must be > 0", what);
    if (!(a->mse.maxshrink >= 0 && a->mse.maxshrink <= 1))
      return llmc_err("%s: MSE maxshrink must be in [0, 1]", what);
    if (!(a->mse.norm > 0)) return llmc_err("%s: MSE norm must be > 0", what);
    if (a->mse.patience < 0) return llmc_err("%s: MSE patience must be >= 0", what);
  }
  return 0;
}

/* ======================================================================
** presets (§2)
** ==================================================================== */

const char *const llmc_q_preset_names[] = {
  "UNQUANTIZED", "W2A16", "W3A16", "W4A16", "W5A16", "W6A16", "W7A16", "W8A16",
  "W2A4", "W3A4", "W4A4", "W2A8", "W3A8", "W4A8", "W5A8", "W6A8", "W7A8",
  "W8A8", "INT8", "W4A16_ASYM", "W4AFP8", "FP8", "FP8_DYNAMIC", "FP8_BLOCK",
  "NVFP4A16", "NVFP4", "MXFP4A16", "MXFP4", "MXFP8A16", "MXFP8", NULL,
};

static void set_int_group(llmc_qargs *a, int bits) {
  llmc_q_args_init(a);
  a->num_bits = bits;
  a->strategy = LLMC_QS_GROUP;
  a->group_size = 128;
}

static void set_act(llmc_qargs *a, llmc_qtype t, int bits, llmc_qstrategy s, llmc_qdynamic d) {
  llmc_q_args_init(a);
  a->type = t;
  a->num_bits = bits;
  a->strategy = s;
  a->dynamic = d;
}

int llmc_q_preset(const char *name, llmc_qargs *w, llmc_qargs *in, int *has_w, int *has_in) {
  int hw = 1, hi = 0;
  llmc_q_args_init(w);
  llmc_q_args_init(in);
  if (!name) return llmc_err("preset scheme: no name");
  int wb = 0, ab = 0;
  char tail[8];
  if (strcasecmp(name, "UNQUANTIZED") == 0) {
    hw = 0;
  } else if (sscanf(name, "%*1[Ww]%d%*1[Aa]%d%1s", &wb, &ab, tail) == 2 && wb >= 2 && wb <= 8 &&
             (ab == 4 || ab == 8 || ab == 16) && wb <= ab && !(wb == 8 && ab == 8) &&
             strlen(name) <= 6) {
    /* WxAy family (_int_wnam): W8A8 is the channel-wise preset below */
    set_int_group(w, wb);
    if (ab < 16) {
      hi = 1;
      set_act(in, LLMC_QTYPE_INT, ab, LLMC_QS_TOKEN, LLMC_QDYN_DYNAMIC);
    }
  } else if (strcasecmp(name, "W8A8") == 0 || strcasecmp(name, "INT8") == 0) {
    w->strategy = LLMC_QS_CHANNEL;
    hi = 1;
    set_act(in, LLMC_QTYPE_INT, 8, LLMC_QS_TOKEN, LLMC_QDYN_DYNAMIC);
  } else if (strcasecmp(name, "W4A16_ASYM") == 0) {
    set_int_group(w, 4);
    w->symmetric = 0;
  } else if (strcasecmp(name, "W4AFP8") == 0) {
    set_int_group(w, 4);
    hi = 1;
    set_act(in, LLMC_QTYPE_FLOAT, 8, LLMC_QS_TOKEN, LLMC_QDYN_DYNAMIC);
  } else if (strcasecmp(name, "FP8") == 0) {
    w->type = LLMC_QTYPE_FLOAT;
    hi = 1;
    set_act(in, LLMC_QTYPE_FLOAT, 8, LLMC_QS_TENSOR, LLMC_QDYN_STATIC);
  } else if (strcasecmp(name, "FP8_DYNAMIC") == 0) {
    w->type = LLMC_QTYPE_FLOAT;
    w->strategy = LLMC_QS_CHANNEL;
    hi = 1;
    set_act(in, LLMC_QTYPE_FLOAT, 8, LLMC_QS_TOKEN, LLMC_QDYN_DYNAMIC);
  } else if (strcasecmp(name, "FP8_BLOCK") == 0) {
    w->type = LLMC_QTYPE_FLOAT;
    w->strategy = LLMC_QS_BLOCK;
    w->block_structure[0] = w->block_structure[1] = 128;
    hi = 1;
    set_act(in, LLMC_QTYPE_FLOAT, 8, LLMC_QS_GROUP, LLMC_QDYN_DYNAMIC);
    in->group_size = 128;
  } else if (strcasecmp(name, "NVFP4A16") == 0 || strcasecmp(name, "NVFP4") == 0) {
    w->type = LLMC_QTYPE_FLOAT;
    w->num_bits = 4;
    w->strategy = LLMC_QS_TENSOR_GROUP;
    w->group_size = 16;
    w->scale_dtype = w->zp_dtype = LLMC_F8_E4M3;
    if (strcasecmp(name, "NVFP4") == 0) {
      hi = 1;
      *in = *w;
      in->dynamic = LLMC_QDYN_LOCAL;
    }
  } else if (strcasecmp(name, "MXFP4A16") == 0 || strcasecmp(name, "MXFP4") == 0 ||
             strcasecmp(name, "MXFP8A16") == 0 || strcasecmp(name, "MXFP8") == 0) {
    w->type = LLMC_QTYPE_FLOAT;
    w->num_bits = (name[4] == '4') ? 4 : 8;
    w->strategy = LLMC_QS_GROUP;
    w->group_size = 32;
    w->scale_dtype = w->zp_dtype = LLMC_U8;
    if (strlen(name) == 5) {
      hi = 1;
      *in = *w;
      in->dynamic = LLMC_QDYN_DYNAMIC;
    }
  } else {
    return llmc_err("unknown preset scheme '%s'", name);
  }
  if (hw && llmc_q_args_check(w, "preset weights") < 0) return -1;
  if (hi && llmc_q_args_check(in, "preset input_activations") < 0) return -1;
  if (has_w) *has_w = hw;
  if (has_in) *has_in = hi;
  return 0;
}

/* ======================================================================
** scale grid
** ==================================================================== */

int llmc_q_scale_grid(const llmc_qargs *a, int64_t rows, int64_t cols, int64_t *srows,
                      int64_t *scols) {
  if (rows <= 0 || cols <= 0)
    return llmc_err("quantize: bad shape [%lld, %lld]", (long long)rows, (long long)cols);
  switch (a->strategy) {
    case LLMC_QS_TENSOR:
      *srows = 1, *scols = 1;
      return 0;
    case LLMC_QS_CHANNEL: case LLMC_QS_TOKEN: case LLMC_QS_ATTN_HEAD:
      *srows = rows, *scols = 1;
      return 0;
    case LLMC_QS_GROUP: case LLMC_QS_TENSOR_GROUP:
      if (a->group_size <= 0) return llmc_err("quantize: group strategy without group_size");
      if (cols % a->group_size != 0)
        return llmc_err("quantize: %lld columns are not divisible by group_size %lld "
                        "(ignore this layer or choose another group size)",
                        (long long)cols, (long long)a->group_size);
      *srows = rows, *scols = cols / a->group_size;
      return 0;
    case LLMC_QS_BLOCK:
      if (a->block_structure[0] <= 0 || a->block_structure[1] <= 0)
        return llmc_err("quantize: block strategy without block_structure");
      *srows = (rows + a->block_structure[0] - 1) / a->block_structure[0];
      *scols = (cols + a->block_structure[1] - 1) / a->block_structure[1];
      return 0;
    default:
      return llmc_err("quantize: bad strategy");
  }
}

/* ======================================================================
** formats (§4.1)
** ==================================================================== */

static const char *const format_names[LLMC_QF_COUNT] = {
  "dense", "naive-quantized", "int-quantized", "float-quantized", "pack-quantized",
  "nvfp4-pack-quantized", "mxfp4-pack-quantized", "mxfp8-quantized",
};

const char *llmc_q_format_name(llmc_qformat f) {
  return (unsigned)f < LLMC_QF_COUNT ? format_names[f] : "?";
}

int llmc_q_format_from_name(const char *name) {
  for (int i = 0; i < LLMC_QF_COUNT; i++)
    if (strcmp(name, format_names[i]) == 0) return i;
  return -1;
}

llmc_qformat llmc_q_infer_format(const llmc_qargs *w, const llmc_qargs *in) {
  if (!w) return LLMC_QF_DENSE;
  int fl = w->type == LLMC_QTYPE_FLOAT;
  if (fl && w->num_bits == 4 && w->group_size == 32) return LLMC_QF_MXFP4;
  if (fl && w->num_bits == 8 && w->group_size == 32 && w->scale_dtype == LLMC_U8)
    return LLMC_QF_MXFP8;
  if (fl && w->num_bits == 4 && w->group_size == 16) return LLMC_QF_NVFP4;
  if (!fl && in) return LLMC_QF_INT;
  if (!fl && w->num_bits >= 1 && w->num_bits <= 8 && (!in || in->type != LLMC_QTYPE_FLOAT))
    return LLMC_QF_PACK;
  if (fl && in) return LLMC_QF_FLOAT;
  return LLMC_QF_NAIVE;
}

/* ======================================================================
** layout (§4.2, §4.3)
** ==================================================================== */

static int add_desc(llmc_qtensor_desc *d, int *n, const char *prefix, const char *suffix,
                    llmc_dtype t, int ndim, int64_t d0, int64_t d1, llmc_qtensor_source src) {
  if (*n >= LLMC_Q_MAX_TENSORS) return llmc_err("quant layout: too many tensors");
  llmc_qtensor_desc *e = &d[(*n)++];
  memset(e, 0, sizeof *e);
  snprintf(e->name, sizeof e->name, "%s%s", prefix, suffix);
  e->dtype = t;
  e->ndim = ndim;
  e->shape[0] = d0;
  e->shape[1] = ndim > 1 ? d1 : 1;
  e->nbytes = (size_t)d0 * (size_t)(ndim > 1 ? d1 : 1) * llmc_dtype_size(t);
  e->source = src;
  return 0;
}

/* scale-shaped tensor of a weight (§3.11): [1] for tensor, else 2-D grid */
static int add_grid(llmc_qtensor_desc *d, int *n, const char *name, llmc_dtype t,
                    const llmc_qargs *a, int64_t srows, int64_t scols) {
  if (a->strategy == LLMC_QS_TENSOR) return add_desc(d, n, "", name, t, 1, 1, 1, LLMC_QT_WEIGHT);
  return add_desc(d, n, "", name, t, 2, srows, scols, LLMC_QT_WEIGHT);
}

/* Static activation parameters (§3.11, §4.2): `features` is the observed
** last dimension (in_features for inputs, out_features for outputs). */
static int add_act(llmc_qtensor_desc *d, int *n, const char *prefix, const llmc_qargs *a,
                   llmc_dtype W, int64_t features, int with_sym_zp, llmc_qtensor_source src) {
  llmc_qargs c = *a;
  const char *what = src == LLMC_QT_INPUT ? "input_activations" : "output_activations";
  if (llmc_q_args_check(&c, what) < 0) return -1;
  if (c.dynamic == LLMC_QDYN_DYNAMIC) return 0;
  if (c.strategy == LLMC_QS_TENSOR_GROUP &&
      add_desc(d, n, prefix, "global_scale", LLMC_F32, 1, 1, 1, src) < 0)
    return -1;
  if (c.dynamic == LLMC_QDYN_LOCAL) return 0;
  int64_t len;
  switch (c.strategy) {
    case LLMC_QS_TENSOR: len = 1; break;
    case LLMC_QS_GROUP: case LLMC_QS_TENSOR_GROUP:
      len = (features + c.group_size - 1) / c.group_size;
      break;
    default:
      return llmc_err("%s: static activation quantization with strategy %s is not supported",
                      what, strategy_names[c.strategy]);
  }
  if (add_desc(d, n, prefix, "scale", W, 1, len, 1, src) < 0) return -1;
  if ((!c.symmetric || with_sym_zp) &&
      add_desc(d, n, prefix, "zero_point", (llmc_dtype)c.zp_dtype, 1, len, 1, src) < 0)
    return -1;
  return 0;
}

int llmc_q_layout(llmc_qformat f, const llmc_qargs *wa, const llmc_qargs *in,
                  const llmc_qargs *out, llmc_dtype W, int64_t rows, int64_t cols,
                  llmc_qtensor_desc *d) {
  int n = 0;
  if ((unsigned)f >= LLMC_QF_COUNT) return llmc_err("quant layout: bad format");
  if (W != LLMC_BF16 && W != LLMC_F16 && W != LLMC_F32)
    return llmc_err("quant layout: weight dtype must be bfloat16, float16 or float32 (got %s)",
                    llmc_dtype_name(W));
  if (!wa) {
    if (f != LLMC_QF_DENSE) return llmc_err("quant layout: format %s needs weight args",
                                            format_names[f]);
    if (add_desc(d, &n, "", "weight", W, 2, rows, cols, LLMC_QT_WEIGHT) < 0) return -1;
  } else {
    llmc_qargs a = *wa;
    if (llmc_q_args_check(&a, "weights") < 0) return -1;
    if (a.strategy == LLMC_QS_TOKEN || a.strategy == LLMC_QS_ATTN_HEAD)
      return llmc_err("weights: strategy %s cannot be applied to weights",
                      strategy_names[a.strategy]);
    if (a.dynamic != LLMC_QDYN_STATIC) return llmc_err("weights: dynamic weights are not supported");
    int64_t sr, sc;
    if (llmc_q_scale_grid(&a, rows, cols, &sr, &sc) < 0) return -1;
    int fl = a.type == LLMC_QTYPE_FLOAT, zp = !a.symmetric;
    llmc_dtype zpt = (llmc_dtype)a.zp_dtype;
    switch (f) {
      case LLMC_QF_DENSE:
        if (add_desc(d, &n, "", "weight", W, 2, rows, cols, LLMC_QT_WEIGHT) < 0 ||
            add_grid(d, &n, "weight_scale", W, &a, sr, sc) < 0)
          return -1;
        if ((zp || a.force_zero_point) && add_grid(d, &n, "weight_zero_point", zpt, &a, sr, sc) < 0)
          return -1;
        break;
      case LLMC_QF_NAIVE: case LLMC_QF_INT: case LLMC_QF_FLOAT: case LLMC_QF_MXFP8: {
        if (fl && a.num_bits != 8)
          return llmc_err("weights: %s cannot store %d-bit floats", format_names[f], a.num_bits);
        if (f == LLMC_QF_MXFP8 && !llmc_q_args_is_mx(&a))
          return llmc_err("weights: mxfp8-quantized needs fp8 group 32 with uint8 scales");
        llmc_dtype st = fl ? LLMC_F8_E4M3 : LLMC_I8;
        llmc_dtype sdt = f == LLMC_QF_MXFP8 ? LLMC_U8 : W;
        if (add_desc(d, &n, "", "weight", st, 2, rows, cols, LLMC_QT_WEIGHT) < 0 ||
            add_grid(d, &n, "weight_scale", sdt, &a, sr, sc) < 0)
          return -1;
        if (zp && add_grid(d, &n, "weight_zero_point", zpt, &a, sr, sc) < 0) return -1;
        break;
      }
      case LLMC_QF_PACK:
        if (fl) return llmc_err("weights: pack-quantized needs int weights");
        if (add_desc(d, &n, "", "weight_packed", LLMC_I32, 2, rows,
                     llmc_q_packed_cols(cols, a.num_bits), LLMC_QT_WEIGHT) < 0 ||
            add_grid(d, &n, "weight_scale", W, &a, sr, sc) < 0 ||
            add_desc(d, &n, "", "weight_shape", LLMC_I64, 1, 2, 1, LLMC_QT_WEIGHT) < 0)
          return -1;
        if (zp) {
          int r;
          if (a.strategy == LLMC_QS_GROUP || a.strategy == LLMC_QS_CHANNEL)
            r = add_desc(d, &n, "", "weight_zero_point", LLMC_I32, 2,
                         llmc_q_packed_cols(sr, a.num_bits), sc, LLMC_QT_WEIGHT);
          else
            r = add_grid(d, &n, "weight_zero_point", zpt, &a, sr, sc);
          if (r < 0) return -1;
        }
        break;
      case LLMC_QF_NVFP4: case LLMC_QF_MXFP4: {
        if (!fl || a.num_bits != 4)
          return llmc_err("weights: %s needs 4-bit float weights", format_names[f]);
        if (a.strategy != LLMC_QS_GROUP && a.strategy != LLMC_QS_TENSOR_GROUP)
          return llmc_err("weights: %s needs group or tensor_group", format_names[f]);
        if (cols % 2) return llmc_err("weights: tensor must have an even number of columns "
                                      "for fp4 packing (got %lld)", (long long)cols);
        if (f == LLMC_QF_MXFP4 && !llmc_q_args_is_mx(&a))
          return llmc_err("weights: mxfp4-pack-quantized needs group 32 with uint8 scales");
        llmc_dtype sdt = f == LLMC_QF_MXFP4 ? LLMC_U8
                         : a.scale_dtype >= 0 ? (llmc_dtype)a.scale_dtype : LLMC_F8_E4M3;
        if (add_desc(d, &n, "", "weight_packed", LLMC_U8, 2, rows, cols / 2, LLMC_QT_WEIGHT) < 0 ||
            add_grid(d, &n, "weight_scale", sdt, &a, sr, sc) < 0)
          return -1;
        break;
      }
      default:
        return llmc_err("quant layout: bad format");
    }
    if (a.strategy == LLMC_QS_TENSOR_GROUP &&
        add_desc(d, &n, "", "weight_global_scale", LLMC_F32, 1, 1, 1, LLMC_QT_WEIGHT) < 0)
      return -1;
  }
  int symzp = f == LLMC_QF_DENSE;
  if (in && add_act(d, &n, "input_", in, W, cols, symzp && in->force_zero_point, LLMC_QT_INPUT) < 0)
    return -1;
  if (out && add_act(d, &n, "output_", out, W, rows, symzp && out->force_zero_point,
                     LLMC_QT_OUTPUT) < 0)
    return -1;
  return n;
}

/* ======================================================================
** compress / decompress
** ==================================================================== */

static int find_desc(const llmc_qtensor_desc *d, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(d[i].name, name) == 0) return i;
  return -1;
}

/* store a float value (exactly representable) as dtype t */
static void store_param(void *dst, int64_t i, llmc_dtype t, float v) {
  int k = q_kind(t);
  if (k >= 0) q_store(dst, i, k, v);
  else if (t == LLMC_F8_E4M3) ((uint8_t *)dst)[i] = qm_e4m3_encode(qm_clamp(v, -448.0f, 448.0f));
  else llmc_store_from_f64((char *)dst + (size_t)i * llmc_dtype_size(t), t, (double)v);
}

/* Round a zero point value into an integer code for packing (values are
** already integral and in range after llmc_q_qparams_from_minmax). */
static int8_t zp_int8(float z) { return (int8_t)(z == z ? (int)rintf(z) : 0); }

int llmc_q_compress(llmc_qformat f, const llmc_qparams *qp, const void *w, llmc_dtype W,
                    const llmc_qtensor_desc *d, int n, void *const *bufs) {
  const llmc_qargs *a = &qp->args;
  llmc_qtensor_desc ref[LLMC_Q_MAX_TENSORS];
  int nref = llmc_q_layout(f, a, NULL, NULL, W, qp->rows, qp->cols, ref);
  if (nref < 0) return llmc_err_prefix("compress: ");
  /* every weight tensor of the reference layout must be present, same shape */
  for (int k = 0; k < nref; k++) {
    int i = find_desc(d, n, ref[k].name);
    if (i < 0) return llmc_err("compress: layout lacks tensor '%s'", ref[k].name);
    if (d[i].dtype != ref[k].dtype || d[i].nbytes != ref[k].nbytes || !bufs[i])
      return llmc_err("compress: tensor '%s' has the wrong dtype / size or no buffer",
                      ref[k].name);
  }
  int64_t ns = qp->srows * qp->scols;
  for (int k = 0; k < nref; k++) {
    int i = find_desc(d, n, ref[k].name);
    void *b = bufs[i];
    const char *nm = ref[k].name;
    if (strcmp(nm, "weight") == 0) {
      if (f == LLMC_QF_DENSE) {
        if (w != b) memcpy(b, w, d[i].nbytes);
      } else if (llmc_q_quantize(qp, w, W, b) < 0) {
        return -1;
      }
    } else if (strcmp(nm, "weight_packed") == 0) {
      int r = f == LLMC_QF_PACK ? q_quantize_pack_int32(qp, w, W, (int32_t *)b)
                                : q_quantize_pack_fp4(qp, w, W, (uint8_t *)b);
      if (r < 0) return -1;
    } else if (strcmp(nm, "weight_scale") == 0) {
      if (d[i].dtype == LLMC_U8 && llmc_q_args_is_mx(a)) {
        for (int64_t j = 0; j < ns; j++) ((uint8_t *)b)[j] = llmc_q_e8m0_from_scale(qp->scale[j]);
      } else {
        for (int64_t j = 0; j < ns; j++) store_param(b, j, d[i].dtype, qp->scale[j]);
      }
    } else if (strcmp(nm, "weight_zero_point") == 0) {
      if (!qp->zero_point) return llmc_err("compress: qparams carry no zero point");
      if (d[i].dtype == LLMC_I32 && f == LLMC_QF_PACK) {
        int8_t *z = malloc((size_t)ns);
        if (!z) return llmc_err("compress: out of memory");
        for (int64_t j = 0; j < ns; j++) z[j] = zp_int8(qp->zero_point[j]);
        int r = llmc_q_pack_int32_dim0(z, qp->srows, qp->scols, a->num_bits, (int32_t *)b);
        free(z);
        if (r < 0) return -1;
      } else {
        for (int64_t j = 0; j < ns; j++) store_param(b, j, d[i].dtype, qp->zero_point[j]);
      }
    } else if (strcmp(nm, "weight_shape") == 0) {
      int64_t shp[2] = {qp->rows, qp->cols};
      memcpy(b, shp, sizeof shp);
    } else if (strcmp(nm, "weight_global_scale") == 0) {
      if (!qp->has_global) return llmc_err("compress: qparams carry no global scale");
      memcpy(b, &qp->global_scale, 4);
    }
  }
  return 0;
}

/* fetch a weight tensor of a layout, checking dtype and size */
static const void *get_tensor(const llmc_qtensor_desc *ref, const llmc_qtensor_desc *d, int n,
                              const void *const *bufs, const char *name) {
  int i = find_desc(d, n, name);
  if (i < 0) {
    llmc_err("decompress: missing tensor '%s'", name);
    return NULL;
  }
  if (d[i].dtype != ref->dtype || d[i].nbytes != ref->nbytes || !bufs[i]) {
    llmc_err("decompress: tensor '%s' is %s with %zu bytes, expected %s with %zu bytes", name,
             llmc_dtype_name(d[i].dtype), d[i].nbytes, llmc_dtype_name(ref->dtype), ref->nbytes);
    return NULL;
  }
  return bufs[i];
}

int llmc_q_decompress(llmc_qformat f, const llmc_qargs *wa, int64_t rows, int64_t cols,
                      const llmc_qtensor_desc *d, int n, const void *const *bufs, void *out,
                      llmc_dtype od) {
  if (od != LLMC_BF16 && od != LLMC_F16 && od != LLMC_F32)
    return llmc_err("decompress: output dtype must be bfloat16, float16 or float32");
  if (f == LLMC_QF_DENSE) return llmc_err("decompress: dense format holds no quantized weight");
  int is = find_desc(d, n, "weight_scale");
  if (is < 0) return llmc_err("decompress: missing tensor 'weight_scale'");
  /* scales of the naive / pack formats keep the weight dtype W (§4.2) */
  llmc_dtype W = (f == LLMC_QF_NVFP4 || f == LLMC_QF_MXFP4 || f == LLMC_QF_MXFP8)
                     ? LLMC_BF16 : d[is].dtype;
  llmc_qtensor_desc ref[LLMC_Q_MAX_TENSORS];
  int nref = llmc_q_layout(f, wa, NULL, NULL, W, rows, cols, ref);
  if (nref < 0) return llmc_err_prefix("decompress: ");
  llmc_qparams qp;
  if (llmc_q_qparams_alloc(&qp, wa, W, rows, cols) < 0) return -1;
  const llmc_qargs *a = &qp.args;
  int64_t ns = qp.srows * qp.scols;
  const void *codes_src = NULL, *packed = NULL;
  int rc = -1;
  void *codes = NULL;
  for (int k = 0; k < nref; k++) {
    const void *b = get_tensor(&ref[k], d, n, bufs, ref[k].name);
    if (!b) goto done;
    const char *nm = ref[k].name;
    if (strcmp(nm, "weight") == 0) {
      codes_src = b;
    } else if (strcmp(nm, "weight_packed") == 0) {
      packed = b;
    } else if (strcmp(nm, "weight_scale") == 0) {
      for (int64_t j = 0; j < ns; j++) {
        float s;
        if (ref[k].dtype == LLMC_U8 && llmc_q_args_is_mx(a))
          s = llmc_q_e8m0_to_scale(((const uint8_t *)b)[j]);   /* CT: 2^(b-127) in bf16 */
        else
          s = llmc_load_as_f32((const char *)b + (size_t)j * llmc_dtype_size(ref[k].dtype),
                               ref[k].dtype);
        /* CT casts the stored scale to the arithmetic dtype (bf16 for the
        ** fp4 / MX formats, W otherwise) */
        qp.scale[j] = q_round_to(s, W);
      }
    } else if (strcmp(nm, "weight_zero_point") == 0) {
      if (!qp.zero_point) {
        qp.zero_point = calloc((size_t)ns, sizeof(float));
        if (!qp.zero_point) { llmc_err("decompress: out of memory"); goto done; }
      }
      if (ref[k].dtype == LLMC_I32 && f == LLMC_QF_PACK) {
        int8_t *z = malloc((size_t)ns);
        if (!z) { llmc_err("decompress: out of memory"); goto done; }
        if (llmc_q_unpack_int32_dim0(b, qp.srows, qp.scols, a->num_bits, z) < 0) {
          free(z);
          goto done;
        }
        for (int64_t j = 0; j < ns; j++) qp.zero_point[j] = z[j];
        free(z);
      } else {
        for (int64_t j = 0; j < ns; j++)
          qp.zero_point[j] = llmc_load_as_f32(
              (const char *)b + (size_t)j * llmc_dtype_size(ref[k].dtype), ref[k].dtype);
      }
    } else if (strcmp(nm, "weight_shape") == 0) {
      int64_t shp[2];
      memcpy(shp, b, sizeof shp);
      if (shp[0] != rows || shp[1] != cols) {
        llmc_err("decompress: weight_shape [%lld, %lld] does not match [%lld, %lld]",
                 (long long)shp[0], (long long)shp[1], (long long)rows, (long long)cols);
        goto done;
      }
    } else if (strcmp(nm, "weight_global_scale") == 0) {
      memcpy(&qp.global_scale, b, 4);
      qp.has_global = 1;
    }
  }
  if (!codes_src) {
    codes = malloc((size_t)rows * (size_t)cols);
    if (!codes) { llmc_err("decompress: out of memory"); goto done; }
    int r = f == LLMC_QF_PACK
                ? llmc_q_unpack_int32(packed, rows, cols, a->num_bits, (int8_t *)codes)
                : llmc_q_unpack_fp4(packed, rows, cols, (uint8_t *)codes);
    if (r < 0) goto done;
    codes_src = codes;
  }
  if (od == W) {
    rc = llmc_q_dequantize(&qp, codes_src, out, od);
  } else {
    /* CT produces W (bf16 for fp4 / MX), then the caller's cast */
    size_t ne = (size_t)rows * (size_t)cols;
    void *tmp = malloc(ne * llmc_dtype_size(W));
    if (!tmp) { llmc_err("decompress: out of memory"); goto done; }
    rc = llmc_q_dequantize(&qp, codes_src, tmp, W);
    if (rc == 0) llmc_convert(out, od, tmp, W, ne);
    free(tmp);
  }
done:
  free(codes);
  llmc_q_qparams_free(&qp);
  return rc;
}
