// Token choice from logits: greedy argmax, and the sampler's description of a row, shared by the CPU op here and
// the CUDA op (ops/cuda/sampling.h), which pick the same tokens from the same logits.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "ops/sampling_math.h"

namespace narwhal::ops {

// Lowest index of the largest value, as torch.argmax (NaN never compares larger).
int32_t argmax(const float* logits, int64_t n);

constexpr int kMaxTopLogprobs = 20;  // OpenAI's limit

// One row to sample (host memory for the CPU op, device memory for the CUDA op).
struct SamplingRow {
  uint64_t seed = 0;  // output position p draws uniform_bits(seed, p)
  int64_t position = 0;
  double temperature = 1.0;  // 0 = greedy
  double top_p = 1.0;        // (0, 1]; 1 = off
  double min_p = 0.0;        // [0, 1]; 0 = off
  double frequency_penalty = 0.0;
  double presence_penalty = 0.0;
  float repetition_penalty = 1.0f;
  int32_t top_k = 0;         // <= 0 = off
  int32_t logits_row = 0;    // the logits row it reads (the choices of an n > 1 request share one)
  int32_t adjust_begin = 0;  // its adjustments: [adjust_begin, adjust_end) of the batch's list
  int32_t adjust_end = 0;
  int32_t want_logprob = 0;  // 1: the chosen token's logprob
  int32_t top_logprobs = 0;  // how many of the most likely raw tokens to report, 0 .. kMaxTopLogprobs
};

// A token whose logit the row changes: bias added, then (count > 0) the penalties for that many occurrences in
// the output, then masked (-inf). A row's adjustments are sorted by token, each token at most once.
struct TokenAdjustment {
  int32_t token = 0;
  float bias = 0.0f;
  int32_t count = 0;
  int32_t masked = 0;
};

// The adjusted logit of a token listed in the row's adjustments. Repetition scales towards "less likely"
// (divide if positive, multiply if negative), frequency subtracts per occurrence, presence once.
NW_HOST_DEVICE inline float adjusted_logit(float raw, const TokenAdjustment& a, const SamplingRow& row) {
  if (a.masked) return -std::numeric_limits<float>::infinity();
  float x = raw + a.bias;
  if (a.count > 0) {
    const float shift =
        static_cast<float>(::fma(row.frequency_penalty, static_cast<double>(a.count), row.presence_penalty));
    x = x > 0.0f ? x / row.repetition_penalty - shift : ::fmaf(x, row.repetition_penalty, -shift);
  }
  return x;
}

// The rows of one sampling call and their adjustments (pointers into host or device memory, as the op needs).
struct SamplingBatch {
  const SamplingRow* rows = nullptr;
  int64_t num_rows = 0;
  const TokenAdjustment* adjustments = nullptr;
  int64_t num_adjustments = 0;
};

// A batch built on the host (runtime/sampler.h builds it from requests); copy both vectors to use it on a device.
struct SamplingBatchHost {
  std::vector<SamplingRow> rows;
  std::vector<TokenAdjustment> adjustments;
  SamplingBatch view() const {
    return {rows.data(), static_cast<int64_t>(rows.size()), adjustments.data(),
            static_cast<int64_t>(adjustments.size())};
  }
};

// What a sampling call writes, for B rows: tokens [B] I32; for rows with want_logprob or top_logprobs > 0,
// logprobs [B] F32 (log_softmax of the raw logits at the token, as OpenAI reports it); for rows with
// top_logprobs = N > 0, the first N columns of top_ids / top_logprobs [B, kMaxTopLogprobs] (I32 / F32): the N
// most likely raw tokens, best first, ties to the lower id. Entries a row does not ask for are not written.
struct SampledRows {
  Tensor tokens, logprobs, top_ids, top_logprobs;
  static SampledRows allocate(int64_t rows, Device device);
};

// The algorithm, on both devices. Adjusted logits x (TokenAdjustment). Greedy (temperature 0): the largest x,
// ties to the lower id. Otherwise fixed_weight(x) for every token (sampling_math.h), ranked by rank_key; the kept
// tokens are the longest rank prefix allowed by top-k (the top_k largest keys), top-p (a token stays while the
// mass ranked before it is below top_p_threshold(top_p, mass of the top-k set); the first always stays) and
// min-p (weights >= min_p_threshold); then target = draw_target(uniform_bits(seed, position), kept mass), and
// the token is the first id, in id order, whose inclusive prefix of kept weight exceeds target. A row whose
// largest x is not finite (all masked, NaN, +inf) takes the greedy choice. NaN logits weigh 0 and rank lowest
// (never drawn while any number is left); a row with a NaN raw logit reports NaN logprobs.

// CPU op. logits [R, V] F32 on the host, V <= kMaxSamplingVocab; every row's logits_row in [0, R), adjustments
// inside the batch's list and sorted; `out` on the host, sized for batch.num_rows. Rows run in parallel (OpenMP).
void sample_tokens(const Tensor& logits, const SamplingBatch& batch, SampledRows& out);

}  // namespace narwhal::ops
