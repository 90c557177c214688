// MoE router top-k on the GPU: one warp per token scores its E <= 256 experts (8 per lane), masks groups and
// picks the top k with warp argmax reductions; greedy, group-limited greedy and noaux_tc in one kernel.
#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/cuda/moe.h"

namespace narwhal::ops::cuda {

namespace {

constexpr int kMaxExperts = 256, kPerLane = kMaxExperts / 32, kMaxTopK = 16, kWarpsPerBlock = 4;

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
__device__ uint32_t best_groups(const float* choice, const RouteArgs& a, int lane) {
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

__global__ void __launch_bounds__(kWarpsPerBlock * 32) moe_route_kernel(const RouteArgs a) {
  __shared__ float choice_smem[kWarpsPerBlock][kMaxExperts];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int t = blockIdx.x * kWarpsPerBlock + warp;
  if (t >= a.tokens) return;
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
    float* smem = choice_smem[warp];
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

}  // namespace

void moe_route(const Tensor& router_logits, const Tensor& correction_bias, const RouterParams& p,
               Tensor& topk_ids, Tensor& topk_weights, cudaStream_t stream) {
  const int64_t tokens = router_logits.size(0);
  NW_CHECK(router_logits.dtype == DType::kF32 && router_logits.size(1) == p.num_experts &&
               topk_ids.dtype == DType::kI32 && topk_weights.dtype == DType::kF32 && topk_ids.size(0) == tokens &&
               topk_weights.size(0) == tokens && topk_ids.size(1) == p.top_k && topk_weights.size(1) == p.top_k,
           "cuda::moe_route: logits ", router_logits.shape_string(), " ids ", topk_ids.shape_string(), " weights ",
           topk_weights.shape_string(), " for ", p.num_experts, " experts, top ", p.top_k);
  NW_CHECK(p.num_experts <= kMaxExperts && p.top_k <= kMaxTopK && p.top_k <= p.num_experts,
           "cuda::moe_route: supports up to ", kMaxExperts, " experts and top ", kMaxTopK);
  const bool grouped = p.selection != MoeSelection::kGreedy;
  NW_CHECK(!grouped || (p.n_group <= 32 && p.num_experts % p.n_group == 0 && p.topk_group <= p.n_group),
           "cuda::moe_route: ", p.n_group, " groups (top ", p.topk_group, ") over ", p.num_experts, " experts");
  NW_CHECK(p.selection != MoeSelection::kNoauxTc || correction_bias.defined(),
           "cuda::moe_route: noaux_tc needs e_score_correction_bias");
  if (tokens == 0) return;
  RouteArgs a{device_ptr<const float>(router_logits),
              correction_bias.defined() ? device_ptr<const float>(correction_bias) : nullptr,
              device_ptr<int32_t>(topk_ids),
              device_ptr<float>(topk_weights),
              static_cast<int>(tokens),
              p.num_experts,
              p.top_k,
              grouped ? p.n_group : 1,
              grouped ? p.topk_group : 1,
              p.scoring == MoeScoring::kSigmoid,
              p.renormalize,
              p.selection,
              p.routed_scaling_factor};
  moe_route_kernel<<<ceil_div(tokens, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream>>>(a);
  NW_CUDA_CHECK_LAUNCH();
}

}  // namespace narwhal::ops::cuda
