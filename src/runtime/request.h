// What a client hands the engine (RequestInput) and what it gets back, token by token (RequestOutput).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "runtime/sampler.h"
#include "runtime/sampling_params.h"

namespace narwhal {

struct FinishReason {
  enum class Kind { kStop, kLength, kAbort };
  Kind kind = Kind::kStop;
  std::optional<int32_t> matched_token;      // the stop token (eos or stop_token_ids) that ended it
  std::optional<std::string> matched_text;   // the stop string that ended it
  std::string message;                       // why it was aborted

  static FinishReason length() { return {Kind::kLength, std::nullopt, std::nullopt, {}}; }
  static FinishReason stop_token(int32_t token) { return {Kind::kStop, token, std::nullopt, {}}; }
  static FinishReason stop_string(std::string text) { return {Kind::kStop, std::nullopt, std::move(text), {}}; }
  static FinishReason abort(std::string why) { return {Kind::kAbort, std::nullopt, std::nullopt, std::move(why)}; }

  // SGLang's meta_info form: {"type": "stop", "matched": 1}, {"type": "length", "length": 16}, ...
  json to_json(int64_t completion_tokens) const;
};

// One streamed piece of one choice: the tokens it produced since its last output, and at the end
// its finish reason. A request with n choices gets outputs with index 0 .. n-1.
struct RequestOutput {
  uint64_t request_id = 0;
  int index = 0;
  std::vector<int32_t> token_ids;
  std::string text;                             // new text (needs a tokenizer), held back while it may start a stop string
  std::vector<SampledToken> logprobs;           // per token, when the request asked for logprobs
  std::vector<std::vector<float>> logits;       // per token, the raw logits row (debugging: generate --return-logits)
  std::optional<FinishReason> finish;           // set on the choice's last output
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;                    // prompt tokens served from the prefix cache
  int64_t completion_tokens = 0;                // generated so far
  int64_t spec_verify_ct = 0;                   // speculating: decode steps that verified drafts so far
};

// Called on the engine's loop thread; it should only hand the output on (a queue, a socket write).
using OutputCallback = std::function<void(RequestOutput&&)>;

struct RequestInput {
  std::vector<int32_t> input_ids;
  SamplingParams params;
  bool return_logprob = false;
  int top_logprobs_num = 0;
  bool return_logits = false;
  OutputCallback on_output;
  // Admission shares the engine fairly between groups: the prompts of one API request should name the id of
  // its first prompt's request here. 0: a group of its own.
  uint64_t fairness_group = 0;
};

}  // namespace narwhal
