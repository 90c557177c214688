// Request validation (OpenAI's 400s) and chat output splitting (reasoning, tool calls) without a server.
#include <gtest/gtest.h>

#include <algorithm>

#include "server/chat_output.h"
#include "server/openai_protocol.h"

namespace narwhal::server {
namespace {

Body chat(const std::string& extra) {
  return Body::parse(R"({"model": "m", "messages": [{"role": "user", "content": "hi"}])" + extra + "}");
}

std::string error_code(const Body& body) {
  try {
    parse_chat_request(body);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    return e.body()["error"]["code"].is_null() ? "" : e.body()["error"]["code"].get<std::string>();
  }
  return "accepted";
}

TEST(OpenAiProtocol, ReadsSamplingOptions) {
  const ChatRequest r = parse_chat_request(
      chat(R"(, "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9, "n": 3, "seed": 11, "stop": "x",
              "logprobs": true, "top_logprobs": 2, "stream": true, "stream_options": {"include_usage": true})"));
  EXPECT_EQ(r.options.params.max_new_tokens, 7);
  EXPECT_TRUE(r.options.max_tokens_given);
  EXPECT_DOUBLE_EQ(r.options.params.temperature, 0.5);
  EXPECT_EQ(r.options.params.n, 3);
  EXPECT_EQ(r.options.params.seed, 11u);
  EXPECT_EQ(r.options.params.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(r.options.top_logprobs, 2);
  EXPECT_TRUE(r.options.include_usage);
}

TEST(OpenAiProtocol, RejectsBadValuesWithOpenAiCodes) {
  EXPECT_EQ(error_code(chat(R"(, "max_tokens": 0)")), "integer_below_min_value");
  EXPECT_EQ(error_code(chat(R"(, "max_tokens": "9")")), "invalid_type");
  EXPECT_EQ(error_code(chat(R"(, "max_tokens": 2.5)")), "invalid_type");
  EXPECT_EQ(error_code(chat(R"(, "temperature": 2.5)")), "decimal_above_max_value");
  EXPECT_EQ(error_code(chat(R"(, "n": 129)")), "integer_above_max_value");
  EXPECT_EQ(error_code(chat(R"(, "stop": [""])")), "");
  EXPECT_EQ(error_code(chat(R"(, "stream_options": {"include_usage": true})")), "invalid_value");
  EXPECT_EQ(error_code(chat(R"(, "tool_choice": "required")")), "invalid_value");
  EXPECT_EQ(error_code(Body::parse(R"({"messages": []})")), "empty_array");
  EXPECT_EQ(error_code(Body::parse(R"({"model": "m"})")), "missing_required_parameter");
  EXPECT_EQ(error_code(Body::parse(R"({"messages": [{"role": "user"}]})")), "missing_required_parameter");
  EXPECT_EQ(error_code(chat(R"(, "max_tokens": 3.0)")), "accepted");
  HttpRequest not_json;
  not_json.body_error = "at byte 1: expected a string key, found 'o'";
  EXPECT_THROW(parse_body(not_json), ApiError);
  HttpRequest array;
  array.body = Body::array();
  EXPECT_THROW(parse_body(array), ApiError);
}

TEST(OpenAiProtocol, LogitBias) {
  const ChatRequest r = parse_chat_request(chat(R"(, "logit_bias": {"5": -100, "12": 2.5})"));
  std::vector<std::pair<int32_t, float>> bias = r.options.params.logit_bias;
  std::sort(bias.begin(), bias.end());
  ASSERT_EQ(bias.size(), 2u);
  EXPECT_EQ(bias[0], std::make_pair(5, -100.0f));
  EXPECT_EQ(bias[1], std::make_pair(12, 2.5f));
  for (const char* bad : {R"(, "logit_bias": {"5": 101})", R"(, "logit_bias": {"-1": 1})", R"(, "logit_bias": {"x": 1})",
                          R"(, "logit_bias": {"5x": 1})", R"(, "logit_bias": {"99999999999": 1})",
                          R"(, "logit_bias": {"5": "big"})", R"(, "logit_bias": [5, 1])"})
    EXPECT_NE(error_code(chat(bad)), "accepted") << bad;
}

TEST(OpenAiProtocol, NormalizesMessages) {
  const ChatRequest r = parse_chat_request(Body::parse(R"({"messages": [
      {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": "", "tool_calls": [{"id": "1", "type": "function",
                                                          "function": {"name": "f", "arguments": {"x": 1}}}]}]})"));
  EXPECT_EQ(r.messages[0]["role"], "system");
  EXPECT_EQ(r.messages[0]["content"], "ab");
  EXPECT_TRUE(r.messages[1]["content"].is_null());
  EXPECT_EQ(r.messages[1]["tool_calls"][0]["function"]["arguments"], R"({"x":1})");
}

TEST(OpenAiProtocol, CompletionPromptForms) {
  EXPECT_EQ(parse_completion_request(Body::parse(R"({"prompt": "a"})")).options.params.max_new_tokens, 16);
  EXPECT_EQ(parse_completion_request(Body::parse(R"({"prompt": ["a", [1, 2]]})")).prompts.size(), 2u);
  EXPECT_EQ(parse_completion_request(Body::parse(R"({"prompt": [5, 6]})")).prompts[0].ids, (std::vector<int32_t>{5, 6}));
  EXPECT_THROW(parse_completion_request(Body::parse(R"({"prompt": [[]]})")), ApiError);
  EXPECT_THROW(parse_completion_request(Body::parse(R"({"prompt": 5})")), ApiError);
}

TEST(ChatOutput, StreamsReasoningContentAndToolCalls) {
  ChatOutput out({.reasoning_parser = "deepseek-r1", .tool_call_parser = "deepseekv3", .tool_names = {"get"}});
  std::string reasoning, content;
  json calls = json::array();
  const std::vector<std::string> pieces = {"let me th", "ink</th", "ink>Sure.", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>",
                                           "function<｜tool▁sep｜>get\n```json\n{\"a\": 1}\n```<｜tool▁call▁end｜>",
                                           "<｜tool▁calls▁end｜>"};
  for (size_t i = 0; i < pieces.size(); ++i) {
    const json d = out.feed(pieces[i], i + 1 == pieces.size());
    reasoning += d.value("reasoning_content", "");
    content += d.value("content", "");
    for (const json& c : d.value("tool_calls", json::array())) calls.push_back(c);
  }
  EXPECT_EQ(reasoning, "let me think");
  EXPECT_EQ(content, "Sure.");
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0]["function"]["name"], "get");
  EXPECT_TRUE(out.has_tool_calls());
  const json m = out.message();
  EXPECT_EQ(m["reasoning_content"], "let me think");
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get");
}

TEST(ChatOutput, ForcedToolPrefixIsParsedNotShown) {
  ChatOutput out({.tool_call_parser = "deepseekv3",
                  .forced_prefix = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get\n```json\n"});
  const json d = out.feed("{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>", true);
  EXPECT_FALSE(d.contains("content"));
  ASSERT_TRUE(d.contains("tool_calls"));
  EXPECT_EQ(d["tool_calls"][0]["function"]["arguments"], "{}");
}

}  // namespace
}  // namespace narwhal::server
