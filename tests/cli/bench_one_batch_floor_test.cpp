// bench-one-batch's per-GPU decode floor (decode_step_bytes) for V2-Lite (BF16) and V3 (FP8) at TP 1, TP 2, TP 2
// with DP attention 2, TP 2 with EP 2, and V3 at TP 8 / DP 8 / EP 8: what a rank holds against the checkpoint's
// tensors shared out by name as tensor_parallel.h says, then what a decode step reads of it.
#include "cli/bench_one_batch_floor.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/checkpoint_layout.h"
#include "model/model_presets.h"

namespace narwhal {
namespace {

ModelConfig v2_lite() { return ModelConfig::from_json(model_preset_config("v2-lite", 0, false), "v2-lite"); }
ModelConfig v3() { return ModelConfig::from_json(model_preset_config("v3", 61, true), "v3"); }

// A batch so large that a step picks every routed expert and reads every embedding row: all that a rank holds.
constexpr int64_t kEveryRow = int64_t{1} << 40;

// One rank's bytes, from the checkpoint's tensor list: each tensor as the GPU keeps it (FP8 linears with an F32 scale
// per 128 x 128 block in an FP8 config, the correction bias F32, BF16 else), divided among the ranks that share it.
double held_bytes(const ModelConfig& c, const TpSlice& s) {
  double total = 0;
  for (const TensorSpec& t : checkpoint_tensors(c)) {
    double elements = 1;
    for (int64_t d : t.shape) elements *= static_cast<double>(d);
    double bytes = 2 * elements;
    if (t.role == TensorRole::kBias) bytes = 4 * elements;
    if (t.role == TensorRole::kLinear && c.fp8)
      bytes = elements + 4 * static_cast<double>(((t.shape[0] + 127) / 128) * ((t.shape[1] + 127) / 128));
    const auto has = [&](const char* part) { return t.name.find(part) != std::string::npos; };
    double parts = 1;  // norms, q_a, kv_a, the router: whole on every rank
    if (has("self_attn.q_proj") || has("q_b_proj") || has("kv_b_proj") || has("o_proj") || has("embed_tokens") ||
        has("lm_head"))
      parts = s.attn_size();
    else if (has("shared_experts."))
      parts = static_cast<double>(s.size / s.ep_size);
    else if (has("mlp.") && has("_proj"))  // dense MLPs; routed experts: 1 / ep of them, each split size / ep ways
      parts = s.size;
    total += bytes / parts;
  }
  return total;
}

struct Layout {
  const char* name;
  TpSlice slice;
};
const std::vector<Layout> kLayouts = {
    {"tp 1", {}}, {"tp 2", {0, 2, 1, 1}}, {"tp 2 dp 2", {0, 2, 1, 2}}, {"tp 2 ep 2", {0, 2, 2, 1}}};

TEST(DecodeStepBytes, EveryRowReadIsWhatTheRankHolds) {
  for (const auto& [model, config] : {std::pair{"v2-lite", v2_lite()}, std::pair{"v3", v3()}}) {
    std::vector<Layout> layouts = kLayouts;
    if (std::string(model) == "v3") layouts.push_back({"tp 8 dp 8 ep 8", {0, 8, 8, 8}});
    for (const Layout& l : layouts) {
      const DecodeStepBytes all = decode_step_bytes(config, l.slice, kEveryRow, 1);
      const double want = held_bytes(config, l.slice);
      EXPECT_NEAR(all.weights + all.experts, want, want * 1e-12) << model << " " << l.name;
    }
  }
  // Sanity of the list itself: V2-Lite's 15.7B parameters in BF16 on one GPU.
  EXPECT_NEAR(held_bytes(v2_lite(), {}) / 2e9, 15.7, 0.1);
}

// V2-Lite, one sequence: 6 of 64 experts in each of 26 MoE layers (3 x 2048 x 1408 BF16 each), 1024 keys of 576
// BF16 per layer, and one embedding row of the table; the other weights are the 2204 MB that docs/performance.md's
// floors count (from the loaded weights, before this arithmetic).
TEST(DecodeStepBytes, OneSequenceOnOneGpu) {
  const ModelConfig c = v2_lite();
  const DecodeStepBytes one = decode_step_bytes(c, {}, 1, 1024);
  EXPECT_NEAR(one.weights / 1e6, 2203.8, 0.1);
  EXPECT_DOUBLE_EQ(one.experts, 6.0 * 26 * 3 * 2048 * 1408 * 2);
  EXPECT_DOUBLE_EQ(one.kv, 1024.0 * 576 * 2 * 27);
  const DecodeStepBytes all = decode_step_bytes(c, {}, kEveryRow, 1024);
  EXPECT_DOUBLE_EQ(one.weights, all.weights - (102400.0 - 1) * 2048 * 2);
}

// Each rank reads its own DP group's cache; the MoE layers route every group's tokens; EP's whole experts read as
// much as TP's halves; the embedding rows a step reads are the batch's, of this rank's vocabulary slice.
TEST(DecodeStepBytes, SharesOfAStep) {
  for (const auto& [model, c] : {std::pair{"v2-lite", v2_lite()}, std::pair{"v3", v3()}}) {
    const int64_t batch = 16, context = 2048;
    const DecodeStepBytes one = decode_step_bytes(c, {}, batch, context);
    const DecodeStepBytes tp2 = decode_step_bytes(c, {0, 2, 1, 1}, batch, context);
    const DecodeStepBytes dp2 = decode_step_bytes(c, {0, 2, 1, 2}, batch, context);
    const DecodeStepBytes ep2 = decode_step_bytes(c, {0, 2, 2, 1}, batch, context);
    const double kv = static_cast<double>(batch) * context * c.kv_cache_dim() * 2 * c.num_hidden_layers;
    for (const DecodeStepBytes* s : {&one, &tp2, &dp2, &ep2}) EXPECT_DOUBLE_EQ(s->kv, kv) << model;
    EXPECT_DOUBLE_EQ(tp2.experts, one.experts / 2) << model;
    EXPECT_DOUBLE_EQ(dp2.experts, decode_step_bytes(c, {}, 2 * batch, context).experts / 2) << model;
    EXPECT_DOUBLE_EQ(ep2.experts, tp2.experts) << model;
    const double row = 2.0 * c.hidden_size, vocab = static_cast<double>(c.vocab_size);
    EXPECT_DOUBLE_EQ(one.weights, decode_step_bytes(c, {}, kEveryRow, context).weights - (vocab - batch) * row);
    EXPECT_DOUBLE_EQ(tp2.weights,
                     decode_step_bytes(c, {0, 2, 1, 1}, kEveryRow, context).weights - (vocab / 2 - batch) * row);
  }
}

}  // namespace
}  // namespace narwhal
