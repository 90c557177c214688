// Engine under random workloads (shared prefixes, aborts, a cache too small for all), also over several DP ranks
// (each its own cache and scheduler, all launched every step): outputs equal each request alone, nothing leaks, and
// the prefix cache hit rate equals the shared-prefix fraction.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "runtime/engine.h"
#include "runtime_test_util.h"

namespace narwhal {
namespace {

using testing::ContextHashRunner;

struct Result {
  std::vector<int32_t> ids;
  std::optional<FinishReason> finish;
  int64_t cached_tokens = 0;
  int finishes = 0;
};

// Outputs by (request id, choice); filled on the thread that runs the steps.
struct Results {
  std::map<std::pair<uint64_t, int>, Result> by_choice;
  OutputCallback callback() {
    return [this](RequestOutput&& out) {
      Result& r = by_choice[{out.request_id, out.index}];
      r.ids.insert(r.ids.end(), out.token_ids.begin(), out.token_ids.end());
      r.cached_tokens = out.cached_tokens;
      if (out.finish) {
        r.finish = out.finish;
        ++r.finishes;
      }
    };
  }
};

// Every page is free or held by the cache alone, and the cache gives all of them back (on every DP rank).
void expect_quiescent(Engine& engine) {
  for (int r = 0; r < engine.num_dp_ranks(); ++r) {
    const KvPool& pool = engine.kv_pool(r);
    EXPECT_EQ(pool.num_free() + pool.num_evictable(), pool.num_pages()) << "pages leaked on DP rank " << r;
    EXPECT_EQ(engine.radix_cache(r).cached_pages(), pool.num_evictable());
    engine.radix_cache(r).evict(pool.num_pages());
    EXPECT_EQ(pool.num_free(), pool.num_pages());
  }
}

struct WorkloadRequest {
  std::vector<int32_t> prompt;
  SamplingParams params;
};

constexpr int64_t kVocab = 50, kPageSize = 4;

std::vector<WorkloadRequest> make_workload(uint32_t seed, int count) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> prefixes;
  for (int i = 0; i < 3; ++i) {
    std::vector<int32_t> p;
    for (int64_t t = 0; t < kPageSize * (2 + i); ++t) p.push_back(static_cast<int32_t>(rng() % kVocab));
    prefixes.push_back(p);
  }
  std::vector<WorkloadRequest> out;
  for (int i = 0; i < count; ++i) {
    WorkloadRequest r;
    if (rng() % 4) r.prompt = prefixes[rng() % prefixes.size()];
    for (int64_t t = 0, n = 1 + rng() % 10; t < n; ++t) r.prompt.push_back(static_cast<int32_t>(rng() % kVocab));
    r.params.max_new_tokens = 4 + rng() % 17;
    r.params.temperature = 0.0;
    if (rng() % 3 == 0) {  // seeded sampling must not depend on the batch or on retractions either
      r.params.temperature = 0.8;
      r.params.top_k = 10;
      r.params.seed = rng();
    }
    out.push_back(r);
  }
  return out;
}

// The output of one request run alone in a roomy cache.
std::vector<int32_t> alone(const WorkloadRequest& r) {
  if (r.params.greedy())
    return ContextHashRunner::oracle_greedy(r.prompt, kVocab, r.params.max_new_tokens);
  Engine engine(std::make_unique<ContextHashRunner>(kVocab, 64, kPageSize), EngineConfig{});
  Results results;
  const uint64_t id = engine.submit({r.prompt, r.params, false, 0, false, results.callback()});
  engine.run_until_idle();
  return results.by_choice[{id, 0}].ids;
}

struct WorkloadCase {
  const char* name;
  EngineConfig config;
  int dp_ranks = 1;
};

class EngineWorkload : public ::testing::TestWithParam<WorkloadCase> {};

TEST_P(EngineWorkload, EveryRequestFinishesOrAbortsCleanlyWithItsAloneOutput) {
  const EngineConfig config = GetParam().config;
  int64_t retractions = 0;
  for (uint32_t seed = 1; seed <= 4; ++seed) {
    const std::vector<WorkloadRequest> workload = make_workload(seed, 40);
    // 24 pages of 4 tokens (16 per DP rank): a few requests at a time, so admission waits, retractions and
    // evictions happen.
    const int dp = GetParam().dp_ranks;
    std::vector<std::unique_ptr<ModelRunner>> runners;
    std::vector<const ContextHashRunner*> by_rank;
    for (int r = 0; r < dp; ++r) {
      auto runner = std::make_unique<ContextHashRunner>(kVocab, dp == 1 ? 24 : 16, kPageSize);
      by_rank.push_back(runner.get());
      runners.push_back(std::move(runner));
    }
    Engine engine(std::move(runners), config);
    Results results;
    std::mt19937 rng(seed * 77);
    std::vector<uint64_t> ids;
    std::map<uint64_t, bool> aborted;
    size_t next = 0;
    for (int step = 0; next < workload.size() || engine.step(); ++step) {
      for (int k = rng() % 4; k > 0 && next < workload.size(); --k, ++next) {
        const WorkloadRequest& r = workload[next];
        ids.push_back(engine.submit({r.prompt, r.params, false, 0, false, results.callback()}));
      }
      if (!ids.empty() && rng() % 9 == 0) {
        const uint64_t victim = ids[rng() % ids.size()];
        aborted[victim] = true;
        engine.abort(victim);
      }
      ASSERT_LT(step, 100000) << "the engine does not make progress";
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      const Result& r = results.by_choice[{ids[i], 0}];
      ASSERT_EQ(r.finishes, 1) << "request " << i << " must end exactly once";
      const std::vector<int32_t> expected = alone(workload[i]);
      if (r.finish->kind == FinishReason::Kind::kAbort) {
        EXPECT_TRUE(aborted[ids[i]]) << "request " << i << " aborted but nobody asked";
        ASSERT_LE(r.ids.size(), expected.size());
        EXPECT_TRUE(std::equal(r.ids.begin(), r.ids.end(), expected.begin())) << "request " << i;
      } else {
        EXPECT_EQ(r.ids, expected) << "request " << i << " (seed " << seed << ")";
      }
    }
    EXPECT_GT(engine.stats().finished_requests, 20) << "most requests run to the end";
    retractions += engine.stats().retractions;
    EXPECT_EQ(engine.stats().finished_requests + engine.stats().aborted_requests, static_cast<int64_t>(ids.size()));
    // Every step launched every DP rank, so that the ranks' collectives would meet.
    for (const ContextHashRunner* runner : by_rank) EXPECT_EQ(runner->steps(), engine.stats().steps);
    expect_quiescent(engine);
  }
  if (GetParam().config.schedule_conservativeness < 1.0) {
    EXPECT_GT(retractions, 0) << "the workload should retract";
  }
}

EngineConfig config_of(SchedulePolicy policy, int64_t chunk, bool mixed, bool radix, double conservativeness,
                       LoadBalanceMethod balance = LoadBalanceMethod::kRoundRobin) {
  EngineConfig c;
  c.load_balance_method = balance;
  c.schedule_policy = policy;
  c.chunked_prefill_size = chunk;
  c.enable_mixed_chunk = mixed;
  c.disable_radix_cache = !radix;
  c.schedule_conservativeness = conservativeness;
  return c;
}

INSTANTIATE_TEST_SUITE_P(
    Configs, EngineWorkload,
    ::testing::Values(WorkloadCase{"fcfs", config_of(SchedulePolicy::kFcfs, -1, false, true, 1.0)},
                      WorkloadCase{"lpm_chunked", config_of(SchedulePolicy::kLpm, 8, false, true, 1.0)},
                      WorkloadCase{"mixed_chunk", config_of(SchedulePolicy::kFcfs, 6, true, true, 1.0)},
                      WorkloadCase{"no_radix", config_of(SchedulePolicy::kFcfs, 8, false, false, 1.0)},
                      WorkloadCase{"eager_admission", config_of(SchedulePolicy::kLpm, 8, true, true, 0.05)},
                      WorkloadCase{"dp2_round_robin", config_of(SchedulePolicy::kLpm, 8, false, true, 1.0), 2},
                      WorkloadCase{"dp3_shortest_queue_eager",
                                   config_of(SchedulePolicy::kFcfs, 6, true, true, 0.05,
                                             LoadBalanceMethod::kShortestQueue),
                                   3}),
    [](const auto& info) { return std::string(info.param.name); });

// Page-aligned shared prefixes: once the prefix is cached, exactly the prefix is served from the cache.
TEST(EnginePrefixCache, HitRateEqualsTheSharedPrefixFraction) {
  for (const bool warm : {true, false}) {
    Engine engine(std::make_unique<ContextHashRunner>(kVocab, 256, kPageSize), EngineConfig{});
    Results results;
    std::vector<int32_t> prefix;
    for (int32_t t = 0; t < 4 * kPageSize; ++t) prefix.push_back(t % kVocab);
    SamplingParams params;
    params.temperature = 0.0;
    params.max_new_tokens = 3;
    if (warm) {
      std::vector<int32_t> warmup = prefix;
      warmup.push_back(7);
      engine.submit({warmup, params, false, 0, false, results.callback()});
      engine.run_until_idle();
    }
    const int64_t before_prompt = engine.stats().prompt_tokens, before_cached = engine.stats().cached_tokens;
    const int kRequests = 12;
    std::vector<uint64_t> ids;
    for (int i = 0; i < kRequests; ++i) {
      std::vector<int32_t> prompt = prefix;
      // A first suffix token of its own: no two requests share more than the prefix.
      for (int t = 0; t < 8; ++t) prompt.push_back(static_cast<int32_t>(t == 0 ? 20 + i : (i * 7 + t * 3) % kVocab));
      ids.push_back(engine.submit({prompt, params, false, 0, false, results.callback()}));
    }
    engine.run_until_idle();
    const double prompt_tokens = static_cast<double>(engine.stats().prompt_tokens - before_prompt);
    const double cached = static_cast<double>(engine.stats().cached_tokens - before_cached);
    EXPECT_EQ(prompt_tokens, kRequests * 24.0);
    // Cold, the first request computes the prefix and the others (held back a step) find it cached.
    const double expected = warm ? 16.0 / 24.0 : (kRequests - 1) * 16.0 / (kRequests * 24.0);
    EXPECT_DOUBLE_EQ(cached / prompt_tokens, expected) << (warm ? "warm" : "cold");
    for (size_t i = warm ? 0 : 1; i < ids.size(); ++i) EXPECT_EQ((results.by_choice[{ids[i], 0}].cached_tokens), 16);
    expect_quiescent(engine);
  }
}

TEST(EnginePrefixCache, DisabledServesNothingFromTheCache) {
  EngineConfig config;
  config.disable_radix_cache = true;
  Engine engine(std::make_unique<ContextHashRunner>(kVocab, 64, kPageSize), config);
  Results results;
  SamplingParams params;
  params.max_new_tokens = 2;
  const std::vector<int32_t> prompt(20, 3);
  engine.submit({prompt, params, false, 0, false, results.callback()});
  engine.run_until_idle();
  engine.submit({prompt, params, false, 0, false, results.callback()});
  engine.run_until_idle();
  EXPECT_EQ(engine.stats().cached_tokens, 0);
  EXPECT_EQ(engine.kv_pool().num_free(), engine.kv_pool().num_pages());
}

}  // namespace
}  // namespace narwhal
