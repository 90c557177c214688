// SGLang's native /generate request: a prompt (text or input_ids), sampling_params, streaming and logprobs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "server/openai_protocol.h"

namespace narwhal::server {

struct GenerateRequest {
  GenerationOptions options;        // max_tokens_given only when sampling_params names max_new_tokens
  std::optional<std::string> text;  // tokenized with BOS; else input_ids as given
  std::vector<int32_t> input_ids;
};

// Throws ApiError(400) naming the field at fault (sampling_params.<key> for sampling parameters, unknown keys
// included: a typo must not silently change sampling).
GenerateRequest parse_generate_request(const Body& body);

}  // namespace narwhal::server
