// The engine over a TpModelRunner in one process (rank threads on the host backend): greedy outputs and logits
// of a batch with forks (n = 2, page copies on every rank), chunked prefill and the prefix cache equal TP 1's, also
// with DP attention (a DpGroupRunner per DP rank), EP and DeepEP's dispatch (--moe-a2a-backend deepep, each mode)
// (logits within 1e-5 relative, as tests/model/tensor_parallel_test.cpp measures); a rank that fails mid-run stops
// the engine's loop, with every request aborted and Engine::failure naming the rank; and commands' wire form.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <numeric>
#include <thread>

#include "core/error.h"
#include "core/logging.h"
#include "runtime/engine.h"
#include "runtime/model_runner_factory.h"
#include "parallel/parallel_test_util.h"
#include "runtime/runtime_test_util.h"
#include "runtime/tp_model_runner.h"
#include "test_util.h"

namespace narwhal {
namespace {

constexpr double kTolerance = 1e-5;

struct Choice {
  std::vector<int32_t> ids;
  std::vector<std::vector<float>> logits;
};

using testing::parallel_flags;

ParallelFlags deepep(ParallelFlags flags, DeepEpMode mode) {
  flags.moe_a2a_backend = MoeA2aBackend::kDeepEp;
  flags.deepep_mode = mode;
  return flags;
}

// Three prompts (two sharing a prefix, one odd-length so its forks copy a partial page), n = 2 each, through the
// engine on the v3 fixture split as `flags` say; choices in (prompt, index) order.
std::vector<Choice> generate(const ParallelFlags& flags) {
  RunnerOptions options;
  options.model_path = testing::fixture_dir("v3");
  options.page_size = 2;
  options.max_total_tokens = 512;
  options.parallel = flags;
  EngineConfig config;
  config.chunked_prefill_size = 6;
  std::vector<std::unique_ptr<ModelRunner>> runners = make_model_runners(options);
  const ModelRunner& first = *runners[0];
  Engine engine(std::move(runners), config);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 42, 7, 9, 11, 3}, {5, 17, 42, 7, 9, 11, 3, 8, 1, 4}, {99}};
  std::vector<Choice> choices(prompts.size() * 2);
  for (size_t p = 0; p < prompts.size(); ++p) {
    RequestInput input;
    input.input_ids = prompts[p];
    input.params.temperature = 0.0;
    input.params.max_new_tokens = 6;
    input.params.ignore_eos = true;
    input.params.n = 2;
    input.return_logits = true;
    input.on_output = [&choices, p](RequestOutput&& out) {
      Choice& c = choices[p * 2 + static_cast<size_t>(out.index)];
      c.ids.insert(c.ids.end(), out.token_ids.begin(), out.token_ids.end());
      for (auto& row : out.logits) c.logits.push_back(std::move(row));
    };
    engine.submit(std::move(input));
  }
  engine.run_until_idle();
  // Every token fed was routed to top_k experts in every MoE layer, and counted once (on world rank 0; with deepep
  // each rank counts its slice and the TP group sums them).
  const std::vector<int64_t> experts = first.expert_tokens();
  EXPECT_EQ(static_cast<int64_t>(experts.size()), engine.model_config().n_routed_experts);
  EXPECT_EQ(std::accumulate(experts.begin(), experts.end(), int64_t{0}),
            testing::routed_choices(engine.model_config(), engine.stats().forward_tokens));
  return choices;
}

// TP 2 and 4; DP attention (prompts round robin over the DP ranks, each forking in its own cache; at DP 4 one rank
// runs idle throughout), with EP over all ranks too; deepep in each mode, with and without DP attention (the engine's
// steps mix prefill chunks and decodes, so auto switches modes from step to step).
TEST(TpRunner, EngineOutputsEqualTp1) {
  set_log_level(LogLevel::kWarning);
  const std::vector<Choice> tp1 = generate(parallel_flags(1));
  for (const ParallelFlags& flags :
       {parallel_flags(2), parallel_flags(4), parallel_flags(2, 2), parallel_flags(4, 2, 4), parallel_flags(4, 4),
        deepep(parallel_flags(2, 1, 2), DeepEpMode::kNormal), deepep(parallel_flags(4, 1, 4), DeepEpMode::kLowLatency),
        deepep(parallel_flags(4, 1, 4), DeepEpMode::kAuto), deepep(parallel_flags(2, 2, 2), DeepEpMode::kAuto),
        deepep(parallel_flags(4, 2, 4), DeepEpMode::kNormal),
        deepep(parallel_flags(4, 4, 4), DeepEpMode::kLowLatency)}) {
    const std::vector<Choice> got = generate(flags);
    const std::string what = cat("tp ", flags.tp_size, " dp ", flags.dp_size, " ep ", flags.ep_size, " ",
                                 moe_a2a_backend_name(flags.moe_a2a_backend), " ", deepep_mode_name(flags.deepep_mode));
    double worst = 0;
    for (size_t c = 0; c < tp1.size(); ++c) {
      EXPECT_EQ(got[c].ids, tp1[c].ids) << what << " choice " << c;
      ASSERT_EQ(got[c].logits.size(), tp1[c].logits.size());
      for (size_t i = 0; i < tp1[c].logits.size(); ++i)
        worst = std::max(worst, testing::compare(got[c].logits[i].data(), tp1[c].logits[i].data(),
                                                 static_cast<int64_t>(tp1[c].logits[i].size()))
                                    .rel);
    }
    EXPECT_LE(worst, kTolerance) << what;
    std::printf("%s: max rel error vs TP 1 %.2e\n", what.c_str(), worst);
  }
}

// A rank runner that fails at its `fail_at`-th forward.
class FailingRunner : public testing::ContextHashRunner {
 public:
  FailingRunner(int fail_at) : ContextHashRunner(64, 64, 4), fail_at_(fail_at) {}
  Tensor run(const ForwardBatch& batch) override {
    NW_CHECK(++runs_ != fail_at_, "boom at step ", runs_);
    return ContextHashRunner::run(batch);
  }

 private:
  int fail_at_;
  int runs_ = 0;
};

TEST(TpRunner, ARankThatFailsStopsTheEngine) {
  ParallelFlags flags;
  flags.tp_size = 2;
  flags.dist_timeout_s = 30;
  auto runner = std::make_unique<TpModelRunner>(std::make_unique<ProcessWorld>(flags, Backend::kHost),
                                                [](const ParallelConfig& rank, Communicator&, Communicator*) {
                                                  return std::make_unique<FailingRunner>(rank.rank() == 1 ? 3 : -1);
                                                });
  Engine engine(std::move(runner), EngineConfig{});
  engine.start();
  std::mutex mutex;
  std::optional<FinishReason> finish;
  RequestInput input;
  input.input_ids = {1, 2, 3};
  input.params.temperature = 0.0;
  input.params.max_new_tokens = 20;
  input.on_output = [&](RequestOutput&& out) {
    std::lock_guard<std::mutex> lock(mutex);
    if (out.finish) finish = out.finish;
  };
  engine.submit(std::move(input));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (engine.stats().loop_running && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_FALSE(engine.stats().loop_running) << "the loop went on after its runner broke";
  EXPECT_NE(engine.failure().find("rank 1 failed: boom at step 3"), std::string::npos) << engine.failure();
  std::lock_guard<std::mutex> lock(mutex);
  ASSERT_TRUE(finish.has_value());
  EXPECT_EQ(finish->kind, FinishReason::Kind::kAbort);
}

TEST(TpCommand, RoundTripsAndRefusesForeignBytes) {
  TpCommand c;
  c.kind = TpCommand::Kind::kStep;
  c.return_logits = true;
  c.batches.resize(2);  // two DP groups
  c.batches[0].add_sequence({5, 6, 7}, 4, {3, 1, 2});
  c.batches[0].add_sequence({9}, 0, {0});
  c.batches[1].add_sequence({4}, 2, {7});
  for (ForwardBatch& b : c.batches) {
    b.dp_tokens = {4, 1};
    b.dp_decode = true;
  }
  c.group = 1;
  const TpCommand back = decode_command(encode_command(c));
  EXPECT_EQ(back.kind, c.kind);
  EXPECT_TRUE(back.return_logits);
  EXPECT_EQ(back.group, 1);
  ASSERT_EQ(back.batches.size(), 2u);
  EXPECT_EQ(back.batches[0].token_ids, c.batches[0].token_ids);
  EXPECT_EQ(back.batches[0].positions, c.batches[0].positions);
  EXPECT_EQ(back.batches[1].dp_tokens, (std::vector<int64_t>{4, 1}));
  EXPECT_TRUE(back.batches[1].dp_decode);
  ASSERT_EQ(back.batches[0].seqs.size(), 2u);
  EXPECT_EQ(back.batches[0].seqs[0].page_table, (std::vector<int32_t>{3, 1, 2}));
  EXPECT_EQ(back.batches[0].seqs[0].prefix_len, 4);
  EXPECT_EQ(back.batches[1].seqs[0].page_table, (std::vector<int32_t>{7}));
  const std::string bytes = encode_command(c);
  EXPECT_THROW(decode_command(bytes.substr(0, bytes.size() - 3)), Error);
  EXPECT_THROW(decode_command("not a command at all"), Error);
}

}  // namespace
}  // namespace narwhal
