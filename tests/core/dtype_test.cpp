// Scalar conversions: BF16 rounding, FP8 e4m3 decode table and encoder.
#include <gtest/gtest.h>

#include <cmath>

#include "core/dtype.h"

namespace narwhal {

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_float(float_to_bf16(3.140625f)), 3.140625f);
  // 1 + 2^-8 lies halfway between two bf16 values; ties go to the even mantissa (1.0).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
}

TEST(DType, Fp8DecodeMatchesFormat) {
  EXPECT_EQ(fp8_e4m3_to_float(0x00), 0.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0x38), 1.0f);         // exponent 7 = bias
  EXPECT_EQ(fp8_e4m3_to_float(0x7e), 448.0f);       // largest finite
  EXPECT_EQ(fp8_e4m3_to_float(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(fp8_e4m3_to_float(0xb8), -1.0f);
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(0x7f)));
}

TEST(DType, Fp8EncodeRoundTripsEveryCode) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f) continue;  // NaN
    float v = fp8_e4m3_to_float(static_cast<uint8_t>(b));
    if (v == 0.0f) continue;  // +0 and -0 both decode to zero
    EXPECT_EQ(float_to_fp8_e4m3(v), b) << "code " << b;
  }
  EXPECT_EQ(float_to_fp8_e4m3(1000.0f), 0x7e);  // saturates
  EXPECT_EQ(float_to_fp8_e4m3(1.0625f), 0x38);  // halfway between 1 and 1.125: ties to even
}

TEST(DType, F16Decode) {
  EXPECT_EQ(f16_to_float(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_float(0xc000), -2.0f);
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));
}

}  // namespace narwhal
