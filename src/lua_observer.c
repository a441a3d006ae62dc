/*
** lua_observer.c — Lua binding "llmc._observer": activation statistics
** accumulators (observer.h) for activation calibration and smoothing.
**
**   local O = require "llmc._observer"
**   local obs = O.new{reduce = "tensor" | "channel" | "head", heads = 8 (head only), cols = 2048,
**                     update = "static_minmax" | "minmax" | "memoryless_minmax",
**                     averaging_constant = 0.01, dtype = "bf16" | "f16" | "f32"}
**   obs:observe(x)            -- x: Tensor, rank >= 1, last dim == cols (bf16/f16/f32, any strides)
**   local mn, mx = obs:minmax()   -- f32 Tensors {nstats}, values exact in dtype
**   obs:abs_sum()             -- f64 Tensor {nstats}: sum of |x| over every observed row
**   obs:count()               -- batches, tokens
**   obs:qparams(c_args)       -- c_args = quant.c_args(qargs); returns
**        {scale = Tensor(dtype){nstats}, zero_point = Tensor(zp_dtype){nstats} (asymmetric only)}
**        or, for strategy tensor_group, {global_scale = G} (scales are runtime: dynamic "local")
**   obs:reset(); obs:free()   -- free is idempotent, also done by __gc
**   obs.nstats, obs.cols, obs.reduce, obs.update, obs.dtype   (read-only fields)
**   tostring(obs)             -- "Observer(tensor, static_minmax, bf16, 3 batches, 1536 tokens)"
**
** Ownership: the userdata owns the C observer; every returned Tensor is
** owned by its Lua box.  Errors are Lua errors naming the bad field / argument.
*/
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "error.h"
#include "lua_llmc.h"
#include "lua_quant.h"
#include "lua_tensor.h"
#include "observer.h"
#include "quant.h"
#include "tensor.h"

#define OBS_MT "llmc._observer.Observer"

typedef struct {
  llmc_obs o;
  int live;
} obs_box;

static obs_box *check_obs(lua_State *L, int i) {
  obs_box *b = luaL_checkudata(L, i, OBS_MT);
  if (!b->live) luaL_error(L, "Observer: used after free()");
  return b;
}

static int o_free(lua_State *L) {
  obs_box *b = luaL_checkudata(L, 1, OBS_MT);
  if (b->live) llmc_obs_free(&b->o);
  b->live = 0;
  return 0;
}

static const char *short_dtype(llmc_dtype d) {
  return d == LLMC_BF16 ? "bf16" : d == LLMC_F16 ? "f16" : d == LLMC_F32 ? "f32" : llmc_dtype_name(d);
}

/* O.new{...} */
static int o_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int reduce = LLMC_OBS_TENSOR, update = LLMC_OBS_STATIC_MINMAX;
  if (lua_getfield(L, 1, "reduce") != LUA_TNIL) {
    const char *s = lua_tostring(L, -1);
    if (!lua_isstring(L, -1) || (reduce = llmc_obs_reduce_from_name(s)) < 0)
      return luaL_error(L, "observer: reduce must be \"tensor\", \"channel\" or \"head\" (got %s)",
                        s ? s : luaL_typename(L, -1));
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "update") != LUA_TNIL) {
    const char *s = lua_tostring(L, -1);
    if (!lua_isstring(L, -1) || (update = llmc_obs_update_from_name(s)) < 0)
      return luaL_error(L,
                        "observer: update must be \"static_minmax\", \"minmax\" or \"memoryless_minmax\" (got %s)",
                        s ? s : luaL_typename(L, -1));
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "cols") != LUA_TNUMBER || !lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
    return luaL_error(L, "observer: cols must be a positive integer");
  int64_t cols = lua_tointeger(L, -1);
  lua_pop(L, 1);
  int64_t heads = 0;
  int th = lua_getfield(L, 1, "heads");
  if (reduce == LLMC_OBS_HEAD) {
    if (th != LUA_TNUMBER || !lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
      return luaL_error(L, "observer: heads must be a positive integer for reduce = \"head\"");
    heads = lua_tointeger(L, -1);
    if (cols % heads != 0)
      return luaL_error(L, "observer: heads (%d) must divide cols (%d)", (int)heads, (int)cols);
  } else if (th != LUA_TNIL) {
    return luaL_error(L, "observer: heads is only for reduce = \"head\"");
  }
  lua_pop(L, 1);
  double c = 0.01;
  int tc = lua_getfield(L, 1, "averaging_constant");
  if (tc != LUA_TNIL) {
    if (tc != LUA_TNUMBER) return luaL_error(L, "observer: averaging_constant must be a number");
    c = lua_tonumber(L, -1);
    if (!(c > 0.0 && c <= 1.0))
      return luaL_error(L, "observer: averaging_constant must be in (0, 1] (got %f)", c);
  }
  lua_pop(L, 1);
  llmc_dtype D = LLMC_F32;
  if (lua_getfield(L, 1, "dtype") != LUA_TNIL) {
    const char *s = lua_tostring(L, -1);
    int d = s && lua_type(L, -1) == LUA_TSTRING ? llmc_dtype_from_name(s) : -1;
    if (d != LLMC_BF16 && d != LLMC_F16 && d != LLMC_F32)
      return luaL_error(L, "observer: dtype must be \"bf16\", \"f16\" or \"f32\" (got %s)",
                        s ? s : luaL_typename(L, -1));
    D = (llmc_dtype)d;
  }
  lua_pop(L, 1);
  obs_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, OBS_MT);
  if (llmc_obs_init(&b->o, (llmc_obs_reduce)reduce, (llmc_obs_update_rule)update, cols, heads, c, D) < 0)
    return llmc_lua_error(L, "observer");
  b->live = 1;
  return 1;
}

/* obs:observe(x) */
static int o_observe(lua_State *L) {
  obs_box *b = check_obs(L, 1);
  llmc_tensor *t = llmc_lua_checktensor(L, 2);
  if (llmc_tensor_is_cuda(t)) return luaL_error(L, "Observer:observe: a host tensor is needed (got a CUDA tensor)");
  if (t->dtype != LLMC_BF16 && t->dtype != LLMC_F16 && t->dtype != LLMC_F32)
    return luaL_error(L, "Observer:observe: dtype must be bfloat16, float16 or float32 (got %s)",
                      llmc_dtype_name(t->dtype));
  if (t->ndim < 1) return luaL_error(L, "Observer:observe: a 0-dim tensor has no columns");
  int64_t c = t->shape[t->ndim - 1], n = llmc_tensor_numel(t);
  if (c != b->o.cols)
    return luaL_error(L, "Observer:observe: x has %d columns (last dim), the observer %d", (int)c,
                      (int)b->o.cols);
  if (n == 0) return luaL_error(L, "Observer:observe: x is empty");
  llmc_tensor *ct = llmc_tensor_contiguous(t);
  if (!ct) return llmc_lua_error(L, "Observer:observe");
  llmc_lua_holdtensor(L, ct);
  if (llmc_obs_update(&b->o, llmc_tensor_data(ct), ct->dtype, n / c, c) < 0)
    return llmc_lua_error(L, "Observer:observe");
  return 0;
}

static void need_stats(lua_State *L, obs_box *b) {
  if (b->o.batches == 0) luaL_error(L, "observer has no statistics");
}

/* a new 1-D tensor of dtype dt with the n values of v (converted, exact) */
static void push_vec(lua_State *L, llmc_dtype dt, const void *v, llmc_dtype vt, int64_t n) {
  llmc_tensor *t = llmc_tensor_empty(dt, 1, &n);
  if (!t) llmc_lua_error(L, "observer");
  llmc_lua_pushtensor(L, t);
  llmc_convert(llmc_tensor_data(t), dt, v, vt, (size_t)n);
}

static int o_minmax(lua_State *L) {
  obs_box *b = check_obs(L, 1);
  need_stats(L, b);
  push_vec(L, LLMC_F32, b->o.min, LLMC_F32, b->o.nstats);
  push_vec(L, LLMC_F32, b->o.max, LLMC_F32, b->o.nstats);
  return 2;
}

static int o_abs_sum(lua_State *L) {
  obs_box *b = check_obs(L, 1);
  push_vec(L, LLMC_F64, b->o.abs_sum, LLMC_F64, b->o.nstats);
  return 1;
}

static int o_count(lua_State *L) {
  obs_box *b = check_obs(L, 1);
  lua_pushinteger(L, b->o.batches);
  lua_pushinteger(L, b->o.tokens);
  return 2;
}

static int o_reset(lua_State *L) {
  llmc_obs_reset(&check_obs(L, 1)->o);
  return 0;
}

/* a float scratch buffer freed by __gc even when a Lua error unwinds */
typedef struct { float *p; } buf_box;
static int buf_gc(lua_State *L) {
  buf_box *bb = lua_touserdata(L, 1);
  free(bb->p);
  bb->p = NULL;
  return 0;
}
static float *scratch(lua_State *L, size_t n) {
  buf_box *bb = lua_newuserdatauv(L, sizeof *bb, 0);
  bb->p = NULL;
  if (luaL_newmetatable(L, "llmc._observer.scratch")) {
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  bb->p = malloc(n * sizeof(float));
  if (!bb->p) luaL_error(L, "Observer:qparams: out of memory");
  return bb->p;
}

/* obs:qparams(c_args) */
static int o_qparams(lua_State *L) {
  obs_box *b = check_obs(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  llmc_qargs a;
  llmc_lua_check_qargs(L, 2, &a, "args");
  need_stats(L, b);
  const llmc_obs *o = &b->o;
  int64_t n = o->nstats;
  lua_createtable(L, 0, 2);
  int res = lua_gettop(L);
  if (a.strategy == LLMC_QS_TENSOR_GROUP) {
    /* the static part of an NVFP4 input: the global scale over everything */
    float g = llmc_q_global_scale(llmc_q_absmax(o->min, o->max, n), o->dtype);
    lua_pushnumber(L, g);
    lua_setfield(L, res, "global_scale");
    return 1;
  }
  /* the statistic layout must be the args' scale layout */
  const char *bad = NULL;
  switch (a.strategy) {
    case LLMC_QS_TENSOR: if (o->reduce != LLMC_OBS_TENSOR) bad = "reduce = \"tensor\""; break;
    case LLMC_QS_CHANNEL: if (o->reduce != LLMC_OBS_CHANNEL) bad = "reduce = \"channel\""; break;
    case LLMC_QS_ATTN_HEAD: if (o->reduce != LLMC_OBS_HEAD) bad = "reduce = \"head\""; break;
    case LLMC_QS_GROUP:
      if (o->reduce != LLMC_OBS_HEAD || o->cols / o->heads != a.group_size)
        bad = "reduce = \"head\" with cols / heads == group_size";
      break;
    default: bad = "a static strategy (tensor, channel, attn_head, group, tensor_group)"; break;
  }
  if (bad)
    return luaL_error(L, "Observer:qparams: args.strategy '%s' needs an observer with %s (this one: %s)",
                      llmc_q_strategy_name(a.strategy), bad, llmc_obs_reduce_name(o->reduce));
  float *s = scratch(L, (size_t)n);
  float *z = a.symmetric ? NULL : scratch(L, (size_t)n);
  if (llmc_q_qparams_from_minmax(&a, o->dtype, o->min, o->max, n, NULL, 1, s, z) < 0)
    return llmc_lua_error(L, "Observer:qparams");
  push_vec(L, o->dtype, s, LLMC_F32, n);
  lua_setfield(L, res, "scale");
  if (z) {
    push_vec(L, (llmc_dtype)a.zp_dtype, z, LLMC_F32, n);
    lua_setfield(L, res, "zero_point");
  }
  lua_pushvalue(L, res);
  return 1;
}

static int o_tostring(lua_State *L) {
  obs_box *b = luaL_checkudata(L, 1, OBS_MT);
  if (!b->live) {
    lua_pushstring(L, "Observer(freed)");
    return 1;
  }
  const llmc_obs *o = &b->o;
  if (o->reduce == LLMC_OBS_HEAD)
    lua_pushfstring(L, "Observer(head x%I, %s, %s, %I batches, %I tokens)", (lua_Integer)o->heads,
                    llmc_obs_update_name(o->update), short_dtype(o->dtype), (lua_Integer)o->batches,
                    (lua_Integer)o->tokens);
  else
    lua_pushfstring(L, "Observer(%s, %s, %s, %I batches, %I tokens)", llmc_obs_reduce_name(o->reduce),
                    llmc_obs_update_name(o->update), short_dtype(o->dtype), (lua_Integer)o->batches,
                    (lua_Integer)o->tokens);
  return 1;
}

static const luaL_Reg methods[] = {{"observe", o_observe}, {"minmax", o_minmax},   {"abs_sum", o_abs_sum},
                                   {"count", o_count},     {"qparams", o_qparams}, {"reset", o_reset},
                                   {"free", o_free},       {NULL, NULL}};

/* methods first, then the read-only fields */
static int o_index(lua_State *L) {
  obs_box *b = luaL_checkudata(L, 1, OBS_MT);
  const char *k = luaL_checkstring(L, 2);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  if (!b->live) return luaL_error(L, "Observer: used after free()");
  const llmc_obs *o = &b->o;
  if (strcmp(k, "nstats") == 0) lua_pushinteger(L, o->nstats);
  else if (strcmp(k, "cols") == 0) lua_pushinteger(L, o->cols);
  else if (strcmp(k, "heads") == 0) lua_pushinteger(L, o->heads);
  else if (strcmp(k, "reduce") == 0) lua_pushstring(L, llmc_obs_reduce_name(o->reduce));
  else if (strcmp(k, "update") == 0) lua_pushstring(L, llmc_obs_update_name(o->update));
  else if (strcmp(k, "dtype") == 0) lua_pushstring(L, llmc_dtype_name(o->dtype));
  else if (strcmp(k, "averaging_constant") == 0) lua_pushnumber(L, o->averaging_constant);
  else lua_pushnil(L);
  return 1;
}

static const luaL_Reg funcs[] = {{"new", o_new}, {NULL, NULL}};

int luaopen_llmc_observer(lua_State *L) {
  if (luaL_newmetatable(L, OBS_MT)) {
    lua_pushcfunction(L, o_free);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, o_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushcclosure(L, o_index, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
