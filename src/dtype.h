/*
** dtype.h — element types and bit-exact scalar conversions.
**
** Every tensor, safetensors entry and quantization kernel names its element
** type with `llmc_dtype`.  The numeric values are part of no file format and
** may be reordered; names (`llmc_dtype_name`) and safetensors codes
** (`llmc_dtype_st_name`, "BF16", "F8_E4M3", ...) are the stable identities.
**
** Conversions follow IEEE round-to-nearest-even and the compressed-tensors
** spec (docs: ../shared/docs/compressed-tensors-format.md §0, §3.5, §3.6):
**   - f32 -> bf16 / f16: RNE, NaN stays NaN (quiet), overflow -> inf.
**   - f32 -> fp8 e4m3fn: RNE on the exact value, sign of zero kept.  As in
**     PyTorch's raw cast, anything that rounds past 448 (|v| > 464), inf
**     and NaN become NaN (0x7F | sign).  llmc_f32_to_e4m3_sat clamps to
**     +-448 first, which is what compressed-tensors always does.
**   - f32 -> fp8 e5m2: RNE, overflow -> inf (e5m2 has infinities).
**   - fp4 e2m1: CT's threshold table (§3.6), sign of negative nonzero kept.
** Ownership: nothing here allocates.
*/
#ifndef LLMC_DTYPE_H
#define LLMC_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum llmc_dtype {
  LLMC_F32 = 0,
  LLMC_F16,
  LLMC_BF16,
  LLMC_F8_E4M3,   /* float8_e4m3fn */
  LLMC_F8_E5M2,   /* float8_e5m2 */
  LLMC_F64,
  LLMC_I8,
  LLMC_U8,
  LLMC_I16,
  LLMC_I32,
  LLMC_I64,
  LLMC_BOOL,
  LLMC_DTYPE_COUNT
} llmc_dtype;

typedef struct llmc_dtype_traits {
  const char *name;      /* llmc / torch style: "bfloat16", "float8_e4m3fn" */
  const char *st_name;   /* safetensors header code: "BF16", "F8_E4M3" */
  size_t itemsize;
  int is_float;
} llmc_dtype_traits;

extern const llmc_dtype_traits llmc_dtype_table[LLMC_DTYPE_COUNT];

static inline size_t llmc_dtype_size(llmc_dtype t) { return llmc_dtype_table[t].itemsize; }
static inline const char *llmc_dtype_name(llmc_dtype t) { return llmc_dtype_table[t].name; }
static inline int llmc_dtype_is_float(llmc_dtype t) { return llmc_dtype_table[t].is_float; }

/* Parse a name: accepts llmc names ("bfloat16", "bf16", "float32", "f32",
** "float8_e4m3fn", "fp8", "int8", ...) and safetensors codes ("BF16").
** Returns -1 for an unknown name. */
int llmc_dtype_from_name(const char *name);
/* Safetensors code only ("F32", "BF16", "F8_E4M3", ...); -1 if unknown. */
int llmc_dtype_from_st_name(const char *code);

/* ---- bit casts ------------------------------------------------------ */
static inline uint32_t llmc_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float llmc_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* ---- bfloat16 -------------------------------------------------------- */
static inline float llmc_bf16_to_f32(uint16_t h) { return llmc_bits_f32((uint32_t)h << 16); }
static inline uint16_t llmc_f32_to_bf16(float f) {
  uint32_t u = llmc_f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
/* rnd_bf16(v) as a float: the value of v rounded to bf16 */
static inline float llmc_round_bf16(float f) { return llmc_bf16_to_f32(llmc_f32_to_bf16(f)); }

/* ---- float16 --------------------------------------------------------- */
float llmc_f16_to_f32(uint16_t h);
uint16_t llmc_f32_to_f16(float f);
static inline float llmc_round_f16(float f) { return llmc_f16_to_f32(llmc_f32_to_f16(f)); }

/* ---- fp8 ------------------------------------------------------------- */
extern float llmc_e4m3_lut[256];   /* filled by llmc_dtype_init() */
extern float llmc_e5m2_lut[256];
void llmc_dtype_init(void);        /* idempotent; called by every entry point */
static inline float llmc_e4m3_to_f32(uint8_t b) { return llmc_e4m3_lut[b]; }
static inline float llmc_e5m2_to_f32(uint8_t b) { return llmc_e5m2_lut[b]; }
uint8_t llmc_f32_to_e4m3(float f);       /* RNE; NaN / out-of-range -> NaN (0x7F|sign) */
uint8_t llmc_f32_to_e4m3_sat(float f);   /* RNE after clamping to +-448; NaN -> 0x7F */
uint8_t llmc_f32_to_e5m2(float f);       /* RNE; overflow -> +-inf */

/* ---- fp4 e2m1 (nibble 0..15, bit 3 = sign) --------------------------- */
extern const float llmc_e2m1_values[16];
uint8_t llmc_f32_to_e2m1(float f);       /* CT threshold rounding, input pre-clamped to +-6 */

/* ---- generic element access (slow path; kernels specialise) --------- */
double llmc_load_as_f64(const void *p, llmc_dtype t);
float llmc_load_as_f32(const void *p, llmc_dtype t);
/* store with the rounding of the destination type (RNE; ints truncate
** toward zero as a C cast does, saturating at the type's range) */
void llmc_store_from_f64(void *p, llmc_dtype t, double v);

/* Convert n contiguous elements between any two dtypes (multithreaded for
** large n).  Float->float conversions are bit-exact RNE. */
void llmc_convert(void *dst, llmc_dtype dt, const void *src, llmc_dtype st, size_t n);

#endif
