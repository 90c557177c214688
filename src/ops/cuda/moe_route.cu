// MoE router top-k on the GPU: the routing kernel (one warp per token, route_token in moe_route.cuh) and the
// checked arguments it shares with the fused route-and-align path of moe_experts.cu.
#include "ops/cuda/moe_route.cuh"

namespace narwhal::ops::cuda {

namespace route {

}  // namespace route

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

__global__ void __launch_bounds__(kWarpsPerBlock * 32) moe_route_kernel(const route::RouteArgs a) {
  grid_dependency_wait();
  __shared__ float choice_smem[kWarpsPerBlock][route::kMaxExperts];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int t = blockIdx.x * kWarpsPerBlock + warp;
  if (t < a.tokens) route::route_token(a, t, lane, choice_smem[warp]);
}

}  // namespace

void moe_route(const Tensor& router_logits, const Tensor& correction_bias, const RouterParams& p,
               Tensor& topk_ids, Tensor& topk_weights, cudaStream_t stream) {
  const route::RouteArgs a = route::route_args(router_logits, correction_bias, p, topk_ids, topk_weights);
  if (a.tokens == 0) return;
  launch(moe_route_kernel, ceil_div(a.tokens, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream, a);
}

}  // namespace narwhal::ops::cuda
