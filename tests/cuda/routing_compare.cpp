// Routing comparison: per MoE layer and token, the expert sets of both sides and the CPU router's verdict on the
// GPU's scores.
#include "cuda/routing_compare.h"

#include <algorithm>

#include "core/error.h"
#include "ops/moe.h"
#include "test_util.h"

namespace narwhal::testing {

RoutingComparison compare_routing(const DeepSeekModel& cpu, const RoutingTrace& want, const RoutingTrace& got) {
  const ModelConfig& c = cpu.config();
  RoutingComparison r;
  std::vector<int> moe_layers;
  for (int l = 0; l < c.num_hidden_layers; ++l)
    if (c.is_moe_layer(l)) moe_layers.push_back(l);
  if (want.layers.size() != got.layers.size() || want.layers.size() != moe_layers.size()) {
    r.error = cat(got.layers.size(), " GPU MoE layers traced, ", want.layers.size(), " on the CPU, ",
                  moe_layers.size(), " in the config");
    return r;
  }
  const ops::RouterParams params = router_params(c);
  for (size_t l = 0; l < got.layers.size(); ++l) {
    const RoutingTrace::Layer &g = got.layers[l], &w = want.layers[l];
    r.flipped.resize(static_cast<size_t>(g.tokens), false);
    Tensor ids = Tensor::zeros(DType::kI32, {g.tokens, g.top_k}), weights = Tensor::zeros(DType::kF32, {g.tokens, g.top_k});
    ops::moe_route(Tensor::from_floats(g.logits, {g.tokens, g.experts}),
                   cpu.weights().layers[moe_layers[l]].moe->correction_bias, params, ids, weights);
    r.logits_rel = std::max(r.logits_rel, compare(g.logits.data(), w.logits.data(), g.tokens * g.experts).rel);
    auto expert_set = [&](const int32_t* all, int64_t t) {
      std::vector<int32_t> v(all + t * g.top_k, all + (t + 1) * g.top_k);
      std::sort(v.begin(), v.end());
      return v;
    };
    for (int64_t t = 0; t < g.tokens; ++t) {
      const std::vector<int32_t> gpu = expert_set(g.ids.data(), t);
      if (gpu != expert_set(ids.ptr<int32_t>(), t) && r.error.empty())
        r.error = cat("MoE layer ", moe_layers[l], ", token ", t, ": the GPU routed its own scores unlike the CPU router");
      ++r.token_layers;
      if (gpu != expert_set(w.ids.data(), t)) {
        ++r.flips;
        r.flipped[static_cast<size_t>(t)] = true;
      }
    }
  }
  return r;
}

}  // namespace narwhal::testing
