/*
** lua_quant.h — the Lua args table -> llmc_qargs conversion of the
** "llmc._quant" binding (lua_quant.c), shared with other bindings (lua_gptq.c)
** so that every binding reads quantization args the same way.
**
**   llmc_qargs a;
**   llmc_lua_check_qargs(L, 2, &a, "weights");   // raises a Lua error on bad input
*/
#ifndef LLMC_LUA_QUANT_H
#define LLMC_LUA_QUANT_H

#include <lua.h>

#include "quant.h"

/* Fill a from the args table at stack index t (num_bits, type, symmetric,
** strategy, group_size, block_structure, dynamic, observer, observer_kwargs,
** scale_dtype, zp_dtype, rounding, force_zero_point), then check it.  `what`
** names the table in error messages.  Raises a Lua error; never returns bad args. */
void llmc_lua_check_qargs(lua_State *L, int t, llmc_qargs *a, const char *what);

#endif
