// GPU memory-bound ops against the CPU reference ops, at DeepSeek shapes and odd ones (and the vocab-parallel ones).
// Tolerance: inputs are exact BF16 values on both sides, math is FP32; the GPU rounds its BF16 outputs
// once, so the error is BF16 rounding: relative 2^-8 = 3.9e-3 per element, checked as max|diff|/max|ref| <= 8e-3.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "core/cuda_check.h"
#include "cuda/gpu_test_util.h"
#include "ops/activation.h"
#include "ops/cuda/elementwise.h"
#include "ops/embed.h"
#include "ops/norm.h"
#include "ops/rope.h"
#include "ops/sampling.h"
#include "test_util.h"

namespace narwhal {
namespace {

using testing::random_bf16;
using testing::expect_close;
using testing::poisoned;
using testing::to_host_f32;

constexpr double kBf16Tolerance = 8e-3;

// Device I32 vector of the values.
Tensor device_ints(const std::vector<int32_t>& values) {
  return testing::device_i32(values, {static_cast<int64_t>(values.size())});
}

TEST(CudaElementwise, EmbeddingThenAddRmsNorm) {
  NW_REQUIRE_GPU();
  for (int64_t hidden : {2048, 7168, 200}) {
    const int64_t vocab = 1000, tokens = 37;
    auto table = random_bf16({vocab, hidden}, 1);
    auto weight = random_bf16({hidden}, 2, 0.1f);
    for (int64_t i = 0; i < hidden; ++i) weight.host.f32()[i] += 1.0f;  // keep the device copy in sync below
    weight.device = [&] {
      Tensor bits = Tensor::zeros(DType::kBF16, {hidden});
      for (int64_t i = 0; i < hidden; ++i) {
        bits.ptr<uint16_t>()[i] = float_to_bf16(weight.host.f32()[i]);
        weight.host.f32()[i] = bf16_to_float(bits.ptr<uint16_t>()[i]);
      }
      return bits.to(Device::kCUDA);
    }();
    auto delta = random_bf16({tokens, hidden}, 3);
    std::vector<int32_t> ids(tokens);
    for (int64_t t = 0; t < tokens; ++t) ids[t] = static_cast<int32_t>((t * 131 + 7) % vocab);

    Tensor residual = poisoned(DType::kF32, {tokens, hidden});
    ops::cuda::embedding(device_ints(ids), table.device, residual, nullptr);
    Tensor ref_residual = Tensor::zeros(DType::kF32, {tokens, hidden});
    ops::embedding(ids, table.host, ref_residual);
    expect_close(residual, ref_residual, 0.0, "embedding");

    Tensor out = poisoned(DType::kBF16, {tokens, hidden}), out_f32 = poisoned(DType::kF32, {tokens, hidden});
    ops::cuda::add_rms_norm(residual, delta.device, weight.device, 1e-6f, out, nullptr, &out_f32);
    for (int64_t i = 0; i < ref_residual.numel(); ++i) ref_residual.f32()[i] += delta.host.f32()[i];
    Tensor ref_out = Tensor::zeros(DType::kF32, {tokens, hidden});
    ops::rms_norm(ref_residual, weight.host, 1e-6f, ref_out);
    expect_close(residual, ref_residual, 1e-6, "residual += delta");
    expect_close(out, ref_out, kBf16Tolerance, "add_rms_norm hidden " + std::to_string(hidden));
    expect_close(out_f32, ref_out, 1e-5, "add_rms_norm F32 output, hidden " + std::to_string(hidden));
    // DP attention gathers the F32 output and rounds it on the far side: it must give the BF16 output's bits, and
    // the host's float_to_bf16 of each value.
    Tensor rounded = poisoned(DType::kBF16, {tokens, hidden});
    ops::cuda::f32_to_bf16(out_f32, rounded, nullptr);
    const Tensor rounded_host = rounded.to(Device::kCPU), out_host = out.to(Device::kCPU);
    const Tensor f32_host = out_f32.to(Device::kCPU);
    for (int64_t i = 0; i < rounded_host.numel(); ++i) {
      ASSERT_EQ(rounded_host.ptr<uint16_t>()[i], out_host.ptr<uint16_t>()[i]) << "f32_to_bf16 element " << i;
      ASSERT_EQ(rounded_host.ptr<uint16_t>()[i], float_to_bf16(f32_host.f32()[i])) << "float_to_bf16 element " << i;
    }
    // Without a delta (the first layer): the residual stays, the norm is of it alone.
    Tensor out2 = poisoned(DType::kBF16, {tokens, hidden});
    ops::cuda::add_rms_norm(residual, Tensor(), weight.device, 1e-6f, out2, nullptr);
    expect_close(residual, ref_residual, 1e-6, "residual without delta");
    expect_close(out2, ref_out, kBf16Tolerance, "rms_norm without delta, hidden " + std::to_string(hidden));
  }
}

TEST(CudaElementwise, RmsNormOnStridedRows) {
  NW_REQUIRE_GPU();
  const int64_t rows = 19, width = 576, n = 512;  // the latent part of kv_a's output
  auto x = random_bf16({rows, width}, 4, 3.0f);
  auto weight = random_bf16({n}, 5);
  ops::cuda::rms_norm_rows(x.device.data, rows, n, width, weight.device, 1e-6f, nullptr);
  ops::rms_norm_strided(x.host.f32(), rows, n, width, weight.host.f32(), 1e-6f);
  expect_close(x.device, x.host, kBf16Tolerance, "strided rms_norm (the rope tail must stay untouched)");
}

// The fused MLA step op: kv_a norm + RoPE + cache store, q_pe rotated in place or into the absorbed query's tail.
TEST(CudaElementwise, MlaRopeAndLatentStoreMatchReference) {
  NW_REQUIRE_GPU();
  for (bool interleave : {true, false}) {
    for (bool into_absorbed : {false, true}) {
      const int64_t tokens = 21, heads = 3, nope = 128, rope = 64, kv_lora = 512, page = 16, pages = 8;
      auto q = random_bf16({tokens, heads, nope + rope}, 6);
      auto kv = random_bf16({tokens, kv_lora + rope}, 7, 3.0f);
      auto norm = random_bf16({kv_lora}, 8);
      std::vector<int32_t> positions(tokens);
      std::vector<float> inv(rope / 2);
      for (int64_t i = 0; i < rope / 2; ++i) inv[i] = std::pow(10000.0f, -2.0f * i / rope);
      ops::RopeParams params{inv, 1.3f, interleave};
      ops::cuda::RopeTable table{Tensor::from_floats(inv, {rope / 2}).to(Device::kCUDA), 1.3f, interleave};
      Tensor slots = Tensor::zeros(DType::kI64, {tokens});
      for (int64_t t = 0; t < tokens; ++t) {
        positions[t] = static_cast<int32_t>(3000 + 7 * t);                   // large angles, late in a context
        slots.ptr<int64_t>()[t] = t == 5 ? -1 : (pages * page - 1 - 3 * t);  // scattered; token 5 not stored
      }
      Tensor cache = poisoned(DType::kBF16, {pages, page, kv_lora + rope});
      // The absorbed query: [T, H, kv_lora + rope], q_pe lands in its last `rope` columns.
      Tensor q_abs = poisoned(DType::kBF16, {tokens, heads, kv_lora + rope});
      Tensor& q_pe_out = into_absorbed ? q_abs : q.device;
      ops::cuda::mla_rope_and_store(q.device, nope, kv.device, norm.device, 1e-6f, device_ints(positions),
                                    slots.to(Device::kCUDA), table, cache, q_pe_out, into_absorbed ? kv_lora : nope,
                                    nullptr);
      ops::apply_rope(q.host.f32() + nope, tokens, heads, heads * (nope + rope), nope + rope, positions.data(),
                      params);
      ops::rms_norm_strided(kv.host.f32(), tokens, kv_lora, kv_lora + rope, norm.host.f32(), 1e-6f);
      ops::apply_rope(kv.host.f32() + kv_lora, tokens, 1, kv_lora + rope, 0, positions.data(), params);
      const std::string what = std::string(interleave ? "interleaved" : "neox") + (into_absorbed ? ", absorbed" : "");
      if (into_absorbed) {
        Tensor got = to_host_f32(q_abs);
        for (int64_t r = 0; r < tokens * heads; ++r) {
          testing::ErrorStats e = testing::compare(got.f32() + r * (kv_lora + rope) + kv_lora,
                                                   q.host.f32() + r * (nope + rope) + nope, rope);
          EXPECT_LE(e.rel, kBf16Tolerance) << "q_pe of row " << r << " " << what;
        }
      } else {
        expect_close(q.device, q.host, kBf16Tolerance, "rope on q " + what);
      }
      Tensor stored = to_host_f32(cache);
      for (int64_t t = 0; t < tokens; ++t) {
        if (t == 5) continue;
        testing::ErrorStats e = testing::compare(stored.f32() + slots.ptr<int64_t>()[t] * (kv_lora + rope),
                                                 kv.host.f32() + t * (kv_lora + rope), kv_lora + rope);
        EXPECT_LE(e.rel, kBf16Tolerance) << "latent of token " << t << " " << what;
      }
    }
  }
}

TEST(CudaElementwise, SiluAndMulAndArgmax) {
  NW_REQUIRE_GPU();
  const int64_t rows = 9, inter = 1407;
  auto gate_up = random_bf16({rows, 2 * inter}, 8, 2.0f);
  Tensor out = poisoned(DType::kBF16, {rows, inter});
  ops::cuda::silu_and_mul(gate_up.device, out, nullptr);
  Tensor ref = Tensor::zeros(DType::kF32, {rows, inter});
  ops::silu_and_mul(gate_up.host, ref);
  expect_close(out, ref, kBf16Tolerance, "silu_and_mul");

  // V3's vocab (16-byte loads) and an odd one (scalar loads); row 1 ties its maximum at both ends of the row,
  // row 2 has it in the last column, row 3 at column 0 with -0 and +0 around it.
  for (int64_t vocab : {129280, 102401}) {
    const int64_t batch = 5;
    auto logits = random_bf16({batch, vocab}, 9, 4.0f);
    float* host = logits.host.f32();
    host[vocab + 7] = host[2 * vocab - 1] = 100.0f;
    host[3 * vocab - 1] = 100.0f;
    for (int64_t i = 3 * vocab; i < 4 * vocab; ++i) host[i] = -1.0f - static_cast<float>(i % 3);
    host[3 * vocab] = -0.0f;
    host[3 * vocab + 1] = 0.0f;
    Tensor ids = poisoned(DType::kI32, {batch});
    ops::cuda::argmax(logits.host.to(Device::kCUDA), ids, nullptr);
    Tensor got = ids.to(Device::kCPU);
    for (int64_t b = 0; b < batch; ++b)
      EXPECT_EQ(got.ptr<int32_t>()[b], ops::argmax(host + b * vocab, vocab)) << "row " << b << " vocab " << vocab;
  }
}

// A vocab-parallel rank's embedding (ids outside its rows give zeros) and the join of lm_head shards (the last
// shard padded), against the CPU twins: both copy values, so they agree exactly.
TEST(CudaElementwise, VocabParallelEmbeddingAndJoinedShards) {
  NW_REQUIRE_GPU();
  const int64_t rows = 136, hidden = 200, first = 272;  // rank 2 of a 1000-word vocabulary split in 8-row groups
  auto table = random_bf16({rows, hidden}, 11);
  const std::vector<int32_t> ids = {0, 271, 272, 300, 407, 408, 999};
  Tensor out = poisoned(DType::kF32, {static_cast<int64_t>(ids.size()), hidden});
  ops::cuda::embedding(device_ints(ids), table.device, out, nullptr, first);
  Tensor ref = Tensor::zeros(DType::kF32, {static_cast<int64_t>(ids.size()), hidden});
  ops::embedding(ids, table.host, ref, first);
  expect_close(out, ref, 0.0, "embedding shard");

  const int64_t parts = 8, per_rank = 128, vocab = 1000, batch = 3;  // the last shard has 104 real columns
  const Tensor shards_host = random_bf16({parts * batch, per_rank}, 12).host;
  Tensor joined = poisoned(DType::kF32, {batch, vocab});
  ops::cuda::join_vocab_shards(shards_host.to(Device::kCUDA), parts, joined, nullptr);
  Tensor want = Tensor::zeros(DType::kF32, {batch, vocab});
  ops::join_vocab_shards(shards_host, parts, want);
  expect_close(joined, want, 0.0, "joined shards");
}

// A tree verify's kept paths moved into place in every layer (3 layers of 40 rows of 576): moves in order, some
// reading a row an earlier one wrote (path nodes 2, 3 -> slots 1, 2), as KvCache::keep_tree_path makes them.
TEST(CudaElementwise, MoveRowsInOrderInEveryLayer) {
  NW_REQUIRE_GPU();
  const int64_t layers = 3, rows = 40, width = 576;
  auto x = random_bf16({layers, rows * width}, 13);
  const std::vector<int64_t> moves = {12, 11, 13, 12, 30, 25, 5, 39};  // (from, to) pairs
  Tensor want = x.host;  // the moves applied one after another on the host
  for (int64_t l = 0; l < layers; ++l)
    for (size_t m = 0; m < moves.size(); m += 2)
      std::copy_n(want.f32() + (l * rows + moves[m]) * width, width, want.f32() + (l * rows + moves[m + 1]) * width);
  Tensor moves_host = Tensor::zeros(DType::kI64, {static_cast<int64_t>(moves.size() / 2), 2});
  std::copy(moves.begin(), moves.end(), moves_host.ptr<int64_t>());
  ops::cuda::move_rows(x.device, width, moves_host.to(Device::kCUDA), nullptr);
  expect_close(x.device, want, 0.0, "moved rows");
}

}  // namespace
}  // namespace narwhal
