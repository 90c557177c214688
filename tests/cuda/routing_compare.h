// Compares one step's MoE routing on the GPU with the CPU reference's, telling BF16-noise flips at near ties from
// routing the GPU got wrong (tests of the whole GPU forward against the reference use it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/deepseek_model.h"
#include "model/routing_trace.h"

namespace narwhal::testing {

struct RoutingComparison {
  std::vector<bool> flipped;    // per token of the step: routed to other experts than the reference chose
  int64_t token_layers = 0, flips = 0;
  double logits_rel = 0.0;      // worst router-logits error (max |diff| / max |ref|) over the layers
  std::string error;            // set when the GPU routed its own scores unlike the CPU router would
};

// `want` from the CPU model's forward, `got` from the GPU's on the same batch. A token the two route differently
// must be a flip the GPU's own scores explain: the CPU's router (ops::moe_route) on the GPU's logits chooses
// exactly what the GPU chose. Such a token sat at a near tie of expert scores, which the GPU's ~0.5% BF16
// activation noise decided the other way; from there on its sequence is a different computation from the
// reference's, so callers excuse its rows from the logits tolerance (and count them).
RoutingComparison compare_routing(const DeepSeekModel& cpu, const RoutingTrace& want, const RoutingTrace& got);

}  // namespace narwhal::testing
