// CPU sampler, the reference of the CUDA one: adjusted logits, integer weights and filters, the id-order draw,
// raw logprobs. Selection by nth_element (top-k) and a weighted quickselect (top-p): no row is fully sorted.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "core/error.h"
#include "ops/sampling.h"

namespace narwhal::ops {

int32_t argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int32_t>(best);
}

SampledRows SampledRows::allocate(int64_t rows, Device device) {
  const auto make = [&](DType dtype, std::vector<int64_t> shape) {
    return device == Device::kCPU ? Tensor::zeros(dtype, shape) : Tensor::empty(dtype, shape, device);
  };
  return {make(DType::kI32, {rows}), make(DType::kF32, {rows}), make(DType::kI32, {rows, kMaxTopLogprobs}),
          make(DType::kF32, {rows, kMaxTopLogprobs})};
}

namespace {

struct Scratch {
  std::vector<float> x;
  std::vector<uint64_t> weights, keys;
};

// The last rank r < n of keys[0, n) (descending order) whose mass ranked before it is below `limit` (>= 1, so rank
// 0 qualifies): halves the candidate ranks with nth_element, keeping [lo, hi) = the keys of ranks lo .. hi-1.
uint64_t last_key_under(std::vector<uint64_t>& keys, size_t n, uint64_t limit) {
  size_t lo = 0, hi = n;
  uint64_t before = 0;  // mass of ranks < lo
  while (hi - lo > 1) {
    const size_t mid = lo + (hi - lo) / 2;
    std::nth_element(keys.begin() + lo, keys.begin() + mid, keys.begin() + hi, std::greater<>());
    uint64_t mass = before;
    for (size_t i = lo; i < mid; ++i) mass += key_weight(keys[i]);
    if (mass < limit) {
      lo = mid;
      before = mass;
    } else {
      hi = mid;
    }
  }
  return keys[lo];
}

// The sampled token of a row whose adjusted logits are x (largest: max_x, finite), temperature > 0.
int32_t draw(const std::vector<float>& x, float max_x, const SamplingRow& row, Scratch& s) {
  const int64_t vocab = static_cast<int64_t>(x.size());
  const double inv_t = inverse_temperature(row.temperature);
  const uint64_t min_weight = min_p_threshold(row.min_p);
  std::vector<uint64_t>& w = s.weights;
  std::vector<uint64_t>& keys = s.keys;
  w.resize(x.size());
  keys.clear();
  uint64_t total = 0;
  size_t min_p_kept = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    w[i] = fixed_weight(x[i], max_x, inv_t);
    min_p_kept += w[i] >= min_weight;
    if (w[i] == 0) continue;
    keys.push_back(rank_key(w[i], i));
    total += w[i];
  }
  // Zero weights can never be drawn, so only the positive ones are ranked: keys[0, positive).
  const size_t positive = keys.size();
  const size_t top_k = row.top_k > 0 ? std::min<size_t>(static_cast<size_t>(row.top_k), positive) : positive;
  uint64_t top_k_mass = total;
  if (top_k < positive) {
    std::nth_element(keys.begin(), keys.begin() + (top_k - 1), keys.end(), std::greater<>());
    top_k_mass = 0;
    for (size_t i = 0; i < top_k; ++i) top_k_mass += key_weight(keys[i]);
  }
  // Top-k and min-p each keep a rank prefix; top-p shortens it further.
  const size_t kept = std::min(top_k, min_p_kept);
  uint64_t cut = 0;  // the smallest kept key (0: every positive weight is kept)
  if (kept < top_k) std::nth_element(keys.begin(), keys.begin() + (kept - 1), keys.begin() + top_k, std::greater<>());
  if (row.top_p < 1.0)
    cut = last_key_under(keys, kept, top_p_threshold(row.top_p, top_k_mass));
  else if (kept < positive)
    cut = keys[kept - 1];
  uint64_t mass = 0;
  for (int64_t i = 0; i < vocab; ++i)
    if (w[i] > 0 && rank_key(w[i], i) >= cut) mass += w[i];
  const uint64_t target = draw_target(uniform_bits(row.seed, row.position), mass);
  uint64_t running = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (w[i] == 0 || rank_key(w[i], i) < cut) continue;
    running += w[i];
    if (running > target) return static_cast<int32_t>(i);
  }
  NW_CHECK(false, "sample_tokens: the draw passed the kept mass ", mass);
  return 0;
}

// Logprobs of the raw logits: the chosen token's, and the `top` most likely ones.
void fill_logprobs(const float* raw, int64_t vocab, int32_t token, int top, Scratch& s, SampledRows& out, int64_t b) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < vocab; ++i)
    if (raw[i] > mx) mx = raw[i];
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(raw[i] - mx));
  const double log_z = mx + std::log(sum);
  out.logprobs.f32()[b] = static_cast<float>(raw[token] - log_z);
  const int64_t count = std::min<int64_t>(top, vocab);
  if (count == 0) return;
  std::vector<uint64_t>& keys = s.keys;
  keys.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) keys[i] = logit_key(raw[i], i);
  std::partial_sort(keys.begin(), keys.begin() + count, keys.end(), std::greater<>());
  for (int64_t j = 0; j < count; ++j) {
    const int32_t id = logit_key_id(keys[j]);
    out.top_ids.ptr<int32_t>()[b * kMaxTopLogprobs + j] = id;
    out.top_logprobs.f32()[b * kMaxTopLogprobs + j] = static_cast<float>(raw[id] - log_z);
  }
}

void sample_row(const float* raw, int64_t vocab, const SamplingRow& row, const TokenAdjustment* adjustments,
                Scratch& s, SampledRows& out, int64_t b) {
  std::vector<float>& x = s.x;
  x.assign(raw, raw + vocab);
  for (int32_t j = row.adjust_begin; j < row.adjust_end; ++j) {
    const TokenAdjustment& a = adjustments[j];
    x[a.token] = adjusted_logit(raw[a.token], a, row);
  }
  uint64_t best = 0;
  for (int64_t i = 0; i < vocab; ++i) best = std::max(best, logit_key(x[i], i));
  int32_t token = logit_key_id(best);
  const float max_x = logit_key_value(best);
  if (row.temperature > 0.0 && std::isfinite(max_x)) token = draw(x, max_x, row, s);
  out.tokens.ptr<int32_t>()[b] = token;
  if (row.want_logprob || row.top_logprobs > 0) fill_logprobs(raw, vocab, token, row.top_logprobs, s, out, b);
}

void check_host(const Tensor& t, DType dtype, int64_t rows, int64_t cols, const char* what) {
  const bool shape_ok = cols == 0 ? t.ndim() == 1 && t.size(0) == rows
                                  : t.ndim() == 2 && t.size(0) == rows && t.size(1) == cols;
  NW_CHECK(t.device == Device::kCPU && t.dtype == dtype && shape_ok, "sample_tokens: ", what, " must be a host ",
           dtype_name(dtype), " tensor of ", rows, cols ? cat(" x ", cols) : std::string(), ", got ",
           dtype_name(t.dtype), t.shape_string());
}

}  // namespace

void sample_tokens(const Tensor& logits, const SamplingBatch& batch, SampledRows& out) {
  NW_CHECK(logits.device == Device::kCPU && logits.dtype == DType::kF32 && logits.ndim() == 2 &&
               logits.size(1) >= 1 && logits.size(1) <= kMaxSamplingVocab,
           "sample_tokens: logits must be a host F32 [rows, vocab] with 1 <= vocab <= ", kMaxSamplingVocab, ", got ",
           dtype_name(logits.dtype), logits.shape_string());
  const int64_t n = batch.num_rows, vocab = logits.size(1);
  check_host(out.tokens, DType::kI32, n, 0, "tokens");
  check_host(out.logprobs, DType::kF32, n, 0, "logprobs");
  check_host(out.top_ids, DType::kI32, n, kMaxTopLogprobs, "top_ids");
  check_host(out.top_logprobs, DType::kF32, n, kMaxTopLogprobs, "top_logprobs");
  for (int64_t b = 0; b < n; ++b) {
    const SamplingRow& r = batch.rows[b];
    NW_CHECK(r.logits_row >= 0 && r.logits_row < logits.size(0), "sample_tokens: row ", b, " reads logits row ",
             r.logits_row, " of ", logits.size(0));
    NW_CHECK(r.temperature >= 0.0 && r.top_p > 0.0 && r.top_p <= 1.0 && r.min_p >= 0.0 && r.min_p <= 1.0 &&
                 r.top_logprobs >= 0 && r.top_logprobs <= kMaxTopLogprobs,
             "sample_tokens: row ", b, " has temperature ", r.temperature, ", top_p ", r.top_p, ", min_p ", r.min_p,
             ", top_logprobs ", r.top_logprobs, " (need >= 0, (0, 1], [0, 1], 0 .. ", kMaxTopLogprobs, ")");
    NW_CHECK(r.adjust_begin >= 0 && r.adjust_begin <= r.adjust_end && r.adjust_end <= batch.num_adjustments,
             "sample_tokens: row ", b, " has adjustments [", r.adjust_begin, ", ", r.adjust_end, ") outside the ",
             batch.num_adjustments, " listed");
    for (int32_t j = r.adjust_begin; j < r.adjust_end; ++j) {
      const int32_t t = batch.adjustments[j].token;
      NW_CHECK(t >= 0 && t < vocab && (j == r.adjust_begin || batch.adjustments[j - 1].token < t),
               "sample_tokens: row ", b, "'s adjustments must be ascending token ids below ", vocab, ", got ", t);
    }
  }
  const float* data = logits.f32();
#pragma omp parallel
  {
    Scratch scratch;
#pragma omp for schedule(dynamic)
    for (int64_t b = 0; b < n; ++b) {
      const SamplingRow& r = batch.rows[b];
      sample_row(data + r.logits_row * vocab, vocab, r, batch.adjustments, scratch, out, b);
    }
  }
}

}  // namespace narwhal::ops
