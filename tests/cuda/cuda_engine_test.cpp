// The engine end to end on the GPU runner: the v3 fixture's prompt, submitted several times in two waves beside
// other prompts (batched decode, prefix-cache hits in the second wave), still yields transformers' greedy ids; the
// expert counts of a generate; the GPU's draws against the host sampler.
#include <gtest/gtest.h>

#include <numeric>

#include "core/json.h"
#include "cuda/gpu_test_util.h"
#include "model/cuda_weights.h"
#include "runtime/cuda_model_runner.h"
#include "runtime/engine.h"
#include "runtime/sampler.h"
#include "test_util.h"

namespace narwhal {
namespace {

TEST(CudaEngine, BatchedGreedyMatchesTransformers) {
  NW_REQUIRE_GPU();
  const json ref = read_json_file(testing::fixture_dir("v3") + "/reference.json");
  const auto prompt = ref["prompt_ids"].get<std::vector<int32_t>>();
  const auto expected = ref["output_ids"].get<std::vector<int32_t>>();
  CudaRunnerOptions options;
  options.page_size = 8;  // the 14-token prompt fills one page the radix cache can share
  options.max_total_tokens = 2048;
  options.max_tokens_per_step = 1024;
  options.cuda_graph_max_bs = 16;
  Engine engine(CudaModelRunner::load(testing::fixture_dir("v3"), options), EngineConfig{});
  SamplingParams greedy;
  greedy.temperature = 0.0;
  greedy.max_new_tokens = static_cast<int>(expected.size());
  greedy.ignore_eos = true;
  std::vector<std::vector<int32_t>> outputs(8);
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::vector<int32_t> ids = prompt;
    if (i % 2) ids = {static_cast<int32_t>(3 + i), static_cast<int32_t>(40 + i), 7};  // other prompts between
    RequestInput input;
    input.input_ids = ids;
    input.params = greedy;
    input.on_output = [&outputs, i](RequestOutput&& out) {
      outputs[i].insert(outputs[i].end(), out.token_ids.begin(), out.token_ids.end());
    };
    engine.submit(std::move(input));
    if (i == 3) engine.run_until_idle();  // the second wave finds the first one's prompt in the prefix cache
  }
  engine.run_until_idle();
  for (size_t i = 0; i < outputs.size(); ++i) {
    EXPECT_EQ(outputs[i].size(), expected.size()) << "request " << i;
    if (i % 2 == 0) {
      EXPECT_EQ(outputs[i], expected) << "request " << i;
    }
  }
  EXPECT_GT(engine.stats().cached_tokens, 0);  // the repeated prompt hit the prefix cache
}

// The expert counts /metrics shows: after a generate whose decode batches shrink from 5 to 1 sequences (replaying
// the graphs of 8 and 4 with padding rows, and of 4, 2 and 1 without), they sum to top_k choices per forwarded token
// per MoE layer: no padding row and none of the capture's steps counted.
TEST(CudaEngine, ExpertCountsSumToTheRoutedTokens) {
  NW_REQUIRE_GPU();
  const ModelConfig config = ModelConfig::from_json(testing::deepseek_dims_json(false), "test config");
  CudaRunnerOptions options;
  options.page_size = 16;
  options.max_total_tokens = 4096;
  options.max_tokens_per_step = 1024;
  options.cuda_graph_max_bs = 16;
  auto owned = std::make_unique<CudaModelRunner>(config, dummy_cuda_weights(config, 7), options);
  const CudaModelRunner& runner = *owned;
  ASSERT_FALSE(runner.graph_batch_sizes().empty());
  Engine engine(std::move(owned), EngineConfig{});
  for (int i = 0; i < 5; ++i) {
    RequestInput input;
    for (int t = 0; t < 20 + 7 * i; ++t) input.input_ids.push_back((t * 37 + i * 101) % 1000);
    input.params.temperature = 0.0;
    input.params.max_new_tokens = 3 + 2 * i;
    input.params.ignore_eos = true;
    engine.submit(std::move(input));
  }
  engine.run_until_idle();
  const std::vector<int64_t> counts = runner.expert_tokens();
  ASSERT_EQ(static_cast<int64_t>(counts.size()), config.n_routed_experts);
  EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), int64_t{0}),
            testing::routed_choices(config, engine.stats().forward_tokens));
}

// The runner's draws on the GPU (launch / finish) are the host sampler's on the same logits, token for token and
// logprobs within 1e-5: greedy with a bias and a mask, temperature with top-k / top-p / min-p and penalties, two
// choices drawing from one row, and logprobs with top lists. The same batch run twice writes the same latents, so
// run() gives the logits that launch() sampled.
TEST(CudaEngine, RunnerDrawsEqualTheHostSampler) {
  NW_REQUIRE_GPU();
  CudaRunnerOptions options;
  options.page_size = 16;
  options.max_total_tokens = 1024;
  options.disable_cuda_graph = true;
  auto runner = CudaModelRunner::load(testing::fixture_dir("v3"), options);
  const int64_t vocab = runner->config().vocab_size;
  ForwardBatch batch;
  for (int s = 0; s < 3; ++s)
    batch.add_sequence({static_cast<int32_t>(5 + s), 17, static_cast<int32_t>(42 + s), 9}, 0,
                       {static_cast<int32_t>(s * 2), static_cast<int32_t>(s * 2 + 1)});
  SamplingParams greedy, hot, filtered;
  greedy.temperature = 0.0;
  greedy.logit_bias = {{3, 5.0f}, {7, -100.0f}};
  hot.temperature = 0.9;
  hot.frequency_penalty = 0.5;
  hot.repetition_penalty = 1.3;
  filtered.temperature = 1.2;
  filtered.top_k = 20;
  filtered.top_p = 0.8;
  filtered.min_p = 0.05;
  const TokenCounts none, counts = {{3, 2}, {11, 1}, {200, 4}};
  const std::vector<int32_t> masked = {1, 4};
  const std::vector<SampleRequest> samples = {
      {0, &greedy, &none, &masked, 11, 0, true, 5},   {1, &hot, &counts, nullptr, 12, 3, false, 0},
      {2, &filtered, &none, nullptr, 13, 7, true, 20}, {2, &filtered, &none, nullptr, 14, 7, false, 0}};
  for (int round = 0; round < 3; ++round) {
    runner->launch(batch, samples, false);
    const StepOutput got = runner->finish();
    const Tensor logits = runner->run(batch);
    std::vector<SampledToken> want(samples.size());
    Sampler(vocab).sample(logits, samples, want);
    for (size_t i = 0; i < samples.size(); ++i) {
      EXPECT_EQ(got.sampled[i].token, want[i].token) << "sample " << i << " round " << round;
      if (samples[i].logprob) {
        EXPECT_NEAR(got.sampled[i].logprob, want[i].logprob, 1e-5) << "sample " << i;
      }
      ASSERT_EQ(got.sampled[i].top.size(), want[i].top.size()) << "sample " << i;
      for (size_t j = 0; j < want[i].top.size(); ++j) {
        EXPECT_EQ(got.sampled[i].top[j].token, want[i].top[j].token) << "sample " << i << " top " << j;
        EXPECT_NEAR(got.sampled[i].top[j].logprob, want[i].top[j].logprob, 1e-5) << "sample " << i;
      }
    }
  }
}

}  // namespace
}  // namespace narwhal
