// SamplingParams validation: the ranges every sampling parameter must be in before the engine takes a request.
#include "runtime/sampling_params.h"

#include <cmath>

#include "core/error.h"

namespace narwhal {

void SamplingParams::validate() const {
  NW_CHECK(max_new_tokens >= 0, "max_new_tokens must be >= 0, got ", max_new_tokens);
  NW_CHECK(min_new_tokens >= 0 && min_new_tokens <= max_new_tokens, "min_new_tokens must be in [0, max_new_tokens = ",
           max_new_tokens, "], got ", min_new_tokens);
  // Written so that NaN fails each test; infinity is no temperature either.
  NW_CHECK(temperature >= 0.0 && std::isfinite(temperature), "temperature must be finite and >= 0, got ",
           temperature);
  NW_CHECK(top_k == -1 || top_k >= 1, "top_k must be -1 (all) or >= 1, got ", top_k);
  NW_CHECK(top_p > 0.0 && top_p <= 1.0, "top_p must be in (0, 1], got ", top_p);
  NW_CHECK(min_p >= 0.0 && min_p <= 1.0, "min_p must be in [0, 1], got ", min_p);
  NW_CHECK(frequency_penalty >= -2.0 && frequency_penalty <= 2.0, "frequency_penalty must be in [-2, 2], got ",
           frequency_penalty);
  NW_CHECK(presence_penalty >= -2.0 && presence_penalty <= 2.0, "presence_penalty must be in [-2, 2], got ",
           presence_penalty);
  NW_CHECK(repetition_penalty > 0.0 && repetition_penalty <= 2.0, "repetition_penalty must be in (0, 2], got ",
           repetition_penalty);
  NW_CHECK(n >= 1 && n <= kMaxN, "n must be in [1, ", kMaxN, "], got ", n);
  for (const std::string& s : stop) NW_CHECK(!s.empty(), "stop strings must not be empty");
  for (int32_t id : stop_token_ids) NW_CHECK(id >= 0, "stop_token_ids must be token ids, got ", id);
  for (size_t i = 0; i < logit_bias.size(); ++i) {
    const auto& [id, bias] = logit_bias[i];
    NW_CHECK(id >= 0, "logit_bias keys must be token ids, got ", id);
    NW_CHECK(bias >= -100.0f && bias <= 100.0f, "logit_bias of token ", id, " must be in [-100, 100], got ", bias);
    for (size_t j = 0; j < i; ++j) NW_CHECK(logit_bias[j].first != id, "logit_bias lists token ", id, " twice");
  }
}

}  // namespace narwhal
