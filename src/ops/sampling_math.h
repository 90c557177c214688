// Sampling arithmetic shared by the CPU and the GPU sampler: the seeded uniform, our own exp, fixed-point weights,
// rank keys and the filters' integer thresholds, all bit-identical in host and device code.
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__CUDACC__)
#define NW_HOST_DEVICE __host__ __device__
#else
#define NW_HOST_DEVICE
#endif

// Why bit-identical: every operation here is one IEEE operation, correctly rounded on both sides (+, -, *, /,
// conversions, and fma / fmaf, which the C library and CUDA both round once), and none is left for a compiler to
// fuse: no product feeds a sum except through an explicit fma(), so neither GCC's -ffp-contract nor ptxas can
// contract one, and the CUDA build has no fast-math flags. Keep it so when editing.

namespace narwhal::ops {

// A weight is floor(w * 2^40) for w = e^((x - max) / T) in [0, 1], so the most likely token weighs exactly 2^40 and
// 2^20 of them sum below 2^61: every mass is an exact uint64, and sums do not depend on their order.
constexpr int kMassBits = 40;
constexpr uint64_t kTopWeight = uint64_t{1} << kMassBits;
// A rank key is weight << 20 | (2^20 - 1 - id): ordering keys orders tokens by weight, ties to the lower id.
constexpr int kIdBits = 20;
constexpr int64_t kMaxSamplingVocab = int64_t{1} << kIdBits;

namespace detail {

// The bits of one type as another (std::bit_cast is C++20; device code is C++17). memcpy of a register-sized
// value compiles to a move on both sides.
template <typename To, typename From>
NW_HOST_DEVICE inline To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From));
  To to;
  memcpy(&to, &from, sizeof to);
  return to;
}

}  // namespace detail

// A well-mixed 64-bit function of `x` (SplitMix64's finaliser): seeds of n > 1 choices and default seeds.
NW_HOST_DEVICE inline uint64_t mix_bits(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The 53 random bits that draw output position `position` of a sequence seeded with `seed`: counter-based, so a
// token depends on neither the batch around it nor on how often its sequence was retracted.
NW_HOST_DEVICE inline uint64_t uniform_bits(uint64_t seed, int64_t position) {
  return mix_bits(seed ^ mix_bits(static_cast<uint64_t>(position))) >> 11;
}

// The same draw as a uniform number in [0, 1).
NW_HOST_DEVICE inline double uniform(uint64_t seed, int64_t position) {
  return static_cast<double>(uniform_bits(seed, position)) * 0x1.0p-53;
}

// floor(u * mass) for u = bits / 2^53, exactly (a 128-bit product); below `mass` whenever mass > 0.
NW_HOST_DEVICE inline uint64_t draw_target(uint64_t bits, uint64_t mass) {
#if defined(__CUDA_ARCH__)
  const uint64_t hi = __umul64hi(bits, mass), lo = bits * mass;
#else
  const unsigned __int128 product = static_cast<unsigned __int128>(bits) * mass;
  const uint64_t hi = static_cast<uint64_t>(product >> 64), lo = static_cast<uint64_t>(product);
#endif
  return (hi << 11) | (lo >> 53);
}

// e^z for z <= 0, within about one ulp of the true value: exactly 1 at 0, and 0 below -708 (where e^z is no longer
// a normal double) and for NaN. z = k ln2 + r with |r| <= ln2 / 2 (Cody-Waite), e^r by its Taylor series to degree
// 13 (truncation below 2^-57), times 2^k built from the exponent bits.
NW_HOST_DEVICE inline double exp_nonpositive(double z) {
  if (!(z > -708.0)) return 0.0;
  constexpr double kShift = 0x1.8p52;  // adding it rounds to an integer
  const double k = ::fma(z, 0x1.71547652b82fep0, kShift) - kShift;
  double r = ::fma(k, -0x1.62e42fefa39efp-1, z);  // ln2, high part
  r = ::fma(k, -0x1.abc9e3b39803fp-56, r);         // ln2, low part
  double p = 0x1.6124613a86d09p-33;                // 1/13!
  p = ::fma(p, r, 0x1.1eed8eff8d898p-29);          // 1/12!
  p = ::fma(p, r, 0x1.ae64567f544e4p-26);
  p = ::fma(p, r, 0x1.27e4fb7789f5cp-22);
  p = ::fma(p, r, 0x1.71de3a556c734p-19);
  p = ::fma(p, r, 0x1.a01a01a01a01ap-16);
  p = ::fma(p, r, 0x1.a01a01a01a01ap-13);
  p = ::fma(p, r, 0x1.6c16c16c16c17p-10);
  p = ::fma(p, r, 0x1.1111111111111p-7);
  p = ::fma(p, r, 0x1.5555555555555p-5);
  p = ::fma(p, r, 0x1.5555555555555p-3);
  p = ::fma(p, r, 0.5);
  p = ::fma(p, r, 1.0);
  p = ::fma(p, r, 1.0);
  const int64_t exponent = static_cast<int64_t>(k) + 1023;  // k in [-1022, 0]
  return p * detail::bit_cast<double>(static_cast<uint64_t>(exponent) << 52);
}

// The factor that divides logits by the temperature (> 0), kept finite so that (x - max) * it is never 0 * inf.
NW_HOST_DEVICE inline double inverse_temperature(double temperature) {
  const double inv = 1.0 / temperature;
  return inv < 0x1.0p1000 ? inv : 0x1.0p1000;
}

// floor(e^((x - max) * inv_t) * 2^40): the fixed-point weight of a token whose adjusted logit is x, in a row whose
// largest one is `max` (finite). -inf and NaN weigh 0; so does anything more than 29 temperatures below the top,
// as e^-29 * 2^40 < 1 (the shortcut changes no result and skips most exps of a peaked row).
NW_HOST_DEVICE inline uint64_t fixed_weight(float x, float max, double inv_t) {
  if (!(x > -std::numeric_limits<float>::infinity())) return 0;
  const double z = (static_cast<double>(x) - static_cast<double>(max)) * inv_t;
  if (!(z >= -29.0)) return 0;
  return static_cast<uint64_t>(exp_nonpositive(z) * 0x1.0p40);
}

NW_HOST_DEVICE inline uint64_t rank_key(uint64_t weight, int64_t id) {
  return (weight << kIdBits) | static_cast<uint64_t>((kMaxSamplingVocab - 1) - id);
}
NW_HOST_DEVICE inline uint64_t key_weight(uint64_t key) { return key >> kIdBits; }
NW_HOST_DEVICE inline int32_t key_id(uint64_t key) {
  return static_cast<int32_t>((kMaxSamplingVocab - 1) - static_cast<int64_t>(key & (kMaxSamplingVocab - 1)));
}

// Top-p keeps a token while the mass ranked before it is below this share of the kept mass `mass`: one double
// product on both sides, and at least 1, so that the first token is always kept.
NW_HOST_DEVICE inline uint64_t top_p_threshold(double top_p, uint64_t mass) {
  const uint64_t t = static_cast<uint64_t>(top_p * static_cast<double>(mass));
  return t > 0 ? t : 1;
}

// Min-p keeps weights >= ceil(min_p * 2^40) (the top weight is 2^40; min_p in [0, 1]).
NW_HOST_DEVICE inline uint64_t min_p_threshold(double min_p) {
  const double v = min_p * 0x1.0p40;
  const uint64_t t = static_cast<uint64_t>(v);
  return static_cast<double>(t) < v ? t + 1 : t;
}

// A float's order as an unsigned integer: larger value, larger result; -0 equals +0; NaN is 0, below -inf.
NW_HOST_DEVICE inline uint32_t ordered_bits(float v) {
  if (v != v) return 0;
  const uint32_t bits = detail::bit_cast<uint32_t>(v + 0.0f);  // -0 + 0 = +0
  return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}
NW_HOST_DEVICE inline float ordered_to_float(uint32_t o) {
  if (o == 0) return std::numeric_limits<float>::quiet_NaN();
  return detail::bit_cast<float>((o & 0x80000000u) ? o & 0x7fffffffu : ~o);
}

// A logit with its id: the larger key is the larger value, and on ties the lower id (greedy choice, top logprobs).
NW_HOST_DEVICE inline uint64_t logit_key(float v, int64_t id) {
  return (static_cast<uint64_t>(ordered_bits(v)) << 32) | (0xffffffffu - static_cast<uint32_t>(id));
}
NW_HOST_DEVICE inline int32_t logit_key_id(uint64_t key) {
  return static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(key));
}
NW_HOST_DEVICE inline float logit_key_value(uint64_t key) { return ordered_to_float(static_cast<uint32_t>(key >> 32)); }

}  // namespace narwhal::ops
