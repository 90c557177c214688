// Element type names and the scalar conversions that are too long to inline.
#include "core/dtype.h"

#include <array>
#include <cmath>

namespace narwhal {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kF8E4M3: return 1;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
  }
  return "?";
}

bool parse_dtype(const std::string& name, DType* out) {
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3, DType::kI32, DType::kI64}) {
    if (name == dtype_name(d)) {
      *out = d;
      return true;
    }
  }
  return false;
}

float f16_to_float(uint16_t h) {
  uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float value;
  if (exp == 0) value = std::ldexp(static_cast<float>(mant), -24);
  else if (exp == 31) value = mant ? NAN : INFINITY;
  else value = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  return sign ? -value : value;
}

namespace {
std::array<float, 256> make_fp8_table() {
  std::array<float, 256> table{};
  for (int b = 0; b < 256; ++b) {
    int sign = b >> 7, exp = (b >> 3) & 0xf, mant = b & 7;
    float value;
    if (exp == 0xf && mant == 7) value = NAN;
    else if (exp == 0) value = std::ldexp(static_cast<float>(mant), -9);  // subnormal: mant/8 * 2^-6
    else value = std::ldexp(static_cast<float>(mant | 8), exp - 10);      // (1+mant/8) * 2^(exp-7)
    table[b] = sign ? -value : value;
  }
  return table;
}
const std::array<float, 256> kFp8Table = make_fp8_table();
}  // namespace

float fp8_e4m3_to_float(uint8_t bits) { return kFp8Table[bits]; }

uint8_t float_to_fp8_e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;
  // Nearest of the 127 non-negative finite codes, ties to the even code.
  int lo = 0, hi = 0x7e;
  while (hi - lo > 1) {
    int mid = (lo + hi) / 2;
    (kFp8Table[mid] <= a ? lo : hi) = mid;
  }
  float dlo = a - kFp8Table[lo], dhi = kFp8Table[hi] - a;
  int code = dlo < dhi ? lo : dhi < dlo ? hi : (lo % 2 == 0 ? lo : hi);
  return sign | static_cast<uint8_t>(code);
}

}  // namespace narwhal
