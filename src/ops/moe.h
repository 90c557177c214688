// Mixture-of-experts: router (softmax/sigmoid scoring; greedy, group-limited and noaux_tc selection), the count of
// the router's choices per expert, and the routed experts' gated MLPs.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace narwhal::ops {

enum class MoeScoring { kSoftmax, kSigmoid };
enum class MoeSelection { kGreedy, kGroupLimitedGreedy, kNoauxTc };

struct RouterParams {
  int num_experts = 0;
  int top_k = 0;
  int n_group = 1;
  int topk_group = 1;
  MoeScoring scoring = MoeScoring::kSoftmax;
  MoeSelection selection = MoeSelection::kGreedy;
  bool renormalize = false;
  float routed_scaling_factor = 1.0f;
};

// router_logits [T, E] (float32) -> topk_ids [T, k] (I32) and topk_weights [T, k] (F32).
// `correction_bias` [E] (noaux_tc only, else undefined) shifts scores for selection, never the weights.
// Selection among equal scores prefers the lower expert index.
void moe_route(const Tensor& router_logits, const Tensor& correction_bias, const RouterParams& params,
               Tensor& topk_ids, Tensor& topk_weights);

// counts [E] I64 += how many of topk_ids' [T, k] choices picked each expert (ids outside [0, E) count nowhere), over
// the rows that are real: all of them, or with `valid_rows` (I32 [G]) the first valid_rows[g] of each of G equal
// blocks of T / G rows (a padded CUDA-graph step, a block per DP group: its padding rows route too); and with
// `row_slots` (I64 [T], the rows' KV-cache slots) only rows whose slot is >= 0: rows that store no KV are a
// speculative verify's fillers or a graph's padding, no token of any request.
void moe_count_experts(const Tensor& topk_ids, const Tensor& valid_rows, const Tensor& row_slots, Tensor& counts);

// out[t] += sum_j topk_weights[t, j] * down_e(silu(gate_e(x_t)) * up_e(x_t)), e = topk_ids[t, j].
// gate_up [E, 2I, H] (gate rows first), down [E, H, I]; x [T, H]; out [T, H] accumulates. With `expert_index`
// (an expert-parallel rank's ExpertPlacement row: per routed expert id, its index in these weights or -1) the
// choices of other ranks' experts are skipped; null: the weights are every expert, by id.
void moe_experts(const Tensor& x, const Tensor& topk_ids, const Tensor& topk_weights, const Tensor& gate_up,
                 const Tensor& down, Tensor& out, const std::vector<int32_t>* expert_index = nullptr);

// The same with expert weights in F32, BF16 or F8E4M3; FP8 ones come with DeepSeek-V3's 128x128 block scales
// (`*_scale_inv` F32 [E, ceil(rows/128), ceil(cols/128)], weight = fp8 * scale_inv; undefined otherwise).
// Each routed-to expert is converted to F32 on its own, so host memory stays one expert's worth above the inputs.
void moe_experts(const Tensor& x, const Tensor& topk_ids, const Tensor& topk_weights, const Tensor& gate_up,
                 const Tensor& gate_up_scale_inv, const Tensor& down, const Tensor& down_scale_inv, Tensor& out,
                 const std::vector<int32_t>* expert_index = nullptr);

}  // namespace narwhal::ops
