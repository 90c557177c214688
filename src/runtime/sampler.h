// Sampler: the next token of each sequence from its logits row, with penalties, logit_bias, top-k/top-p/min-p and
// logprobs, through the sampling ops' description of a row (ops/sampling.h), which the GPU sampler reads too.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"
#include "ops/sampling.h"
#include "runtime/sampling_params.h"

namespace narwhal {

// How often each token occurs in a sequence's output so far (frequency/presence/repetition penalties).
using TokenCounts = std::unordered_map<int32_t, int32_t>;

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

struct SampledToken {
  int32_t token = 0;
  float logprob = 0.0f;            // log_softmax of the raw logits at `token` (when asked for)
  std::vector<TokenLogprob> top;   // the `top_logprobs` most likely tokens of the raw logits, best first
};

// One row to sample: row `row` of the logits, for a sequence at output position `position`.
struct SampleRequest {
  int64_t row = 0;
  const SamplingParams* params = nullptr;
  const TokenCounts* counts = nullptr;
  const std::vector<int32_t>* masked = nullptr;  // ids that may not be chosen now (stop ids before min_new_tokens)
  uint64_t seed = 0;
  int64_t position = 0;
  bool logprob = false;
  int top_logprobs = 0;
  // Speculative decoding: how many tokens the runner should draft to follow this request's last one (0: none). Its
  // row's sequence may end in draft tokens to verify (SequenceInfo::draft_len), each drawn at its own position.
  int max_draft = 0;
};

// Whether `r`'s draw depends on its logits row and its own parameters alone: nothing changes the logits first and
// nothing else is asked for (no penalties over the output so far, bias, masked stop ids or logprobs), so that the GPU
// sampler draws it from a row description fixed for the step (the speculative graphs' sampled draws).
bool drawn_from_row_alone(const SampleRequest& r);
// Whether `r` is drawn by the argmax alone: greedy and drawn from its row alone. The GPU runner then draws it with
// its argmax kernel (in speculative graphs too).
bool drawn_by_argmax(const SampleRequest& r);

// The ops' rows for `requests`: one SamplingRow each, and as adjustments its logit_bias, its output counts when a
// penalty is on (so only rows with penalties or biases carry a list; its cost is one entry per distinct token),
// and its masked ids; ids outside [0, vocab) are dropped. Throws if top_logprobs exceeds ops::kMaxTopLogprobs.
ops::SamplingBatchHost build_sampling_batch(std::span<const SampleRequest> requests, int64_t vocab);

// Order, as SGLang and vLLM: logit_bias, penalties (repetition, then frequency and presence; over output tokens,
// as SGLang's penalizers), masks, temperature, top-k, top-p over the top-k renormalised probabilities, min-p
// relative to the most likely token, then one draw (ops/sampling.h has the exact integer algorithm). Greedy
// (temperature 0) takes the argmax after the penalties. Logprobs come from the unmodified distribution
// (log_softmax of the model's logits), as OpenAI's API and SGLang's original-logprob mode report them.
// The draw for output position i uses uniform(seed, i) only, so a seeded request gives the same tokens
// whatever else is in the batch, and after a retraction.
class Sampler {
 public:
  explicit Sampler(int64_t vocab);
  // Samples every request's row of `logits` [rows, vocab] (host F32) in parallel into `out`.
  void sample(const Tensor& logits, std::span<const SampleRequest> requests, std::span<SampledToken> out) const;

 private:
  int64_t vocab_;
};

}  // namespace narwhal
