// The GPU forward split over TP ranks on ONE GPU (the device-local backend: a thread per rank, exchanging device
// memory), against the CPU reference on the same checkpoint: the fixtures at TP 2, 4 and 8 (or the refusal naming
// the field or FP8 block), DeepSeek's attention dims in BF16 and FP8 at TP 2, 4 and 8 and with expert parallelism
// (also with DeepEP's all-to-all dispatch, --moe-a2a-backend deepep, in each mode), random configs at TP 2, and
// DeepSeek-V3's per-rank shapes at TP 8 (and EP 8, also with deepep) with dummy weights; with two GPUs or more, NCCL
// with graphs too (and deepep's low-latency mode captured).
// TP must be exactly as accurate as TP 1, so it is held to forward_diff_test.cpp's tolerances against the same CPU
// reference (which equals transformers to ~1e-6): 2e-2 in ||tp - cpu||_2 / ||cpu||_2 per row for BF16
// activations, 8e-2 where FP8 weights stay FP8 (activations quantized to e4m3 per 128). Comparing TP n with GPU
// TP 1 instead would hold two BF16 paths, each up to 2e-2 from the truth, to 2e-2 from each other: measured
// 2.15e-2 on one random config, 3.7e-2 with FP8 kept, while each was within tolerance of the truth.
// The TP ranks run their experts with the CPU's routing (set_routing_override): a near tie of expert scores, which
// BF16 noise decides either way, must not make the two a different computation (forward_diff_test.cpp). Greedy
// ids must equal the reference's wherever its top-2 margin exceeds the tolerance times its largest logit.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>
#include <tuple>

#include "core/cuda_check.h"
#include "core/error.h"
#include "core/logging.h"
#include "cuda/gpu_test_util.h"
#include "cuda/parallel_reference.h"
#include "model/cuda_weights.h"
#include "model/deepseek_model.h"
#include "parallel/process_world.h"
#include "random_config.h"
#include "runtime/cuda_model_runner.h"
#include "step_script.h"
#include "test_util.h"

namespace narwhal {
namespace {

using testing::expect_logits_close;
using testing::kParallelPageSize;
using testing::Reference;
using testing::run_reference;
using testing::write_deepseek_dims;

ParallelFlags tp_flags(int tp) {
  ParallelFlags flags;
  flags.tp_size = tp;
  flags.dist_timeout_s = 300;
  return flags;
}

// The script on `tp` ranks made by `make` (the reference's routing when given): rank 0's logits, after checking that
// every rank's equal them bit for bit. Throws the world's error (a refusal).
using RankRunnerFn = std::function<std::unique_ptr<CudaModelRunner>(CudaRunnerOptions&)>;
std::vector<Tensor> run_tp(int tp, Backend backend, const testing::StepScript& script, const Reference* ref,
                           const RankRunnerFn& make, bool graphs = false) {
  std::vector<std::vector<Tensor>> by_rank(tp);
  run_ranks(tp_flags(tp), [&](const ParallelConfig& rank, Communicator& comm) {
    CudaRunnerOptions o = testing::script_runner_options(script);
    o.tp = &comm;
    o.ranks_per_device = backend == Backend::kDeviceLocal ? tp : 1;
    o.disable_cuda_graph = !graphs;
    auto runner = make(o);
    for (size_t i = 0; i < script.steps.size(); ++i) {
      if (ref) runner->set_routing_override(&ref->routing[i]);
      by_rank[rank.tp_rank()].push_back(runner->run(script.steps[i]));
    }
  }, backend);
  for (int r = 1; r < tp; ++r)
    for (size_t i = 0; i < script.steps.size(); ++i)
      EXPECT_EQ(std::memcmp(by_rank[r][i].data, by_rank[0][i].data, by_rank[0][i].nbytes()), 0)
          << "rank " << r << " step " << i;
  return by_rank[0];
}

// The checkpoint at TP 2, 4 and 8 on this GPU against the CPU reference. A TP size the config cannot take must be
// refused with a message naming the config.json field or the FP8 block (`expect_split` lists the sizes that must
// work).
void compare_tp_sizes(const std::string& dir, uint64_t seed, const std::string& name,
                      const std::vector<int>& expect_split) {
  const ModelConfig config = ModelConfig::from_file(dir + "/config.json");
  const testing::StepScript script = testing::make_step_script(seed, config.vocab_size, kParallelPageSize);
  const Reference ref = run_reference(dir, script);
  for (int tp : {2, 4, 8}) {
    const std::string what = cat(name, " tp ", tp);
    try {
      const std::vector<Tensor> got = run_tp(tp, Backend::kDeviceLocal, script, &ref, [&](CudaRunnerOptions& o) {
        return CudaModelRunner::load(dir, o);
      });
      expect_logits_close(got, ref.logits, what, ref.tolerance);
    } catch (const Error& e) {
      const std::string message = e.what();
      const bool named = message.find("config.json") != std::string::npos ||
                         message.find("FP8 scale block") != std::string::npos;
      EXPECT_TRUE(named) << what << ": " << message;
      EXPECT_EQ(std::find(expect_split.begin(), expect_split.end(), tp), expect_split.end()) << what << ": " << message;
      std::printf("%s: refused: %s\n", what.c_str(), message.c_str());
    }
  }
}

class CudaTpFixture : public ::testing::TestWithParam<const char*> {};

// Most fixtures' dims leave a TP rank a moe_intermediate_size that is no multiple of 8 (24 / 2 = 12), which the
// GPU kernels refuse; v2_lite splits in two.
TEST_P(CudaTpFixture, MatchesTheReferenceOrIsRefused) {
  NW_REQUIRE_GPU();
  set_log_level(LogLevel::kWarning);
  const std::string name = GetParam();
  compare_tp_sizes(testing::fixture_dir(name), 3, name, name == std::string("v2_lite") ? std::vector<int>{2}
                                                                                       : std::vector<int>{});
}

INSTANTIATE_TEST_SUITE_P(All, CudaTpFixture, ::testing::Values("v2_lite", "v2", "v3", "v3_fp8", "v3_odd", "v2_odd"));

// The tuned MLA and MoE kernels at TP 2, 4 and 8 (2 heads per rank at TP 8).
TEST(CudaTp, DeepSeekDimsMatchTheReference) {
  NW_REQUIRE_GPU();
  set_log_level(LogLevel::kWarning);
  for (bool fp8 : {false, true}) {
    testing::TempDir dir;
    write_deepseek_dims(dir.path(), fp8);
    compare_tp_sizes(dir.path(), 4, fp8 ? "deepseek dims fp8" : "deepseek dims bf16", {2, 4, 8});
  }
}

// Expert parallelism in the tuned MoE kernels (each rank's choices of other ranks' experts skipped, the shared
// experts run for its EP rank's share of the tokens): DeepSeek's dims at TP 2 / EP 2, TP 4 / EP 2 and 4, TP 8 /
// EP 8, in BF16 and FP8 kept FP8, against the CPU reference. Then DeepEP's dispatch (EP = TP 2 and 4, whole experts
// per rank): each rank routes its slice of the rows (the reference's routing, for those rows), all_to_alls them to
// the ranks of their experts and back, and the slices are all_gather'ed; in normal, low-latency and auto mode (the
// script's prefill and decode steps switch it); at TP 4 the decodes of one to three sequences leave some ranks an
// empty slice. The tolerances are TP's: each rank's experts sum a token's choices in F32 and round the row to BF16
// once before it travels back, and the combine adds the ranks' rows in F32 and rounds once more, as TP's BF16
// all_reduce of per-rank partial sums does.
TEST(CudaTp, ExpertParallelMatchesTheReference) {
  NW_REQUIRE_GPU();
  set_log_level(LogLevel::kWarning);
  std::vector<std::tuple<int, int, std::optional<DeepEpMode>>> splits = {
      {2, 2, {}}, {4, 2, {}}, {4, 4, {}}, {8, 8, {}}};
  for (int tp : {2, 4})
    for (DeepEpMode mode : {DeepEpMode::kNormal, DeepEpMode::kLowLatency, DeepEpMode::kAuto})
      splits.emplace_back(tp, tp, mode);
  for (bool fp8 : {false, true}) {
    testing::TempDir dir;
    write_deepseek_dims(dir.path(), fp8);
    const ModelConfig c = ModelConfig::from_file(dir.path() + "/config.json");
    const testing::StepScript script = testing::make_step_script(6, c.vocab_size, kParallelPageSize);
    const Reference ref = run_reference(dir.path(), script);
    for (const auto& split : splits) {
      const int tp = std::get<0>(split), ep = std::get<1>(split);
      const std::optional<DeepEpMode> deepep = std::get<2>(split);
      const std::vector<Tensor> got = run_tp(tp, Backend::kDeviceLocal, script, &ref, [&](CudaRunnerOptions& o) {
        o.ep_size = ep;
        if (deepep) {
          o.moe_a2a = MoeA2aBackend::kDeepEp;
          o.deepep_mode = *deepep;
        }
        return CudaModelRunner::load(dir.path(), o);
      });
      expect_logits_close(got, ref.logits, cat(fp8 ? "fp8" : "bf16", " tp ", tp, " ep ", ep,
                                               deepep ? cat(" deepep ", deepep_mode_name(*deepep)) : ""),
                          ref.tolerance);
    }
  }
}

// FP8 that stays FP8 with a rank's slice inside a 128-block is refused naming the tensor, --tp-size and the block.
TEST(CudaTp, Fp8SplitInsideABlockIsRefused) {
  NW_REQUIRE_GPU();
  set_log_level(LogLevel::kWarning);
  testing::TempDir dir;
  testing::write_random_checkpoint(dir.path(), testing::deepseek_dims_json(true), 13, true);  // moe 256
  const testing::StepScript script = testing::make_step_script(1, 1000, kParallelPageSize);
  try {
    run_tp(4, Backend::kDeviceLocal, script, nullptr, [&](CudaRunnerOptions& o) {
      return CudaModelRunner::load(dir.path(), o);
    });
    ADD_FAILURE() << "moe_intermediate_size 256 at TP 4 cut its FP8 blocks";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const char* part : {"experts.0.gate_proj.weight", "--tp-size 4", "falls inside FP8 scale block"})
      EXPECT_NE(message.find(part), std::string::npos) << message;
  }
}

// The random-config generator's configs at TP 2, where their dims split and the GPU takes them.
TEST(CudaTp, RandomConfigsAtTp2MatchTheReference) {
  NW_REQUIRE_GPU();
  set_log_level(LogLevel::kWarning);
  int tested = 0;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    const testing::RandomModel drawn = testing::random_model(seed);
    const ModelConfig config = ModelConfig::from_json(drawn.config, "config.json");
    try {
      check_gpu_support(config, {0, 2});
    } catch (const Error&) {
      continue;
    }
    testing::TempDir dir;
    testing::write_random_checkpoint(dir.path(), drawn.config, seed, drawn.fp8);
    const testing::StepScript script = testing::make_step_script(seed, config.vocab_size, kParallelPageSize);
    const Reference ref = run_reference(dir.path(), script);
    try {
      expect_logits_close(run_tp(2, Backend::kDeviceLocal, script, &ref, [&](CudaRunnerOptions& o) {
                     return CudaModelRunner::load(dir.path(), o);
                   }), ref.logits, drawn.summary, ref.tolerance);
      ++tested;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("FP8 scale block"), std::string::npos) << drawn.summary << ": " << e.what();
    }
  }
  std::printf("random configs at TP 2: %d compared\n", tested);
  EXPECT_GE(tested, 5);
}

// DeepSeek-V3's per-rank shapes at TP 8 (16 of 128 heads, hidden 7168, 256 experts of 2048 / 8, vocab 129280 / 8,
// FP8), at TP 8 with EP 8 and with deepep (auto mode), two layers (one dense, one MoE), dummy weights: the whole
// forward runs on every rank and gives finite logits, the same on every rank.
TEST(CudaTp, DeepSeekV3PerRankShapesRunAtTp8) {
  NW_REQUIRE_GPU();
  set_log_level(LogLevel::kWarning);
  const ModelConfig config = ModelConfig::from_json(testing::deepseek_v3_dims_json(), "config.json");
  const testing::StepScript script = testing::make_step_script(2, config.vocab_size, kParallelPageSize);
  // TP 8, TP 8 with EP 8 (32 whole experts of 2048 per rank), and that with deepep.
  for (const auto& split : {std::pair{1, MoeA2aBackend::kNone}, std::pair{8, MoeA2aBackend::kNone},
                            std::pair{8, MoeA2aBackend::kDeepEp}}) {
    const int ep = split.first;
    const std::vector<Tensor> logits = run_tp(8, Backend::kDeviceLocal, script, nullptr, [&](CudaRunnerOptions& o) {
      o.ep_size = ep;
      o.moe_a2a = split.second;
      const TpSlice slice{o.tp->rank(), o.tp->size(), o.ep_size};
      return std::make_unique<CudaModelRunner>(config, dummy_cuda_weights(config, 7, slice), o);
    });
    for (const Tensor& step : logits)
      for (int64_t i = 0; i < step.numel(); ++i)
        ASSERT_TRUE(std::isfinite(step.f32()[i])) << "ep " << ep << " " << moe_a2a_backend_name(split.second)
                                                  << " logit " << i;
  }
}

// The NCCL tests' model: a random checkpoint at DeepSeek's dims in `dir`, and the step script they run on it.
testing::StepScript nccl_checkpoint(const testing::TempDir& dir) {
  set_log_level(LogLevel::kWarning);
  testing::write_random_checkpoint(dir.path(), testing::deepseek_dims_json(false), 17);
  const ModelConfig config = ModelConfig::from_file(dir.path() + "/config.json");
  return testing::make_step_script(5, config.vocab_size, kParallelPageSize);
}

// NCCL, a GPU per rank: decode steps replayed from CUDA graphs that captured the collectives equal eager steps
// (the same kernels and sums; graphs for 1..3 sequences are never padded), and eager NCCL matches the reference.
TEST(CudaTp, NcclWithGraphsMatchesEagerAndTheReference) {
  NW_REQUIRE_GPU();
  if (testing::gpu_count() < 2) GTEST_SKIP() << "NCCL TP needs two GPUs";
  testing::TempDir dir;
  const testing::StepScript script = nccl_checkpoint(dir);
  const auto load = [&](CudaRunnerOptions& o) { return CudaModelRunner::load(dir.path(), o); };
  const Reference ref = run_reference(dir.path(), script);
  const std::vector<Tensor> eager = run_tp(2, Backend::kNccl, script, &ref, load);
  expect_logits_close(eager, ref.logits, "nccl tp 2", ref.tolerance);
  expect_logits_close(run_tp(2, Backend::kNccl, script, nullptr, load, true), run_tp(2, Backend::kNccl, script, nullptr, load),
               "nccl graphs vs eager", 1e-5);
}

// NCCL with deepep: low latency, whose fixed-size all_to_alls decode graphs capture (auto mode: the prefill steps
// run normal mode eagerly, the decodes replay graphs), equals eager low latency (the same kernels and sums), and
// eager normal mode matches the reference. Normal mode captures no graph (it reads its counts on the host).
TEST(CudaTp, NcclDeepEpGraphsMatchEagerAndTheReference) {
  NW_REQUIRE_GPU();
  if (testing::gpu_count() < 2) GTEST_SKIP() << "NCCL TP needs two GPUs";
  testing::TempDir dir;
  const testing::StepScript script = nccl_checkpoint(dir);
  std::atomic<int> with_graphs{0};  // ranks that captured decode graphs
  const auto deepep = [&](DeepEpMode mode) {
    return [&, mode](CudaRunnerOptions& o) {
      o.ep_size = 2;
      o.moe_a2a = MoeA2aBackend::kDeepEp;
      o.deepep_mode = mode;
      auto runner = CudaModelRunner::load(dir.path(), o);
      with_graphs += runner->graph_batch_sizes().empty() ? 0 : 1;
      return runner;
    };
  };
  const Reference ref = run_reference(dir.path(), script);
  expect_logits_close(run_tp(2, Backend::kNccl, script, &ref, deepep(DeepEpMode::kNormal)), ref.logits,
                      "nccl deepep normal", ref.tolerance);
  with_graphs = 0;
  run_tp(2, Backend::kNccl, script, nullptr, deepep(DeepEpMode::kNormal), true);
  EXPECT_EQ(with_graphs, 0) << "normal mode syncs the host: no graph may capture it";
  const std::vector<Tensor> graphed = run_tp(2, Backend::kNccl, script, nullptr, deepep(DeepEpMode::kAuto), true);
  EXPECT_EQ(with_graphs, 2);
  expect_logits_close(graphed, run_tp(2, Backend::kNccl, script, nullptr, deepep(DeepEpMode::kAuto)),
                      "nccl deepep graphs vs eager", 1e-5);
}

}  // namespace
}  // namespace narwhal
