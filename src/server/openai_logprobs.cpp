// Logprob serialization: token strings are the token's bytes (a partial character shows as U+FFFD on the wire).
#include "server/openai_logprobs.h"

namespace narwhal::server {

namespace {

json token_entry(const text::Tokenizer& tokenizer, int32_t token, float logprob) {
  const std::string_view bytes = tokenizer.token_bytes(token);
  json byte_values = json::array();
  for (unsigned char b : bytes) byte_values.push_back(static_cast<int>(b));
  return {{"token", std::string(bytes)}, {"logprob", logprob}, {"bytes", std::move(byte_values)}};
}

}  // namespace

json chat_logprobs(const text::Tokenizer& tokenizer, const std::vector<SampledToken>& tokens, size_t first) {
  json content = json::array();
  for (size_t i = first; i < tokens.size(); ++i) {
    json entry = token_entry(tokenizer, tokens[i].token, tokens[i].logprob);
    json top = json::array();
    for (const TokenLogprob& alt : tokens[i].top) top.push_back(token_entry(tokenizer, alt.token, alt.logprob));
    entry["top_logprobs"] = std::move(top);
    content.push_back(std::move(entry));
  }
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

json completion_logprobs(const text::Tokenizer& tokenizer, const std::vector<SampledToken>& tokens, size_t first,
                         int64_t text_offset) {
  json strings = json::array(), logprobs = json::array(), tops = json::array(), offsets = json::array();
  for (size_t i = first; i < tokens.size(); ++i) {
    const std::string token(tokenizer.token_bytes(tokens[i].token));
    strings.push_back(token);
    logprobs.push_back(tokens[i].logprob);
    json top = json::object();
    for (const TokenLogprob& alt : tokens[i].top) top[std::string(tokenizer.token_bytes(alt.token))] = alt.logprob;
    tops.push_back(std::move(top));
    offsets.push_back(text_offset);
    text_offset += count_characters(token);
  }
  return {{"tokens", std::move(strings)},
          {"token_logprobs", std::move(logprobs)},
          {"top_logprobs", std::move(tops)},
          {"text_offset", std::move(offsets)}};
}

int64_t count_characters(const std::string& text) {
  int64_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace narwhal::server
