// bfloat16 <-> float32. bf16 is the top 16 bits of an IEEE float32 (1 sign, 8 exponent, 7 mantissa):
// same range as f32, ~3 significant decimal digits. Widening is exact (append 16 zero bits).
// Narrowing rounds to nearest, ties to even, like PyTorch and CUDA's __float2bfloat16:
//   add 0x7FFF plus the lowest kept bit, then truncate. NaN stays NaN (quiet) instead of rounding
//   into infinity.
#pragma once
#include <cstdint>
#include <cstring>

namespace lolcats {

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu))  // NaN: keep sign, force quiet
    return uint16_t((bits >> 16) | 0x0040u);
  uint32_t lsb = (bits >> 16) & 1u;  // lowest bit that survives: decides ties toward even
  bits += 0x7FFFu + lsb;
  return uint16_t(bits >> 16);
}

}  // namespace lolcats

namespace lolcats {

// IEEE half (f16: 1 sign, 5 exponent, 10 mantissa) -> f32, exact. Used when reading F16 checkpoints.
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (man << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);  // normal: rebias 15 -> 127
  } else if (man == 0) {
    bits = sign;  // +-0
  } else {        // subnormal: shift until the implicit bit appears
    int e = -1;
    do {
      man <<= 1;
      e++;
    } while (!(man & 0x400u));
    bits = sign | (uint32_t(112 - e) << 23) | ((man & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace lolcats
