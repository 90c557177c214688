// DP attention in the GPU forward, its ranks on ONE GPU (the device-local backend), against the CPU reference: each
// DP group runs its own step script through attention, TP over the group's ranks, and the groups meet around every
// MLP / MoE, split over all ranks (with and without EP). Each group's logits must match the CPU reference at TP 1 on
// that group's batch alone, within cuda_tp_test.cpp's tolerances and for its reasons (2e-2 per row in BF16, 8e-2
// where FP8 weights stay FP8); every rank of a group must hold the same bits; a group with nothing to run (empty
// batches) must still meet the others and return no logits. The experts run with the reference's routing (each
// group's, stacked in group order as the FFN sees the rows), as in cuda_tp_test.cpp. DeepEP's dispatch
// (--moe-a2a-backend deepep) replaces the groups' gather and the all_reduce around every MoE layer: each rank routes
// its slice of its own group's rows (the same tolerances, cuda_tp_test.cpp's ExpertParallelMatchesTheReference
// says why).
// DeepSeek-V3's per-rank shapes at TP 8 with DP 8 (EP 8, also with deepep) and DP 2 run on dummy weights; with two
// GPUs, NCCL with decode graphs too.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>

#include "core/error.h"
#include "core/logging.h"
#include "cuda/gpu_test_util.h"
#include "cuda/parallel_reference.h"
#include "model/cuda_weights.h"
#include "parallel/process_world.h"
#include "runtime/cuda_model_runner.h"
#include "step_script.h"
#include "test_util.h"

namespace narwhal {
namespace {

using testing::kParallelPageSize;
using testing::Reference;
using testing::StepScript;

// tp ranks in dp groups of tp / dp, experts over ep groups; the groups in `idle` run empty batches.
struct DpLayout {
  int tp, dp, ep;
  std::vector<int> idle;
  bool is_idle(int group) const { return std::find(idle.begin(), idle.end(), group) != idle.end(); }
  std::string describe() const {
    return cat("tp ", tp, " dp ", dp, " ep ", ep, idle.empty() ? "" : cat(" (", idle.size(), " group(s) idle)"));
  }
};

// Group g's script: seeded by g, so the groups run different batches (sequence counts, lengths, tokens).
std::vector<StepScript> group_scripts(int dp, int64_t vocab) {
  std::vector<StepScript> scripts;
  for (int g = 0; g < dp; ++g) scripts.push_back(testing::make_step_script(21 + g, vocab, kParallelPageSize));
  return scripts;
}

// Step i of group g as the layout runs it: the group's batch (empty when idle), naming every group's token count
// and whether every group decodes, as the engine tells every rank.
ForwardBatch dp_step(const DpLayout& l, const std::vector<StepScript>& scripts, int group, size_t i) {
  ForwardBatch step = l.is_idle(group) ? ForwardBatch() : scripts[group].steps[i];
  step.dp_decode = true;
  for (int g = 0; g < l.dp; ++g) {
    step.dp_tokens.push_back(l.is_idle(g) ? 0 : scripts[g].steps[i].num_tokens());
    for (const SequenceInfo& s : scripts[g].steps[i].seqs) step.dp_decode &= l.is_idle(g) || s.new_len == 1;
  }
  return step;
}

// The references' routing of every group's step i, stacked in group order: the rows each MoE layer runs on.
RoutingTrace stacked_routing(const DpLayout& l, const std::vector<Reference>& refs, size_t i) {
  RoutingTrace out;
  for (int g = 0; g < l.dp; ++g) {
    if (l.is_idle(g)) continue;
    const std::vector<RoutingTrace::Layer>& layers = refs[g].routing[i].layers;
    out.layers.resize(layers.size());
    for (size_t k = 0; k < layers.size(); ++k) {
      RoutingTrace::Layer& to = out.layers[k];
      const RoutingTrace::Layer& from = layers[k];
      to.tokens += from.tokens;
      to.experts = from.experts;
      to.top_k = from.top_k;
      to.logits.insert(to.logits.end(), from.logits.begin(), from.logits.end());
      to.ids.insert(to.ids.end(), from.ids.begin(), from.ids.end());
      to.weights.insert(to.weights.end(), from.weights.begin(), from.weights.end());
    }
  }
  return out;
}

// The layout's runners, made by `make`, through every step (with the references' routing when given); returns each
// group's logits (its first rank's) after checking that its other ranks' equal them bit for bit, and that an idle
// group's have no rows, and that world rank 0 alone counted the experts of every group's tokens. Throws the world's
// error (a refusal). With `graphs` (NCCL), every rank must have captured decode graphs.
using RankRunnerFn = std::function<std::unique_ptr<CudaModelRunner>(CudaRunnerOptions&)>;
std::vector<std::vector<Tensor>> run_dp(const DpLayout& l, const std::vector<StepScript>& scripts,
                                        const std::vector<Reference>* refs, const RankRunnerFn& make,
                                        Backend backend = Backend::kDeviceLocal, bool graphs = false) {
  ParallelFlags flags;
  flags.tp_size = l.tp;
  flags.dp_size = l.dp;
  flags.enable_dp_attention = true;
  flags.ep_size = l.ep;
  const StepScript& largest = *std::max_element(scripts.begin(), scripts.end(), [](const auto& a, const auto& b) {
    return a.pages_needed < b.pages_needed;
  });
  const size_t steps = scripts[0].steps.size();
  int64_t tokens = 0;  // every busy group's, all of which the FFN runs on
  for (int g = 0; g < l.dp; ++g)
    for (size_t i = 0; i < steps && !l.is_idle(g); ++i) tokens += scripts[g].steps[i].num_tokens();
  std::vector<std::vector<Tensor>> by_rank(l.tp);
  run_ranks(flags, [&](const ParallelConfig& rank, Communicator& world) {
    ParallelGroups groups = split_groups(world, rank);
    CudaRunnerOptions o = testing::script_runner_options(largest);  // each group's pages lie below its own
    o.tp = groups.tp ? groups.tp.get() : &world;
    o.ep_size = l.ep;
    o.dp_group = groups.attn_tp.get();
    o.dp_size = l.dp;
    o.ranks_per_device = backend == Backend::kDeviceLocal ? l.tp : 1;
    o.disable_cuda_graph = !graphs;
    auto runner = make(o);
    if (graphs) {
      EXPECT_FALSE(runner->graph_batch_sizes().empty()) << "rank " << rank.tp_rank();
    }
    std::vector<RoutingTrace> routing(steps);
    for (size_t i = 0; i < steps; ++i) {
      if (refs) {
        routing[i] = stacked_routing(l, *refs, i);
        runner->set_routing_override(&routing[i]);
      }
      by_rank[rank.tp_rank()].push_back(runner->run(dp_step(l, scripts, rank.dp_rank(), i)));
    }
    // The expert counts: world rank 0's, of every group's rows once (a padded graph's real ones); no other rank's.
    // With deepep no rank counts on the GPU yet (each routes its own slice).
    const std::vector<int64_t> counts = runner->expert_tokens();
    if (rank.tp_rank() == 0 && !runner->model().tp_dims().slice.deepep()) {
      EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), int64_t{0}),
                testing::routed_choices(runner->config(), tokens)) << l.describe();
    } else {
      EXPECT_TRUE(counts.empty()) << l.describe() << " rank " << rank.tp_rank();
    }
  }, backend);
  const int per_group = l.tp / l.dp;
  std::vector<std::vector<Tensor>> by_group;
  for (int g = 0; g < l.dp; ++g) {
    const std::vector<Tensor>& first = by_rank[g * per_group];
    for (size_t i = 0; i < steps; ++i) {
      if (l.is_idle(g)) {
        EXPECT_EQ(first[i].numel(), 0) << l.describe() << ": idle group " << g << " step " << i;
      }
      for (int r = 1; r < per_group; ++r) {
        const Tensor& other = by_rank[g * per_group + r][i];
        const bool same = other.shape == first[i].shape &&
                          (first[i].numel() == 0 || std::memcmp(other.data, first[i].data, first[i].nbytes()) == 0);
        EXPECT_TRUE(same) << l.describe() << ": rank " << g * per_group + r << " step " << i;
      }
    }
    by_group.push_back(first);
  }
  return by_group;
}

// Makes a rank's runner from its options (run_dp fills them in) with `deepep`'s dispatch when given.
RankRunnerFn loader(const std::string& dir, std::optional<DeepEpMode> deepep = std::nullopt) {
  return [dir, deepep](CudaRunnerOptions& o) {
    if (deepep) {
      o.moe_a2a = MoeA2aBackend::kDeepEp;
      o.deepep_mode = *deepep;
    }
    return CudaModelRunner::load(dir, o);
  };
}

// The checkpoint in `dir` at the layout, each busy group's logits against the CPU reference on its batch alone.
void expect_groups_match(const std::string& dir, const std::string& name, const DpLayout& l,
                         std::optional<DeepEpMode> deepep = std::nullopt) {
  const ModelConfig config = ModelConfig::from_file(dir + "/config.json");
  const std::vector<StepScript> scripts = group_scripts(l.dp, config.vocab_size);
  std::vector<Reference> refs;
  for (int g = 0; g < l.dp; ++g) refs.push_back(l.is_idle(g) ? Reference() : testing::run_reference(dir, scripts[g]));
  const std::vector<std::vector<Tensor>> got = run_dp(l, scripts, &refs, loader(dir, deepep));
  const std::string what = cat(name, " ", l.describe(), deepep ? cat(" deepep ", deepep_mode_name(*deepep)) : "");
  for (int g = 0; g < l.dp; ++g) {
    if (l.is_idle(g)) continue;
    testing::expect_logits_close(got[g], refs[g].logits, cat(what, " group ", g), refs[g].tolerance);
  }
}

// Attention whole on each rank (DP 2 of TP 2), TP 2 inside each of two groups (TP 4), and DP 4 with the experts
// over 4 and 2 EP groups: v2_lite (whose experts split in two, cuda_tp_test.cpp), DeepSeek's dims in BF16 and FP8.
TEST(CudaDp, EachGroupMatchesTheReferenceOnItsOwnBatch) {
  NW_REQUIRE_GPU();
  set_log_level(LogLevel::kWarning);
  expect_groups_match(testing::fixture_dir("v2_lite"), "v2_lite", {2, 2, 1, {}});
  for (bool fp8 : {false, true}) {
    testing::TempDir dir;
    testing::write_deepseek_dims(dir.path(), fp8);
    for (const DpLayout& l : {DpLayout{2, 2, 1, {}}, DpLayout{4, 2, 1, {}}, DpLayout{4, 4, 4, {}},
                              DpLayout{4, 2, 2, {}}})
      expect_groups_match(dir.path(), fp8 ? "deepseek dims fp8" : "deepseek dims bf16", l);
  }
}

// Idle groups run every collective with empty batches: one of two (TP 2 each), two of four with EP, and all.
TEST(CudaDp, AnIdleGroupStillMeetsTheOthers) {
  NW_REQUIRE_GPU();
  set_log_level(LogLevel::kWarning);
  testing::TempDir dir;
  testing::write_deepseek_dims(dir.path(), false);
  for (const DpLayout& l : {DpLayout{4, 2, 1, {1}}, DpLayout{4, 4, 2, {0, 2}}, DpLayout{2, 2, 1, {0, 1}}})
    expect_groups_match(dir.path(), "deepseek dims bf16", l);
}

// DeepEP's dispatch with DP attention (EP = TP): DP 2 of TP 2 (a group of one rank: its slice is all its rows), DP 2
// of TP 4 (each group's rows split over its two ranks) and with a group idle, in normal and low-latency mode and
// auto (low latency where every group decodes, as dp_decode says), BF16 and FP8 kept FP8.
TEST(CudaDp, DeepEpMatchesTheReferenceOnEachGroupsBatch) {
  NW_REQUIRE_GPU();
  set_log_level(LogLevel::kWarning);
  for (bool fp8 : {false, true}) {
    testing::TempDir dir;
    testing::write_deepseek_dims(dir.path(), fp8);
    for (const DpLayout& l : {DpLayout{2, 2, 2, {}}, DpLayout{4, 2, 4, {}}, DpLayout{4, 2, 4, {1}}})
      for (DeepEpMode mode : {DeepEpMode::kNormal, DeepEpMode::kLowLatency, DeepEpMode::kAuto})
        if (!fp8 || mode != DeepEpMode::kAuto)
          expect_groups_match(dir.path(), fp8 ? "deepseek dims fp8" : "deepseek dims bf16", l, mode);
  }
}

// DeepSeek-V3's per-rank shapes at TP 8 (cuda_tp_test.cpp's V3 test) with DP attention, dummy weights: DP 8 with
// EP 8 (every rank all 128 heads and the whole vocabulary, 32 whole experts) and DP 2 (32 heads and a quarter of the
// vocabulary per rank, the experts split 8 ways), and DP 8 with deepep (auto). Every group's logits are finite, the
// same on each of its ranks.
TEST(CudaDp, DeepSeekV3PerRankShapesRunAtTp8) {
  NW_REQUIRE_GPU();
  set_log_level(LogLevel::kWarning);
  const ModelConfig config = ModelConfig::from_json(testing::deepseek_v3_dims_json(), "config.json");
  const std::vector<StepScript> scripts = group_scripts(8, config.vocab_size);
  for (const auto& [l, a2a] : {std::pair{DpLayout{8, 8, 8, {}}, MoeA2aBackend::kNone},
                               std::pair{DpLayout{8, 2, 1, {}}, MoeA2aBackend::kNone},
                               std::pair{DpLayout{8, 8, 8, {}}, MoeA2aBackend::kDeepEp}}) {
    const std::vector<StepScript> mine(scripts.begin(), scripts.begin() + l.dp);
    const auto make = [&, l = l, a2a = a2a](CudaRunnerOptions& o) {
      o.moe_a2a = a2a;
      const TpSlice slice{o.tp->rank(), o.tp->size(), l.ep, l.dp};
      return std::make_unique<CudaModelRunner>(config, dummy_cuda_weights(config, 7, slice), o);
    };
    const std::vector<std::vector<Tensor>> logits = run_dp(l, mine, nullptr, make);
    for (int g = 0; g < l.dp; ++g)
      for (size_t i = 0; i < logits[g].size(); ++i) {
        ASSERT_EQ(logits[g][i].size(0), static_cast<int64_t>(mine[g].steps[i].seqs.size())) << l.describe();
        for (int64_t k = 0; k < logits[g][i].numel(); ++k)
          ASSERT_TRUE(std::isfinite(logits[g][i].f32()[k]))
              << l.describe() << " " << moe_a2a_backend_name(a2a) << " group " << g << " logit " << k;
      }
  }
}

// NCCL, a GPU per rank (DP 2 of TP 2): decode steps where every group decodes replay graphs on every rank (the
// smaller group padded to the larger's bucket, an idle group's all padding) and match eager steps; eager NCCL matches
// the reference. Graphs and eager run different row counts through the GEMMs, so they are held to the reference's
// tolerance, not to bits. With deepep (EP 2, auto mode) the graphs captured the low-latency all_to_alls, sized by
// the graph's rows; the prefills run normal mode eagerly.
TEST(CudaDp, NcclWithGraphsMatchesEagerAndTheReference) {
  NW_REQUIRE_GPU();
  if (testing::gpu_count() < 2) GTEST_SKIP() << "NCCL DP attention needs two GPUs";
  set_log_level(LogLevel::kWarning);
  testing::TempDir dir;
  testing::write_deepseek_dims(dir.path(), false);
  const ModelConfig config = ModelConfig::from_file(dir.path() + "/config.json");
  const std::vector<StepScript> scripts = group_scripts(2, config.vocab_size);
  for (const std::optional<DeepEpMode> deepep : {std::optional<DeepEpMode>(), std::optional(DeepEpMode::kAuto)}) {
    const RankRunnerFn load = loader(dir.path(), deepep);
    const int ep = deepep ? 2 : 1;
    for (const DpLayout& l : {DpLayout{2, 2, ep, {}}, DpLayout{2, 2, ep, {1}}}) {
      std::vector<Reference> refs;
      for (int g = 0; g < l.dp; ++g)
        refs.push_back(l.is_idle(g) ? Reference() : testing::run_reference(dir.path(), scripts[g]));
      const std::vector<std::vector<Tensor>> eager = run_dp(l, scripts, nullptr, load, Backend::kNccl);
      const std::vector<std::vector<Tensor>> graphed = run_dp(l, scripts, nullptr, load, Backend::kNccl, true);
      const std::vector<std::vector<Tensor>> routed = run_dp(l, scripts, &refs, load, Backend::kNccl);
      for (int g = 0; g < l.dp; ++g) {
        if (l.is_idle(g)) continue;
        const std::string what = cat("nccl ", l.describe(), deepep ? " deepep auto" : "", " group ", g);
        testing::expect_logits_close(routed[g], refs[g].logits, what, refs[g].tolerance);
        testing::expect_logits_close(graphed[g], eager[g], what + " graphs vs eager", refs[g].tolerance);
      }
    }
  }
}

}  // namespace
}  // namespace narwhal
