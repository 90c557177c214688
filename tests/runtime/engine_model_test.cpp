// The engine on the real CPU forward (committed v3 fixture): greedy outputs are the same alone, batched, with
// the prefix cache, with chunked prefill, with mixed chunks, under retractions in a small cache, and with speculative
// decoding (the fixture's MTP layer drafting) in every one of those.
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
// config.speculative_num_steps > 0 speculates.
std::vector<std::vector<int32_t>> run(const EngineConfig& config, int64_t pages, size_t wave, int64_t* retractions = nullptr,
                                      const SamplingParams& params = greedy()) {
  Engine engine(std::make_unique<CpuModelRunner>(fixture_model(), pages, kPageSize,
                                                 SpeculativeConfig{config.speculative_num_steps, {}}),
                config);
  const std::vector<std::vector<int32_t>> all = prompts();
  std::vector<std::vector<int32_t>> outputs(all.size());
  for (size_t first = 0; first < all.size(); first += wave) {
    for (size_t i = first; i < std::min(all.size(), first + wave); ++i)
      engine.submit({all[i], params, false, 0, false, [&outputs, i](RequestOutput&& out) {
                       outputs[i].insert(outputs[i].end(), out.token_ids.begin(), out.token_ids.end());
                     }});
    engine.run_until_idle();
  }
  if (retractions) *retractions = engine.stats().retractions;
  EXPECT_EQ(engine.kv_pool().num_free() + engine.kv_pool().num_evictable(), engine.kv_pool().num_pages());
  return outputs;
}

EngineConfig config(bool radix, int64_t chunk, bool mixed, int speculative_steps = 0) {
  EngineConfig c;
  c.speculative_num_steps = speculative_steps;
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

// Speculation changes how many tokens a step takes, never which: the greedy outputs of every mode above, with 1 to 3
// drafts per step (pages of 4 tokens, so drafts and the draft model's positions cross page ends), stop at the same
// length, and leave the pool whole.
TEST(EngineModel, SpeculativeGreedyOutputsEqualPlainDecoding) {
  const std::vector<std::vector<int32_t>> alone = run(config(false, -1, false), 64, 1);
  for (int steps : {1, 3}) {
    SCOPED_TRACE("--speculative-num-steps " + std::to_string(steps));
    EXPECT_EQ(run(config(false, -1, false, steps), 64, 1), alone) << "alone";
    EXPECT_EQ(run(config(true, -1, false, steps), 256, 3), alone) << "prefix cache";
    EXPECT_EQ(run(config(true, 8, true, steps), 256, 10), alone) << "chunked prefill, mixed chunks";
  }
  EngineConfig overlap_off = config(true, 8, false, 2);
  overlap_off.disable_overlap_schedule = true;
  EXPECT_EQ(run(overlap_off, 256, 10), alone) << "no overlap, 2 drafts";
  int64_t retractions = 0;
  EngineConfig tight = config(true, 8, true, 3);
  tight.schedule_conservativeness = 0.05;
  EXPECT_EQ(run(tight, 16, 10, &retractions), alone) << "small cache, speculating";
  EXPECT_GT(retractions, 0);
}

// A verify draws each kept token as decoding draws that output position, so seeded sampling gives decoding's tokens
// too; requests with penalties do not speculate, and give theirs.
TEST(EngineModel, SeededSamplingAndPenaltiesGiveDecodingsTokens) {
  SamplingParams sampled = greedy();
  sampled.temperature = 0.8;
  sampled.top_p = 0.9;
  sampled.seed = 7;
  EXPECT_EQ(run(config(true, 8, true, 3), 256, 10, nullptr, sampled), run(config(true, 8, true), 256, 10, nullptr,
                                                                          sampled));
  SamplingParams penalized = greedy();
  penalized.frequency_penalty = 0.5;
  EXPECT_EQ(run(config(true, 8, true, 3), 256, 10, nullptr, penalized), run(config(true, 8, true), 256, 10, nullptr,
                                                                            penalized));
}

}  // namespace
}  // namespace narwhal
