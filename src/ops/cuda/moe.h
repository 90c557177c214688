// DeepSeekMoE on the GPU: the router's top-k selection and the count of its choices (moe_route.cu), and the fused
// expert MLPs with the shared experts folded in (moe_experts.cu: sort/align, grouped gate_up GEMM + SiLU-and-mul,
// grouped down GEMM weighted by the router, per-token sum; the grouped GEMM is moe_gemm.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <climits>
#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "ops/moe.h"

namespace narwhal::ops::cuda {

// router_logits [T, E] F32 -> topk_ids [T, k] I32, topk_weights [T, k] F32, as ops::moe_route (softmax or
// sigmoid scoring; greedy, group-limited greedy or noaux_tc selection, renormalize, routed_scaling_factor).
// correction_bias [E] F32 (noaux_tc only). Limits: moe_route_supports. One warp per token.
void moe_route(const Tensor& router_logits, const Tensor& correction_bias, const RouterParams& params,
               Tensor& topk_ids, Tensor& topk_weights, cudaStream_t stream);
// What moe_route takes: E <= 384 experts (every released checkpoint's count: 64, 160, 256, 384), top-k <= 16,
// n_group <= 32 dividing E. Empty when supported, else what is not, for the model's refusal at load.
std::string moe_route_unsupported(const RouterParams& params);

// ops::moe_count_experts on the device: counts [E] I64 (E <= 384) += the choices of topk_ids [T, k] I32 per expert,
// over every row or, with valid_rows (device I32 [G]), the first valid_rows[g] rows of each of G equal blocks (so a
// captured graph counts a replay's real rows: the valid counts live in a buffer the replay rewrites), and with
// row_slots (device I64 [T]) only rows whose KV slot is >= 0 (not a verify's fillers). Integer atomics: exact in
// any order. Grid depends on T only: CUDA-graph capturable, no host sync.
void moe_count_experts(const Tensor& topk_ids, const Tensor& valid_rows, const Tensor& row_slots, Tensor& counts,
                       cudaStream_t stream);

// Stacked expert weights on the device, in the layout the loader converts checkpoints into: E routed experts
// followed by S shared experts. The shared MLP (gate/up [S*I, H], down [H, S*I]) is split along its
// intermediate dimension into S experts of width I (exact: down(silu(g)*u) sums over intermediate channels);
// every token selects each of them with weight 1 (SGLang's "shared experts fusion").
struct MoeExpertWeights {
  Tensor gate_up;            // [E + S, 2I, H] BF16 or F8E4M3: gate rows, then up rows
  Tensor down;               // [E + S, H, I], same dtype
  Tensor gate_up_scale_inv;  // F8E4M3 only: F32 [E + S, 2I / 128, H / 128] (weight = fp8 * scale_inv)
  Tensor down_scale_inv;     // F8E4M3 only: F32 [E + S, H / 128, I / 128]
  int num_shared = 0;        // S
  // Expert parallelism: the routed experts are ids first_expert .. first_expert + E - 1 (a choice of another id is
  // another rank's and adds nothing here), and the shared experts run for the tokens t with
  // t % shared_token_stride == shared_token_offset (each EP rank its share of the tokens) in
  // [shared_token_begin, shared_token_end) (deepep: the rows of the rank's own block of the dispatch).
  int first_expert = 0;
  int shared_token_stride = 1, shared_token_offset = 0;
  int shared_token_begin = 0, shared_token_end = INT32_MAX;
};

// Device bytes moe_experts needs for `tokens` tokens; a workspace sized for T serves any smaller T.
size_t moe_experts_workspace_bytes(int64_t tokens, int top_k, const MoeExpertWeights& weights);

// out[t] = sum_j topk_weights[t, j] * expert_{topk_ids[t, j]}(x[t]) + sum_s shared_s(x[t]), where
// expert_e(x) = down_e(silu(gate_e x) * up_e x). x [T, H] BF16, topk_ids [T, k] I32 (routed experts < E),
// topk_weights [T, k] F32, out [T, H] BF16 (overwritten). FP32 accumulation; deterministic (each token's
// k + S expert outputs are summed in a fixed order, no atomics). Needs H % 128 == 0 and I % 64 == 0
// (I % 128 == 0 for FP8). Grids depend on T only: CUDA-graph capturable at a fixed T, no host sync.
void moe_experts(const Tensor& x, const Tensor& topk_ids, const Tensor& topk_weights,
                 const MoeExpertWeights& weights, Tensor& out, void* workspace, size_t workspace_bytes,
                 cudaStream_t stream);

// moe_route then moe_experts, with the same results (topk_ids / topk_weights are written too). Up to 32 tokens
// the routing runs inside the experts' align kernel: one launch fewer per MoE layer at decode.
void moe_route_experts(const Tensor& x, const Tensor& router_logits, const Tensor& correction_bias,
                       const RouterParams& params, Tensor& topk_ids, Tensor& topk_weights,
                       const MoeExpertWeights& weights, Tensor& out, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream);

}  // namespace narwhal::ops::cuda
