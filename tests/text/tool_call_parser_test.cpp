// The deepseekv3 tool-call parser: whole-text parsing as SGLang's detector, and streams cut anywhere.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "text/tool_call_parser.h"

namespace narwhal::text {
namespace {

const std::string kCallsBegin(ToolCallParser::kCallsBegin), kCallsEnd(ToolCallParser::kCallsEnd);

std::string call(const std::string& name, const std::string& arguments) {
  return std::string(ToolCallParser::kCallBegin) + "function" + std::string(ToolCallParser::kSep) + name +
         "\n```json\n" + arguments + "\n```" + std::string(ToolCallParser::kCallEnd);
}

std::string describe(const ToolCallText& t) {
  std::string s = "text=[" + t.normal_text + "]";
  for (const ToolCall& c : t.calls) s += " call#" + std::to_string(c.index) + " " + c.name + " " + c.arguments;
  return s;
}

ToolCallText stream(const std::string& text, const std::vector<size_t>& cuts,
                    std::vector<std::string> tools = {}) {
  ToolCallParser parser(std::move(tools));
  ToolCallText all;
  const auto add = [&](const ToolCallText& piece) {
    all.normal_text += piece.normal_text;
    all.calls.insert(all.calls.end(), piece.calls.begin(), piece.calls.end());
  };
  size_t from = 0;
  for (size_t cut : cuts) {
    add(parser.feed(std::string_view(text).substr(from, cut - from)));
    from = cut;
  }
  add(parser.feed(std::string_view(text).substr(from)));
  add(parser.finish());
  return all;
}

// Whole, byte by byte, and every single cut: the stream always adds up to `want`.
void expect_stream(const std::string& text, const std::string& want) {
  std::vector<size_t> bytes;
  for (size_t i = 1; i < text.size(); ++i) bytes.push_back(i);
  EXPECT_EQ(describe(stream(text, {})), want);
  EXPECT_EQ(describe(stream(text, bytes)), want);
  for (size_t i = 1; i < text.size(); ++i) ASSERT_EQ(describe(stream(text, {i})), want) << "cut at " << i;
}

const std::string kTwoCalls = "Let me check. " + kCallsBegin + call("get_weather", "{\"city\": \"Paris\"}") + "\n" +
                              call("get_time", " {} ") + kCallsEnd;

TEST(ToolCallParser, ParsesCallsAndTheTextBefore) {
  const ToolCallText got = ToolCallParser().parse(kTwoCalls);
  EXPECT_EQ(describe(got), "text=[Let me check.] call#0 get_weather {\"city\": \"Paris\"} call#1 get_time {}");
}

TEST(ToolCallParser, StreamsTextAndWholeCalls) {
  expect_stream(kTwoCalls, "text=[Let me check. ] call#0 get_weather {\"city\": \"Paris\"} call#1 get_time {}");
  expect_stream(kTwoCalls + " done",
                "text=[Let me check.  done] call#0 get_weather {\"city\": \"Paris\"} call#1 get_time {}");
}

TEST(ToolCallParser, TextWithoutCallsIsUntouched) {
  const std::string text = "No tools <｜tool here, just ```json\n{}\n``` text.";
  EXPECT_EQ(describe(ToolCallParser().parse(text)), "text=[" + text + "]");
  expect_stream(text, "text=[" + text + "]");
}

TEST(ToolCallParser, MalformedCallsBecomeNormalText) {
  const std::string bad_json = "Hi" + kCallsBegin + call("f", "{\"a\": 1,,}") + call("g", "{}") + kCallsEnd;
  EXPECT_EQ(describe(ToolCallParser().parse(bad_json)), "text=[" + bad_json + "]");
  // Streaming: the broken call as its raw text, the good one still a call.
  expect_stream(bad_json, "text=[Hi" + call("f", "{\"a\": 1,,}") + "] call#0 g {}");

  const std::string no_sep = kCallsBegin + std::string(ToolCallParser::kCallBegin) + "function f\n```json\n{}\n```" +
                             std::string(ToolCallParser::kCallEnd) + kCallsEnd;
  EXPECT_EQ(describe(ToolCallParser().parse(no_sep)), "text=[" + no_sep + "]");
  const std::string no_fence = kCallsBegin + std::string(ToolCallParser::kCallBegin) + "function" +
                               std::string(ToolCallParser::kSep) + "f {}" + std::string(ToolCallParser::kCallEnd);
  EXPECT_EQ(describe(ToolCallParser().parse(no_fence)), "text=[" + no_fence + "]");
}

TEST(ToolCallParser, UnfinishedCallsAreText) {
  const std::string unfinished = "A" + kCallsBegin + call("f", "{}") + "\n" +
                                 std::string(ToolCallParser::kCallBegin) + "function" +
                                 std::string(ToolCallParser::kSep) + "g\n```json\n{\"x\":";
  EXPECT_EQ(describe(ToolCallParser().parse(unfinished)), "text=[A] call#0 f {}");
  // Streaming: the unfinished call comes out raw at finish(), with the newline before it.
  const std::string raw_tail = unfinished.substr(unfinished.find("\n" + std::string(ToolCallParser::kCallBegin)));
  expect_stream(unfinished, "text=[A" + raw_tail + "] call#0 f {}");
}

TEST(ToolCallParser, UnknownToolsAreDropped) {
  EXPECT_EQ(describe(ToolCallParser({"get_time"}).parse(kTwoCalls)), "text=[Let me check.] call#0 get_time {}");
  EXPECT_EQ(describe(stream(kTwoCalls, {5, 40}, {"get_time"})), "text=[Let me check. ] call#0 get_time {}");
}

TEST(ToolCallParser, PartialTagsAreHeldBack) {
  ToolCallParser parser;
  EXPECT_EQ(describe(parser.feed("Hi <｜tool▁ca")), "text=[Hi ]");
  EXPECT_EQ(describe(parser.feed("lls▁begin｜>")), "text=[]");
  EXPECT_EQ(describe(parser.feed(call("f", "[1, 2]").substr(0, 20))), "text=[]");
  EXPECT_EQ(describe(parser.feed(call("f", "[1, 2]").substr(20))), "text=[] call#0 f [1, 2]");
  ToolCallParser lookalike;
  EXPECT_EQ(describe(lookalike.feed("a <｜to")), "text=[a ]");
  EXPECT_EQ(describe(lookalike.feed("o>")), "text=[<｜too>]");
}

TEST(ToolCallParser, NamesFollowSglang) {
  EXPECT_EQ(ToolCallParser::for_name("deepseekv3").parse(kTwoCalls).calls.size(), 2u);
  EXPECT_THROW(ToolCallParser::for_name("llama3"), Error);
}

}  // namespace
}  // namespace narwhal::text
