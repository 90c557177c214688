// DP attention in the CPU forward (rank threads on the host backend): each DP group runs its own batch through
// attention, TP over the group's ranks, and all groups meet around every MLP / MoE, split over all ranks (with and
// without EP). Each group's logits must equal TP 1's on that group's batch alone, every rank of a group must hold
// the same bits, and a group with nothing to run (empty batches) must still meet the others. With DeepEP's dispatch
// (--moe-a2a-backend deepep, EP = TP) each rank routes its slice of its own group's rows instead: every fixture with
// routed experts at TP 2 / DP 2, TP 4 / DP 2 and 4, TP 8 / DP 4 (where heads and experts split), in normal,
// low-latency and auto mode (which switches between the two within a script), idle groups included.
// Tolerance 1e-5 relative, as tensor_parallel_test.cpp: the same float32 products in another grouping.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <tuple>

#include "core/error.h"
#include "core/logging.h"
#include "model/deepseek_model.h"
#include "model/safetensors.h"
#include "parallel/process_world.h"
#include "step_script.h"
#include "test_util.h"

namespace narwhal {
namespace {

constexpr double kTolerance = 1e-5;
constexpr int64_t kPageSize = 8;

testing::StepScript group_script(int group, int64_t vocab) {
  return testing::make_step_script(11 + group, vocab, kPageSize);
}

// The fixture at TP `tp` with `dp` DP-attention groups (EP `ep`; with `deepep`, DeepEP's dispatch in that mode);
// group g runs group_script(g), or empty batches when it is in `idle`; every batch names every group's token count
// and whether all of them decode, as the engine's do. Returns every rank's logits per step.
std::vector<std::vector<Tensor>> run_dp(const std::string& dir, int tp, int dp, int ep, const std::vector<int>& idle,
                                        std::optional<DeepEpMode> deepep) {
  const ModelConfig config = ModelConfig::from_file(dir + "/config.json");
  const Checkpoint checkpoint(dir);
  std::vector<std::vector<Tensor>> by_rank(tp);
  ParallelFlags flags;
  flags.tp_size = tp;
  flags.dp_size = dp;
  flags.enable_dp_attention = true;
  flags.ep_size = ep;
  run_ranks(flags, [&](const ParallelConfig& rank, Communicator& world) {
    ParallelGroups groups = split_groups(world, rank);
    Communicator& tp_group = groups.tp ? *groups.tp : world;
    const TpSlice slice{tp_group.rank(), tp, ep, dp, deepep ? MoeA2aBackend::kDeepEp : MoeA2aBackend::kNone,
                        deepep.value_or(DeepEpMode::kAuto)};
    ModelWeights weights = load_weights(config, checkpoint, Device::kCPU, slice);
    const DeepSeekModel model(config, std::move(weights), &tp_group, ep, groups.attn_tp.get(), dp, slice.moe_a2a,
                              slice.deepep_mode);
    const int group = rank.dp_rank();
    const bool is_idle = std::find(idle.begin(), idle.end(), group) != idle.end();
    std::vector<testing::StepScript> scripts;
    for (int g = 0; g < dp; ++g) scripts.push_back(group_script(g, config.vocab_size));
    KvCache cache(config, config.num_hidden_layers, scripts[group].pages_needed, kPageSize);
    for (size_t i = 0; i < scripts[group].steps.size(); ++i) {
      ForwardBatch step = is_idle ? ForwardBatch() : scripts[group].steps[i];
      step.dp_decode = true;
      for (int g = 0; g < dp; ++g) {
        const bool g_idle = std::find(idle.begin(), idle.end(), g) != idle.end();
        step.dp_tokens.push_back(g_idle ? 0 : scripts[g].steps[i].num_tokens());
        for (const SequenceInfo& s : scripts[g].steps[i].seqs) step.dp_decode &= g_idle || s.new_len == 1;
      }
      by_rank[rank.tp_rank()].push_back(model.forward(step, cache).logits);
    }
  });
  return by_rank;
}

void expect_dp_matches(const std::string& fixture, int tp, int dp, int ep, const std::vector<int>& idle,
                       std::optional<DeepEpMode> deepep = std::nullopt) {
  const std::string dir = testing::fixture_dir(fixture);
  const std::string what = cat(fixture, " tp ", tp, " dp ", dp, " ep ", ep, idle.empty() ? "" : " (a group idle)",
                               deepep ? cat(" deepep ", deepep_mode_name(*deepep)) : "");
  const DeepSeekModel alone = DeepSeekModel::load(dir);
  const std::vector<std::vector<Tensor>> got = run_dp(dir, tp, dp, ep, idle, deepep);
  const int per_group = tp / dp;
  double worst = 0;
  for (int g = 0; g < dp; ++g) {
    const std::vector<Tensor>& first = got[g * per_group];
    const bool is_idle = std::find(idle.begin(), idle.end(), g) != idle.end();
    const testing::StepScript script = group_script(g, alone.config().vocab_size);
    KvCache cache(alone.config(), alone.config().num_hidden_layers, script.pages_needed, kPageSize);
    for (size_t i = 0; i < script.steps.size(); ++i) {
      if (is_idle) {
        EXPECT_EQ(first[i].numel(), 0) << what << ": idle group " << g << " step " << i;
        continue;
      }
      const Tensor want = alone.forward(script.steps[i], cache).logits;
      ASSERT_EQ(first[i].shape, want.shape) << what;
      const double err = testing::compare(first[i].f32(), want.f32(), want.numel()).rel;
      EXPECT_LE(err, kTolerance) << what << ": group " << g << " step " << i;
      worst = std::max(worst, err);
      for (int r = 1; r < per_group; ++r)
        EXPECT_EQ(std::memcmp(got[g * per_group + r][i].data, first[i].data, first[i].nbytes()), 0)
            << what << ": rank " << g * per_group + r << " step " << i;
    }
  }
  std::printf("%s: max rel error vs TP 1 %.2e\n", what.c_str(), worst);
}

TEST(DpAttention, EachGroupGivesTp1LogitsOnItsOwnBatch) {
  set_log_level(LogLevel::kWarning);
  for (const char* fixture : {"v3", "v2_lite"}) {
    expect_dp_matches(fixture, 2, 2, 1, {});  // attention whole on each rank, the MoE split over both
    expect_dp_matches(fixture, 4, 2, 1, {});  // attention TP 2 in each of two groups
    expect_dp_matches(fixture, 4, 4, 1, {});
    expect_dp_matches(fixture, 4, 2, 4, {});  // with EP over all four ranks
  }
}

TEST(DpAttention, AnIdleGroupStillMeetsTheOthers) {
  set_log_level(LogLevel::kWarning);
  expect_dp_matches("v3", 4, 2, 1, {1});
  expect_dp_matches("v3", 4, 4, 2, {0, 2});
  expect_dp_matches("v3", 4, 2, 4, {1}, DeepEpMode::kNormal);
  expect_dp_matches("v3", 4, 4, 4, {0, 2}, DeepEpMode::kLowLatency);
  expect_dp_matches("v2_lite", 8, 4, 8, {1, 2, 3}, DeepEpMode::kAuto);
}

// Whether the fixture's heads split over tp / dp ranks and its experts over tp.
bool splits(const std::string& fixture, int tp, int dp) {
  try {
    tp_dims(ModelConfig::from_file(testing::fixture_dir(fixture) + "/config.json"), {0, tp, tp, dp});
  } catch (const Error&) {
    return false;
  }
  return true;
}

class DpDeepEp : public ::testing::TestWithParam<const char*> {};

TEST_P(DpDeepEp, EachGroupGivesTp1LogitsOnItsOwnBatch) {
  set_log_level(LogLevel::kWarning);
  // Auto runs both modes (the scripts' prefill steps normal, the steps where every group decodes low latency).
  const std::vector<DeepEpMode> both = {DeepEpMode::kNormal, DeepEpMode::kLowLatency}, automatic = {DeepEpMode::kAuto};
  int ran = 0;
  for (const auto& [tp, dp, modes] : {std::tuple{2, 2, both}, std::tuple{4, 2, automatic}, std::tuple{4, 4, both},
                                      std::tuple{8, 4, automatic}}) {
    if (!splits(GetParam(), tp, dp)) continue;
    ++ran;
    for (DeepEpMode mode : modes) expect_dp_matches(GetParam(), tp, dp, tp, {}, mode);
  }
  EXPECT_GE(ran, 2) << "every fixture splits at TP 2 / DP 2 and TP 4 / DP 4";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DpDeepEp, ::testing::Values("v2_lite", "v2", "v3", "v3_fp8", "v3_odd", "v2_odd"));

}  // namespace
}  // namespace narwhal
