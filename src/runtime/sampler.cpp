// Sampler: penalties, temperature, top-k / top-p / min-p filtering, the seeded draw, and raw logprobs.
#include "runtime/sampler.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "ops/sampling.h"

namespace narwhal {

uint64_t mix_bits(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

double uniform(uint64_t seed, int64_t position) {
  return static_cast<double>(mix_bits(seed ^ mix_bits(static_cast<uint64_t>(position))) >> 11) * 0x1.0p-53;
}

namespace {

// Repetition scales a seen token's logit towards "less likely" (divide if positive, multiply if negative),
// frequency subtracts per occurrence, presence once.
void apply_penalties(std::vector<float>& logits, const SamplingParams& p, const TokenCounts& counts) {
  const bool scale = p.repetition_penalty != 1.0;
  const bool shift = p.frequency_penalty != 0.0 || p.presence_penalty != 0.0;
  if (!scale && !shift) return;
  const float rep = static_cast<float>(p.repetition_penalty);
  for (const auto& [token, count] : counts) {
    float& x = logits[token];
    if (scale) x = x > 0.0f ? x / rep : x * rep;
    x -= static_cast<float>(p.frequency_penalty * count + p.presence_penalty);
  }
}

// Ranks `order` so that its first `count` entries are the heaviest weights, best first (ties: lower id).
void rank_head(const std::vector<float>& weights, std::vector<int32_t>& order, int64_t count) {
  std::partial_sort(order.begin(), order.begin() + count, order.end(), [&](int32_t a, int32_t b) {
    return weights[a] > weights[b] || (weights[a] == weights[b] && a < b);
  });
}

// Draws from `weights` (unnormalised probabilities, the largest exactly 1) restricted by top-k, top-p
// and min-p. Only as much of the vocabulary is ranked as the filters need.
int32_t draw(std::vector<float>& weights, std::vector<int32_t>& order, const SamplingParams& p, double u) {
  const int64_t vocab = static_cast<int64_t>(weights.size());
  const int64_t top_k = p.top_k > 0 ? std::min<int64_t>(p.top_k, vocab) : vocab;
  const float min_weight = static_cast<float>(p.min_p);  // min_p times the top weight, which is 1
  if (top_k == vocab && p.top_p >= 1.0) {
    // No ranking needed: inverse CDF in id order over the tokens min-p keeps.
    double total = 0.0;
    for (float w : weights) total += w >= min_weight ? w : 0.0;
    double target = u * total, running = 0.0;
    int32_t last = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      if (weights[i] < min_weight) continue;
      running += weights[i];
      last = static_cast<int32_t>(i);
      if (running > target) return last;
    }
    return last;
  }
  order.resize(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  int64_t ranked = top_k;
  double mass = 0.0;
  if (top_k < vocab) {
    rank_head(weights, order, top_k);
    for (int64_t i = 0; i < top_k; ++i) mass += weights[order[i]];
  } else {
    for (float w : weights) mass += w;
    // Rank a growing head until it holds top_p of the mass: peaked distributions never sort the whole vocabulary.
    for (ranked = std::min<int64_t>(vocab, 256);; ranked = std::min(vocab, ranked * 4)) {
      rank_head(weights, order, ranked);
      double head = 0.0;
      for (int64_t i = 0; i < ranked; ++i) head += weights[order[i]];
      if (head >= p.top_p * mass || ranked == vocab) break;
    }
  }
  // Top-p over the (top-k renormalised) distribution: keep each token whose preceding mass is below top_p.
  int64_t keep = 0;
  double kept = 0.0;
  while (keep < ranked && (keep == 0 || kept < p.top_p * mass) && weights[order[keep]] >= min_weight)
    kept += weights[order[keep++]];
  double target = u * kept, running = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    running += weights[order[i]];
    if (running > target) return order[i];
  }
  return order[keep - 1];
}

void fill_logprobs(const float* logits, int64_t vocab, int top, std::vector<int32_t>& order, SampledToken& out) {
  const float mx = logits[ops::argmax(logits, vocab)];
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
  const double log_z = mx + std::log(sum);
  out.logprob = static_cast<float>(logits[out.token] - log_z);
  if (top <= 0) return;
  const int64_t count = std::min<int64_t>(top, vocab);
  order.resize(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + count, order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (int64_t i = 0; i < count; ++i)
    out.top.push_back({order[i], static_cast<float>(logits[order[i]] - log_z)});
}

}  // namespace

Sampler::Sampler(int64_t vocab) : vocab_(vocab), scratch_(static_cast<size_t>(omp_get_max_threads())) {
  NW_CHECK(vocab > 0, "Sampler: vocabulary size must be positive");
}

SampledToken Sampler::sample_row(const float* logits, const SampleRequest& r, Scratch& s) const {
  const SamplingParams& p = *r.params;
  std::vector<float>& w = s.weights;
  w.assign(logits, logits + vocab_);
  apply_penalties(w, p, *r.counts);
  if (r.masked)
    for (int32_t id : *r.masked)
      if (id < vocab_) w[id] = -std::numeric_limits<float>::infinity();
  SampledToken out;
  if (p.greedy()) {
    out.token = ops::argmax(w.data(), vocab_);
  } else {
    const float inv_t = static_cast<float>(1.0 / p.temperature);
    float mx = -std::numeric_limits<float>::infinity();
    for (float& x : w) mx = std::max(mx, x *= inv_t);
    for (float& x : w) x = std::exp(x - mx);
    out.token = draw(w, s.order, p, uniform(r.seed, r.position));
  }
  if (r.logprob || r.top_logprobs > 0) fill_logprobs(logits, vocab_, r.top_logprobs, s.order, out);
  return out;
}

void Sampler::sample(const Tensor& logits, std::span<const SampleRequest> requests, std::span<SampledToken> out) {
  NW_CHECK(logits.ndim() == 2 && logits.size(1) == vocab_ && logits.dtype == DType::kF32 &&
               logits.device == Device::kCPU && out.size() == requests.size(),
           "Sampler: logits", logits.shape_string(), " do not match a vocabulary of ", vocab_);
  for (const SampleRequest& r : requests)
    NW_CHECK(r.row >= 0 && r.row < logits.size(0), "Sampler: row ", r.row, " outside logits", logits.shape_string());
  if (scratch_.size() < static_cast<size_t>(omp_get_max_threads())) scratch_.resize(omp_get_max_threads());
  const int64_t n = static_cast<int64_t>(requests.size());
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < n; ++i)
    out[i] = sample_row(logits.f32() + requests[i].row * vocab_, requests[i], scratch_[omp_get_thread_num()]);
}

}  // namespace narwhal
