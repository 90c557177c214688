// The engine end to end on the GPU runner: the v3 fixture's prompt, submitted several times in two waves beside
// other prompts (batched decode, prefix-cache hits in the second wave), still yields transformers' greedy ids.
#include <gtest/gtest.h>

#include "core/json.h"
#include "cuda/gpu_test_util.h"
#include "runtime/cuda_model_runner.h"
#include "runtime/engine.h"
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

}  // namespace
}  // namespace narwhal
