// GPU GEMMs (GemmRunner: cuBLASLt BF16 GEMM/BMM on strided views, FP8 block-scaled GEMM on both paths, FP8
// BMM of absorbed MLA, per-token-group FP8 quantization) against the CPU reference ops at DeepSeek shapes.
//
// Tolerances (max |diff| / max |ref|):
// - BF16: both sides multiply the same BF16-exact operands in FP32; the GPU rounds its output to BF16 (relative
//   2^-9 with round-to-nearest, at most 2^-8 of max|ref|) and sums in another order (~1e-6): 5e-3.
// - FP8: the reference multiplies exactly what the GPU does (x quantized per row per 128 columns by the CPU
//   quantizer, which the GPU quantizer matches bit for bit, test below; weights dequantized in F32), so the same
//   5e-3. The error against the unquantized x is reported too and bounded by 6e-2: e4m3 keeps 3 mantissa bits
//   (relative 2^-4 per element), which averages down over K.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "core/cuda_check.h"
#include "cuda/gpu_test_util.h"
#include "ops/cuda/gemm.h"
#include "ops/linear.h"
#include "ops/quant.h"

namespace narwhal {
namespace {

using ops::cuda::Fp8GemmPath;
using testing::expect_close;
using testing::random_bf16;

constexpr double kGemmTolerance = 5e-3;
constexpr double kFp8VsUnquantizedTolerance = 6e-2;

std::string shape_name(int64_t m, int64_t n, int64_t k) {
  return "m " + std::to_string(m) + " n " + std::to_string(n) + " k " + std::to_string(k);
}

// The x the FP8 GEMM really multiplies: per-row-per-128 quantized and dequantized, on the host.
Tensor fp8_round_trip(const Tensor& x) {
  const int64_t m = x.size(0), k = x.size(1), groups = (k + 127) / 128;
  Tensor q = Tensor::zeros(DType::kF8E4M3, {m, k}), scale = Tensor::zeros(DType::kF32, {m, groups});
  ops::quantize_fp8_token_groups(x, q, scale);
  return ops::dequantize_fp8(q, scale, 1, 128);
}

Tensor host_linear(const Tensor& x, const Tensor& w) {
  Tensor y = Tensor::zeros(DType::kF32, {x.size(0), w.size(0)});
  ops::linear(x, w, y);
  return y;
}

class CudaGemm : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::gpu_available()) GTEST_SKIP() << "no CUDA device";
    runner_ = std::make_unique<ops::cuda::GemmRunner>();
  }
  std::unique_ptr<ops::cuda::GemmRunner> runner_;
};

TEST_F(CudaGemm, LinearBf16AtDeepSeekShapes) {
  // V2-Lite q_proj, kv_a_proj_with_mqa and o_proj; V3 q_b_proj (q_lora 1536 -> 16 TP heads x 192); odd M; and
  // decode rows (M <= 8, the own GEMV) with an odd N and a K that ends inside a warp's 1024-wide step, at 1, 2 and 4
  // columns a warp (N 4099 at M 3 and 10001 at M 6 split unevenly over the warps' column pairs and quads).
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 3072, 2048}, {37, 576, 2048}, {37, 2048, 2048},
                         {129, 3072, 1536}, {3, 1001, 1544}, {4, 576, 2048}, {2, 2048, 10944}, {7, 576, 2048},
                         {3, 4099, 1544}, {6, 10001, 520}, {8, 2048, 1000}}) {
    auto x = random_bf16({m, k}, 10 + m);
    auto w = random_bf16({n, k}, 20 + n, 1.0f / std::sqrt(static_cast<float>(k)));
    Tensor y = testing::poisoned(DType::kBF16, {m, n});
    runner_->linear_bf16(x.device, w.device, y, nullptr);
    expect_close(y, host_linear(x.host, w.host), kGemmTolerance, "linear_bf16 " + shape_name(m, n, k));

    // accumulate: y += x w^T, the residual add of o_proj / down_proj.
    auto base = random_bf16({m, n}, 30 + m);
    Tensor ref = host_linear(x.host, w.host);
    for (int64_t i = 0; i < ref.numel(); ++i) ref.f32()[i] += base.host.f32()[i];
    runner_->linear_bf16(x.device, w.device, base.device, nullptr, /*accumulate=*/true);
    expect_close(base.device, ref, kGemmTolerance, "linear_bf16 accumulate " + shape_name(m, n, k));
  }
}

// Absorbed MLA on strided views: q_latent[t, h] = q_nope[t, h] W_UK[h] written into the first 512 columns of a
// [T, H, 576] buffer, and out[t, h] = o_latent[t, h] W_UV[h]^T, with W_UK / W_UV row groups of kv_b_proj.
TEST_F(CudaGemm, BmmBf16OnHeadSlicesAndRowGroups) {
  constexpr int64_t kNope = 128, kRope = 64, kV = 128, kLora = 512;
  for (auto [tokens, heads] : {std::pair<int64_t, int64_t>{1, 16}, {7, 16}, {3, 128}}) {
    auto q = random_bf16({tokens, heads, kNope + kRope}, 40 + tokens);
    auto kv_b = random_bf16({heads * (kNope + kV), kLora}, 41, 1.0f / std::sqrt(static_cast<float>(kLora)));
    auto o_latent = random_bf16({tokens, heads, kLora}, 42 + tokens);
    Tensor q_abs = testing::poisoned(DType::kBF16, {tokens, heads, kLora + kRope});
    Tensor out = testing::poisoned(DType::kBF16, {tokens, heads, kV});
    runner_->bmm_bf16(ops::cuda::head_slices(q.device, 0, kNope), ops::cuda::row_groups(kv_b.device, heads, 0, kNope),
                      /*w_transposed=*/false, ops::cuda::head_slices(q_abs, 0, kLora), nullptr);
    runner_->bmm_bf16(ops::cuda::head_slices(o_latent.device, 0, kLora),
                      ops::cuda::row_groups(kv_b.device, heads, kNope, kV), /*w_transposed=*/true,
                      ops::cuda::head_slices(out, 0, kV), nullptr);

    Tensor ref_q = Tensor::zeros(DType::kF32, {tokens, heads, kLora});
    Tensor ref_out = Tensor::zeros(DType::kF32, {tokens, heads, kV});
    const float* wkv = kv_b.host.f32();
    for (int64_t h = 0; h < heads; ++h) {
      const float* w_uk = wkv + h * (kNope + kV) * kLora;  // [128, 512]
      ops::gemm(tokens, kLora, kNope, 1.0f, q.host.f32() + h * (kNope + kRope), heads * (kNope + kRope), w_uk,
                kLora, false, 0.0f, ref_q.f32() + h * kLora, heads * kLora);
      ops::gemm(tokens, kV, kLora, 1.0f, o_latent.host.f32() + h * kLora, heads * kLora, w_uk + kNope * kLora,
                kLora, true, 0.0f, ref_out.f32() + h * kV, heads * kV);
    }
    // Only the head slices are outputs: the rope columns of q_abs must stay poisoned (NaN).
    Tensor got = testing::to_host_f32(q_abs);
    Tensor got_latent = Tensor::zeros(DType::kF32, {tokens, heads, kLora});
    for (int64_t r = 0; r < tokens * heads; ++r) {
      std::copy(got.f32() + r * (kLora + kRope), got.f32() + r * (kLora + kRope) + kLora, got_latent.f32() + r * kLora);
      EXPECT_TRUE(std::isnan(got.f32()[r * (kLora + kRope) + kLora])) << "bmm wrote past its head slice, row " << r;
    }
    const std::string name = " tokens " + std::to_string(tokens) + " heads " + std::to_string(heads);
    expect_close(got_latent, ref_q, kGemmTolerance, "bmm_bf16 q_nope x W_UK" + name);
    // The decode's form: W_UK transposed per head at load time, a transposed-weight product.
    const Tensor w_uk_t = ops::cuda::transpose_w_uk_bf16(kv_b.device, heads, kNope, kV);
    Tensor q_abs_t = Tensor::empty(DType::kBF16, {tokens, heads, kLora}, Device::kCUDA);
    runner_->bmm_bf16(ops::cuda::head_slices(q.device, 0, kNope),
                      ops::cuda::row_groups(w_uk_t.reshape({heads * kLora, kNope}), heads, 0, kLora),
                      /*w_transposed=*/true, ops::cuda::head_slices(q_abs_t, 0, kLora), nullptr);
    expect_close(q_abs_t, ref_q, kGemmTolerance, "bmm_bf16 q_nope x transpose_w_uk_bf16" + name);
    expect_close(out, ref_out, kGemmTolerance, "bmm_bf16 o_latent x W_UV^T" + name);
  }
}

TEST_F(CudaGemm, QuantizeFp8TokenGroupsMatchesCpuBitForBit) {
  for (auto [m, k] : {std::pair<int64_t, int64_t>{5, 7168}, {33, 1552}}) {  // 1552: a partial last group
    auto x = random_bf16({m, k}, 50 + m, 3.0f);
    for (int64_t c = 0; c < k; ++c) x.host.f32()[c] = 0.0f;  // an all-zero row: scale floor, no NaN
    x.device = [&] {
      Tensor bits = Tensor::zeros(DType::kBF16, {m, k});
      for (int64_t i = 0; i < m * k; ++i) bits.ptr<uint16_t>()[i] = float_to_bf16(x.host.f32()[i]);
      return bits.to(Device::kCUDA);
    }();
    const int64_t groups = (k + 127) / 128;
    Tensor q = Tensor::empty(DType::kF8E4M3, {m, k}, Device::kCUDA);
    Tensor scale = testing::poisoned(DType::kF32, {groups, m});
    ops::cuda::quantize_fp8_token_groups(x.device, q, scale, nullptr);
    Tensor ref_q = Tensor::zeros(DType::kF8E4M3, {m, k}), ref_scale = Tensor::zeros(DType::kF32, {m, groups});
    ops::quantize_fp8_token_groups(x.host, ref_q, ref_scale);
    Tensor got_q = q.to(Device::kCPU), got_scale = scale.to(Device::kCPU);
    int64_t q_mismatches = 0, scale_mismatches = 0;
    for (int64_t i = 0; i < m * k; ++i) q_mismatches += got_q.ptr<uint8_t>()[i] != ref_q.ptr<uint8_t>()[i];
    for (int64_t r = 0; r < m; ++r)
      for (int64_t g = 0; g < groups; ++g) scale_mismatches += got_scale.f32()[g * m + r] != ref_scale.f32()[r * groups + g];
    EXPECT_EQ(q_mismatches, 0) << "m " << m << " k " << k;
    EXPECT_EQ(scale_mismatches, 0) << "m " << m << " k " << k;
  }
}

struct Fp8Case {
  int64_t m, n, k;
  Fp8GemmPath path;
  const char* path_name;
};

TEST_F(CudaGemm, LinearFp8BothPaths) {
  // DeepGEMM's V3 shapes (N x K) at decode and prefill M, M % 4 != 0 on cuBLASLt (tail rows on the small-M
  // kernel), and partial 128-blocks in N and K on the paths that take them.
  const Fp8Case cases[] = {
      {1, 2112, 7168, Fp8GemmPath::kAuto, "auto"},        {7, 24576, 1536, Fp8GemmPath::kSmallM, "small-m"},
      {64, 7168, 2048, Fp8GemmPath::kAuto, "auto"},       {17, 4096, 512, Fp8GemmPath::kSmallM, "small-m"},
      {130, 2112, 7168, Fp8GemmPath::kCublasLt, "cublaslt"}, {256, 7168, 2048, Fp8GemmPath::kCublasLt, "cublaslt"},
      {67, 576, 2048, Fp8GemmPath::kAuto, "auto"},        {5, 200, 1552, Fp8GemmPath::kSmallM, "small-m"},
      {131, 200, 1552, Fp8GemmPath::kAuto, "auto"},
  };
  for (const Fp8Case& c : cases) {
    auto x = random_bf16({c.m, c.k}, 60 + c.m);
    auto w = testing::random_fp8_blocks({c.n, c.k}, 61 + c.n);
    const ops::cuda::Fp8BlockWeight weight = ops::cuda::make_fp8_block_weight(w.q_device, w.scale_inv_device);
    Tensor y = testing::poisoned(DType::kBF16, {c.m, c.n});
    runner_->linear_fp8(x.device, weight, y, nullptr, c.path);
    const std::string name = std::string("linear_fp8 ") + c.path_name + " " + shape_name(c.m, c.n, c.k);
    expect_close(y, host_linear(fp8_round_trip(x.host), w.dequantized), kGemmTolerance, name);
    expect_close(y, host_linear(x.host, w.dequantized), kFp8VsUnquantizedTolerance, name + " vs unquantized x");
  }
}

// The FP8 absorbed-MLA BMMs with split_kv_b_fp8's weights: q_nope x W_UK and o_latent x W_UV^T.
TEST_F(CudaGemm, BmmFp8WithSplitKvB) {
  constexpr int64_t kNope = 128, kRope = 64, kV = 128, kLora = 512;
  for (auto [tokens, heads] : {std::pair<int64_t, int64_t>{1, 16}, {5, 128}, {33, 16}}) {
    auto kv_b = testing::random_fp8_blocks({heads * (kNope + kV), kLora}, 70 + heads);
    const ops::cuda::MlaFp8Weights w = ops::cuda::split_kv_b_fp8(kv_b.q, kv_b.scale_inv, heads);
    auto q = random_bf16({tokens, heads, kNope + kRope}, 71 + tokens);
    auto o_latent = random_bf16({tokens, heads, kLora}, 72 + tokens);
    Tensor q_abs = testing::poisoned(DType::kBF16, {tokens, heads, kLora + kRope});
    Tensor out = testing::poisoned(DType::kBF16, {tokens, heads, kV});
    runner_->bmm_fp8(ops::cuda::head_slices(q.device, 0, kNope), w.w_uk_t, ops::cuda::head_slices(q_abs, 0, kLora),
                     nullptr);
    runner_->bmm_fp8(ops::cuda::head_slices(o_latent.device, 0, kLora), w.w_uv, ops::cuda::head_slices(out, 0, kV),
                     nullptr);

    Tensor ref_q = Tensor::zeros(DType::kF32, {tokens, heads, kLora});
    Tensor ref_out = Tensor::zeros(DType::kF32, {tokens, heads, kV});
    for (int64_t h = 0; h < heads; ++h) {
      Tensor xq = Tensor::zeros(DType::kF32, {tokens, kNope}), xo = Tensor::zeros(DType::kF32, {tokens, kLora});
      for (int64_t t = 0; t < tokens; ++t) {
        std::copy_n(q.host.f32() + (t * heads + h) * (kNope + kRope), kNope, xq.f32() + t * kNope);
        std::copy_n(o_latent.host.f32() + (t * heads + h) * kLora, kLora, xo.f32() + t * kLora);
      }
      const float* w_uk = kv_b.dequantized.f32() + h * (kNope + kV) * kLora;
      const Tensor xq8 = fp8_round_trip(xq), xo8 = fp8_round_trip(xo);
      ops::gemm(tokens, kLora, kNope, 1.0f, xq8.f32(), kNope, w_uk, kLora, false, 0.0f, ref_q.f32() + h * kLora,
                heads * kLora);
      ops::gemm(tokens, kV, kLora, 1.0f, xo8.f32(), kLora, w_uk + kNope * kLora, kLora, true, 0.0f,
                ref_out.f32() + h * kV, heads * kV);
    }
    Tensor got = testing::to_host_f32(q_abs);
    Tensor got_latent = Tensor::zeros(DType::kF32, {tokens, heads, kLora});
    for (int64_t r = 0; r < tokens * heads; ++r)
      std::copy_n(got.f32() + r * (kLora + kRope), kLora, got_latent.f32() + r * kLora);
    const std::string name = " tokens " + std::to_string(tokens) + " heads " + std::to_string(heads);
    expect_close(got_latent, ref_q, kGemmTolerance, "bmm_fp8 q_nope x W_UK" + name);
    expect_close(out, ref_out, kGemmTolerance, "bmm_fp8 o_latent x W_UV^T" + name);
  }
}

}  // namespace
}  // namespace narwhal
