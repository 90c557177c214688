// The sampler's shared arithmetic (ops/sampling_math.h): our exp against std::exp, weights, keys, thresholds, the
// exact draw target, logit keys. The GPU runs the same functions; tests/cuda/sampling_test.cpp compares the two.
#include "ops/sampling_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace narwhal::ops {
namespace {

int64_t ulps_apart(double a, double b) {
  int64_t x, y;
  std::memcpy(&x, &a, 8);
  std::memcpy(&y, &b, 8);
  return x > y ? x - y : y - x;
}

TEST(SamplingMath, ExpIsWithinOneUlpOfStdExp) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  int64_t worst = 0;
  double worst_z = 0.0;
  // Log-spaced magnitudes from 1e-12 to 708, and a uniform sweep over the range the weights use.
  for (int i = 0; i < 400000; ++i) {
    const double z = i % 2 ? -std::exp(std::log(1e-12) + unit(rng) * (std::log(708.0) - std::log(1e-12)))
                           : -29.0 * unit(rng);
    const int64_t u = ulps_apart(exp_nonpositive(z), std::exp(z));
    if (u > worst) worst = u, worst_z = z;
  }
  EXPECT_LE(worst, 1) << "at z = " << worst_z;
  EXPECT_EQ(exp_nonpositive(0.0), 1.0);
  EXPECT_EQ(exp_nonpositive(-0.0), 1.0);
  EXPECT_EQ(exp_nonpositive(-1e-300), 1.0);
  EXPECT_EQ(exp_nonpositive(-709.0), 0.0);
  EXPECT_EQ(exp_nonpositive(-std::numeric_limits<double>::infinity()), 0.0);
  EXPECT_EQ(exp_nonpositive(std::numeric_limits<double>::quiet_NaN()), 0.0);
}

TEST(SamplingMath, FixedWeightsOfHandMadeLogits) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(fixed_weight(3.5f, 3.5f, 1.0), kTopWeight) << "the top token weighs exactly 2^40";
  EXPECT_EQ(fixed_weight(-inf, 3.5f, 1.0), 0u);
  EXPECT_EQ(fixed_weight(std::numeric_limits<float>::quiet_NaN(), 3.5f, 1.0), 0u);
  EXPECT_EQ(fixed_weight(-26.0f, 3.0f, 1.0), 0u) << "29 below the top: e^-29 * 2^40 < 1";
  // floor(e^z * 2^40), away from integer boundaries (checked against std::exp).
  for (float x : {2.0f, 0.5f, -1.0f, -10.0f, -20.0f}) {
    const double z = static_cast<double>(x) - 3.0;
    EXPECT_EQ(fixed_weight(x, 3.0f, 1.0), static_cast<uint64_t>(std::floor(std::exp(z) * 0x1.0p40))) << x;
  }
  EXPECT_EQ(fixed_weight(2.0f, 3.0f, inverse_temperature(0.5)), fixed_weight(1.0f, 3.0f, 1.0)) << "T = 0.5 doubles";
  // Huge temperatures flatten every finite logit to the top weight; tiny ones leave only the top.
  EXPECT_EQ(fixed_weight(-50.0f, 3.0f, inverse_temperature(1e30)), kTopWeight);
  EXPECT_EQ(fixed_weight(2.9999998f, 3.0f, inverse_temperature(1e-30)), 0u);
  EXPECT_TRUE(std::isfinite(inverse_temperature(1e-320))) << "a subnormal temperature must not give 0 * inf";
  EXPECT_EQ(fixed_weight(3.0f, 3.0f, inverse_temperature(1e-320)), kTopWeight);
}

TEST(SamplingMath, RankKeysOrderByWeightThenLowerId) {
  EXPECT_GT(rank_key(5, 3), rank_key(5, 7));
  EXPECT_GT(rank_key(5, 7), rank_key(4, 0));
  EXPECT_GT(rank_key(1, kMaxSamplingVocab - 1), rank_key(0, 0));
  EXPECT_EQ(key_weight(rank_key(kTopWeight, 129279)), kTopWeight);
  EXPECT_EQ(key_id(rank_key(kTopWeight, 129279)), 129279);
  EXPECT_EQ(key_id(rank_key(17, 0)), 0);
}

TEST(SamplingMath, FilterThresholds) {
  EXPECT_EQ(top_p_threshold(0.5, 1000), 500u);
  EXPECT_EQ(top_p_threshold(0.7, 10), 7u);
  EXPECT_EQ(top_p_threshold(1.0, kTopWeight * 3), kTopWeight * 3);
  EXPECT_EQ(top_p_threshold(1e-30, kTopWeight), 1u) << "the first token is always kept";
  EXPECT_EQ(min_p_threshold(0.0), 0u);
  EXPECT_EQ(min_p_threshold(1.0), kTopWeight);
  EXPECT_EQ(min_p_threshold(0.5), kTopWeight / 2) << "exact products are not rounded up";
  EXPECT_EQ(min_p_threshold(0.3), 329853488333u) << "0.3 * 2^40 = 329853488332.8 rounds up";
}

TEST(SamplingMath, DrawTargetIsTheFloorOfUTimesTheMass) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 10000; ++i) {
    const uint64_t bits = rng() >> 11;
    const uint64_t small = 1 + rng() % 2047;  // bits * small fits 64 bits: the floor is one shift
    EXPECT_EQ(draw_target(bits, small), (bits * small) >> 53);
    const uint64_t large = 1 + (rng() >> 3);
    EXPECT_LT(draw_target(bits, large), large);
    EXPECT_NEAR(static_cast<double>(draw_target(bits, large)), static_cast<double>(bits) * 0x1.0p-53 * large,
                1.0 + large * 1e-15);
  }
  EXPECT_EQ(draw_target((uint64_t{1} << 53) - 1, kTopWeight), kTopWeight - 1);
  EXPECT_EQ(draw_target(0, kTopWeight), 0u);
}

TEST(SamplingMath, UniformIsTheDrawBitsScaled) {
  for (int64_t pos = 0; pos < 100; ++pos) {
    const double u = uniform(42, pos);
    EXPECT_EQ(u, static_cast<double>(uniform_bits(42, pos)) * 0x1.0p-53);
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
  EXPECT_NE(uniform_bits(42, 0), uniform_bits(43, 0));
  EXPECT_NE(uniform_bits(42, 0), uniform_bits(42, 1));
}

TEST(SamplingMath, LogitKeysRankValuesThenLowerIdsWithNanLast) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  EXPECT_GT(logit_key(1.0f, 9), logit_key(0.5f, 0));
  EXPECT_GT(logit_key(-0.0f, 3), logit_key(0.0f, 4)) << "-0 equals +0: the lower id wins";
  EXPECT_GT(logit_key(-inf, 5), logit_key(nan, 0));
  EXPECT_GT(logit_key(-3.0f, 5), logit_key(-4.0f, 0));
  for (float v : {1.5f, -2.25f, 0.0f, inf, -inf, 3e38f, -1e-40f})
    EXPECT_EQ(logit_key_value(logit_key(v, 77)), v) << v;
  EXPECT_TRUE(std::isnan(logit_key_value(logit_key(nan, 1))));
  EXPECT_EQ(logit_key_id(logit_key(2.0f, 129279)), 129279);
}

}  // namespace
}  // namespace narwhal::ops
