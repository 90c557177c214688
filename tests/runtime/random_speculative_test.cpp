// Speculative decoding on the random-config test's models (tests/random_config.h), each given an MTP layer: the CPU
// engine's greedy ids with NEXTN at 3 steps (odd seeds) or 1 (even), and with tree drafting (topk 2, 7 draft
// tokens, 3 steps), are plain decoding's exactly, for prompts batched
// in two waves (the second finds the first's prefixes in the cache) with chunked prefill beside decodes, on pages of
// 4 tokens.
// Random MTP layers draft badly, so most drafts are rejected and rolled back: the paths a trained model rarely takes.
#include <gtest/gtest.h>

#include <random>

#include "core/logging.h"
#include "model/deepseek_model.h"
#include "random_config.h"
#include "runtime/cpu_model_runner.h"
#include "runtime/engine.h"
#include "test_util.h"

namespace narwhal {
namespace {

constexpr int kConfigs = 6;  // CI-sized: each is a plain run and a speculative one
constexpr int64_t kPageSize = 4;

// Prompts of 3 to 30 ids sharing a prefix of 9 (two of every three), drawn from the seed.
std::vector<std::vector<int32_t>> prompts(uint64_t seed, int64_t vocab) {
  std::mt19937_64 rng(seed);
  const auto ids = [&](int n) {
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) out.push_back(static_cast<int32_t>(2 + rng() % static_cast<uint64_t>(vocab - 2)));
    return out;
  };
  const std::vector<int32_t> shared = ids(9);
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> p = i % 3 == 2 ? std::vector<int32_t>{} : shared;
    for (int32_t id : ids(3 + static_cast<int>(rng() % 22))) p.push_back(id);
    out.push_back(p);
  }
  return out;
}

std::vector<std::vector<int32_t>> run(const std::shared_ptr<const DeepSeekModel>& model,
                                      const std::vector<std::vector<int32_t>>& all, int steps, int topk = 1) {
  SpeculativeConfig speculative{steps, {}};
  speculative.topk = topk;
  speculative.num_draft_tokens = topk > 1 ? 7 : steps + 1;
  EngineConfig config;
  config.speculative_num_steps = steps;
  config.speculative_topk = topk;
  config.speculative_num_draft_tokens = speculative.num_draft_tokens;
  config.chunked_prefill_size = 16;
  config.enable_mixed_chunk = true;
  Engine engine(std::make_unique<CpuModelRunner>(model, 256, kPageSize, speculative), config);
  SamplingParams greedy;
  greedy.temperature = 0.0;
  greedy.max_new_tokens = 10;
  greedy.ignore_eos = true;
  std::vector<std::vector<int32_t>> outputs(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    engine.submit({all[i], greedy, false, 0, false, [&outputs, i](RequestOutput&& out) {
                     outputs[i].insert(outputs[i].end(), out.token_ids.begin(), out.token_ids.end());
                   }});
    if (i + 1 == all.size() / 2) engine.run_until_idle();
  }
  engine.run_until_idle();
  EXPECT_EQ(engine.kv_pool().num_free() + engine.kv_pool().num_evictable(), engine.kv_pool().num_pages());
  if (steps > 0) {
    EXPECT_GT(engine.stats().spec_verifies.load(), 0) << "nothing was verified";
  }
  return outputs;
}

TEST(RandomConfigSpeculative, GreedyIdsEqualPlainDecoding) {
  set_log_level(LogLevel::kWarning);
  for (int seed = 1; seed <= kConfigs; ++seed) {
    testing::RandomModel drawn = testing::random_model(seed);
    SCOPED_TRACE(drawn.summary);
    drawn.config["num_nextn_predict_layers"] = 1;
    testing::TempDir dir;
    testing::write_random_checkpoint(dir.path(), drawn.config, seed, drawn.fp8);
    const auto model = std::make_shared<const DeepSeekModel>(DeepSeekModel::load(dir.path()));
    ASSERT_EQ(model->num_mtp_layers(), 1) << "the checkpoint was written without its MTP layer";
    const std::vector<std::vector<int32_t>> all = prompts(seed, model->config().vocab_size);
    const std::vector<std::vector<int32_t>> plain = run(model, all, 0);
    const int steps = seed % 2 == 1 ? 3 : 1;
    EXPECT_EQ(run(model, all, steps), plain) << "--speculative-num-steps " << steps;
    EXPECT_EQ(run(model, all, 3, 2), plain) << "--speculative-eagle-topk 2";
  }
}

}  // namespace
}  // namespace narwhal
