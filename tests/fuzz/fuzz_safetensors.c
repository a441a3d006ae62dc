/*
** fuzz_safetensors.c — libFuzzer target for the safetensors reader.
**
** The input is a whole file image, parsed by llmc_st_open_memory (the same
** validation as llmc_st_open; the image is not copied, so ASan sees every
** read past its end).  A file that validates is then used fully: every
** entry's invariants are checked (a violation traps), its first and last
** bytes are read, it is materialised as a tensor, and the metadata is read,
** so that anything the validation lets through is exercised.
** Replayed over tests/fuzz/corpus/fuzz_safetensors by ctest; see
** docs/safetensors.md for long runs.
*/
#include <stdint.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llmc_st_file *f = llmc_st_open_memory(data, size, "fuzz-input");
  if (!f) return 0;
  size_t n = llmc_st_count(f);
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    const llmc_st_info *e = llmc_st_info_at(f, i);
    if (i > 0 && strcmp(llmc_st_info_at(f, i - 1)->name, e->name) >= 0) __builtin_trap();
    if (llmc_st_find(f, e->name) != e) __builtin_trap();
    if (e->end < e->begin || e->end - e->begin != e->nbytes) __builtin_trap();
    if (e->ndim < 0 || e->ndim > LLMC_MAX_DIMS) __builtin_trap();
    uint64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) numel *= (uint64_t)e->shape[d];
    if (numel * llmc_dtype_size(e->dtype) != e->nbytes) __builtin_trap();
    const uint8_t *p = llmc_st_data(f, e);
    if (p < data || p + e->nbytes > data + size) __builtin_trap();
    if (e->nbytes) sink += p[0] ^ p[e->nbytes - 1];
    total += e->nbytes;
    llmc_tensor *t = llmc_st_get(f, e->name);
    if (!t || llmc_tensor_nbytes(t) != e->nbytes) __builtin_trap();
    llmc_tensor_free(t);
  }
  /* the entries tile the data region exactly */
  if (n && total != (uint64_t)(data + size - (const uint8_t *)llmc_st_data(f, llmc_st_info_at(f, 0)) +
                               llmc_st_info_at(f, 0)->begin))
    __builtin_trap();
  size_t nm;
  const llmc_st_kv *kv = llmc_st_metadata(f, &nm);
  for (size_t i = 0; i < nm; i++)
    if (llmc_st_metadata_get(f, kv[i].key) != kv[i].value) __builtin_trap();
  llmc_st_file_release(f);
  return 0;
}
