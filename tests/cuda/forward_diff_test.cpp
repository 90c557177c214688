// The random-config differential test of the whole GPU forward: for seeded random valid DeepSeek configs
// (tests/random_config.h), GPU runners replay the step script (tests/step_script.h: ragged prefill on scattered
// pages, decode, a mixed step) beside the CPU reference on the same checkpoint. Where a config fails, variants of
// it with one feature turned off run too, and the log names those that pass: the likely cause.
//
// Routing: a token whose expert scores nearly tie is routed by whichever side's noise wins, and a different expert
// makes it a different computation (O(1) apart in a random model). BF16 activations move scores by ~0.5%, so
// this happens at a few percent of token-layers. The runner compared with the CPU therefore runs its experts with
// the CPU's choices, while its own routing of the same scores is checked to be exactly what the CPU router makes
// of them (testing::compare_routing); how often the two sides' routing differed is reported.
//
// Error per row: ||gpu - cpu||_2 / ||cpu||_2 over the vocabulary. Tolerances:
//  - kTolerance (2e-2) for BF16 activations, and for FP8 checkpoints the GPU dequantizes to BF16 (their dims are
//    not whole 128-blocks). Every rounding to BF16 is 2^-9 relative at most (~1.1e-3 rms); a layer rounds its
//    input and output of each GEMM, the latents, queries and attention outputs, ~10 roundings a layer, so 2-4
//    layers give ~0.5-1% on the logits; measured p50 7.7e-3, p99 1.75e-2 over 240 rows of 40 configs.
//  - kFp8ActivationTolerance where FP8 weights stay FP8: the GPU then also quantizes activations to e4m3 per 128
//    channels (as DeepSeek-V3 runs), 3 mantissa bits (2^-4 relative at most), which the float32 reference does not.
//  - graphs vs eager on the same kernels and batch shapes: kGraphTolerance.
// Greedy ids must agree wherever the reference's top-2 margin exceeds the tolerance times its largest logit.
//
// NARWHAL_DIFF_CONFIGS=N runs N configs (default 40), NARWHAL_DIFF_FIRST=S starts at seed S, NARWHAL_DIFF_LOG=path
// appends one JSON line per config run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>

#include "core/error.h"
#include "core/logging.h"
#include "cuda/gpu_test_util.h"
#include "cuda/routing_compare.h"
#include "model/cuda_weights.h"
#include "model/deepseek_model.h"
#include "random_config.h"
#include "runtime/cuda_model_runner.h"
#include "step_script.h"
#include "test_util.h"

namespace narwhal {
namespace {

constexpr double kTolerance = 2e-2;
constexpr double kFp8ActivationTolerance = 8e-2;
constexpr double kGraphTolerance = 1e-5;

struct RowStats {
  double l2_rel = 0.0;
  bool greedy_checked = false, greedy_equal = true;
};

RowStats compare_row(const float* gpu, const float* cpu, int64_t vocab, double tolerance) {
  double largest = 0.0;
  for (int64_t i = 0; i < vocab; ++i) largest = std::max(largest, std::fabs(static_cast<double>(cpu[i])));
  RowStats s;
  s.l2_rel = testing::l2_rel_error(gpu, cpu, vocab);
  std::vector<float> sorted(cpu, cpu + vocab);
  std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
  s.greedy_checked = vocab > 1 && sorted[0] - sorted[1] > tolerance * largest;
  if (s.greedy_checked)
    s.greedy_equal = std::max_element(gpu, gpu + vocab) - gpu == std::max_element(cpu, cpu + vocab) - cpu;
  return s;
}

struct ConfigResult {
  bool ok = true;
  std::string refusal;  // the load's error, when the GPU refused the config
  std::string routing_error;  // the GPU's router disagreed with the CPU's routing of the GPU's own scores
  double worst = 0.0, router_logits_worst = 0.0;
  std::string worst_where;
  int rows = 0, bad_rows = 0, greedy_checked = 0, greedy_wrong = 0;
  double graph_vs_eager = 0.0;
  int64_t routed_tokens = 0, flipped_tokens = 0;
  bool fp8_kept = false;
  double tolerance = kTolerance;
  std::vector<double> clean_errors;  // the error of every row held to the tolerance
};

// One config: checkpoint -> CPU reference and three GPU runners -> the step script on each -> comparisons.
//  - "routed" follows the CPU's routing (set_routing_override) and traces its own: its rows vs the CPU's are held
//    to the tolerance, every one; its own routing must be what the CPU router makes of the GPU's scores.
//  - "graphs" (when decode steps can be captured, graphs for 1..3 sequences) vs "eager" (the same kernels, both
//    routing themselves): equal to 1e-5 at every decode step.
ConfigResult run_config(const json& config, bool fp8, uint64_t seed, int64_t page_size, int max_seqs) {
  ConfigResult r;
  testing::TempDir dir;
  testing::write_random_checkpoint(dir.path(), config, seed, fp8);
  const DeepSeekModel cpu = DeepSeekModel::load(dir.path());
  const ModelConfig& c = cpu.config();
  r.fp8_kept = fp8 && fp8_kernels_fit(c);
  r.tolerance = r.fp8_kept ? kFp8ActivationTolerance : kTolerance;
  const testing::StepScript script = testing::make_step_script(seed, c.vocab_size, page_size, max_seqs);
  KvCache cache(c, c.num_hidden_layers, script.pages_needed, page_size);

  CudaRunnerOptions o;
  o.page_size = page_size;
  o.max_total_tokens = script.pages_needed * page_size;
  o.max_tokens_per_step = 512;
  o.cuda_graph_max_bs = 3;  // graphs for 1, 2 and 3 sequences: replays are never padded, so match eager exactly
  std::unique_ptr<CudaModelRunner> routed, eager, graphs;
  try {
    o.disable_cuda_graph = true;
    routed = CudaModelRunner::load(dir.path(), o);
    eager = CudaModelRunner::load(dir.path(), o);
    o.disable_cuda_graph = false;
    graphs = CudaModelRunner::load(dir.path(), o);
    if (graphs->graph_batch_sizes().empty()) graphs.reset();
  } catch (const Error& e) {
    r.ok = false;
    r.refusal = e.what();
    return r;
  }
  for (size_t step = 0; step < script.steps.size(); ++step) {
    const ForwardBatch& batch = script.steps[step];
    RoutingTrace want, got;
    ForwardOptions options;
    options.routing_trace = &want;
    const Tensor expected = cpu.forward(batch, cache, options).logits;
    Tensor routed_logits, eager_logits, graph_logits;
    try {
      routed->set_routing_override(&want);
      routed->set_routing_trace(&got);
      routed_logits = routed->run(batch);
      routed->set_routing_override(nullptr);
      routed->set_routing_trace(nullptr);
      if (graphs) {
        eager_logits = eager->run(batch);
        graph_logits = graphs->run(batch);
      }
    } catch (const Error& e) {
      r.ok = false;
      r.refusal = cat("while running ", script.names[step], ": ", e.what());
      return r;
    }
    const testing::RoutingComparison routing = testing::compare_routing(cpu, want, got);
    r.routed_tokens += routing.token_layers;
    r.flipped_tokens += routing.flips;
    r.router_logits_worst = std::max(r.router_logits_worst, routing.logits_rel);
    if (r.routing_error.empty()) r.routing_error = routing.error;
    const int64_t vocab = expected.size(1);
    for (int64_t s = 0; s < expected.size(0); ++s) {
      const RowStats row = compare_row(routed_logits.f32() + s * vocab, expected.f32() + s * vocab, vocab,
                                       r.tolerance);
      ++r.rows;
      r.greedy_checked += row.greedy_checked;
      r.greedy_wrong += !row.greedy_equal;
      const bool bad = !(row.l2_rel <= r.tolerance) || !row.greedy_equal;
      r.bad_rows += bad;
      r.clean_errors.push_back(row.l2_rel);
      if (!(row.l2_rel <= r.worst)) {
        r.worst = row.l2_rel;
        r.worst_where = cat(script.names[step], " seq ", s);
      }
    }
    const bool decode = std::all_of(batch.seqs.begin(), batch.seqs.end(), [](const SequenceInfo& q) {
      return q.new_len == 1;
    });
    if (graphs && decode) {
      const double diff = testing::compare(graph_logits.f32(), eager_logits.f32(), eager_logits.numel()).rel;
      r.graph_vs_eager = std::max(r.graph_vs_eager, diff);
      if (!(diff <= kGraphTolerance)) ++r.bad_rows;
    }
  }
  r.ok = r.bad_rows == 0 && r.routing_error.empty() && r.router_logits_worst <= r.tolerance;
  return r;
}

// Variants of a failing config, each turning one feature off; those that pass point at the cause.
std::vector<std::pair<std::string, std::function<void(json&)>>> ablations() {
  return {
      {"v_head_dim = qk_nope_head_dim", [](json& c) { c["v_head_dim"] = c["qk_nope_head_dim"]; }},
      {"no yarn", [](json& c) { c.erase("rope_scaling"); }},
      {"no q_lora", [](json& c) { c["q_lora_rank"] = nullptr; }},
      {"dense only", [](json& c) { c["first_k_dense_replace"] = c["num_hidden_layers"]; }},
      {"no shared experts", [](json& c) { c["n_shared_experts"] = 0; }},
      {"one group", [](json& c) { c["n_group"] = 1; c["topk_group"] = 1; }},
      {"top-1", [](json& c) { c["num_experts_per_tok"] = 1; }},
      {"one head", [](json& c) { c["num_attention_heads"] = 1; c["num_key_value_heads"] = 1; }},
      {"kv_lora 64 rope 64", [](json& c) { c["kv_lora_rank"] = 64; c["qk_rope_head_dim"] = 64; }},
      {"neox rope", [](json& c) { if (c["model_type"] == "deepseek_v3") c["rope_interleave"] = false; }},
      {"interleaved rope", [](json& c) { c["rope_interleave"] = true; }},
  };
}

std::string describe(const ConfigResult& r) {
  if (!r.refusal.empty()) return "refused: " + r.refusal;
  return cat(r.ok ? "ok" : "FAIL", " worst ", r.worst, " (", r.worst_where, "), ", r.bad_rows, "/", r.rows,
             " rows over ", r.tolerance, ", greedy ", r.greedy_checked - r.greedy_wrong, "/", r.greedy_checked,
             ", router logits ", r.router_logits_worst, ", graph vs eager ", r.graph_vs_eager, ", own routing flips ",
             r.flipped_tokens, "/", r.routed_tokens, " token-layers",
             r.routing_error.empty() ? "" : ", ROUTING: " + r.routing_error, r.fp8_kept ? ", fp8 kept" : "");
}

TEST(GpuForwardDiff, RandomConfigsMatchTheCpuReference) {
  NW_REQUIRE_GPU();
  set_log_level(LogLevel::kWarning);
  const int first = testing::env_int("NARWHAL_DIFF_FIRST", 1), count = testing::env_int("NARWHAL_DIFF_CONFIGS", 40);
  const char* log_path = std::getenv("NARWHAL_DIFF_LOG");
  std::ofstream log;
  if (log_path) log.open(log_path, std::ios::app);
  int failed = 0;
  int64_t flips = 0, token_layers = 0;
  std::vector<double> bf16_errors, fp8_errors;
  for (int seed = first; seed < first + count; ++seed) {
    const testing::RandomModel drawn = testing::random_model(seed);
    const int64_t page_size = seed % 2 ? 16 : 64;
    const ConfigResult r = run_config(drawn.config, drawn.fp8, seed, page_size, 3);
    std::printf("[diff] %s | page %lld | %s\n", drawn.summary.c_str(), static_cast<long long>(page_size),
                describe(r).c_str());
    if (log) log << json{{"seed", seed}, {"summary", drawn.summary}, {"result", describe(r)}, {"ok", r.ok},
                         {"worst", r.worst}}.dump() << "\n";
    flips += r.flipped_tokens;
    token_layers += r.routed_tokens;
    auto& errors = r.fp8_kept ? fp8_errors : bf16_errors;
    errors.insert(errors.end(), r.clean_errors.begin(), r.clean_errors.end());
    if (r.ok) continue;
    ++failed;
    ADD_FAILURE() << drawn.summary << ": " << describe(r);
    for (auto& [name, edit] : ablations()) {
      json variant = drawn.config;
      edit(variant);
      if (variant == drawn.config) continue;
      ConfigResult v;
      try {
        ModelConfig::from_json(variant, "variant");
        v = run_config(variant, drawn.fp8, seed, page_size, 3);
      } catch (const Error& e) {
        continue;  // the variant is not a valid config (e.g. top-k over the reachable experts)
      }
      std::printf("[diff]     variant %-32s %s\n", name.c_str(), describe(v).c_str());
      if (log) log << json{{"seed", seed}, {"variant", name}, {"result", describe(v)}, {"ok", v.ok}}.dump() << "\n";
    }
  }
  for (auto* errors : {&bf16_errors, &fp8_errors}) {
    if (errors->empty()) continue;
    std::sort(errors->begin(), errors->end());
    auto at = [&](double q) { return (*errors)[static_cast<size_t>(q * static_cast<double>(errors->size() - 1))]; };
    std::printf("[diff] %s rows: %zu, error p50 %.3g p90 %.3g p99 %.3g max %.3g\n",
                errors == &bf16_errors ? "bf16" : "fp8-kept", errors->size(), at(0.5), at(0.9), at(0.99),
                errors->back());
  }
  std::printf("[diff] %d of %d configs failed; the GPU's own routing differed from the reference's at %lld of %lld "
              "token-layers (near ties that BF16 noise decides)\n", failed, count, static_cast<long long>(flips),
              static_cast<long long>(token_layers));
}

}  // namespace
}  // namespace narwhal
