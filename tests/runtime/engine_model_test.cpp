// The engine on the real CPU forward (committed v3 fixture): greedy outputs are the same alone, batched, with
// the prefix cache, with chunked prefill, with mixed chunks, and under retractions in a small cache.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "runtime/cpu_model_runner.h"
#include "runtime/engine.h"
#include "test_util.h"

namespace narwhal {
namespace {

constexpr int64_t kPageSize = 4;

std::shared_ptr<const DeepSeekModel> fixture_model() {
  static auto model = std::make_shared<const DeepSeekModel>(DeepSeekModel::load(testing::fixture_dir("v3")));
  return model;
}

// Prompts sharing prefixes of 8 and 13 tokens, of lengths 3 to 40.
std::vector<std::vector<int32_t>> prompts() {
  std::mt19937 rng(5);
  const auto random_ids = [&](int n) {
    std::vector<int32_t> ids;
    for (int i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>(2 + rng() % 250));
    return ids;
  };
  const std::vector<int32_t> a = random_ids(8), b = random_ids(13);
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < 10; ++i) {
    std::vector<int32_t> p = i % 3 == 0 ? a : i % 3 == 1 ? b : std::vector<int32_t>{};
    for (int32_t id : random_ids(3 + static_cast<int>(rng() % 28))) p.push_back(id);
    out.push_back(p);
  }
  return out;
}

SamplingParams greedy() {
  SamplingParams p;
  p.temperature = 0.0;
  p.max_new_tokens = 12;
  p.ignore_eos = true;
  return p;
}

// Runs the prompts, `wave` at a time (each wave to completion), and returns their outputs in order.
std::vector<std::vector<int32_t>> run(const EngineConfig& config, int64_t pages, size_t wave, int64_t* retractions = nullptr) {
  Engine engine(std::make_unique<CpuModelRunner>(fixture_model(), pages, kPageSize), config);
  const std::vector<std::vector<int32_t>> all = prompts();
  std::vector<std::vector<int32_t>> outputs(all.size());
  for (size_t first = 0; first < all.size(); first += wave) {
    for (size_t i = first; i < std::min(all.size(), first + wave); ++i)
      engine.submit({all[i], greedy(), false, 0, false, [&outputs, i](RequestOutput&& out) {
                       outputs[i].insert(outputs[i].end(), out.token_ids.begin(), out.token_ids.end());
                     }});
    engine.run_until_idle();
  }
  if (retractions) *retractions = engine.stats().retractions;
  EXPECT_EQ(engine.kv_pool().num_free() + engine.kv_pool().num_evictable(), engine.kv_pool().num_pages());
  return outputs;
}

EngineConfig config(bool radix, int64_t chunk, bool mixed) {
  EngineConfig c;
  c.disable_radix_cache = !radix;
  c.chunked_prefill_size = chunk;
  c.enable_mixed_chunk = mixed;
  return c;
}

TEST(EngineModel, GreedyOutputsDoNotDependOnBatchingCachingOrChunking) {
  const std::vector<std::vector<int32_t>> alone = run(config(false, -1, false), 64, 1);
  for (const auto& out : alone) ASSERT_EQ(static_cast<int64_t>(out.size()), greedy().max_new_tokens);
  EXPECT_EQ(run(config(false, -1, false), 256, 10), alone) << "batched";
  EXPECT_EQ(run(config(true, -1, false), 256, 3), alone) << "prefix cache (later waves hit earlier prompts)";
  EXPECT_EQ(run(config(true, 8, false), 256, 10), alone) << "chunked prefill";
  EXPECT_EQ(run(config(true, 8, true), 256, 10), alone) << "mixed chunks";
  int64_t retractions = 0;
  EngineConfig tight = config(true, 8, true);
  tight.schedule_conservativeness = 0.05;
  EXPECT_EQ(run(tight, 16, 10, &retractions), alone) << "small cache";
  EXPECT_GT(retractions, 0) << "16 pages of 4 tokens cannot hold the batch";
}

}  // namespace
}  // namespace narwhal
