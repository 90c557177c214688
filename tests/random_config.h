// Random valid DeepSeek-V2/V3 configs (official config.json layout) for differential and loader tests.
#pragma once

#include <cstdint>
#include <string>

#include "core/json.h"

namespace narwhal::testing {

// One drawn model: its config.json and whether its checkpoint is stored FP8 (128x128 block scales).
struct RandomModel {
  json config;
  bool fp8 = false;
  std::string summary;  // one line naming the drawn shape, for failure messages
};

// Seeded, so a failure names a reproducible case. Ranges (issue 12): hidden 64..1024 (multiples of 8, what the
// GPU's vector loads need), heads 1..32, kv_lora {32, 64, 96, 128, 512}, qk_nope 16..128, qk_rope {16, 32, 64},
// v_head_dim independent of qk_nope, q_lora none or 32..512, 4..64 experts with n_group any divisor (3 and 6
// included) and topk_group <= n_group, top-k 1..8, greedy / group-limited greedy (V2, softmax) or noaux_tc
// (V3, sigmoid), 0..2 shared experts, first_k_dense_replace 0..2, YaRN on and off with several factors and
// mscales, BF16 or FP8, 2..4 layers. About a quarter use DeepSeek's own attention dims (kv_lora 512, rope 64,
// nope = v = 128) and whole 128-blocks, so the tuned GPU kernels meet random configs too. Small enough that a
// CPU forward of a few steps takes well under a second.
RandomModel random_model(uint64_t seed);

}  // namespace narwhal::testing
