// SamplingParams: how one request's tokens are chosen and when it stops (SGLang's sampling_params names).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace narwhal {

class JsonGrammar;

struct SamplingParams {
  int64_t max_new_tokens = 128;
  int64_t min_new_tokens = 0;    // stop tokens are masked until this many were generated
  double temperature = 1.0;      // 0 = greedy
  int64_t top_k = -1;            // -1 (or >= vocab) = all
  double top_p = 1.0;
  double min_p = 0.0;
  double frequency_penalty = 0.0;
  double presence_penalty = 0.0;
  double repetition_penalty = 1.0;
  std::optional<uint64_t> seed;  // none: derived from --random-seed and the request id
  int n = 1;                     // choices sharing the prompt (prefilled once)
  bool ignore_eos = false;
  std::vector<std::string> stop;          // stop strings (need a tokenizer)
  std::vector<int32_t> stop_token_ids;
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token id, bias added to its logit), as OpenAI: [-100, 100]
  bool no_stop_trim = false;              // keep the matched stop string in the text
  // Structured output (response_format json_object / json_schema, SGLang's json_schema): every token keeps the
  // output inside this grammar, and the choice ends where the JSON value is complete. Needs a tokenizer.
  std::shared_ptr<const JsonGrammar> grammar;
  // The grammar applies after this token (a reasoning model's "</think>": it reasons freely first); -1: from the
  // first output token.
  int32_t grammar_after_token = -1;

  // Choices one request may ask for (each is a sequence of its own once the prompt is done).
  static constexpr int kMaxN = 1024;

  bool greedy() const { return temperature == 0.0; }
  // Throws Error naming the first parameter outside its range (NaN and infinities are outside every range).
  void validate() const;
};

}  // namespace narwhal
