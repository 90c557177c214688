// GPU MLA prefill (gather -> decompression -> varlen causal flash attention) against the CPU reference
// ops::mla_attention_decompressed, on ragged batches with cached prefixes over scattered pages.
//
// Tolerance: both sides read the same BF16-exact q, kv_b and latents. The GPU path additionally rounds to
// BF16 (unit roundoff 2^-8 = 3.9e-3) the decompressed K/V (as the production cuBLASLt GEMM writes them), the
// softmax weights P before the PV product, and the output. The output rounding alone reaches 2^-8 of the
// largest element; the K/V and P roundings are independent per element and average out over the keys, adding
// well under that again. FP32 accumulation order differences are ~1e-6. Bound: max|diff| / max|ref| <= 1e-2.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "core/cuda_check.h"
#include "cuda/gpu_test_util.h"
#include "ops/attention.h"
#include "ops/cuda/mla.h"
#include "ops/linear.h"
#include "test_util.h"

namespace narwhal {
namespace {

using testing::random_bf16;
using testing::to_host_f32;

constexpr double kTolerance = 1e-2;
constexpr int64_t kNope = 128, kRope = 64, kV = 128, kLora = 512, kWidth = kLora + kRope;

// Host F32 values rounded to BF16 and copied to the device.
Tensor to_device_bf16(const std::vector<float>& values, std::vector<int64_t> shape) {
  Tensor bits = Tensor::zeros(DType::kBF16, std::move(shape));
  for (size_t i = 0; i < values.size(); ++i) bits.ptr<uint16_t>()[i] = float_to_bf16(values[i]);
  return bits.to(Device::kCUDA);
}

struct PrefillCase {
  int64_t heads;
  int64_t page_size;
  std::vector<std::pair<int64_t, int64_t>> seqs;  // (prefix_len, new_len)
  uint64_t seed;
};

void check_prefill(const PrefillCase& c) {
  const int64_t num_seqs = static_cast<int64_t>(c.seqs.size()), heads = c.heads;
  const ops::MlaShape shape{heads, kNope, kRope, kV, kLora, 1.0f / std::sqrt(static_cast<float>(kNope + kRope))};

  // Scattered pages with -1 padding, which the gather must never touch.
  std::vector<int64_t> lengths;
  for (auto [prefix, fresh] : c.seqs) lengths.push_back(prefix + fresh);
  const testing::ScatteredPages pages = testing::scattered_pages(lengths, c.page_size, c.seed);
  const int64_t max_pages = pages.max_pages, pool_pages = pages.pool_pages;
  const std::vector<int32_t>& page_table = pages.table;
  std::vector<int32_t> cu_q{0}, cu_k{0};
  std::vector<ops::MlaSequence> seqs;
  int64_t max_q = 0, max_k = 0;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const auto [prefix, fresh] = c.seqs[s];
    seqs.push_back({cu_q.back(), prefix, fresh, &page_table[s * max_pages]});
    cu_q.push_back(static_cast<int32_t>(cu_q.back() + fresh));
    cu_k.push_back(static_cast<int32_t>(cu_k.back() + prefix + fresh));
    max_q = std::max(max_q, fresh);
    max_k = std::max(max_k, prefix + fresh);
  }
  const int64_t tokens = cu_q.back(), keys = cu_k.back();

  // Random latents in every cache slot (used or not), queries and kv_b_proj (scaled so k and v are O(1)).
  auto cache = random_bf16({pool_pages, c.page_size, kWidth}, c.seed + 1);
  auto q = random_bf16({tokens, heads, kNope + kRope}, c.seed + 2);
  auto kv_b = random_bf16({heads * (kNope + kV), kLora}, c.seed + 3, 1.0f / std::sqrt(static_cast<float>(kLora)));

  Tensor reference = Tensor::zeros(DType::kF32, {tokens, heads, kV});
  ops::mla_attention_decompressed(q.host, kv_b.host, ops::LatentCache{cache.host, c.page_size}, seqs.data(),
                                  num_seqs, shape, reference);

  Tensor page_table_dev = testing::device_i32(page_table, {num_seqs, max_pages});
  Tensor cu_q_dev = testing::device_i32(cu_q, {num_seqs + 1}), cu_k_dev = testing::device_i32(cu_k, {num_seqs + 1});
  Tensor latents = testing::poisoned(DType::kBF16, {keys, kWidth});
  ops::cuda::mla_gather_latents(cache.device, page_table_dev, cu_k_dev, max_k, latents, nullptr);
  Tensor latents_host = to_host_f32(latents);
  for (int64_t s = 0; s < num_seqs; ++s)
    for (int64_t p = 0; p < cu_k[s + 1] - cu_k[s]; ++p) {
      const float* want = ops::LatentCache{cache.host, c.page_size}.token(seqs[s].page_table, p);
      ASSERT_TRUE(std::equal(want, want + kWidth, latents_host.f32() + (cu_k[s] + p) * kWidth))
          << "gathered latent of sequence " << s << " position " << p;
    }

  // The decompression GEMM (cuBLASLt in the model) on the host, rounded to BF16 as the GPU GEMM would write it.
  std::vector<float> kv(static_cast<size_t>(keys * heads * (kNope + kV)));
  ops::gemm(keys, heads * (kNope + kV), kLora, 1.0f, latents_host.f32(), kWidth, kv_b.host.f32(), kLora, true,
            0.0f, kv.data(), heads * (kNope + kV));
  Tensor kv_dev = to_device_bf16(kv, {keys, heads, kNope + kV});

  Tensor out = testing::poisoned(DType::kBF16, {tokens, heads, kV});
  ops::cuda::mla_prefill_attention(q.device, kv_dev, latents, cu_q_dev, cu_k_dev, max_q, shape.softmax_scale, out,
                                   nullptr);
  NW_CUDA_CHECK(cudaDeviceSynchronize());
  Tensor got = to_host_f32(out);
  const testing::ErrorStats e = testing::compare(got.f32(), reference.f32(), reference.numel());
  std::cout << "[ mla prefill ] heads " << heads << " page " << c.page_size << " tokens " << tokens << " keys "
            << keys << ": max-abs " << e.max_abs << " rel " << e.rel << "\n";
  EXPECT_LE(e.rel, kTolerance) << "max-abs " << e.max_abs;  // NaN (an unwritten output) fails here too
}

// Prefixes 0, 1, 63, 64, 200 against new lengths 1, 17, 64, 129, 1000: page boundaries, partial query and key
// tiles, a one-token sequence, and long sequences whose causal diagonal crosses many tiles.
TEST(CudaMlaPrefill, V2LiteHeadsPage64) {
  NW_REQUIRE_GPU();
  check_prefill({16, 64, {{0, 129}, {1, 1}, {63, 17}, {64, 1000}, {200, 64}}, 11});
}

TEST(CudaMlaPrefill, V2LiteHeadsPage16) {
  NW_REQUIRE_GPU();
  check_prefill({16, 16, {{200, 1000}, {0, 1}, {1, 64}, {63, 129}, {64, 17}}, 12});
}

TEST(CudaMlaPrefill, V3HeadsPage64) {
  NW_REQUIRE_GPU();
  check_prefill({128, 64, {{0, 1000}, {1, 129}, {63, 1}, {64, 17}, {200, 64}}, 13});
}

}  // namespace
}  // namespace narwhal
