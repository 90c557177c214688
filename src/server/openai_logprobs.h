// Logprobs in OpenAI's two formats: chat (content[{token, logprob, bytes, top_logprobs}]) and legacy completions.
#pragma once

#include <vector>

#include "core/json.h"
#include "runtime/sampler.h"
#include "text/tokenizer.h"

namespace narwhal::server {

// {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}
json chat_logprobs(const text::Tokenizer& tokenizer, const std::vector<SampledToken>& tokens, size_t first = 0);

// {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}; offsets count characters from
// `text_offset`, the length of the text before these tokens.
json completion_logprobs(const text::Tokenizer& tokenizer, const std::vector<SampledToken>& tokens, size_t first,
                         int64_t text_offset);

// Characters (UTF-8 lead bytes) in `text`: OpenAI's text_offset unit.
int64_t count_characters(const std::string& text);

}  // namespace narwhal::server
