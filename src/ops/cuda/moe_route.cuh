// The MoE router's per-token top-k as a device function (one warp per token: E <= 384 experts, 12 per lane,
// group masks and top k by warp argmax reductions; greedy, group-limited greedy and noaux_tc). Used by the
// routing kernel (moe_route.cu) and, at decode sizes, inside the experts' align kernel (moe_experts.cu).
#pragma once

#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/cuda/moe.h"

namespace narwhal::ops::cuda::route {

// 384: the most routed experts of a released checkpoint of this architecture (Kimi K2, DeepSeek-V3's layout).
constexpr int kMaxExperts = 384, kPerLane = kMaxExperts / 32, kMaxTopK = 16;

struct RouteArgs {
  const float* logits;  // [T, E]
  const float* bias;    // [E] or null
  int32_t* ids;         // [T, k]
  float* weights;       // [T, k]
  int tokens, experts, top_k, n_group, topk_group;
  bool sigmoid, renormalize;
  MoeSelection selection;
  float scaling;
};

// A candidate of the argmax: larger value wins, the lower index on ties (as the CPU reference's top_indices).
struct Candidate {
  float value;
  int index;
  float weight;  // what the expert contributes if chosen
};

__device__ __forceinline__ bool beats(const Candidate& a, const Candidate& b) {
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

__device__ __forceinline__ Candidate warp_best(Candidate c) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    Candidate other{__shfl_xor_sync(0xffffffffu, c.value, offset), __shfl_xor_sync(0xffffffffu, c.index, offset),
                    __shfl_xor_sync(0xffffffffu, c.weight, offset)};
    if (beats(other, c)) c = other;
  }
  return c;
}

// Group scores over `choice` (lane g scores group g): the best member (group-limited greedy) or the sum of
// the best two (noaux_tc); returns the bit mask of the `topk_group` best groups.
__device__ inline uint32_t best_groups(const float* choice, const RouteArgs& a, int lane) {
  const int per_group = a.experts / a.n_group;
  Candidate group{-INFINITY, lane, 0.0f};
  if (lane < a.n_group) {
    float first = -INFINITY, second = -INFINITY;
    for (int i = 0; i < per_group; ++i) {
      const float v = choice[lane * per_group + i];
      if (v > first) {
        second = first;
        first = v;
      } else if (v > second) {
        second = v;
      }
    }
    group.value = a.selection == MoeSelection::kNoauxTc ? first + second : first;
  }
  uint32_t keep = 0;
  for (int g = 0; g < a.topk_group; ++g) {
    const Candidate best = warp_best(group);
    keep |= 1u << best.index;
    if (lane == best.index) group.value = -INFINITY;
  }
  return keep;
}

// Routes token t with the calling warp; `choice_smem` is this warp's a.experts floats of shared memory (every routed
// expert's, whatever share of them the calling rank holds).
__device__ __forceinline__ void route_token(const RouteArgs& a, int t, int lane, float* choice_smem) {
  const float* logits = a.logits + static_cast<int64_t>(t) * a.experts;

  // Expert e = i * 32 + lane lives in slot i of this lane; slots past E score -inf and are never chosen.
  float score[kPerLane], choice[kPerLane];
  float local_max = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = i * 32 + lane;
    score[i] = e < a.experts ? logits[e] : -INFINITY;
    local_max = fmaxf(local_max, score[i]);
  }
  if (a.sigmoid) {
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) score[i] = 1.0f / (1.0f + expf(-score[i]));
  } else {
    const float mx = warp_max(local_max);
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) sum += (score[i] = expf(score[i] - mx));
    sum = warp_sum(sum);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) score[i] /= sum;
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = i * 32 + lane;
    const bool valid = e < a.experts;
    choice[i] = !valid ? -INFINITY : a.selection == MoeSelection::kNoauxTc ? score[i] + a.bias[e] : score[i];
  }

  if (a.selection != MoeSelection::kGreedy) {
    float* smem = choice_smem;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (i * 32 + lane < a.experts) smem[i * 32 + lane] = choice[i];
    __syncwarp();
    const uint32_t keep = best_groups(smem, a, lane);
    // transformers' V2 fills masked experts with 0 (softmax scores are > 0), V3's noaux_tc with -inf.
    const float masked = a.selection == MoeSelection::kNoauxTc ? -INFINITY : 0.0f;
    const int per_group = a.experts / a.n_group;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = i * 32 + lane;
      if (e < a.experts && !((keep >> (e / per_group)) & 1u)) choice[i] = masked;
    }
  }

  int ids[kMaxTopK];
  float weights[kMaxTopK];
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kMaxTopK; ++j) {
    if (j >= a.top_k) break;
    Candidate mine{-INFINITY, 1 << 30, 0.0f};
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      // Greedy variants weight by the (masked) selection scores, noaux_tc by the unbiased scores.
      const Candidate c{choice[i], i * 32 + lane, a.selection == MoeSelection::kNoauxTc ? score[i] : choice[i]};
      if (beats(c, mine)) mine = c;
    }
    const Candidate best = warp_best(mine);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (i * 32 + lane == best.index) choice[i] = -INFINITY;
    ids[j] = best.index;
    weights[j] = best.weight;
    sum += best.weight;
  }
  if (lane != 0) return;
#pragma unroll
  for (int j = 0; j < kMaxTopK; ++j) {
    if (j >= a.top_k) break;
    const float w = a.renormalize ? weights[j] / (sum + 1e-20f) : weights[j];
    a.ids[static_cast<int64_t>(t) * a.top_k + j] = ids[j];
    a.weights[static_cast<int64_t>(t) * a.top_k + j] = w * a.scaling;
  }
}

// Checked arguments of one routing call (host side).
RouteArgs route_args(const Tensor& router_logits, const Tensor& correction_bias, const RouterParams& p,
                     Tensor& topk_ids, Tensor& topk_weights);

}  // namespace narwhal::ops::cuda::route
