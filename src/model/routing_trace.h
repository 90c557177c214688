// RoutingTrace: each MoE layer's router logits, chosen experts and their weights in one forward, for tests that
// compare two forwards' routing, or make one forward route as another did (so that a near tie of expert scores,
// which BF16 noise may decide either way, cannot make two otherwise equal forwards diverge).
#pragma once

#include <cstdint>
#include <vector>

namespace narwhal {

struct RoutingTrace {
  struct Layer {
    int64_t tokens = 0, experts = 0, top_k = 0;
    std::vector<float> logits;  // [tokens, experts]: the router's scores before selection (F32)
    std::vector<int32_t> ids;   // [tokens, top_k]: the routed experts chosen
    std::vector<float> weights;  // [tokens, top_k]: their weights (routed_scaling_factor applied)
  };
  std::vector<Layer> layers;  // one per MoE layer, in forward order
};

}  // namespace narwhal
