// Sampler: top-k / top-p / min-p / temperature distributions (chi-square), penalties by hand, seeds, logprobs.
#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

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

// Chi-square of the counts against `expected` probabilities; tokens with probability 0 must never appear.
void expect_distribution(const std::vector<int64_t>& c, std::vector<double> expected, const std::string& what) {
  const double total_p = std::accumulate(expected.begin(), expected.end(), 0.0);
  const double n = static_cast<double>(std::accumulate(c.begin(), c.end(), int64_t{0}));
  double chi2 = 0.0;
  int df = -1;
  for (size_t i = 0; i < c.size(); ++i) {
    if (expected[i] == 0.0) {
      EXPECT_EQ(c[i], 0) << what << ": token " << i << " is outside the allowed set";
      continue;
    }
    const double e = n * expected[i] / total_p;
    chi2 += (static_cast<double>(c[i]) - e) * (static_cast<double>(c[i]) - e) / e;
    ++df;
  }
  // The 99.9999th percentile of chi-square with <= 7 degrees of freedom is below 40; a wrong support or
  // normalisation at 40000 draws gives hundreds or more.
  EXPECT_LT(chi2, 40.0) << what << ": chi-square " << chi2 << " with " << df << " degrees of freedom";
}

constexpr int kDraws = 40000;

TEST(Sampler, FullDistributionAtTemperatureOne) {
  SamplingParams p;
  expect_distribution(counts(log_probs_row(), p, kDraws), kProbs, "plain");
}

TEST(Sampler, TemperatureSharpens) {
  SamplingParams p;
  p.temperature = 0.5;
  std::vector<double> expected;
  for (double q : kProbs) expected.push_back(q * q);
  expect_distribution(counts(log_probs_row(), p, kDraws), expected, "temperature 0.5");
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  SamplingParams p;
  p.top_k = 3;
  expect_distribution(counts(log_probs_row(), p, kDraws), {0.30, 0.20, 0.15, 0, 0, 0, 0, 0}, "top_k 3");
}

TEST(Sampler, TopPKeepsTokensWhoseEarlierMassIsBelowP) {
  SamplingParams p;
  p.top_p = 0.7;  // masses before each token: 0, .30, .50, .65 (kept), .77 (dropped)
  expect_distribution(counts(log_probs_row(), p, kDraws), {0.30, 0.20, 0.15, 0.12, 0, 0, 0, 0}, "top_p 0.7");
}

TEST(Sampler, TopPAppliesToTheTopKRenormalisedMass) {
  SamplingParams p;
  p.top_k = 5;    // mass 0.87
  p.top_p = 0.6;  // earlier mass / 0.87: 0, .345, .575 kept; .747 dropped
  expect_distribution(counts(log_probs_row(), p, kDraws), {0.30, 0.20, 0.15, 0, 0, 0, 0, 0}, "top_k 5 top_p 0.6");
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheBest) {
  SamplingParams p;
  p.min_p = 0.3;  // threshold 0.09: 0.10 stays, 0.07 goes
  expect_distribution(counts(log_probs_row(), p, kDraws), {0.30, 0.20, 0.15, 0.12, 0.10, 0, 0, 0}, "min_p 0.3");
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
  expect_distribution(counts(logits, p, kDraws, history), expected, "penalised");
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

}  // namespace
}  // namespace narwhal
