// Batch invariance of the decode-sized GPU ops: a row's output bits must not depend on how many rows share the call
// (M, q_len) or on the other sequences of the batch, so that a speculative verify (B x (1 + N) rows) computes
// exactly what plain decoding (B rows) does and greedy ids agree bit for bit (docs/speculative.md). Compared with
// memcmp, no tolerance: the scope is what the kernels promise, the BF16 linears and BMMs up to kBf16SmallMMaxRows
// (the own GEMV; cuBLASLt above chooses its algorithm per M), the FP8 ones up to 16 (the own small-M kernel), and
// mla_decode while the batch has no more 64-key tiles than the kernel has parts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "core/cuda_check.h"
#include "cuda/gpu_test_util.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/mla.h"

namespace narwhal {
namespace {

using testing::random_bf16;

constexpr int64_t kBf16Rows = ops::cuda::kBf16SmallMMaxRows, kFp8Rows = ops::cuda::kFp8SmallMMaxRows;

// Rows [0, m) of `got` ([m, cols] BF16 on the device) against the same rows of `all` ([>= m, cols]) bit for bit;
// returns the first row that differs, or -1.
int64_t first_differing_row(const Tensor& got, const Tensor& all, int64_t m, int64_t cols) {
  const Tensor a = got.to(Device::kCPU), b = all.to(Device::kCPU);
  for (int64_t r = 0; r < m; ++r)
    if (std::memcmp(a.ptr<uint16_t>() + r * cols, b.ptr<uint16_t>() + r * cols, cols * sizeof(uint16_t)) != 0)
      return r;
  return -1;
}

class CudaBatchInvariance : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::gpu_available()) GTEST_SKIP() << "no CUDA device";
    runner_ = std::make_unique<ops::cuda::GemmRunner>();
  }
  std::unique_ptr<ops::cuda::GemmRunner> runner_;
};

// V2-Lite's q_proj and kv_a_proj, a lm_head-like wide N, and a random-config model's odd dims.
TEST_F(CudaBatchInvariance, LinearBf16RowsDoNotDependOnM) {
  for (auto [n, k] : {std::pair<int64_t, int64_t>{3072, 2048}, {576, 2048}, {10240, 1024}, {1001, 360}}) {
    auto x = random_bf16({kBf16Rows, k}, 100 + n);
    auto w = random_bf16({n, k}, 200 + n, 1.0f / std::sqrt(static_cast<float>(k)));
    Tensor all = Tensor::empty(DType::kBF16, {kBf16Rows, n}, Device::kCUDA);
    runner_->linear_bf16(x.device, w.device, all, nullptr);
    for (int64_t m = 1; m < kBf16Rows; ++m) {
      Tensor y = Tensor::empty(DType::kBF16, {m, n}, Device::kCUDA);
      runner_->linear_bf16(x.device.rows(0, m), w.device, y, nullptr);
      EXPECT_EQ(first_differing_row(y, all, m, n), -1) << "linear_bf16 n " << n << " k " << k << " m " << m;
    }
  }
}

// V3's q_a_proj / kv_a_proj (K 7168), o_proj-like N 7168, and a K that is not a whole number of 128-blocks.
TEST_F(CudaBatchInvariance, LinearFp8RowsDoNotDependOnM) {
  for (auto [n, k] : {std::pair<int64_t, int64_t>{2112, 7168}, {7168, 2048}, {1536, 1552}}) {
    auto x = random_bf16({kFp8Rows, k}, 300 + n);
    auto w = testing::random_fp8_blocks({n, k}, 400 + n);
    const ops::cuda::Fp8BlockWeight weight = ops::cuda::make_fp8_block_weight(w.q_device, w.scale_inv_device);
    Tensor all = Tensor::empty(DType::kBF16, {kFp8Rows, n}, Device::kCUDA);
    runner_->linear_fp8(x.device, weight, all, nullptr);
    for (int64_t m = 1; m < kFp8Rows; ++m) {
      Tensor y = Tensor::empty(DType::kBF16, {m, n}, Device::kCUDA);
      runner_->linear_fp8(x.device.rows(0, m), weight, y, nullptr);
      EXPECT_EQ(first_differing_row(y, all, m, n), -1) << "linear_fp8 n " << n << " k " << k << " m " << m;
    }
  }
}

// The absorbed attention's BMMs per head at decode sizes: q_nope x W_UK (BF16 through the transposed copy the
// loader makes, FP8 through split_kv_b_fp8) and o_latent x W_UV^T.
TEST_F(CudaBatchInvariance, AbsorbedBmmRowsDoNotDependOnM) {
  constexpr int64_t kNope = 128, kV = 128, kLora = 512, kHeads = 16;
  auto q = random_bf16({kFp8Rows, kHeads, kNope}, 500);
  auto o_latent = random_bf16({kFp8Rows, kHeads, kLora}, 501);
  auto kv_b = random_bf16({kHeads * (kNope + kV), kLora}, 502, 1.0f / std::sqrt(static_cast<float>(kLora)));
  const Tensor w_uk_t = ops::cuda::transpose_w_uk_bf16(kv_b.device, kHeads, kNope, kV);
  auto kv_b8 = testing::random_fp8_blocks({kHeads * (kNope + kV), kLora}, 503);
  const ops::cuda::MlaFp8Weights fp8 = ops::cuda::split_kv_b_fp8(kv_b8.q, kv_b8.scale_inv, kHeads);
  // Each product of rows [0, m) into y [m, heads, width].
  struct Product {
    std::string name;
    int64_t width, rows;
    std::function<void(int64_t m, Tensor& y)> run;
  };
  const std::vector<Product> products = {
      {"bf16 q_nope x W_UK", kLora, kBf16Rows,
       [&](int64_t m, Tensor& y) {
         runner_->bmm_bf16(ops::cuda::head_slices(q.device.rows(0, m), 0, kNope),
                           ops::cuda::row_groups(w_uk_t.reshape({kHeads * kLora, kNope}), kHeads, 0, kLora), true,
                           ops::cuda::head_slices(y, 0, kLora), nullptr);
       }},
      {"bf16 o_latent x W_UV^T", kV, kBf16Rows,
       [&](int64_t m, Tensor& y) {
         runner_->bmm_bf16(ops::cuda::head_slices(o_latent.device.rows(0, m), 0, kLora),
                           ops::cuda::row_groups(kv_b.device, kHeads, kNope, kV), true, ops::cuda::head_slices(y, 0, kV),
                           nullptr);
       }},
      {"fp8 q_nope x W_UK", kLora, kFp8Rows,
       [&](int64_t m, Tensor& y) {
         runner_->bmm_fp8(ops::cuda::head_slices(q.device.rows(0, m), 0, kNope), fp8.w_uk_t,
                          ops::cuda::head_slices(y, 0, kLora), nullptr);
       }},
      {"fp8 o_latent x W_UV^T", kV, kFp8Rows, [&](int64_t m, Tensor& y) {
         runner_->bmm_fp8(ops::cuda::head_slices(o_latent.device.rows(0, m), 0, kLora), fp8.w_uv,
                          ops::cuda::head_slices(y, 0, kV), nullptr);
       }}};
  for (const Product& p : products) {
    Tensor all = Tensor::empty(DType::kBF16, {p.rows, kHeads, p.width}, Device::kCUDA);
    p.run(p.rows, all);
    for (int64_t m = 1; m < p.rows; ++m) {
      Tensor y = Tensor::empty(DType::kBF16, {m, kHeads, p.width}, Device::kCUDA);
      p.run(m, y);
      EXPECT_EQ(first_differing_row(y, all, m, kHeads * p.width), -1) << p.name << " m " << m;
    }
  }
}

// A verify (q_len 4 or 8 per sequence, causal among the new tokens) against decoding each new token alone (q_len 1,
// the keys up to it), for the whole batch and for one sequence alone: the same output bits. Lengths straddle the
// 64-key tiles; 16 heads (row blocks of 16 rows at q_len 1, of 64 at q_len 4) and 128 heads (V3: 2 row blocks at
// q_len 1, 8 at q_len 4).
TEST(CudaBatchInvarianceMla, VerifyRowsEqualDecodeRows) {
  NW_REQUIRE_GPU();
  constexpr int64_t kLora = 512, kWidth = 576;
  int device = 0, sms = 0;
  NW_CUDA_CHECK(cudaGetDevice(&device));
  NW_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  for (auto [heads, page, verify_len] : {std::tuple<int64_t, int64_t, int64_t>{16, 16, 4}, {128, 64, 4}, {16, 16, 8}}) {
    const std::vector<int64_t> lens = {61, 64, 700, 1990};  // keys with the new tokens
    const int64_t batch = static_cast<int64_t>(lens.size());
    const testing::ScatteredPages pages = testing::scattered_pages(lens, page, 600 + heads);
    auto cache = random_bf16({pages.pool_pages, page, kWidth}, 601);
    auto q = random_bf16({batch * verify_len, heads, kWidth}, 602);
    const Tensor table = testing::device_i32(pages.table, {batch, pages.max_pages});
    auto decode = [&](const Tensor& q_rows, const Tensor& page_table, const std::vector<int32_t>& seq_lens,
                      int64_t q_len) {
      const int64_t seqs = static_cast<int64_t>(seq_lens.size());
      ops::cuda::MlaDecodeParams p;
      p.heads = heads;
      p.q_len = q_len;
      p.softmax_scale = 1.0f / std::sqrt(192.0f);
      p.page_size = page;
      const size_t bytes = ops::cuda::mla_decode_workspace_bytes(seqs, p, sms);
      Tensor ws = Tensor::empty(DType::kF32, {static_cast<int64_t>(bytes / 4) + 1}, Device::kCUDA);
      Tensor out = testing::poisoned(DType::kBF16, {seqs * q_len, heads, kLora});
      ops::cuda::mla_decode(q_rows, cache.device, page_table, testing::device_i32(seq_lens, {seqs}), Tensor{}, p, out,
                            ws.data,
                            bytes, nullptr);
      NW_CUDA_CHECK(cudaDeviceSynchronize());
      return out.to(Device::kCPU);
    };
    std::vector<int32_t> verify_lens(lens.begin(), lens.end());
    const Tensor verify = decode(q.device, table, verify_lens, verify_len);
    const int64_t row_elems = heads * kLora;
    for (int64_t t = 0; t < verify_len; ++t) {
      // Token t of every sequence, decoded as a batch: q rows b * q_len + t, keys up to it.
      Tensor q_t = Tensor::empty(DType::kBF16, {batch, heads, kWidth}, Device::kCUDA);
      std::vector<int32_t> lens_t;
      for (int64_t b = 0; b < batch; ++b) {
        NW_CUDA_CHECK(cudaMemcpy(q_t.rows(b, b + 1).data, q.device.rows(b * verify_len + t, b * verify_len + t + 1).data,
                                 heads * kWidth * 2, cudaMemcpyDeviceToDevice));
        lens_t.push_back(static_cast<int32_t>(lens[b] - verify_len + t + 1));
      }
      const Tensor batched = decode(q_t, table, lens_t, 1);
      for (int64_t b = 0; b < batch; ++b) {
        const uint16_t* want = verify.ptr<uint16_t>() + (b * verify_len + t) * row_elems;
        EXPECT_EQ(std::memcmp(batched.ptr<uint16_t>() + b * row_elems, want, row_elems * 2), 0)
            << "heads " << heads << " q_len " << verify_len << " sequence " << b << " token " << t << ": decode in the batch";
        // The same token with its sequence alone in the batch.
        const Tensor alone = decode(q_t.rows(b, b + 1), table.rows(b, b + 1), {lens_t[b]}, 1);
        EXPECT_EQ(std::memcmp(alone.ptr<uint16_t>(), want, row_elems * 2), 0)
            << "heads " << heads << " q_len " << verify_len << " sequence " << b << " token " << t << ": decode alone";
      }
    }
  }
}

}  // namespace
}  // namespace narwhal
