/*
** lua_tensor.c — the Tensor userdata and the "llmc._tensor" module.
**
** Indexing convention: dims and element indices are 0-based, negative
** values count from the end — as in PyTorch, whose algorithms llmc ports and
** whose tensor names (model.layers.0) it keeps.  Lua arrays returned to the
** user (shape(), totable()) are ordinary 1-based Lua arrays.
**
**   local T = require "llmc._tensor"
**   local x = T.randn({4, 8}, {seed = 1, dtype = "bfloat16"})
**   print(x, x:shape()[2], x[0][3], (x * 2):amax())
*/
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "lua_llmc.h"
#include "lua_tensor.h"
#include "ops.h"

typedef struct { llmc_tensor *t; } tensor_box;

/* ---- shared helpers (lua_tensor.h) ------------------------------------------- */

int llmc_lua_error(lua_State *L, const char *context) {
  if (context) return luaL_error(L, "%s: %s", context, llmc_errmsg());
  return luaL_error(L, "%s", llmc_errmsg());
}

void llmc_lua_pushtensor(lua_State *L, llmc_tensor *t) {
  if (!t) llmc_lua_error(L, NULL);
  tensor_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->t = NULL;
  luaL_setmetatable(L, LLMC_TENSOR_MT);
  b->t = t;
}

llmc_tensor *llmc_lua_totensor(lua_State *L, int idx) {
  tensor_box *b = luaL_testudata(L, idx, LLMC_TENSOR_MT);
  return b ? b->t : NULL;
}

llmc_tensor *llmc_lua_checktensor(lua_State *L, int idx) {
  tensor_box *b = luaL_checkudata(L, idx, LLMC_TENSOR_MT);
  if (!b->t) luaL_argerror(L, idx, "tensor was released");
  return b->t;
}

llmc_dtype llmc_lua_checkdtype(lua_State *L, int idx) {
  const char *name = luaL_checkstring(L, idx);
  int dt = llmc_dtype_from_name(name);
  if (dt < 0) luaL_argerror(L, idx, lua_pushfstring(L, "unknown dtype '%s'", name));
  return (llmc_dtype)dt;
}

int llmc_lua_checkshape(lua_State *L, int idx, int64_t *shape) {
  int n = 0;
  if (lua_istable(L, idx)) {
    n = (int)luaL_len(L, idx);
    if (n > LLMC_MAX_DIMS) luaL_argerror(L, idx, "too many dims");
    for (int i = 0; i < n; i++) {
      lua_geti(L, idx, i + 1);
      if (!lua_isinteger(L, -1)) luaL_argerror(L, idx, "shape entries must be integers");
      shape[i] = lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
    return n;
  }
  int top = lua_gettop(L);
  for (int i = idx; i <= top && lua_isinteger(L, i); i++) {
    if (n >= LLMC_MAX_DIMS) luaL_argerror(L, i, "too many dims");
    shape[n++] = lua_tointeger(L, i);
  }
  return n;
}

static int hold_gc(lua_State *L) {
  llmc_lua_hold_box *b = lua_touserdata(L, 1);
  llmc_tensor_free(b->t);
  b->t = NULL;
  return 0;
}

void llmc_lua_holdtensor(lua_State *L, llmc_tensor *t) {
  llmc_lua_hold_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->t = t;
  if (luaL_newmetatable(L, "llmc.TensorHold")) {
    lua_pushcfunction(L, hold_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
}

llmc_tensor *llmc_lua_check_host_float(lua_State *L, int idx, const char *what) {
  llmc_tensor *t = llmc_lua_checktensor(L, idx);
  if (llmc_tensor_is_cuda(t)) luaL_error(L, "%s: a host tensor is needed (got a CUDA tensor)", what);
  if (t->dtype != LLMC_BF16 && t->dtype != LLMC_F16 && t->dtype != LLMC_F32)
    luaL_error(L, "%s: dtype must be bfloat16, float16 or float32 (got %s)", what, llmc_dtype_name(t->dtype));
  llmc_tensor *c = llmc_tensor_contiguous(t);
  if (!c) llmc_lua_error(L, what);
  llmc_lua_holdtensor(L, c);
  return c;
}

/* the fp32 scratch box: its __gc frees the buffer */
typedef struct { float *p; } scratch_box;
static int scratch_gc(lua_State *L) {
  scratch_box *b = lua_touserdata(L, 1);
  free(b->p);
  b->p = NULL;
  return 0;
}

float *llmc_lua_scratch_floats(lua_State *L, size_t n, const char *what) {
  scratch_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  if (luaL_newmetatable(L, "llmc.ScratchFloats")) {
    lua_pushcfunction(L, scratch_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  b->p = malloc((n ? n : 1) * sizeof(float));
  if (!b->p) luaL_error(L, "%s: out of memory for %zu floats", what, n);
  return b->p;
}

/* options table at idx: field `dtype` (default def) */
static llmc_dtype opt_dtype(lua_State *L, int idx, llmc_dtype def) {
  if (lua_type(L, idx) == LUA_TSTRING) return llmc_lua_checkdtype(L, idx);
  if (!lua_istable(L, idx)) return def;
  lua_getfield(L, idx, "dtype");
  llmc_dtype dt = def;
  if (!lua_isnil(L, -1)) dt = llmc_lua_checkdtype(L, lua_gettop(L));
  lua_pop(L, 1);
  return dt;
}

static int opt_int(lua_State *L, int idx, const char *field, lua_Integer def, lua_Integer *out) {
  *out = def;
  if (!lua_istable(L, idx)) return 0;
  lua_getfield(L, idx, field);
  if (!lua_isnil(L, -1)) *out = luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  return 1;
}

/* last argument that is a table with string keys or a dtype string */
static int trailing_opts(lua_State *L) {
  int top = lua_gettop(L);
  if (top == 0) return 0;
  if (lua_type(L, top) == LUA_TSTRING) return top;
  if (lua_istable(L, top)) {
    lua_getfield(L, top, "dtype");
    int is_opts = !lua_isnil(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, top, "seed");
    is_opts |= !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (is_opts || (luaL_len(L, top) == 0 && top > 1)) return top;
  }
  return 0;
}

/* ---- constructors ----------------------------------------------------------------- */

static int t_zeros_like(lua_State *L, double fill, int use_fill) {
  int64_t shape[LLMC_MAX_DIMS];
  int o = trailing_opts(L);
  int nd = llmc_lua_checkshape(L, 1, shape);
  llmc_dtype dt = o ? opt_dtype(L, o, LLMC_F32) : LLMC_F32;
  llmc_lua_pushtensor(L, use_fill ? llmc_tensor_full(dt, nd, shape, fill) : llmc_tensor_zeros(dt, nd, shape));
  return 1;
}
static int t_zeros(lua_State *L) { return t_zeros_like(L, 0, 0); }
static int t_ones(lua_State *L) { return t_zeros_like(L, 1, 1); }

static int t_empty(lua_State *L) {
  int64_t shape[LLMC_MAX_DIMS];
  int o = trailing_opts(L);
  int nd = llmc_lua_checkshape(L, 1, shape);
  llmc_lua_pushtensor(L, llmc_tensor_empty(o ? opt_dtype(L, o, LLMC_F32) : LLMC_F32, nd, shape));
  return 1;
}

static int t_full(lua_State *L) {
  int64_t shape[LLMC_MAX_DIMS];
  luaL_checktype(L, 1, LUA_TTABLE);
  int nd = llmc_lua_checkshape(L, 1, shape);
  double v = luaL_checknumber(L, 2);
  llmc_lua_pushtensor(L, llmc_tensor_full(opt_dtype(L, 3, LLMC_F32), nd, shape, v));
  return 1;
}

static int t_arange(lua_State *L) {
  double a = luaL_checknumber(L, 1), b, s = 1;
  int o;
  if (lua_isnumber(L, 2)) {
    b = lua_tonumber(L, 2);
    if (lua_isnumber(L, 3)) { s = lua_tonumber(L, 3); o = 4; } else o = 3;
  } else { b = a; a = 0; o = 2; }
  llmc_dtype def = (lua_isinteger(L, 1) && (o < 3 || lua_isinteger(L, 2))) ? LLMC_I64 : LLMC_F32;
  llmc_lua_pushtensor(L, llmc_tensor_arange(opt_dtype(L, o, def), a, b, s));
  return 1;
}

static int t_random(lua_State *L, int normal) {
  int64_t shape[LLMC_MAX_DIMS];
  int o = trailing_opts(L);
  int nd = llmc_lua_checkshape(L, 1, shape);
  lua_Integer seed;
  opt_int(L, o, "seed", 0, &seed);
  llmc_dtype dt = o ? opt_dtype(L, o, LLMC_F32) : LLMC_F32;
  llmc_lua_pushtensor(L, normal ? llmc_tensor_randn(dt, nd, shape, (uint64_t)seed)
                                : llmc_tensor_rand(dt, nd, shape, (uint64_t)seed));
  return 1;
}
static int t_rand(lua_State *L) { return t_random(L, 0); }
static int t_randn(lua_State *L) { return t_random(L, 1); }

/* nested tables -> shape (checked rectangular) */
static int table_shape(lua_State *L, int idx, int depth, int64_t *shape, int *nd) {
  if (!lua_istable(L, idx)) { *nd = depth; return 0; }
  if (depth >= LLMC_MAX_DIMS) return luaL_error(L, "tensor: nesting deeper than %d", LLMC_MAX_DIMS);
  shape[depth] = (int64_t)luaL_len(L, idx);
  if (shape[depth] == 0) { *nd = depth + 1; return 0; }
  lua_geti(L, idx, 1);
  table_shape(L, lua_gettop(L), depth + 1, shape, nd);
  lua_pop(L, 1);
  return 0;
}

static void table_fill(lua_State *L, int idx, int depth, int nd, const int64_t *shape, llmc_tensor *t, int64_t *pos) {
  if (depth == nd) {
    if (lua_isboolean(L, idx)) llmc_tensor_set_flat(t, (*pos)++, lua_toboolean(L, idx));
    else {
      if (!lua_isnumber(L, idx)) luaL_error(L, "tensor: element %d is not a number", (int)*pos + 1);
      llmc_tensor_set_flat(t, (*pos)++, lua_tonumber(L, idx));
    }
    return;
  }
  if (!lua_istable(L, idx) || (int64_t)luaL_len(L, idx) != shape[depth])
    luaL_error(L, "tensor: ragged nested table at depth %d", depth + 1);
  for (int64_t i = 1; i <= shape[depth]; i++) {
    lua_geti(L, idx, i);
    table_fill(L, lua_gettop(L), depth + 1, nd, shape, t, pos);
    lua_pop(L, 1);
  }
}

static int t_tensor(lua_State *L) {
  int64_t shape[LLMC_MAX_DIMS];
  int nd = 0;
  llmc_dtype dt = opt_dtype(L, 2, LLMC_F32);
  if (lua_isnumber(L, 1)) {
    llmc_lua_pushtensor(L, llmc_tensor_full(dt, 0, shape, lua_tonumber(L, 1)));
    return 1;
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  table_shape(L, 1, 0, shape, &nd);
  llmc_tensor *t = llmc_tensor_empty(dt, nd, shape);
  if (!t) return llmc_lua_error(L, "tensor");
  llmc_lua_pushtensor(L, t);
  int64_t pos = 0;
  table_fill(L, 1, 0, nd, shape, t, &pos);
  return 1;
}

static int t_from_bytes(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  llmc_dtype dt = llmc_lua_checkdtype(L, 2);
  int64_t shape[LLMC_MAX_DIMS];
  int nd;
  if (lua_isnoneornil(L, 3)) { nd = 1; shape[0] = (int64_t)(len / llmc_dtype_size(dt)); }
  else nd = llmc_lua_checkshape(L, 3, shape);
  llmc_lua_pushtensor(L, llmc_tensor_from_bytes(dt, nd, shape, s, len));
  return 1;
}

/* ---- methods ---------------------------------------------------------------------- */

static int m_shape(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  lua_createtable(L, t->ndim, 0);
  for (int d = 0; d < t->ndim; d++) { lua_pushinteger(L, t->shape[d]); lua_rawseti(L, -2, d + 1); }
  return 1;
}

static int m_stride(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  lua_createtable(L, t->ndim, 0);
  for (int d = 0; d < t->ndim; d++) { lua_pushinteger(L, t->stride[d]); lua_rawseti(L, -2, d + 1); }
  return 1;
}

static int checkdim(lua_State *L, llmc_tensor *t, int idx, int extra) {
  lua_Integer d = luaL_checkinteger(L, idx);
  int n = t->ndim + extra;
  if (d < 0) d += n;
  if (d < 0 || d >= n) luaL_argerror(L, idx, lua_pushfstring(L, "dim out of range for a %d-dim tensor", t->ndim));
  return (int)d;
}

static int m_size(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  if (lua_isnoneornil(L, 2)) return m_shape(L);
  lua_pushinteger(L, t->shape[checkdim(L, t, 2, 0)]);
  return 1;
}

static int m_dim(lua_State *L) { lua_pushinteger(L, llmc_lua_checktensor(L, 1)->ndim); return 1; }
static int m_numel(lua_State *L) { lua_pushinteger(L, llmc_tensor_numel(llmc_lua_checktensor(L, 1))); return 1; }
static int m_nbytes(lua_State *L) { lua_pushinteger(L, (lua_Integer)llmc_tensor_nbytes(llmc_lua_checktensor(L, 1))); return 1; }
static int m_dtype(lua_State *L) { lua_pushstring(L, llmc_dtype_name(llmc_lua_checktensor(L, 1)->dtype)); return 1; }
static int m_is_contiguous(lua_State *L) { lua_pushboolean(L, llmc_tensor_is_contiguous(llmc_lua_checktensor(L, 1))); return 1; }

static const char *storage_kind_name(const llmc_tensor *t) {
  switch (t->storage->kind) {
    case LLMC_STORAGE_MAPPED: return "mapped";
    case LLMC_STORAGE_CUDA: return "cuda";
    default: return "host";
  }
}

static int m_device(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  if (llmc_tensor_is_cuda(t)) lua_pushfstring(L, "cuda:%d", t->storage->device);
  else lua_pushstring(L, "cpu");
  return 1;
}

static int m_storage(lua_State *L) {
  lua_pushstring(L, storage_kind_name(llmc_lua_checktensor(L, 1)));
  return 1;
}

static int m_to(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  llmc_lua_pushtensor(L, llmc_tensor_to_dtype(t, llmc_lua_checkdtype(L, 2)));
  return 1;
}

static int m_contiguous(lua_State *L) { llmc_lua_pushtensor(L, llmc_tensor_contiguous(llmc_lua_checktensor(L, 1))); return 1; }
static int m_clone(lua_State *L) { llmc_lua_pushtensor(L, llmc_tensor_clone(llmc_lua_checktensor(L, 1))); return 1; }

static int m_narrow(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  int d = checkdim(L, t, 2, 0);
  llmc_lua_pushtensor(L, llmc_tensor_narrow(t, d, luaL_checkinteger(L, 3), luaL_checkinteger(L, 4)));
  return 1;
}

/* slice(dim, start, stop): Python's t[..., start:stop] on dim; nil = end */
static int m_slice(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  int d = checkdim(L, t, 2, 0);
  int64_t n = t->shape[d];
  int64_t a = luaL_optinteger(L, 3, 0), b = lua_isnoneornil(L, 4) ? n : luaL_checkinteger(L, 4);
  if (a < 0) a += n;
  if (b < 0) b += n;
  if (a < 0) a = 0;
  if (b > n) b = n;
  if (b < a) b = a;
  llmc_lua_pushtensor(L, llmc_tensor_narrow(t, d, a, b - a));
  return 1;
}

static int m_select(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  int d = checkdim(L, t, 2, 0);
  llmc_lua_pushtensor(L, llmc_tensor_select(t, d, luaL_checkinteger(L, 3)));
  return 1;
}

static int m_transpose(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  int a = lua_isnoneornil(L, 2) ? -2 : checkdim(L, t, 2, 0);
  int b = lua_isnoneornil(L, 3) ? -1 : checkdim(L, t, 3, 0);
  llmc_lua_pushtensor(L, llmc_tensor_transpose(t, a, b));
  return 1;
}

static int m_permute(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  int64_t p[LLMC_MAX_DIMS];
  int dims[LLMC_MAX_DIMS];
  int n = llmc_lua_checkshape(L, 2, p);
  if (n != t->ndim) return luaL_error(L, "permute: %d dims given for a %d-dim tensor", n, t->ndim);
  for (int i = 0; i < n; i++) dims[i] = (int)p[i];
  llmc_lua_pushtensor(L, llmc_tensor_permute(t, dims));
  return 1;
}

static int m_reshape(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  int64_t shape[LLMC_MAX_DIMS];
  int nd = llmc_lua_checkshape(L, 2, shape);
  llmc_lua_pushtensor(L, llmc_tensor_reshape(t, nd, shape));
  return 1;
}

static int m_flatten(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  int64_t n = -1;
  llmc_lua_pushtensor(L, llmc_tensor_reshape(t, 1, &n));
  return 1;
}

static int m_unsqueeze(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  llmc_lua_pushtensor(L, llmc_tensor_unsqueeze(t, checkdim(L, t, 2, 1)));
  return 1;
}

static int m_squeeze(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  llmc_lua_pushtensor(L, llmc_tensor_squeeze(t, checkdim(L, t, 2, 0)));
  return 1;
}

static int m_expand(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  int64_t shape[LLMC_MAX_DIMS];
  int nd = llmc_lua_checkshape(L, 2, shape);
  llmc_lua_pushtensor(L, llmc_tensor_expand(t, nd, shape));
  return 1;
}

static int m_copy_(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1), *s = llmc_lua_checktensor(L, 2);
  if (llmc_tensor_copy_(t, s) < 0) return llmc_lua_error(L, "copy_");
  lua_settop(L, 1);
  return 1;
}

static int m_fill_(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  llmc_tensor *v = llmc_tensor_full(LLMC_F64, 0, NULL, luaL_checknumber(L, 2));
  int rc = v ? llmc_tensor_copy_(t, v) : -1;
  llmc_tensor_free(v);
  if (rc < 0) return llmc_lua_error(L, "fill_");
  lua_settop(L, 1);
  return 1;
}

static void push_number(lua_State *L, double v, llmc_dtype dt) {
  if (!llmc_dtype_is_float(dt) && dt != LLMC_BOOL) lua_pushinteger(L, (lua_Integer)v);
  else if (dt == LLMC_BOOL) lua_pushboolean(L, v != 0);
  else lua_pushnumber(L, v);
}

static int m_item(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  if (llmc_tensor_numel(t) != 1) return luaL_error(L, "item: tensor has %d elements, not 1", (int)llmc_tensor_numel(t));
  push_number(L, llmc_tensor_get_flat(t, 0), t->dtype);
  return 1;
}

/* get(i, j, ...) / set(i, j, ..., value): 0-based element access */
static int64_t element_offset(lua_State *L, llmc_tensor *t, int first, int count) {
  if (count != t->ndim) luaL_error(L, "expected %d indices, got %d", t->ndim, count);
  int64_t off = t->offset;
  for (int d = 0; d < t->ndim; d++) {
    lua_Integer i = luaL_checkinteger(L, first + d);
    if (i < 0) i += t->shape[d];
    if (i < 0 || i >= t->shape[d]) luaL_error(L, "index %d out of range for dim %d of size %d", (int)i, d, (int)t->shape[d]);
    off += i * t->stride[d];
  }
  return off;
}

static int m_get(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  int64_t off = element_offset(L, t, 2, lua_gettop(L) - 1);
  push_number(L, llmc_load_as_f64((char *)t->storage->data + off * llmc_dtype_size(t->dtype), t->dtype), t->dtype);
  return 1;
}

static int m_set(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  int top = lua_gettop(L);
  double v = lua_isboolean(L, top) ? lua_toboolean(L, top) : luaL_checknumber(L, top);
  if (llmc_tensor_make_writable(t) < 0) return llmc_lua_error(L, "set");
  int64_t off = element_offset(L, t, 2, top - 2);
  llmc_store_from_f64((char *)t->storage->data + off * llmc_dtype_size(t->dtype), t->dtype, v);
  return 0;
}

static void totable_rec(lua_State *L, llmc_tensor *t, int d, int64_t off) {
  if (d == t->ndim) {
    push_number(L, llmc_load_as_f64((char *)t->storage->data + off * llmc_dtype_size(t->dtype), t->dtype), t->dtype);
    return;
  }
  lua_createtable(L, (int)t->shape[d], 0);
  for (int64_t i = 0; i < t->shape[d]; i++) {
    totable_rec(L, t, d + 1, off + i * t->stride[d]);
    lua_rawseti(L, -2, i + 1);
  }
}

static int m_totable(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  if (llmc_tensor_numel(t) > 50000000) return luaL_error(L, "totable: tensor too large");
  totable_rec(L, t, 0, t->offset);
  return 1;
}

static int m_bytes(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  llmc_tensor *c = llmc_tensor_contiguous(t);
  if (!c) return llmc_lua_error(L, "bytes");
  lua_pushlstring(L, llmc_tensor_data(c), llmc_tensor_nbytes(c));
  llmc_tensor_free(c);
  return 1;
}

static int m_stats(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  llmc_stats s;
  if (llmc_tensor_stats(t, &s) < 0) return llmc_lua_error(L, "stats");
  lua_createtable(L, 0, 7);
  lua_pushnumber(L, s.min); lua_setfield(L, -2, "min");
  lua_pushnumber(L, s.max); lua_setfield(L, -2, "max");
  lua_pushnumber(L, s.mean); lua_setfield(L, -2, "mean");
  lua_pushnumber(L, s.std); lua_setfield(L, -2, "std");
  lua_pushnumber(L, s.absmax); lua_setfield(L, -2, "absmax");
  lua_pushinteger(L, s.nan_count); lua_setfield(L, -2, "nan");
  lua_pushinteger(L, s.numel); lua_setfield(L, -2, "numel");
  return 1;
}

/* ---- arithmetic --------------------------------------------------------------------- */

static int arith(lua_State *L, llmc_binop op) {
  llmc_tensor *a = llmc_lua_totensor(L, 1), *b = llmc_lua_totensor(L, 2);
  if (a && b) llmc_lua_pushtensor(L, llmc_binary(op, a, b));
  else if (a) llmc_lua_pushtensor(L, llmc_binary_scalar(op, a, luaL_checknumber(L, 2), 0));
  else if (b) llmc_lua_pushtensor(L, llmc_binary_scalar(op, b, luaL_checknumber(L, 1), 1));
  else return luaL_error(L, "arithmetic on non-tensors");
  return 1;
}
static int m_add(lua_State *L) { return arith(L, LLMC_OP_ADD); }
static int m_sub(lua_State *L) { return arith(L, LLMC_OP_SUB); }
static int m_mul(lua_State *L) { return arith(L, LLMC_OP_MUL); }
static int m_div(lua_State *L) { return arith(L, LLMC_OP_DIV); }
static int m_pow(lua_State *L) { return arith(L, LLMC_OP_POW); }
static int m_maximum(lua_State *L) { return arith(L, LLMC_OP_MAX); }
static int m_minimum(lua_State *L) { return arith(L, LLMC_OP_MIN); }
static int m_eq(lua_State *L) { return arith(L, LLMC_OP_EQ); }
static int m_ne(lua_State *L) { return arith(L, LLMC_OP_NE); }
static int m_lt(lua_State *L) { return arith(L, LLMC_OP_LT); }
static int m_le(lua_State *L) { return arith(L, LLMC_OP_LE); }
static int m_gt(lua_State *L) { return arith(L, LLMC_OP_GT); }
static int m_ge(lua_State *L) { return arith(L, LLMC_OP_GE); }

#define UNARY(name, op) \
  static int name(lua_State *L) { llmc_lua_pushtensor(L, llmc_unary(op, llmc_lua_checktensor(L, 1))); return 1; }
UNARY(m_neg, LLMC_OP_NEG)
UNARY(m_abs, LLMC_OP_ABS)
UNARY(m_round, LLMC_OP_ROUND)
UNARY(m_floor, LLMC_OP_FLOOR)
UNARY(m_ceil, LLMC_OP_CEIL)
UNARY(m_sqrt, LLMC_OP_SQRT)
UNARY(m_rsqrt, LLMC_OP_RSQRT)
UNARY(m_exp, LLMC_OP_EXP)
UNARY(m_log, LLMC_OP_LOG)
UNARY(m_silu, LLMC_OP_SILU)
UNARY(m_sigmoid, LLMC_OP_SIGMOID)
UNARY(m_tanh, LLMC_OP_TANH)
UNARY(m_reciprocal, LLMC_OP_RECIPROCAL)
UNARY(m_sign, LLMC_OP_SIGN)

static int m_clamp(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  double lo = lua_isnoneornil(L, 2) ? NAN : luaL_checknumber(L, 2);
  double hi = lua_isnoneornil(L, 3) ? NAN : luaL_checknumber(L, 3);
  llmc_lua_pushtensor(L, llmc_clamp(t, lo, hi));
  return 1;
}

static int reduce(lua_State *L, llmc_redop op) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  int all = lua_isnoneornil(L, 2);
  int dim = all ? LLMC_ALL_DIMS : checkdim(L, t, 2, 0);
  int keep = lua_toboolean(L, 3);
  llmc_tensor *r = llmc_reduce(op, t, dim, keep);
  if (!r) return llmc_lua_error(L, NULL);
  if (all && !keep) {   /* a full reduction returns a Lua number, as .item() would */
    push_number(L, llmc_tensor_get_flat(r, 0), r->dtype);
    llmc_tensor_free(r);
    return 1;
  }
  llmc_lua_pushtensor(L, r);
  return 1;
}
static int m_sum(lua_State *L) { return reduce(L, LLMC_RED_SUM); }
static int m_mean(lua_State *L) { return reduce(L, LLMC_RED_MEAN); }
static int m_amax(lua_State *L) { return reduce(L, LLMC_RED_AMAX); }
static int m_max(lua_State *L) { return reduce(L, LLMC_RED_MAX); }
static int m_min(lua_State *L) { return reduce(L, LLMC_RED_MIN); }
static int m_argmax(lua_State *L) { return reduce(L, LLMC_RED_ARGMAX); }
static int m_argmin(lua_State *L) { return reduce(L, LLMC_RED_ARGMIN); }

static int m_matmul(lua_State *L) {
  llmc_lua_pushtensor(L, llmc_matmul(llmc_lua_checktensor(L, 1), llmc_lua_checktensor(L, 2)));
  return 1;
}

static int f_linear(lua_State *L) {
  llmc_tensor *x = llmc_lua_checktensor(L, 1), *w = llmc_lua_checktensor(L, 2);
  llmc_tensor *b = lua_isnoneornil(L, 3) ? NULL : llmc_lua_checktensor(L, 3);
  llmc_lua_pushtensor(L, llmc_linear(x, w, b));
  return 1;
}

static int f_where(lua_State *L) {
  llmc_lua_pushtensor(L, llmc_where(llmc_lua_checktensor(L, 1), llmc_lua_checktensor(L, 2), llmc_lua_checktensor(L, 3)));
  return 1;
}

static int f_cat(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)luaL_len(L, 1);
  if (n < 1 || n > 4096) return luaL_error(L, "cat: expected 1..4096 tensors, got %d", n);
  llmc_tensor **ts = lua_newuserdatauv(L, sizeof(llmc_tensor *) * (size_t)n, 0);
  for (int i = 0; i < n; i++) {
    lua_geti(L, 1, i + 1);
    ts[i] = llmc_lua_checktensor(L, -1);
    lua_pop(L, 1);   /* still referenced by the table */
  }
  llmc_lua_pushtensor(L, llmc_cat(ts, n, (int)luaL_optinteger(L, 2, 0)));
  return 1;
}

static int f_is_tensor(lua_State *L) { lua_pushboolean(L, llmc_lua_totensor(L, 1) != NULL); return 1; }

static int f_memory(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)llmc_host_bytes_in_use()); lua_setfield(L, -2, "host_in_use");
  lua_pushinteger(L, (lua_Integer)llmc_host_bytes_peak()); lua_setfield(L, -2, "host_peak");
  return 1;
}

static int f_reset_peak(lua_State *L) { (void)L; llmc_host_bytes_reset_peak(); return 0; }

/* ---- metamethods -------------------------------------------------------------------- */

static int m_release(lua_State *L) {
  tensor_box *b = luaL_checkudata(L, 1, LLMC_TENSOR_MT);
  llmc_tensor_free(b->t);
  b->t = NULL;
  return 0;
}

static int m_len(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  if (t->ndim == 0) return luaL_error(L, "len() of a 0-dim tensor");
  lua_pushinteger(L, t->shape[0]);
  return 1;
}

static int m_tostring(lua_State *L) {
  tensor_box *b = luaL_checkudata(L, 1, LLMC_TENSOR_MT);
  if (!b->t) { lua_pushstring(L, "Tensor(released)"); return 1; }
  llmc_tensor *t = b->t;
  char shp[256];
  llmc_shape_str(t->ndim, t->shape, shp, sizeof shp);
  luaL_Buffer buf;
  luaL_buffinit(L, &buf);
  lua_pushfstring(L, "Tensor%s %s %s", shp, llmc_dtype_name(t->dtype),
                  llmc_tensor_is_cuda(t) ? "cuda" : "cpu");
  luaL_addvalue(&buf);
  int64_t n = llmc_tensor_numel(t);
  if (n > 0 && n <= 8 && !llmc_tensor_is_cuda(t)) {
    luaL_addstring(&buf, " {");
    for (int64_t i = 0; i < n; i++) {
      char num[64];
      snprintf(num, sizeof num, i ? ", %.6g" : "%.6g", llmc_tensor_get_flat(t, i));
      luaL_addstring(&buf, num);
    }
    luaL_addstring(&buf, "}");
  } else if (n > 8 && !llmc_tensor_is_cuda(t) && n <= ((int64_t)1 << 26)) {
    llmc_stats s;
    if (llmc_tensor_stats(t, &s) == 0) {
      char num[160];
      snprintf(num, sizeof num, " absmax=%.4g mean=%.4g std=%.4g%s", s.absmax, s.mean, s.std,
               s.nan_count ? " (NaN!)" : "");
      luaL_addstring(&buf, num);
    }
  }
  luaL_pushresult(&buf);
  return 1;
}

/* t[i] selects along dim 0 (0-based); method names fall through to the
** method table. */
static int m_index(lua_State *L) {
  if (lua_isinteger(L, 2)) {
    llmc_tensor *t = llmc_lua_checktensor(L, 1);
    if (t->ndim == 0) return luaL_error(L, "cannot index a 0-dim tensor");
    llmc_lua_pushtensor(L, llmc_tensor_select(t, 0, lua_tointeger(L, 2)));
    return 1;
  }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "__methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int m_newindex(lua_State *L) {
  llmc_tensor *t = llmc_lua_checktensor(L, 1);
  if (!lua_isinteger(L, 2)) return luaL_error(L, "tensors only take integer keys");
  llmc_tensor *row = llmc_tensor_select(t, 0, lua_tointeger(L, 2));
  if (!row) return llmc_lua_error(L, NULL);
  int rc;
  llmc_tensor *src = llmc_lua_totensor(L, 3);
  if (src) rc = llmc_tensor_copy_(row, src);
  else {
    llmc_tensor *v = llmc_tensor_full(LLMC_F64, 0, NULL, luaL_checknumber(L, 3));
    rc = v ? llmc_tensor_copy_(row, v) : -1;
    llmc_tensor_free(v);
  }
  llmc_tensor_free(row);
  if (rc < 0) return llmc_lua_error(L, NULL);
  return 0;
}

static const luaL_Reg tensor_methods[] = {
  {"shape", m_shape}, {"size", m_size}, {"stride", m_stride}, {"dim", m_dim}, {"numel", m_numel},
  {"nbytes", m_nbytes}, {"dtype", m_dtype}, {"device", m_device}, {"storage_kind", m_storage},
  {"is_contiguous", m_is_contiguous}, {"to", m_to}, {"contiguous", m_contiguous}, {"clone", m_clone},
  {"narrow", m_narrow}, {"slice", m_slice}, {"select", m_select}, {"transpose", m_transpose},
  {"permute", m_permute}, {"reshape", m_reshape}, {"view", m_reshape}, {"flatten", m_flatten},
  {"unsqueeze", m_unsqueeze}, {"squeeze", m_squeeze}, {"expand", m_expand}, {"copy_", m_copy_},
  {"fill_", m_fill_}, {"item", m_item}, {"get", m_get}, {"set", m_set}, {"totable", m_totable},
  {"bytes", m_bytes}, {"stats", m_stats},
  {"add", m_add}, {"sub", m_sub}, {"mul", m_mul}, {"div", m_div}, {"pow", m_pow},
  {"maximum", m_maximum}, {"minimum", m_minimum},
  {"eq", m_eq}, {"ne", m_ne}, {"lt", m_lt}, {"le", m_le}, {"gt", m_gt}, {"ge", m_ge},
  {"neg", m_neg}, {"abs", m_abs}, {"round", m_round}, {"floor", m_floor}, {"ceil", m_ceil},
  {"sqrt", m_sqrt}, {"rsqrt", m_rsqrt}, {"exp", m_exp}, {"log", m_log}, {"silu", m_silu},
  {"sigmoid", m_sigmoid}, {"tanh", m_tanh}, {"reciprocal", m_reciprocal}, {"sign", m_sign},
  {"clamp", m_clamp}, {"sum", m_sum}, {"mean", m_mean}, {"amax", m_amax}, {"max", m_max},
  {"min", m_min}, {"argmax", m_argmax}, {"argmin", m_argmin}, {"matmul", m_matmul},
  {"release", m_release},
  {NULL, NULL}};

static const luaL_Reg tensor_meta[] = {
  {"__gc", m_release}, {"__close", m_release}, {"__tostring", m_tostring}, {"__len", m_len},
  {"__index", m_index}, {"__newindex", m_newindex},
  {"__add", m_add}, {"__sub", m_sub}, {"__mul", m_mul}, {"__div", m_div}, {"__pow", m_pow},
  {"__unm", m_neg},
  {NULL, NULL}};

static const luaL_Reg tensor_funcs[] = {
  {"zeros", t_zeros}, {"ones", t_ones}, {"empty", t_empty}, {"full", t_full}, {"arange", t_arange},
  {"rand", t_rand}, {"randn", t_randn}, {"tensor", t_tensor}, {"from_bytes", t_from_bytes},
  {"linear", f_linear}, {"matmul", m_matmul}, {"where", f_where}, {"cat", f_cat},
  {"is_tensor", f_is_tensor}, {"memory", f_memory}, {"reset_peak_memory", f_reset_peak},
  {NULL, NULL}};

int luaopen_llmc_tensor(lua_State *L) {
  llmc_dtype_init();
  luaL_newmetatable(L, LLMC_TENSOR_MT);
  luaL_setfuncs(L, tensor_meta, 0);
  luaL_newlib(L, tensor_methods);
  lua_setfield(L, -2, "__methods");
  lua_pop(L, 1);
  luaL_newlib(L, tensor_funcs);
  /* expose the method table so Lua code can add methods (llmc/tensor.lua) */
  luaL_getmetatable(L, LLMC_TENSOR_MT);
  lua_getfield(L, -1, "__methods");
  lua_setfield(L, -3, "methods");
  lua_pop(L, 1);
  return 1;
}
