// Hostile request bodies without a server: type confusion, integers that would wrap, and values nested 100,000
// deep, against the chat, completion and /generate parsers. Each must be a 400 naming the field, never a crash.
#include <gtest/gtest.h>

#include "server/native_protocol.h"
#include "server/openai_protocol.h"

namespace narwhal::server {
namespace {

enum class Endpoint { kChat, kCompletion, kGenerate };

// The 400's param, or "accepted" when the body parses.
std::string rejected_param(Endpoint endpoint, const Body& body) {
  try {
    if (endpoint == Endpoint::kChat) parse_chat_request(body);
    if (endpoint == Endpoint::kCompletion) parse_completion_request(body);
    if (endpoint == Endpoint::kGenerate) parse_generate_request(body);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400) << e.what();
    const json error = e.body()["error"];
    EXPECT_TRUE(error["message"].is_string() && error.contains("type") && error.contains("code")) << error.dump();
    return error["param"].is_null() ? "" : error["param"].get<std::string>();
  }
  return "accepted";
}

Body chat(const std::string& extra) {
  return Body::parse(R"({"messages": [{"role": "user", "content": "hi"}])" + extra + "}");
}
Body generate(const std::string& sampling_params) {
  return Body::parse(R"({"input_ids": [1, 2], "sampling_params": )" + sampling_params + "}");
}

// "[[[...0...]]]" nested `depth` levels, parsed (nlohmann's parser and destructor do not recurse).
std::string deep_array(int depth) { return std::string(depth, '[') + "0" + std::string(depth, ']'); }

TEST(HostileRequest, NonStringTypesAreNamed400s) {
  const std::string tool = R"("function": {"name": "f"})";
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "tools": [{"type": 5, )" + tool + "}]")), "tools[0].type");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "tools": [{"type": "retrieval", )" + tool + "}]")),
            "tools[0].type");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "tools": [{"function": {"name": 7}}])")),
            "tools[0].function.name");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "tools": [{"function": []}])")), "tools[0].function");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "tools": [{)" + tool + R"(}], "tool_choice": {"type": {},
                                                 "function": {"name": "f"}})")),
            "tool_choice.type");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "response_format": {"type": 7})")), "response_format.type");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "response_format": "json")")), "response_format");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "response_format": {"type": "text"})")), "accepted");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "stream": true, "stream_options": {"include_usage": 1})")),
            "stream_options.include_usage");
  const Body calls = Body::parse(R"({"messages": [{"role": "assistant", "content": null,
                                     "tool_calls": [{"type": [], "function": {"name": "f", "arguments": "{}"}}]}]})");
  EXPECT_EQ(rejected_param(Endpoint::kChat, calls), "messages[0].tool_calls[0].type");
  const Body part = Body::parse(R"({"messages": [{"role": "user", "content": [{"type": 3, "text": "x"}]}]})");
  EXPECT_EQ(rejected_param(Endpoint::kChat, part), "messages[0].content[0].type");
}

TEST(HostileRequest, IntegersAreRangeCheckedBeforeNarrowing) {
  // 2^32 + 1 would become n = 1, 2^32 the stop token 0, 2^64 - 1 top_k = -1 ("all").
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate(R"({"n": 4294967297})")), "sampling_params.n");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate(R"({"stop_token_ids": [4294967296]})")),
            "sampling_params.stop_token_ids");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate(R"({"top_k": 18446744073709551615})")),
            "sampling_params.top_k");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate(R"({"max_new_tokens": 18446744073709551615})")),
            "sampling_params.max_new_tokens");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate(R"({"max_new_tokens": 1e19})")),
            "sampling_params.max_new_tokens");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "max_tokens": 18446744073709551615)")), "max_tokens");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "seed": 9223372036854775808)")), "seed");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "stop_token_ids": [-1])")), "stop_token_ids");
  EXPECT_EQ(rejected_param(Endpoint::kCompletion, Body::parse(R"({"prompt": [4294967296]})")), "prompt");
  EXPECT_EQ(rejected_param(Endpoint::kCompletion, Body::parse(R"({"prompt": [[1], [2147483648]]})")), "prompt[1]");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, Body::parse(R"({"input_ids": [1, 4294967296]})")), "input_ids");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, Body::parse(R"({"input_ids": 5})")), "input_ids");
}

TEST(HostileRequest, NumbersOfTheWrongKind) {
  // Booleans are no numbers; an integral decimal is an integer (Python clients send 3.0), 3.5 is not.
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate(R"({"max_new_tokens": true})")),
            "sampling_params.max_new_tokens");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate(R"({"temperature": false})")), "sampling_params.temperature");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate(R"({"n": 2.5})")), "sampling_params.n");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate(R"({"ignore_eos": 1})")), "sampling_params.ignore_eos");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate(R"({"stop": [1]})")), "sampling_params.stop");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate(R"({"temprature": 0})")), "sampling_params.temprature");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate(R"({"top_p": 0})")), "sampling_params");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate("[]")), "sampling_params");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "n": true)")), "n");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "temperature": "0.5")")), "temperature");

  const GenerateRequest r = parse_generate_request(
      generate(R"({"max_new_tokens": 3.0, "n": 2, "temperature": -0.0, "sampling_seed": -1, "stop": "x"})"));
  EXPECT_EQ(r.options.params.max_new_tokens, 3);
  EXPECT_TRUE(r.options.max_tokens_given);
  EXPECT_EQ(r.options.params.n, 2);
  EXPECT_TRUE(r.options.params.greedy());
  EXPECT_EQ(r.options.params.seed, UINT64_MAX);
  EXPECT_EQ(r.options.params.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(parse_chat_request(chat(R"(, "max_tokens": 3.0, "n": 2.0)")).options.params.n, 2);
}

TEST(HostileRequest, ValuesNested100000DeepAreRefusedWithoutRecursion) {
  const std::string deep = deep_array(100000);
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "tools": [{"type": "function", "function": {"name": "f",
                                                 "parameters": )" + deep + "}}]")),
            "tools");
  EXPECT_EQ(rejected_param(Endpoint::kChat, Body::parse(R"({"messages": [{"role": "user", "content": "x", "extra": )" +
                                                        deep + "}]}")),
            "messages");
  EXPECT_EQ(rejected_param(Endpoint::kChat, Body::parse(R"({"messages": [{"role": "assistant", "tool_calls": [
                                                        {"function": {"name": "f", "arguments": )" + deep + "}}]}]}")),
            "messages");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "chat_template_kwargs": {"x": )" + deep + "}")),
            "chat_template_kwargs");
  EXPECT_EQ(rejected_param(Endpoint::kCompletion, Body::parse(R"({"prompt": )" + deep + "}")), "prompt");
  EXPECT_EQ(rejected_param(Endpoint::kGenerate, generate(R"({"stop": )" + deep + "}")), "sampling_params");
  // Within the limit it is the field's own check that answers.
  EXPECT_EQ(rejected_param(Endpoint::kCompletion, Body::parse(R"({"prompt": )" + deep_array(kMaxNesting - 1) + "}")),
            "prompt[0]");
  EXPECT_EQ(rejected_param(Endpoint::kChat, chat(R"(, "chat_template_kwargs": {"x": )" +
                                                 deep_array(kMaxNesting - 2) + "}")),
            "accepted");
}

}  // namespace
}  // namespace narwhal::server
