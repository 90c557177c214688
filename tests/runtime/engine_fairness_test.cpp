// Fair admission: one request's many sequences (its prompts share a fairness group) cannot keep a small request
// submitted after them waiting until they are all done; outputs stay exactly each request's alone output.
#include <gtest/gtest.h>

#include <map>

#include "runtime/engine.h"
#include "runtime_test_util.h"

namespace narwhal {
namespace {

using testing::ContextHashRunner;

constexpr int64_t kVocab = 50, kPageSize = 4;

struct Outputs {
  std::map<uint64_t, std::vector<int32_t>> ids;
  std::map<uint64_t, int> finishes;
  OutputCallback callback() {
    return [this](RequestOutput&& out) {
      auto& v = ids[out.request_id];
      v.insert(v.end(), out.token_ids.begin(), out.token_ids.end());
      if (out.finish) ++finishes[out.request_id];
    };
  }
};

std::vector<int32_t> prompt_of(int i, int64_t length) {
  std::vector<int32_t> p;
  for (int64_t t = 0; t < length; ++t) p.push_back(static_cast<int32_t>((i * 7 + t * 3 + 1) % kVocab));
  return p;
}

SamplingParams greedy(int64_t max_new_tokens) {
  SamplingParams p;
  p.temperature = 0.0;
  p.max_new_tokens = max_new_tokens;
  return p;
}

struct Scenario {
  EngineConfig config;
  int big_prompts;          // one fairness group
  int64_t big_prompt_len;
  int64_t big_new_tokens;
  int steps_before_small;   // the big request is under way when the small one arrives
};

// Steps from the small request's submission to its first token; checks every output against the oracle.
int64_t steps_to_first_token(const Scenario& s) {
  Engine engine(std::make_unique<ContextHashRunner>(kVocab, 1024, kPageSize), s.config);
  Outputs out;
  std::vector<std::pair<uint64_t, std::vector<int32_t>>> submitted;
  uint64_t group = 0;
  for (int i = 0; i < s.big_prompts; ++i) {
    RequestInput input{prompt_of(i, s.big_prompt_len), greedy(s.big_new_tokens), false, 0, false, out.callback()};
    input.fairness_group = group;
    const uint64_t id = engine.submit(std::move(input));
    if (i == 0) group = id;
    submitted.emplace_back(id, prompt_of(i, s.big_prompt_len));
  }
  for (int i = 0; i < s.steps_before_small; ++i) engine.step();
  const std::vector<int32_t> small_prompt = prompt_of(1000, 5);
  const uint64_t small = engine.submit({small_prompt, greedy(4), false, 0, false, out.callback()});
  int64_t steps = 0;
  while (out.ids[small].empty()) {
    EXPECT_TRUE(engine.step()) << "the engine went idle before the small request produced a token";
    if (++steps > 100000) break;
  }
  engine.run_until_idle();
  for (const auto& [id, prompt] : submitted) {
    EXPECT_EQ(out.ids[id], ContextHashRunner::oracle_greedy(prompt, kVocab, s.big_new_tokens)) << "request " << id;
    EXPECT_EQ(out.finishes[id], 1);
  }
  EXPECT_EQ(out.ids[small], ContextHashRunner::oracle_greedy(small_prompt, kVocab, 4));
  const KvPool& pool = engine.kv_pool();
  EXPECT_EQ(pool.num_free() + pool.num_evictable(), pool.num_pages()) << "pages leaked";
  return steps;
}

// 64 prompts, 8 running at most: first come, first served made the small request wait for all 64 (94 steps);
// a fair share admits it as soon as one of the big request's sequences ends.
TEST(EngineFairness, ASmallRequestWaitsForOneFreeSlotNotForAWholeBigRequest) {
  for (const SchedulePolicy policy : {SchedulePolicy::kFcfs, SchedulePolicy::kLpm}) {
    Scenario s;
    s.config.schedule_policy = policy;
    s.config.max_running_requests = 8;
    s.big_prompts = 64;
    s.big_prompt_len = 6;
    s.big_new_tokens = 12;
    s.steps_before_small = 3;
    EXPECT_LE(steps_to_first_token(s), s.big_new_tokens + 2) << "policy " << static_cast<int>(policy);
  }
}

// The prefill budget too: with room for everyone, the big request's prompts would take every step's chunk
// budget in turn (39 steps); the small one's prompt goes into the very next step.
TEST(EngineFairness, ASmallPromptDoesNotQueueBehindABigRequestsPrefills) {
  Scenario s;
  s.config.chunked_prefill_size = 16;
  s.big_prompts = 40;
  s.big_prompt_len = 16;
  s.big_new_tokens = 2;
  s.steps_before_small = 2;
  EXPECT_LE(steps_to_first_token(s), 2);
}

}  // namespace
}  // namespace narwhal
