// Sampler: top-k / top-p / min-p / temperature distributions (chi-square), penalties and logit_bias by hand, seeds,
// logprobs, the id-order draw, edge cases (ties, one token, masks, extreme filters and temperatures, NaN logits),
// and the rows and adjustments it hands the sampling ops.
#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "test_util.h"

namespace narwhal {
namespace {

// The synthetic row: logits = log p, so the unfiltered distribution is exactly p.
const std::vector<double> kProbs = {0.30, 0.20, 0.15, 0.12, 0.10, 0.07, 0.04, 0.02};

Tensor row_of(const std::vector<float>& logits) {
  return Tensor::from_floats(logits, {1, static_cast<int64_t>(logits.size())});
}

Tensor log_probs_row() {
  std::vector<float> logits;
  for (double p : kProbs) logits.push_back(static_cast<float>(std::log(p)));
  return row_of(logits);
}

// Draws `n` tokens from row 0, each with its own seed.
std::vector<int64_t> counts(const Tensor& logits, const SamplingParams& params, int n,
                            const TokenCounts& history = {}) {
  Sampler sampler(logits.size(1));
  std::vector<SampleRequest> requests(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) requests[i] = {0, &params, &history, nullptr, static_cast<uint64_t>(i) * 7919 + 1, 0};
  std::vector<SampledToken> out(requests.size());
  sampler.sample(logits, requests, out);
  std::vector<int64_t> c(static_cast<size_t>(logits.size(1)), 0);
  for (const SampledToken& t : out) ++c[t.token];
  return c;
}

constexpr int kDraws = 40000;

TEST(Sampler, FullDistributionAtTemperatureOne) {
  SamplingParams p;
  testing::expect_distribution(counts(log_probs_row(), p, kDraws), kProbs, "plain");
}

TEST(Sampler, TemperatureSharpens) {
  SamplingParams p;
  p.temperature = 0.5;
  std::vector<double> expected;
  for (double q : kProbs) expected.push_back(q * q);
  testing::expect_distribution(counts(log_probs_row(), p, kDraws), expected, "temperature 0.5");
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  SamplingParams p;
  p.top_k = 3;
  testing::expect_distribution(counts(log_probs_row(), p, kDraws), {0.30, 0.20, 0.15, 0, 0, 0, 0, 0}, "top_k 3");
}

TEST(Sampler, TopPKeepsTokensWhoseEarlierMassIsBelowP) {
  SamplingParams p;
  p.top_p = 0.7;  // masses before each token: 0, .30, .50, .65 (kept), .77 (dropped)
  testing::expect_distribution(counts(log_probs_row(), p, kDraws), {0.30, 0.20, 0.15, 0.12, 0, 0, 0, 0}, "top_p 0.7");
}

TEST(Sampler, TopPAppliesToTheTopKRenormalisedMass) {
  SamplingParams p;
  p.top_k = 5;    // mass 0.87
  p.top_p = 0.6;  // earlier mass / 0.87: 0, .345, .575 kept; .747 dropped
  testing::expect_distribution(counts(log_probs_row(), p, kDraws), {0.30, 0.20, 0.15, 0, 0, 0, 0, 0}, "top_k 5 top_p 0.6");
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheBest) {
  SamplingParams p;
  p.min_p = 0.3;  // threshold 0.09: 0.10 stays, 0.07 goes
  testing::expect_distribution(counts(log_probs_row(), p, kDraws), {0.30, 0.20, 0.15, 0.12, 0.10, 0, 0, 0}, "min_p 0.3");
}

TEST(Sampler, TopPOverAWideFlatVocabularyRanksBeyondTheFirstHead) {
  // 1000 equal logits: top_p 0.5 keeps the 500 lowest ids (ties rank by id), more than the first ranked head.
  SamplingParams p;
  p.top_p = 0.5;
  const int draws = 8000;
  std::vector<int64_t> c = counts(row_of(std::vector<float>(1000, 0.0f)), p, draws);
  const int64_t first = std::accumulate(c.begin(), c.begin() + 250, int64_t{0});
  EXPECT_NEAR(static_cast<double>(first), draws / 2.0, 5 * std::sqrt(draws / 4.0)) << "uniform over the kept 500";
  for (int i = 500; i < 1000; ++i) ASSERT_EQ(c[i], 0) << "token " << i;
}

TEST(Sampler, PenaltiesMatchAHandComputedRow) {
  // logits [2, -1, 0.5, 0]; token 0 seen twice, token 1 once; repetition 2, frequency 0.5, presence 0.25:
  // token 0: 2 / 2 - (0.5 * 2 + 0.25) = -0.25; token 1: -1 * 2 - (0.5 + 0.25) = -2.75; the others unchanged.
  const Tensor logits = row_of({2.0f, -1.0f, 0.5f, 0.0f});
  const TokenCounts history = {{0, 2}, {1, 1}};
  SamplingParams p;
  p.repetition_penalty = 2.0;
  p.frequency_penalty = 0.5;
  p.presence_penalty = 0.25;
  std::vector<double> expected;
  for (double x : {-0.25, -2.75, 0.5, 0.0}) expected.push_back(std::exp(x));
  testing::expect_distribution(counts(logits, p, kDraws, history), expected, "penalised");
  p.temperature = 0.0;
  EXPECT_EQ(counts(logits, p, 1, history)[2], 1) << "greedy takes the argmax after the penalties";
}

TEST(Sampler, SeedsAreReproducibleAndPositionsDiffer) {
  const Tensor logits = log_probs_row();
  SamplingParams p;
  Sampler sampler(logits.size(1));
  TokenCounts none;
  std::vector<SampleRequest> requests;
  for (int64_t pos = 0; pos < 64; ++pos) requests.push_back({0, &p, &none, nullptr, 42, pos});
  std::vector<SampledToken> a(requests.size()), b(requests.size());
  sampler.sample(logits, requests, a);
  sampler.sample(logits, requests, b);
  int differ_from_first = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].token, b[i].token);
    differ_from_first += a[i].token != a[0].token;
  }
  EXPECT_GT(differ_from_first, 10) << "each output position draws a fresh number";
  for (auto& r : requests) r.seed = 43;
  std::vector<SampledToken> c(requests.size());
  sampler.sample(logits, requests, c);
  int same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i].token == c[i].token;
  EXPECT_LT(same, 48) << "another seed gives another stream";
}

TEST(Sampler, LogprobsComeFromTheRawLogits) {
  const Tensor logits = row_of({1.0f, 3.0f, 2.0f, 0.0f});
  SamplingParams p;
  p.temperature = 0.0;
  p.frequency_penalty = 2.0;  // changes the choice, not the reported logprobs
  TokenCounts history = {{1, 2}};
  Sampler sampler(4);
  std::vector<SampleRequest> requests = {{0, &p, &history, nullptr, 1, 0, true, 2}};
  std::vector<SampledToken> out(1);
  sampler.sample(logits, requests, out);
  const double log_z = std::log(std::exp(1.0) + std::exp(3.0) + std::exp(2.0) + std::exp(0.0));
  EXPECT_EQ(out[0].token, 2);
  EXPECT_NEAR(out[0].logprob, 2.0 - log_z, 1e-6);
  ASSERT_EQ(out[0].top.size(), 2u);
  EXPECT_EQ(out[0].top[0].token, 1);
  EXPECT_NEAR(out[0].top[0].logprob, 3.0 - log_z, 1e-6);
  EXPECT_EQ(out[0].top[1].token, 2);
}

TEST(Sampler, MaskedTokensAreNeverChosen) {
  const Tensor logits = log_probs_row();
  SamplingParams p;
  TokenCounts none;
  const std::vector<int32_t> masked = {0, 1};
  Sampler sampler(logits.size(1));
  std::vector<SampleRequest> requests;
  for (int i = 0; i < 2000; ++i) requests.push_back({0, &p, &none, &masked, static_cast<uint64_t>(i), 0});
  std::vector<SampledToken> out(requests.size());
  sampler.sample(logits, requests, out);
  for (const SampledToken& t : out) ASSERT_GE(t.token, 2);
}

// Draws one token per seed from `logits` row 0.
std::vector<int32_t> tokens(const Tensor& logits, const SamplingParams& params, int n,
                            const std::vector<int32_t>* masked = nullptr) {
  Sampler sampler(logits.size(1));
  TokenCounts none;
  std::vector<SampleRequest> requests;
  for (int i = 0; i < n; ++i) requests.push_back({0, &params, &none, masked, static_cast<uint64_t>(i) * 31 + 5, i});
  std::vector<SampledToken> out(requests.size());
  sampler.sample(logits, requests, out);
  std::vector<int32_t> ids;
  for (const SampledToken& t : out) ids.push_back(t.token);
  return ids;
}

TEST(Sampler, TheDrawIsTheInverseCdfInIdOrder) {
  // The kept weights, summed in id order, first exceed floor(u * kept mass) at the drawn token.
  const std::vector<float> logits = {0.0f, 1.0f, -0.5f, 0.75f, -3.0f};
  SamplingParams p;
  p.top_k = 3;  // keeps ids 1, 3, 0
  const std::vector<int32_t> got = tokens(row_of(logits), p, 300);
  for (int i = 0; i < 300; ++i) {
    std::vector<uint64_t> w;
    for (float x : logits) w.push_back(ops::fixed_weight(x, 1.0f, 1.0));
    w[2] = w[4] = 0;
    const uint64_t target = ops::draw_target(ops::uniform_bits(static_cast<uint64_t>(i) * 31 + 5, i),
                                             std::accumulate(w.begin(), w.end(), uint64_t{0}));
    int32_t expected = 0;
    for (uint64_t running = w[0]; running <= target; running += w[++expected]) {
    }
    ASSERT_EQ(got[i], expected) << "draw " << i;
  }
}

TEST(Sampler, EqualLogitsAreUniformAndTiesRankByLowerId) {
  const Tensor flat = row_of(std::vector<float>(8, 1.5f));
  SamplingParams p;
  std::vector<int64_t> c = counts(flat, p, kDraws);
  testing::expect_distribution(c, std::vector<double>(8, 1.0), "equal logits");
  p.top_k = 3;
  testing::expect_distribution(counts(flat, p, kDraws), {1, 1, 1, 0, 0, 0, 0, 0}, "equal logits, top_k 3: the lowest ids");
  p.top_k = -1;
  p.min_p = 1.0;
  testing::expect_distribution(counts(flat, p, kDraws), std::vector<double>(8, 1.0), "min_p 1 keeps every tie of the top");
}

TEST(Sampler, OneTokenVocabularyAlwaysGivesIt) {
  const Tensor one = row_of({-2.0f});
  SamplingParams p;
  for (double t : {0.0, 0.7, 1e-30, 1e30}) {
    p.temperature = t;
    p.top_k = 1;
    p.top_p = 0.1;
    p.min_p = 1.0;
    for (int32_t id : tokens(one, p, 20)) ASSERT_EQ(id, 0) << "temperature " << t;
  }
}

TEST(Sampler, FiltersAtTheirLimitsAreNoFilters) {
  const Tensor logits = log_probs_row();
  SamplingParams plain;
  const std::vector<int32_t> base = tokens(logits, plain, 500);
  SamplingParams p = plain;
  p.top_k = 8;  // the whole vocabulary
  EXPECT_EQ(tokens(logits, p, 500), base) << "top_k >= vocab";
  p.top_k = 1000;
  EXPECT_EQ(tokens(logits, p, 500), base) << "top_k beyond the vocabulary";
  p = plain;
  p.top_p = 1.0;
  p.min_p = 0.0;
  EXPECT_EQ(tokens(logits, p, 500), base) << "top_p 1, min_p 0";
}

TEST(Sampler, ExtremeFiltersAndTemperaturesLeaveTheArgmax) {
  const Tensor logits = log_probs_row();  // token 0 is the most likely
  SamplingParams p;
  p.top_p = 1e-9;
  for (int32_t id : tokens(logits, p, 200)) ASSERT_EQ(id, 0) << "tiny top_p";
  p = {};
  p.min_p = 1.0;
  for (int32_t id : tokens(logits, p, 200)) ASSERT_EQ(id, 0) << "min_p 1";
  p = {};
  p.temperature = 1e-30;
  for (int32_t id : tokens(logits, p, 200)) ASSERT_EQ(id, 0) << "tiny temperature";
  p.temperature = 1e30;  // flat: every token appears
  testing::expect_distribution(counts(logits, p, kDraws), std::vector<double>(8, 1.0), "huge temperature");
}

TEST(Sampler, MasksAndNanLogitsAreNeverChosen) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const Tensor logits = row_of({nan, 1.0f, 0.0f, nan, 2.0f, -inf});
  SamplingParams p;
  std::vector<int64_t> c = counts(logits, p, kDraws);
  testing::expect_distribution(c, {0, std::exp(1.0), 1.0, 0, std::exp(2.0), 0}, "NaN and -inf weigh nothing");
  p.temperature = 0.0;
  EXPECT_EQ(tokens(logits, p, 1)[0], 4) << "greedy ranks NaN below every number";
  const std::vector<int32_t> all_but_two = {0, 1, 3, 4, 5};
  p.temperature = 0.8;
  for (int32_t id : tokens(logits, p, 200, &all_but_two)) ASSERT_EQ(id, 2);
  // Nothing left (every logit -inf): the greedy choice, the lowest id.
  const std::vector<int32_t> all = {0, 1, 2, 3, 4, 5};
  for (int32_t id : tokens(logits, p, 20, &all)) ASSERT_EQ(id, 0);
}

TEST(Sampler, LogitBiasComesBeforePenaltiesAndMasks) {
  const Tensor logits = row_of({2.0f, -1.0f, 0.5f, 0.0f});
  SamplingParams p;
  p.logit_bias = {{3, 4.0f}, {0, -100.0f}};  // token 3 becomes 4; token 0 weighs nothing
  p.repetition_penalty = 2.0;
  p.frequency_penalty = 0.5;
  const TokenCounts history = {{3, 1}};  // 4 / 2 - 0.5 = 1.5
  std::vector<double> expected = {0, std::exp(-1.0), std::exp(0.5), std::exp(1.5)};
  testing::expect_distribution(counts(logits, p, kDraws, history), expected, "biased then penalised");
  p.temperature = 0.0;
  EXPECT_EQ(counts(logits, p, 1, history)[3], 1);
  p.logit_bias = {{1, 100.0f}};
  EXPECT_EQ(counts(logits, p, 1, history)[1], 1) << "a +100 bias wins greedy";
}

TEST(Sampler, BatchRowsMergeEachTokensAdjustments) {
  SamplingParams p;
  p.logit_bias = {{7, 1.5f}, {2, -3.0f}, {900, 2.0f}};  // 900 is outside the vocabulary: dropped
  p.presence_penalty = 0.5;
  const TokenCounts history = {{7, 3}, {4, 1}};
  const std::vector<int32_t> masked = {7, 1, 1000};
  SamplingParams plain;  // no penalty: its counts are not uploaded
  const std::vector<SampleRequest> requests = {{0, &p, &history, &masked, 9, 3, true, 5},
                                               {1, &plain, &history, nullptr, 8, 2}};
  const ops::SamplingBatchHost batch = build_sampling_batch(requests, 100);
  ASSERT_EQ(batch.rows.size(), 2u);
  const ops::SamplingRow& r = batch.rows[0];
  EXPECT_EQ(r.seed, 9u);
  EXPECT_EQ(r.position, 3);
  EXPECT_EQ(r.want_logprob, 1);
  EXPECT_EQ(r.top_logprobs, 5);
  ASSERT_EQ(r.adjust_end - r.adjust_begin, 4);
  const ops::TokenAdjustment* a = batch.adjustments.data() + r.adjust_begin;
  EXPECT_EQ(a[0].token, 1);
  EXPECT_EQ(a[0].masked, 1);
  EXPECT_EQ(a[1].token, 2);
  EXPECT_EQ(a[1].bias, -3.0f);
  EXPECT_EQ(a[2].token, 4);
  EXPECT_EQ(a[2].count, 1);
  EXPECT_EQ(a[3].token, 7);
  EXPECT_EQ(a[3].bias, 1.5f);
  EXPECT_EQ(a[3].count, 3);
  EXPECT_EQ(a[3].masked, 1);
  EXPECT_EQ(batch.rows[1].adjust_begin, batch.rows[1].adjust_end);
  EXPECT_EQ(batch.rows[1].logits_row, 1);

  // An ascending mask (a grammar's, most of the vocabulary) is merged with the biases, not sorted with them.
  SamplingParams biased;
  biased.logit_bias = {{60, 1.0f}, {3, 2.0f}};
  const std::vector<int32_t> ascending = {2, 3, 50, 99};
  const std::vector<SampleRequest> grammar = {{0, &biased, nullptr, &ascending, 1, 0}};
  const ops::SamplingBatchHost merged = build_sampling_batch(grammar, 100);
  const ops::TokenAdjustment* m = merged.adjustments.data();
  ASSERT_EQ(merged.adjustments.size(), 5u);
  const std::vector<std::pair<int32_t, int32_t>> expected = {{2, 1}, {3, 1}, {50, 1}, {60, 0}, {99, 1}};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(m[i].token, expected[i].first) << i;
    EXPECT_EQ(m[i].masked, expected[i].second) << i;
  }
  EXPECT_EQ(m[1].bias, 2.0f);
  EXPECT_EQ(m[3].bias, 1.0f);
}

TEST(SamplingParams, LogitBiasLimits) {
  SamplingParams twice;
  twice.logit_bias = {{3, 1.0f}, {3, 2.0f}};
  EXPECT_THROW(twice.validate(), Error);
  SamplingParams big;
  big.logit_bias = {{3, 101.0f}};
  EXPECT_THROW(big.validate(), Error);
}

}  // namespace
}  // namespace narwhal
