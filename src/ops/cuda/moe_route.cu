// MoE router top-k on the GPU: the routing kernel (one warp per token, route_token in moe_route.cuh), the
// checked arguments it shares with the fused route-and-align path of moe_experts.cu, and the per-expert count of
// the choices made.
#include <algorithm>

#include "ops/cuda/moe_route.cuh"

namespace narwhal::ops::cuda {

std::string moe_route_unsupported(const RouterParams& p) {
  if (p.num_experts > route::kMaxExperts) return cat(p.num_experts, " routed experts (at most ", route::kMaxExperts, ")");
  if (p.top_k > route::kMaxTopK) return cat("top-", p.top_k, " (at most ", route::kMaxTopK, ")");
  if (p.selection != MoeSelection::kGreedy && p.n_group > 32) return cat(p.n_group, " groups (at most 32)");
  return "";
}

namespace route {

RouteArgs route_args(const Tensor& router_logits, const Tensor& correction_bias, const RouterParams& p,
                     Tensor& topk_ids, Tensor& topk_weights) {
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
  NW_CHECK(tokens <= INT32_MAX, "cuda::moe_route: ", tokens, " tokens");
  return RouteArgs{device_ptr<const float>(router_logits),
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
}

}  // namespace route

namespace {

constexpr int kWarpsPerBlock = 4;
// Counting: 256 threads a block, each of up to 64 blocks taking at least 8 choices.
constexpr int kCountThreads = 256, kCountBlocks = 64, kCountPerThread = 8;

__global__ void __launch_bounds__(kWarpsPerBlock * 32) moe_route_kernel(const route::RouteArgs a) {
  grid_dependency_wait();
  __shared__ float choice_smem[kWarpsPerBlock][route::kMaxExperts];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int t = blockIdx.x * kWarpsPerBlock + warp;
  if (t < a.tokens) route::route_token(a, t, lane, choice_smem[warp]);
}

// Each block counts its share of the choices in shared memory, then adds its per-expert sums to the global counts:
// one global atomic per expert and block instead of one per choice (a prefill of 16k tokens makes 131k choices).
__global__ void __launch_bounds__(kCountThreads) moe_count_kernel(const int32_t* ids, int64_t choices, int top_k,
                                                                  const int32_t* valid_rows, int64_t block_rows,
                                                                  const int64_t* row_slots,
                                                                  unsigned long long* counts, int experts) {
  grid_dependency_wait();
  __shared__ unsigned int block_counts[route::kMaxExperts];
  for (int e = threadIdx.x; e < experts; e += blockDim.x) block_counts[e] = 0;
  __syncthreads();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < choices; i += gridDim.x * int64_t{blockDim.x}) {
    const int64_t row = i / top_k;
    if (valid_rows && row % block_rows >= valid_rows[row / block_rows]) continue;
    if (row_slots && row_slots[row] < 0) continue;
    const int32_t e = ids[i];
    if (e >= 0 && e < experts) atomicAdd(&block_counts[e], 1u);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < experts; e += blockDim.x)
    if (block_counts[e]) atomicAdd(&counts[e], static_cast<unsigned long long>(block_counts[e]));
}

}  // namespace

void moe_route(const Tensor& router_logits, const Tensor& correction_bias, const RouterParams& p,
               Tensor& topk_ids, Tensor& topk_weights, cudaStream_t stream) {
  const route::RouteArgs a = route::route_args(router_logits, correction_bias, p, topk_ids, topk_weights);
  if (a.tokens == 0) return;
  launch(moe_route_kernel, ceil_div(a.tokens, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream, a);
}

void moe_count_experts(const Tensor& topk_ids, const Tensor& valid_rows, const Tensor& row_slots, Tensor& counts,
                       cudaStream_t stream) {
  const int64_t rows = topk_ids.size(0), k = topk_ids.size(1), experts = counts.numel();
  const int64_t groups = valid_rows.defined() ? valid_rows.numel() : 1;
  NW_CHECK(topk_ids.dtype == DType::kI32 && counts.dtype == DType::kI64 && experts <= route::kMaxExperts &&
               groups > 0 && rows % groups == 0 && (!valid_rows.defined() || valid_rows.dtype == DType::kI32) &&
               (!row_slots.defined() || (row_slots.dtype == DType::kI64 && row_slots.numel() == rows)),
           "cuda::moe_count_experts: ids ", topk_ids.shape_string(), " counts ", counts.shape_string(), " valid rows ",
           valid_rows.shape_string(), " row slots ", row_slots.shape_string(), " (at most ", route::kMaxExperts,
           " experts)");
  const int64_t choices = rows * k;
  if (choices == 0) return;
  const int64_t blocks = std::min<int64_t>(kCountBlocks, ceil_div(choices, kCountThreads * kCountPerThread));
  launch(moe_count_kernel, static_cast<unsigned>(blocks), kCountThreads, 0, stream, device_ptr<const int32_t>(topk_ids),
         choices, static_cast<int>(k), valid_rows.defined() ? device_ptr<const int32_t>(valid_rows) : nullptr,
         rows / groups, row_slots.defined() ? device_ptr<const int64_t>(row_slots) : nullptr,
         device_ptr<unsigned long long>(counts), static_cast<int>(experts));
}

}  // namespace narwhal::ops::cuda
