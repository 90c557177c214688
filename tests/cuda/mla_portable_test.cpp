// The shape-generic MLA attention (ops/cuda/portable.h) against a float64 reference of the same ragged causal
// attention: odd head dims, prefixes past one 1024-key chunk of its online softmax, a one-token decode row, and the
// absorbed form's shared (MQA) keys, and a speculative tree's mask (each new token sees the prefix, its ancestors and
// itself). Tolerance 1e-2 (max |diff| / max |ref|): BF16 inputs are exact on both
// sides; the GPU rounds its output to BF16 (2^-9) and sums probabilities in FP32 in another order.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "cuda/gpu_test_util.h"
#include "ops/cuda/portable.h"

namespace narwhal {
namespace {

struct Case {
  int64_t heads, a_len, b_len, v_len;
  bool shared_keys;  // absorbed form: one key/value row for every head
  std::vector<int64_t> q_lens, k_lens;
  std::vector<int32_t> parents = {};  // per query row: its parent among its sequence's new tokens; empty: causal
};

void check(const Case& c, uint64_t seed) {
  const int64_t seqs = static_cast<int64_t>(c.q_lens.size()), qk = c.a_len + c.b_len;
  std::vector<int32_t> cu_q{0}, cu_k{0};
  for (int64_t s = 0; s < seqs; ++s) {
    cu_q.push_back(cu_q.back() + static_cast<int32_t>(c.q_lens[s]));
    cu_k.push_back(cu_k.back() + static_cast<int32_t>(c.k_lens[s]));
  }
  const int64_t t = cu_q.back(), keys = cu_k.back(), kv_heads = c.shared_keys ? 1 : c.heads;
  auto q = testing::random_bf16({t, c.heads, qk}, seed);
  auto key_a = testing::random_bf16({keys, kv_heads, c.a_len}, seed + 1);
  auto key_b = testing::random_bf16({keys, c.b_len}, seed + 2);  // k_pe: shared by the heads in both forms
  auto value = testing::random_bf16({keys, kv_heads, c.v_len}, seed + 3);
  const float scale = 1.0f / std::sqrt(static_cast<float>(qk));
  Tensor ref = Tensor::zeros(DType::kF32, {t, c.heads, c.v_len});
  for (int64_t s = 0; s < seqs; ++s)
    for (int64_t i = 0; i < c.q_lens[s]; ++i)
      for (int64_t h = 0; h < c.heads; ++h) {
        const int64_t row = cu_q[s] + i, prefix = c.k_lens[s] - c.q_lens[s], visible = prefix + i + 1;
        const int64_t kh = c.shared_keys ? 0 : h;
        std::vector<char> sees(static_cast<size_t>(visible), 1);  // a tree's new tokens: the row's ancestors only
        if (!c.parents.empty()) {
          for (int64_t j = 0; j <= i; ++j) sees[static_cast<size_t>(prefix + j)] = 0;
          for (int64_t j = i; j >= 0; j = c.parents[static_cast<size_t>(cu_q[s] + j)]) sees[static_cast<size_t>(prefix + j)] = 1;
        }
        std::vector<double> p(visible, -INFINITY);
        double mx = -INFINITY, sum = 0.0;
        for (int64_t k = 0; k < visible; ++k) {
          if (!sees[static_cast<size_t>(k)]) continue;
          const int64_t key = cu_k[s] + k;
          double dot = 0.0;
          for (int64_t d = 0; d < c.a_len; ++d)
            dot += double{q.host.f32()[(row * c.heads + h) * qk + d]} * key_a.host.f32()[(key * kv_heads + kh) * c.a_len + d];
          for (int64_t d = 0; d < c.b_len; ++d)
            dot += double{q.host.f32()[(row * c.heads + h) * qk + c.a_len + d]} * key_b.host.f32()[key * c.b_len + d];
          p[k] = dot * scale;
          mx = std::max(mx, p[k]);
        }
        for (double& x : p) sum += (x = std::exp(x - mx));
        for (int64_t d = 0; d < c.v_len; ++d) {
          double acc = 0.0;
          for (int64_t k = 0; k < visible; ++k)
            acc += p[k] * value.host.f32()[((cu_k[s] + k) * kv_heads + kh) * c.v_len + d];
          ref.f32()[(row * c.heads + h) * c.v_len + d] = static_cast<float>(acc / sum);
        }
      }
  const int64_t a_head = c.shared_keys ? 0 : c.a_len, v_head = c.shared_keys ? 0 : c.v_len;
  const ops::cuda::HeadOperand a{key_a.device.data, kv_heads * c.a_len, a_head}, b{key_b.device.data, c.b_len, 0},
      v{value.device.data, kv_heads * c.v_len, v_head};
  Tensor out = testing::poisoned(DType::kBF16, {t, c.heads, c.v_len});
  int64_t max_q = 0;
  for (int64_t l : c.q_lens) max_q = std::max(max_q, l);
  ops::cuda::mla_attention_portable(q.device, c.a_len, c.b_len, a, b, v, c.v_len,
                                    testing::device_i32(cu_q, {seqs + 1}), testing::device_i32(cu_k, {seqs + 1}), max_q,
                                    c.parents.empty() ? Tensor{} : testing::device_i32(c.parents, {t}), scale, out,
                                    nullptr);
  testing::expect_close(out, ref, 1e-2, "portable attention");
}

TEST(CudaMlaPortable, DecompressedOddDimsAcrossKeyChunks) {
  NW_REQUIRE_GPU();
  check({3, 48, 32, 40, false, {5, 1, 3}, {2100, 3000, 3}}, 1);
}

TEST(CudaMlaPortable, AbsorbedSharedLatents) {
  NW_REQUIRE_GPU();
  check({4, 96, 32, 96, true, {1, 1}, {1500, 17}}, 2);
}

// A prompt chunk of 70 new tokens beside one of 33 (causal among themselves past 32 of them: a tree's mask stops at 32,
// causal rows must not).
TEST(CudaMlaPortable, CausalChunksOfManyNewTokens) {
  NW_REQUIRE_GPU();
  check({3, 48, 32, 40, false, {70, 33}, {1100, 33}}, 4);
}

// Two draft trees (a verify's: the pending token's children and grandchildren; a draft round's: two roots) beside a
// causal chain written as parents j - 1, across a 1024-key chunk.
TEST(CudaMlaPortable, AbsorbedDraftTrees) {
  NW_REQUIRE_GPU();
  check({4, 96, 32, 96, true, {6, 4, 3}, {1030, 20, 9}, {-1, 0, 0, 1, 2, 1, -1, -1, 0, 1, -1, 0, 1}}, 3);
}

}  // namespace
}  // namespace narwhal
