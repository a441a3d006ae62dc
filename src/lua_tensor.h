/*
** lua_tensor.h — the Tensor userdata shared by every Lua binding file.
**
** A Tensor userdata is a box holding one reference to an llmc_tensor
** (metatable "llmc.Tensor").  Ownership:
**   llmc_lua_pushtensor(L, t)  STEALS the caller's reference to t (the box
**                              now owns it); pass llmc_tensor_retain(t) if you
**                              keep using t yourself.  t == NULL raises the
**                              current llmc_errmsg() as a Lua error.
**   llmc_lua_checktensor(L, i) BORROWS: valid while the userdata is alive.
**   llmc_lua_totensor(L, i)    like check, NULL when not a Tensor.
** `__gc` and `__close` release the reference (idempotent).
*/
#ifndef LLMC_LUA_TENSOR_H
#define LLMC_LUA_TENSOR_H

#include <lua.h>
#include <lauxlib.h>

#include "tensor.h"

#define LLMC_TENSOR_MT "llmc.Tensor"

void llmc_lua_pushtensor(lua_State *L, llmc_tensor *t);
llmc_tensor *llmc_lua_checktensor(lua_State *L, int idx);
llmc_tensor *llmc_lua_totensor(lua_State *L, int idx);
/* raise llmc_errmsg() (with an optional context prefix) as a Lua error */
int llmc_lua_error(lua_State *L, const char *context);
/* a dtype argument: name string ("bfloat16", "bf16", "F8_E4M3", ...) */
llmc_dtype llmc_lua_checkdtype(lua_State *L, int idx);
/* a shape argument: a table of integers, or integers from idx to top */
int llmc_lua_checkshape(lua_State *L, int idx, int64_t *shape);

/* Keep one tensor reference owned by a userdata pushed on the stack: its
** __gc frees it, so a Lua error before the C function returns does not leak
** the reference.  STEALS t.  The box's `t` may be read or cleared. */
typedef struct { llmc_tensor *t; } llmc_lua_hold_box;
void llmc_lua_holdtensor(lua_State *L, llmc_tensor *t);
/* Argument idx as a contiguous host bf16 / f16 / f32 tensor (a copy when it
** is strided), held by a box pushed on the stack (llmc_lua_holdtensor);
** errors name `what`.  The reference is the box's: do not free it. */
llmc_tensor *llmc_lua_check_host_float(lua_State *L, int idx, const char *what);
/* n floats of scratch owned by a box pushed on the stack (freed by its
** __gc, so a Lua error does not leak it); errors name `what`. */
float *llmc_lua_scratch_floats(lua_State *L, size_t n, const char *what);

#endif
