// Element types of tensors and checkpoints, and scalar conversions between them (BF16, F16, FP8 e4m3).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace narwhal {

enum class DType { kF32, kBF16, kF16, kF8E4M3, kI32, kI64 };

size_t dtype_size(DType dtype);
// The safetensors spelling: "F32", "BF16", "F16", "F8_E4M3", "I32", "I64".
const char* dtype_name(DType dtype);
// Parses the safetensors spelling; returns false for anything else.
bool parse_dtype(const std::string& name, DType* out);

inline float bf16_to_float(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as torch does; NaN stays NaN.
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_float(uint16_t bits);
// OCP FP8 e4m3fn (torch.float8_e4m3fn): no infinities, 0x7f/0xff are NaN, max finite 448.
float fp8_e4m3_to_float(uint8_t bits);
// Round to nearest even with saturation to +-448 (the value torch produces after clamping).
uint8_t float_to_fp8_e4m3(float f);

}  // namespace narwhal
