// Sampler: requests to the sampling ops' rows (adjustments merged per token), and the CPU op's results back.
#include "runtime/sampler.h"

#include <algorithm>

#include "core/error.h"

namespace narwhal {

bool drawn_from_row_alone(const SampleRequest& r) {
  const SamplingParams& p = *r.params;
  const bool penalized = r.counts && !r.counts->empty() &&
                         (p.repetition_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0);
  return !penalized && p.logit_bias.empty() && !r.masked && !r.logprob && r.top_logprobs == 0;
}

bool drawn_by_argmax(const SampleRequest& r) { return r.params->greedy() && drawn_from_row_alone(r); }

ops::SamplingBatchHost build_sampling_batch(std::span<const SampleRequest> requests, int64_t vocab) {
  ops::SamplingBatchHost batch;
  batch.rows.reserve(requests.size());
  std::vector<ops::TokenAdjustment> row_list;
  for (const SampleRequest& r : requests) {
    const SamplingParams& p = *r.params;
    NW_CHECK(r.top_logprobs >= 0 && r.top_logprobs <= ops::kMaxTopLogprobs, "top_logprobs must be in [0, ",
             ops::kMaxTopLogprobs, "], got ", r.top_logprobs);
    ops::SamplingRow row;
    row.seed = r.seed;
    row.position = r.position;
    row.temperature = p.temperature;
    row.top_p = p.top_p;
    row.min_p = p.min_p;
    row.frequency_penalty = p.frequency_penalty;
    row.presence_penalty = p.presence_penalty;
    row.repetition_penalty = static_cast<float>(p.repetition_penalty);
    row.top_k = p.top_k > 0 && p.top_k < vocab ? static_cast<int32_t>(p.top_k) : 0;
    row.logits_row = static_cast<int32_t>(r.row);
    row.want_logprob = r.logprob;
    row.top_logprobs = r.top_logprobs;

    row_list.clear();
    const auto in_vocab = [&](int32_t id) { return id >= 0 && id < vocab; };
    for (const auto& [token, bias] : p.logit_bias)
      if (in_vocab(token)) row_list.push_back({token, bias, 0, 0});
    const bool penalised = p.repetition_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0;
    if (penalised && r.counts)
      for (const auto& [token, count] : *r.counts)
        if (in_vocab(token) && count > 0) row_list.push_back({token, 0.0f, count, 0});
    const auto by_token = [](const auto& a, const auto& b) { return a.token < b.token; };
    std::sort(row_list.begin(), row_list.end(), by_token);
    // Masks may hold most of the vocabulary (a grammar's): ascending already (else sorted here), they are merged
    // into the short sorted list of biases and counts rather than sorted with it.
    std::vector<int32_t> sorted_mask;
    const std::vector<int32_t>* mask = r.masked;
    if (mask && !std::is_sorted(mask->begin(), mask->end())) {
      sorted_mask = *mask;
      std::sort(sorted_mask.begin(), sorted_mask.end());
      mask = &sorted_mask;
    }
    row.adjust_begin = static_cast<int32_t>(batch.adjustments.size());
    const auto add = [&](const ops::TokenAdjustment& a) {
      // One entry per token: a biased token may also be counted and masked.
      const bool repeated = batch.adjustments.size() > static_cast<size_t>(row.adjust_begin) &&
                            batch.adjustments.back().token == a.token;
      if (repeated) {
        ops::TokenAdjustment& merged = batch.adjustments.back();
        merged.bias += a.bias;
        merged.count = std::max(merged.count, a.count);
        merged.masked |= a.masked;
      } else {
        batch.adjustments.push_back(a);
      }
    };
    auto listed = row_list.begin();
    if (mask) {
      for (int32_t id : *mask) {
        if (!in_vocab(id)) continue;
        for (; listed != row_list.end() && listed->token <= id; ++listed) add(*listed);
        add({id, 0.0f, 0, 1});
      }
    }
    for (; listed != row_list.end(); ++listed) add(*listed);
    row.adjust_end = static_cast<int32_t>(batch.adjustments.size());
    batch.rows.push_back(row);
  }
  return batch;
}

Sampler::Sampler(int64_t vocab) : vocab_(vocab) {
  NW_CHECK(vocab > 0 && vocab <= ops::kMaxSamplingVocab, "Sampler: vocabulary size ", vocab, " outside [1, ",
           ops::kMaxSamplingVocab, "]");
}

void Sampler::sample(const Tensor& logits, std::span<const SampleRequest> requests,
                     std::span<SampledToken> out) const {
  NW_CHECK(logits.ndim() == 2 && logits.size(1) == vocab_ && out.size() == requests.size(), "Sampler: logits",
           logits.shape_string(), " do not match a vocabulary of ", vocab_);
  const ops::SamplingBatchHost batch = build_sampling_batch(requests, vocab_);
  ops::SampledRows rows = ops::SampledRows::allocate(static_cast<int64_t>(requests.size()), Device::kCPU);
  ops::sample_tokens(logits, batch.view(), rows);
  for (size_t i = 0; i < requests.size(); ++i) {
    const SampleRequest& r = requests[i];
    SampledToken& t = out[i];
    t.token = rows.tokens.ptr<int32_t>()[i];
    t.top.clear();
    if (!r.logprob && r.top_logprobs == 0) continue;
    t.logprob = rows.logprobs.f32()[i];
    for (int j = 0; j < std::min<int64_t>(r.top_logprobs, vocab_); ++j)
      t.top.push_back({rows.top_ids.ptr<int32_t>()[i * ops::kMaxTopLogprobs + j],
                       rows.top_logprobs.f32()[i * ops::kMaxTopLogprobs + j]});
  }
}

}  // namespace narwhal
