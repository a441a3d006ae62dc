/*
** check.h — the minimal assertion kit of the C unit tests.
**
**   CHECK(x > 0, "x=%d", x);
**   CHECK_EQ_INT(got, 42);
**   CHECK_NEAR(got, 3.14, 1e-6);
**   return check_summary();   // prints "N passed, M failed"; exit code 1 on failure
**
** Skips: print why and `return CHECK_SKIP;` (77, ctest's SKIP_RETURN_CODE).
*/
#ifndef LLMC_TEST_CHECK_H
#define LLMC_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK_SKIP 77

static int check_passed_, check_failed_;

#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (cond) check_passed_++;                                             \
    else {                                                                 \
      check_failed_++;                                                     \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);      \
      fprintf(stderr, __VA_ARGS__);                                        \
      fputc('\n', stderr);                                                 \
    }                                                                      \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                 \
  do {                                                                     \
    long long a_ = (long long)(a), b_ = (long long)(b);                    \
    CHECK(a_ == b_, "%s = %lld, expected %lld", #a, a_, b_);               \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                              \
  do {                                                                     \
    double a_ = (double)(a), b_ = (double)(b);                             \
    CHECK(fabs(a_ - b_) <= (tol), "%s = %.10g, expected %.10g (tol %g)",    \
          #a, a_, b_, (double)(tol));                                      \
  } while (0)

static inline int check_summary(void) {
  printf("%d passed, %d failed\n", check_passed_, check_failed_);
  return check_failed_ ? 1 : 0;
}

#endif
