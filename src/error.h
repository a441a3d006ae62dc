/*
** error.h — the one error channel of the C core.
**
** Functions that can fail return -1 (or NULL) after calling llmc_err(),
** which formats a message into a thread-local buffer; the caller either
** adds context (llmc_err_prefix) and fails in turn, or reports it
** (the Lua bindings raise it as a Lua error).  Nothing in the core longjmps,
** prints, or exits: the executable decides.
**
**   if (fd < 0) return llmc_err("%s: %s", path, strerror(errno));
**   if (llmc_st_open(path, &f) < 0) return llmc_err_prefix("loading model: ");
**
** Interrupts: the REPL's SIGINT handler sets llmc_interrupt_flag; long C
** loops call llmc_interrupted() at safe points and fail with "interrupted".
*/
#ifndef LLMC_ERROR_H
#define LLMC_ERROR_H

#include <signal.h>

#if defined(__GNUC__)
#define LLMC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LLMC_PRINTF(a, b)
#endif

int llmc_err(const char *fmt, ...) LLMC_PRINTF(1, 2);         /* always returns -1 */
int llmc_err_prefix(const char *fmt, ...) LLMC_PRINTF(1, 2);  /* prepends; returns -1 */
const char *llmc_errmsg(void);                                 /* "" when none */
void llmc_err_clear(void);

extern volatile sig_atomic_t llmc_interrupt_flag;
/* Returns 1 (after setting the error "interrupted") when Ctrl-C was pressed. */
int llmc_interrupted(void);

#endif
