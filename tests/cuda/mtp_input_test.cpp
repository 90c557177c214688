// ops::cuda::mtp_input against its CPU reference (ops::embedding, then ops::rms_norm of each half, as
// DeepSeekModel::forward_mtp composes them), at the trained tiny model's, V2-Lite's and V3's hidden sizes and one that
// is not a multiple of a CTA's chunks. Tolerance 8e-3 (max |diff| / max |ref|): both sides norm in F32 and the GPU
// rounds each value to BF16 once (2^-8 relative at worst, 3.9e-3), with a different summation order. Outputs start
// poisoned; shapes it does not take are refused.
#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "cuda/gpu_test_util.h"
#include "ops/cuda/mtp_input.h"
#include "ops/embed.h"
#include "ops/norm.h"

namespace narwhal {
namespace {

using testing::random_bf16;

TEST(CudaMtpInput, MatchesEmbeddingThenRmsNormOfEachHalf) {
  NW_REQUIRE_GPU();
  for (int64_t h : {256, 2048, 7168, 200}) {
    SCOPED_TRACE("hidden " + std::to_string(h));
    const int64_t vocab = 500, tokens = 19;
    auto table = random_bf16({vocab, h}, 1), hidden = random_bf16({tokens, h}, 2, 3.0f);
    auto enorm = random_bf16({h}, 3), hnorm = random_bf16({h}, 4);
    std::vector<int32_t> ids(tokens);
    for (int64_t t = 0; t < tokens; ++t) ids[t] = static_cast<int32_t>((t * 97 + 5) % vocab);
    Tensor joined = testing::poisoned(DType::kBF16, {tokens, 2 * h});
    ops::cuda::mtp_input(testing::device_i32(ids, {tokens}), table.device, hidden.device, enorm.device, hnorm.device,
                         1e-6f, joined, nullptr);

    Tensor embedded = Tensor::zeros(DType::kF32, {tokens, h}), e = Tensor::zeros(DType::kF32, {tokens, h});
    Tensor hn = Tensor::zeros(DType::kF32, {tokens, h});
    ops::embedding(ids, table.host, embedded);
    ops::rms_norm(embedded, enorm.host, 1e-6f, e);
    ops::rms_norm(hidden.host, hnorm.host, 1e-6f, hn);
    Tensor want = Tensor::zeros(DType::kF32, {tokens, 2 * h});
    for (int64_t t = 0; t < tokens; ++t) {
      std::memcpy(want.f32() + t * 2 * h, e.f32() + t * h, h * sizeof(float));
      std::memcpy(want.f32() + t * 2 * h + h, hn.f32() + t * h, h * sizeof(float));
    }
    testing::expect_close(joined, want, 8e-3, "mtp_input hidden " + std::to_string(h));
  }
}

TEST(CudaMtpInput, RefusesOtherShapes) {
  NW_REQUIRE_GPU();
  const Tensor ids = testing::device_i32({1, 2}, {2});
  const Tensor table = Tensor::empty(DType::kBF16, {10, 12}, Device::kCUDA);  // 12: not a multiple of 8
  const Tensor hidden = Tensor::empty(DType::kBF16, {2, 12}, Device::kCUDA);
  const Tensor w = Tensor::empty(DType::kBF16, {12}, Device::kCUDA);
  Tensor joined = Tensor::empty(DType::kBF16, {2, 24}, Device::kCUDA);
  EXPECT_THROW(ops::cuda::mtp_input(ids, table, hidden, w, w, 1e-6f, joined, nullptr), Error);
  const Tensor table16 = Tensor::empty(DType::kBF16, {10, 16}, Device::kCUDA);
  const Tensor w16 = Tensor::empty(DType::kBF16, {16}, Device::kCUDA);
  const Tensor hidden16 = Tensor::empty(DType::kBF16, {2, 16}, Device::kCUDA);
  Tensor narrow = Tensor::empty(DType::kBF16, {2, 16}, Device::kCUDA);  // the joined row is 2H wide
  EXPECT_THROW(ops::cuda::mtp_input(ids, table16, hidden16, w16, w16, 1e-6f, narrow, nullptr), Error);
}

}  // namespace
}  // namespace narwhal
