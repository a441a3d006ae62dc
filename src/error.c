/*
** error.c — thread-local error messages and the interrupt flag (error.h).
*/
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define LLMC_ERRBUF 2048
static _Thread_local char errbuf[LLMC_ERRBUF];

volatile sig_atomic_t llmc_interrupt_flag = 0;

int llmc_err(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errbuf, sizeof errbuf, fmt, ap);
  va_end(ap);
  return -1;
}

int llmc_err_prefix(const char *fmt, ...) {
  char prefix[LLMC_ERRBUF], old[LLMC_ERRBUF];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, errbuf, sizeof old);
  /* both halves fit in errbuf; the message is cut at the buffer's end */
  size_t np = strnlen(prefix, sizeof errbuf - 1);
  memcpy(errbuf, prefix, np);
  size_t no = strnlen(old, sizeof errbuf - 1 - np);
  memcpy(errbuf + np, old, no);
  errbuf[np + no] = 0;
  return -1;
}

const char *llmc_errmsg(void) { return errbuf; }
void llmc_err_clear(void) { errbuf[0] = 0; }

int llmc_interrupted(void) {
  if (!llmc_interrupt_flag) return 0;
  llmc_err("interrupted");
  return 1;
}
