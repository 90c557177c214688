// GPU MoE against the CPU reference ops: the router (all three gating methods, with exact ties), the fused experts
// (BF16 and FP8 weights, shared experts folded in) at DeepSeek hidden / intermediate sizes, and the per-expert
// counts of the router's choices (integers: exactly equal).
//
// Tolerances:
// - Router ids must match exactly: logits are multiples of 1/2 (bias multiples of 1/4), so equal scores are
//   exact ties on both sides (the lower index wins) and distinct ones are far apart. Weights are FP32 on both
//   sides (exp / sums in another order): relative 1e-5.
// - Experts (max |diff| / max |ref|): the reference computes in FP32 from the same BF16 x and the same weights
//   (FP8: dequantized in F32). The GPU rounds the dequantized FP8 weight (2^-9 relative), the SiLU-and-mul
//   activations and each expert's weighted output (2^-9 each, independent, averaging over the sums) and the
//   final output (2^-8 of max|ref| at most) to BF16: 1e-2.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/cuda_check.h"
#include "cuda/gpu_test_util.h"
#include "core/error.h"
#include "ops/cuda/moe.h"
#include "ops/cuda/portable.h"
#include "ops/moe.h"

namespace narwhal {
namespace {

using ops::MoeScoring;
using ops::MoeSelection;
using testing::random_bf16;

constexpr double kRouterWeightTolerance = 1e-5;
constexpr double kExpertsTolerance = 1e-2;

// Values on a grid of `step` (many exact ties) with N(0, scale^2) spread.
Tensor tied_values(std::vector<int64_t> shape, uint64_t seed, float scale, float step) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  Tensor t = Tensor::zeros(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = std::round(normal(rng) / step) * step;
  return t;
}

void check_route(const ops::RouterParams& p, int64_t tokens, uint64_t seed, const std::string& what) {
  const Tensor logits = tied_values({tokens, p.num_experts}, seed, 2.0f, 0.5f);
  const Tensor bias = tied_values({p.num_experts}, seed + 1, 0.5f, 0.25f);
  const Tensor used_bias = p.selection == MoeSelection::kNoauxTc ? bias : Tensor();
  Tensor ref_ids = Tensor::zeros(DType::kI32, {tokens, p.top_k}), ref_w = Tensor::zeros(DType::kF32, {tokens, p.top_k});
  ops::moe_route(logits, used_bias, p, ref_ids, ref_w);

  Tensor ids = testing::poisoned(DType::kI32, {tokens, p.top_k}), weights = testing::poisoned(DType::kF32, {tokens, p.top_k});
  ops::cuda::moe_route(logits.to(Device::kCUDA), used_bias.defined() ? bias.to(Device::kCUDA) : Tensor(), p, ids,
                       weights, nullptr);
  const Tensor got_ids = ids.to(Device::kCPU);
  int64_t id_mismatches = 0;
  for (int64_t i = 0; i < tokens * p.top_k; ++i) id_mismatches += got_ids.ptr<int32_t>()[i] != ref_ids.ptr<int32_t>()[i];
  EXPECT_EQ(id_mismatches, 0) << what;
  testing::expect_close(weights, ref_w, kRouterWeightTolerance, "moe_route weights " + what);
}

TEST(CudaMoeRoute, GreedySoftmaxV2Lite) {
  NW_REQUIRE_GPU();
  ops::RouterParams p{64, 6, 1, 1, MoeScoring::kSoftmax, MoeSelection::kGreedy, false, 1.0f};
  check_route(p, 37, 1, "greedy softmax 64 experts top 6");
  check_route(p, 1, 2, "greedy softmax, one token");
}

TEST(CudaMoeRoute, GroupLimitedGreedyV2) {
  NW_REQUIRE_GPU();
  ops::RouterParams p{160, 6, 8, 3, MoeScoring::kSoftmax, MoeSelection::kGroupLimitedGreedy, false, 16.0f};
  check_route(p, 37, 3, "group_limited_greedy 160 experts 8 groups top 3 groups, top 6");
}

TEST(CudaMoeRoute, NoauxTcV3) {
  NW_REQUIRE_GPU();
  ops::RouterParams p{256, 8, 8, 4, MoeScoring::kSigmoid, MoeSelection::kNoauxTc, true, 2.5f};
  check_route(p, 257, 4, "noaux_tc 256 experts 8 groups top 4 groups, top 8");
}

// Group counts that are not powers of two (3 and 6), top-k groups from one to all of them.
TEST(CudaMoeRoute, GroupsNotPowersOfTwo) {
  NW_REQUIRE_GPU();
  for (int groups : {3, 6}) {
    for (int top_groups : {1, groups / 2, groups}) {
      const std::string what = cat(groups, " groups, top ", top_groups);
      ops::RouterParams noaux{24, 4, groups, top_groups, MoeScoring::kSigmoid, MoeSelection::kNoauxTc, true, 2.5f};
      if (top_groups * 24 / groups >= 4) check_route(noaux, 33, 10 + groups + top_groups, "noaux_tc 24 experts " + what);
      ops::RouterParams limited{18, 2, groups, top_groups, MoeScoring::kSoftmax, MoeSelection::kGroupLimitedGreedy,
                                false, 1.0f};
      check_route(limited, 33, 20 + groups + top_groups, "group_limited_greedy 18 experts " + what);
    }
  }
}

// The router product: FP32 logits from an F32 input (the model's: rms_norm's unrounded output) or a BF16 one,
// against the CPU's float32 product of the same values. Relative 1e-5: FP32 sums in another order. 7 tokens
// take the warp kernel; 4105 (a partial 16-token tile) the tiled one, with 72 experts (a partial 64-column tile)
// and 384 (the most it takes).
TEST(CudaMoeRoute, RouterLogitsFromF32AndBf16Inputs) {
  NW_REQUIRE_GPU();
  for (auto [hidden, tokens, experts] : {std::tuple<int64_t, int64_t, int64_t>{64, 7, 72}, {136, 7, 72},
                                         {2048, 7, 72}, {7168, 7, 72}, {2048, 4105, 72}, {136, 4105, 384}}) {
    auto x = random_bf16({tokens, hidden}, 30 + hidden);
    auto w = random_bf16({experts, hidden}, 31 + hidden, 0.05f);
    Tensor ref = Tensor::zeros(DType::kF32, {tokens, experts});
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t e = 0; e < experts; ++e) {
        double acc = 0.0;
        for (int64_t d = 0; d < hidden; ++d) acc += double{x.host.f32()[t * hidden + d]} * w.host.f32()[e * hidden + d];
        ref.f32()[t * experts + e] = static_cast<float>(acc);
      }
    for (bool f32 : {true, false}) {
      Tensor logits = testing::poisoned(DType::kF32, {tokens, experts});
      ops::cuda::router_logits_f32(f32 ? x.host.to(Device::kCUDA) : x.device, w.device, logits, nullptr);
      testing::expect_close(logits, ref, 1e-5, cat("router logits, hidden ", hidden, ", ", tokens, " tokens, ", experts,
                                                   " experts", f32 ? " (F32 x)" : " (BF16 x)"));
    }
  }
}

// Random routing for `tokens` tokens: top_k distinct experts of `routed` with positive weights.
struct Routing {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};
Routing random_routing(int64_t tokens, int top_k, int routed, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> weight(0.05f, 1.0f);
  Routing r;
  std::vector<int32_t> experts(routed);
  std::iota(experts.begin(), experts.end(), 0);
  for (int64_t t = 0; t < tokens; ++t) {
    std::shuffle(experts.begin(), experts.end(), rng);
    for (int j = 0; j < top_k; ++j) {
      r.ids.push_back(experts[j]);
      r.weights.push_back(weight(rng));
    }
  }
  return r;
}

struct ExpertsCase {
  int64_t hidden, inter;
  int routed, shared, top_k;
  bool fp8;
};

// Stacked weights for the reference and the kernel: BF16 (exact on both sides) or FP8 with block scales.
struct StackedWeights {
  Tensor gate_up, down, gate_up_scale, down_scale;  // host, as the CPU reference takes them
  ops::cuda::MoeExpertWeights device;
};
StackedWeights make_weights(const ExpertsCase& c, uint64_t seed) {
  const int64_t experts = c.routed + c.shared;
  StackedWeights w;
  w.device.num_shared = c.shared;
  if (c.fp8) {
    auto gate_up = testing::random_fp8_blocks({experts, 2 * c.inter, c.hidden}, seed);
    auto down = testing::random_fp8_blocks({experts, c.hidden, c.inter}, seed + 1);
    w.gate_up = gate_up.q, w.gate_up_scale = gate_up.scale_inv, w.down = down.q, w.down_scale = down.scale_inv;
    w.device.gate_up = gate_up.q_device, w.device.gate_up_scale_inv = gate_up.scale_inv_device;
    w.device.down = down.q_device, w.device.down_scale_inv = down.scale_inv_device;
  } else {
    auto gate_up = random_bf16({experts, 2 * c.inter, c.hidden}, seed, 1.0f / std::sqrt(static_cast<float>(c.hidden)));
    auto down = random_bf16({experts, c.hidden, c.inter}, seed + 1, 1.0f / std::sqrt(static_cast<float>(c.inter)));
    w.gate_up = gate_up.host, w.down = down.host;
    w.device.gate_up = gate_up.device, w.device.down = down.device;
  }
  return w;
}

// With `unrouted` every third choice is -1 (routes nowhere, as a deepep dispatch's other ranks' experts), and the
// shared experts run for the tokens in w.device's shared_token_begin / end only.
void check_experts(const ExpertsCase& c, const StackedWeights& w, int64_t tokens, uint64_t seed,
                   bool unrouted = false) {
  Routing routing = random_routing(tokens, c.top_k, c.routed, seed);
  if (unrouted)
    for (size_t i = 0; i < routing.ids.size(); i += 3) routing.ids[i] = -1;
  const auto shared_runs = [&](int64_t t) {
    return t >= w.device.shared_token_begin && t < w.device.shared_token_end;
  };
  auto x = random_bf16({tokens, c.hidden}, seed + 1);

  // Reference: the shared experts as extra slots of weight 1 per token.
  const int width = c.top_k + c.shared;
  Tensor ids = Tensor::zeros(DType::kI32, {tokens, width}), weights = Tensor::zeros(DType::kF32, {tokens, width});
  for (int64_t t = 0; t < tokens; ++t)
    for (int j = 0; j < width; ++j) {
      ids.ptr<int32_t>()[t * width + j] =
          j < c.top_k ? routing.ids[t * c.top_k + j] : shared_runs(t) ? c.routed + j - c.top_k : -1;
      weights.f32()[t * width + j] = j < c.top_k ? routing.weights[t * c.top_k + j] : 1.0f;
    }
  Tensor reference = Tensor::zeros(DType::kF32, {tokens, c.hidden});
  ops::moe_experts(x.host, ids, weights, w.gate_up, w.gate_up_scale, w.down, w.down_scale, reference);

  const Tensor ids_dev = testing::device_i32(routing.ids, {tokens, c.top_k});
  const Tensor weights_dev = Tensor::from_floats(routing.weights, {tokens, c.top_k}).to(Device::kCUDA);
  const size_t bytes = ops::cuda::moe_experts_workspace_bytes(tokens, c.top_k, w.device);
  Tensor workspace = testing::poisoned(DType::kF32, {static_cast<int64_t>(bytes / 4) + 1});
  Tensor out = testing::poisoned(DType::kBF16, {tokens, c.hidden});
  ops::cuda::moe_experts(x.device, ids_dev, weights_dev, w.device, out, workspace.data, bytes, nullptr);
  const std::string what = std::string("moe_experts ") + (c.fp8 ? "fp8" : "bf16") + " hidden " +
                           std::to_string(c.hidden) + " inter " + std::to_string(c.inter) + " " +
                           std::to_string(c.routed) + "+" + std::to_string(c.shared) + " experts top " +
                           std::to_string(c.top_k) + " tokens " + std::to_string(tokens);
  testing::expect_close(out, reference, kExpertsTolerance, what);

  // Deterministic: a second run gives the same bits.
  Tensor again = testing::poisoned(DType::kBF16, {tokens, c.hidden});
  ops::cuda::moe_experts(x.device, ids_dev, weights_dev, w.device, again, workspace.data, bytes, nullptr);
  const Tensor a = out.to(Device::kCPU), b = again.to(Device::kCPU);
  EXPECT_TRUE(std::equal(a.ptr<uint16_t>(), a.ptr<uint16_t>() + a.numel(), b.ptr<uint16_t>())) << what;
}

// V2-Lite's expert MLP (hidden 2048, intermediate 1408, top 6, 2 shared) over fewer routed experts, so the
// weights stay small; token counts pick the decode, medium and prefill tiles.
TEST(CudaMoeExperts, Bf16V2LiteShapesWithSharedExperts) {
  NW_REQUIRE_GPU();
  const ExpertsCase c{2048, 1408, 10, 2, 6, false};
  const StackedWeights w = make_weights(c, 200);
  for (int64_t tokens : {1, 37, 301}) check_experts(c, w, tokens, 210 + tokens);
}

// V3's expert MLP (hidden 7168, intermediate 2048, 1 shared) with FP8 block-scaled weights.
TEST(CudaMoeExperts, Fp8V3ShapesWithSharedExpert) {
  NW_REQUIRE_GPU();
  const ExpertsCase c{7168, 2048, 8, 1, 4, true};
  const StackedWeights w = make_weights(c, 300);
  for (int64_t tokens : {1, 19, 200}) check_experts(c, w, tokens, 310 + tokens);
}

// deepep's destination: choices of other ranks' experts arrive as -1, and the shared experts run over the rank's own
// block of the received rows only (rows 3 .. 40 of 57 here; none at all, and all of them).
TEST(CudaMoeExperts, SharedExpertsRunOverTheirTokenRange) {
  NW_REQUIRE_GPU();
  const ExpertsCase c{2048, 1408, 10, 2, 6, false};
  StackedWeights w = make_weights(c, 200);
  for (const auto& [begin, end] : {std::pair{3, 40}, std::pair{0, 0}, std::pair{0, 57}}) {
    w.device.shared_token_begin = begin;
    w.device.shared_token_end = end;
    check_experts(c, w, 57, 700 + begin + end, true);
  }
}

// moe_route_experts routes inside the align kernel up to 32 tokens: its ids, weights and output must be the
// bits of moe_route followed by moe_experts, for every gating method (33 tokens takes the two-kernel path), and on
// an expert-parallel rank too (the last of 2 or 8: its slice of the routed experts and of the shared tokens), whose
// routing still scores every routed expert (a routing scratch sized by the rank's experts let warps overwrite each
// other's group scores: wrong experts at --ep-size 2, now and then).
TEST(CudaMoeExperts, FusedRoutingEqualsRouteThenExperts) {
  NW_REQUIRE_GPU();
  const std::vector<ops::RouterParams> routers = {
      {64, 6, 1, 1, MoeScoring::kSoftmax, MoeSelection::kGreedy, false, 1.0f},
      {160, 6, 8, 3, MoeScoring::kSoftmax, MoeSelection::kGroupLimitedGreedy, false, 16.0f},
      {256, 8, 8, 4, MoeScoring::kSigmoid, MoeSelection::kNoauxTc, true, 2.5f}};
  for (const ops::RouterParams& p : routers) {
    for (int ep : {1, 2, 8}) {
      const int local = p.num_experts / ep;
      const ExpertsCase c{128, 64, local, 1, p.top_k, false};
      StackedWeights w = make_weights(c, 400 + p.num_experts + ep);
      w.device.first_expert = (ep - 1) * local;
      w.device.shared_token_stride = ep;
      w.device.shared_token_offset = ep - 1;
      const Tensor bias = tied_values({p.num_experts}, 7, 0.5f, 0.25f).to(Device::kCUDA);
      const Tensor used_bias = p.selection == MoeSelection::kNoauxTc ? bias : Tensor();
      for (int64_t tokens : {1, 7, 32, 33}) {
        const std::string what = cat(p.num_experts, " experts, ep ", ep, ", ", tokens, " tokens");
        const Tensor logits = tied_values({tokens, p.num_experts}, 500 + tokens, 2.0f, 0.5f).to(Device::kCUDA);
        auto x = random_bf16({tokens, c.hidden}, 600 + tokens);
        const size_t bytes = ops::cuda::moe_experts_workspace_bytes(tokens, c.top_k, w.device);
        Tensor workspace = testing::poisoned(DType::kF32, {static_cast<int64_t>(bytes / 4) + 1});
        Tensor ids[2], weights[2], out[2];
        for (int fused = 0; fused < 2; ++fused) {
          ids[fused] = testing::poisoned(DType::kI32, {tokens, p.top_k});
          weights[fused] = testing::poisoned(DType::kF32, {tokens, p.top_k});
          out[fused] = testing::poisoned(DType::kBF16, {tokens, c.hidden});
          if (fused) {
            ops::cuda::moe_route_experts(x.device, logits, used_bias, p, ids[1], weights[1], w.device, out[1],
                                         workspace.data, bytes, nullptr);
          } else {
            ops::cuda::moe_route(logits, used_bias, p, ids[0], weights[0], nullptr);
            ops::cuda::moe_experts(x.device, ids[0], weights[0], w.device, out[0], workspace.data, bytes, nullptr);
          }
        }
        for (Tensor* pair : {ids, weights, out}) {
          const Tensor a = pair[0].to(Device::kCPU), b = pair[1].to(Device::kCPU);
          EXPECT_TRUE(std::equal(a.ptr<uint8_t>(), a.ptr<uint8_t>() + a.nbytes(), b.ptr<uint8_t>())) << what;
        }
      }
    }
  }
}

// The CPU reference of the per-expert counts on a case worked by hand: rows 0-1 of block 0 and row 2 of block 1 are
// real (valid {2, 1} over two blocks of 2 rows), ids outside [0, 4) count nowhere, and counts add to what was there.
TEST(MoeCountExperts, ReferenceCountsTheRealRowsOfEachBlock) {
  const std::vector<int32_t> ids = {0, 1, 1, 2, 3, -1, 2, 2};  // [4 rows, top 2]
  Tensor topk = Tensor::zeros(DType::kI32, {4, 2});
  std::copy(ids.begin(), ids.end(), topk.ptr<int32_t>());
  Tensor valid = Tensor::zeros(DType::kI32, {2});
  valid.ptr<int32_t>()[0] = 2, valid.ptr<int32_t>()[1] = 1;
  Tensor counts = Tensor::zeros(DType::kI64, {4});
  counts.ptr<int64_t>()[3] = 10;
  ops::moe_count_experts(topk, valid, Tensor(), counts);
  EXPECT_EQ(std::vector<int64_t>(counts.ptr<int64_t>(), counts.ptr<int64_t>() + 4), (std::vector<int64_t>{1, 2, 1, 11}));
  ops::moe_count_experts(topk, Tensor(), Tensor(), counts);  // every row: row 3 adds expert 2 twice
  EXPECT_EQ(std::vector<int64_t>(counts.ptr<int64_t>(), counts.ptr<int64_t>() + 4), (std::vector<int64_t>{2, 4, 4, 12}));
  // Rows that store no KV (slot -1: a verify's fillers) count nowhere: rows 0 and 3 only.
  Tensor slots = Tensor::zeros(DType::kI64, {4});
  slots.ptr<int64_t>()[1] = slots.ptr<int64_t>()[2] = -1;
  ops::moe_count_experts(topk, Tensor(), slots, counts);
  EXPECT_EQ(std::vector<int64_t>(counts.ptr<int64_t>(), counts.ptr<int64_t>() + 4), (std::vector<int64_t>{3, 5, 6, 12}));
}

// The GPU counts equal the reference's, added onto counts already there: one token and one block, a block count
// (16384 tokens x top 8 spread over 64 CTAs), every row or the real ones of 1 and 4 blocks, rows without a KV slot
// left out, with ids out of range.
TEST(MoeCountExperts, GpuMatchesTheReference) {
  NW_REQUIRE_GPU();
  struct Case {
    int experts, top_k;
    int64_t tokens;
    std::vector<int32_t> valid;  // empty: every row
    bool fillers = false;        // every third row's KV slot -1: not counted
  };
  for (const Case& c : {Case{64, 6, 1, {}}, Case{256, 8, 37, {20}}, Case{384, 8, 16384, {}},
                        Case{256, 8, 5000, {1250, 0, 17, 1000}}, Case{256, 8, 37, {}, true},
                        Case{64, 6, 4000, {1000, 3, 1000, 999}, true}}) {
    const std::string what = cat(c.experts, " experts top ", c.top_k, ", ", c.tokens, " tokens, ", c.valid.size(),
                                 " valid blocks", c.fillers ? ", fillers" : "");
    Routing routing = random_routing(c.tokens, c.top_k, c.experts, 700 + c.tokens);
    routing.ids[0] = -1;
    routing.ids.back() = c.experts;
    Tensor ids = Tensor::zeros(DType::kI32, {c.tokens, c.top_k});
    std::copy(routing.ids.begin(), routing.ids.end(), ids.ptr<int32_t>());
    Tensor valid;
    if (!c.valid.empty()) {
      valid = Tensor::zeros(DType::kI32, {static_cast<int64_t>(c.valid.size())});
      std::copy(c.valid.begin(), c.valid.end(), valid.ptr<int32_t>());
    }
    Tensor slots;
    if (c.fillers) {
      slots = Tensor::zeros(DType::kI64, {c.tokens});
      for (int64_t r = 0; r < c.tokens; ++r) slots.ptr<int64_t>()[r] = r % 3 == 2 ? -1 : r;
    }
    Tensor want = Tensor::zeros(DType::kI64, {c.experts});
    for (int e = 0; e < c.experts; ++e) want.ptr<int64_t>()[e] = e * 1000;
    Tensor got = want.to(Device::kCUDA);
    ops::moe_count_experts(ids, valid, slots, want);
    ops::cuda::moe_count_experts(ids.to(Device::kCUDA), valid.defined() ? valid.to(Device::kCUDA) : Tensor(),
                                 slots.defined() ? slots.to(Device::kCUDA) : Tensor(), got, nullptr);
    const Tensor host = got.to(Device::kCPU);
    int64_t mismatches = 0;
    for (int e = 0; e < c.experts; ++e) mismatches += host.ptr<int64_t>()[e] != want.ptr<int64_t>()[e];
    EXPECT_EQ(mismatches, 0) << what;
  }
}

}  // namespace
}  // namespace narwhal
