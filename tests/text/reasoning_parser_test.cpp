// The deepseek-r1 reasoning parser: whole-text splits with SGLang's trimming, and streams cut anywhere.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "text/reasoning_parser.h"

namespace narwhal::text {
namespace {

// Feeds `text` cut at `cuts` (ascending byte offsets) and returns the concatenated output.
ReasoningText stream(const std::string& text, const std::vector<size_t>& cuts, bool force = true) {
  ReasoningParser parser(force);
  ReasoningText all;
  size_t from = 0;
  for (size_t cut : cuts) {
    const ReasoningText piece = parser.feed(std::string_view(text).substr(from, cut - from));
    all.reasoning += piece.reasoning;
    all.content += piece.content;
    from = cut;
  }
  const ReasoningText last = parser.feed(std::string_view(text).substr(from));
  const ReasoningText tail = parser.finish();
  return {all.reasoning + last.reasoning + tail.reasoning, all.content + last.content + tail.content};
}

// Every way of cutting `text` once or into single bytes gives the same output as feeding it whole.
void expect_stream(const std::string& text, const std::string& reasoning, const std::string& content,
                   bool force = true) {
  std::vector<size_t> bytes;
  for (size_t i = 1; i < text.size(); ++i) bytes.push_back(i);
  for (const auto& cuts : {std::vector<size_t>{}, bytes}) {
    const ReasoningText got = stream(text, cuts, force);
    EXPECT_EQ(got.reasoning, reasoning) << text << " in " << cuts.size() + 1 << " pieces";
    EXPECT_EQ(got.content, content) << text << " in " << cuts.size() + 1 << " pieces";
  }
  for (size_t i = 1; i < text.size(); ++i) {
    const ReasoningText got = stream(text, {i}, force);
    ASSERT_EQ(got.reasoning + "|" + got.content, reasoning + "|" + content) << text << " cut at " << i;
  }
}

TEST(ReasoningParser, ForcedReasoningEndsAtTheEndTag) {
  const std::string text = "Let me think.\n</think>\n\nThe answer is 4.";
  expect_stream(text, "Let me think.\n", "\n\nThe answer is 4.");
  const ReasoningText whole = ReasoningParser().parse(text);
  EXPECT_EQ(whole.reasoning, "Let me think.\n");
  EXPECT_EQ(whole.content, "The answer is 4.");
}

TEST(ReasoningParser, TheModelsOwnStartTagIsDropped) {
  expect_stream("<think>\nstep 1 of 2 < 3</think>4", "\nstep 1 of 2 < 3", "4");
  EXPECT_EQ(ReasoningParser().parse("<think>\nabc</think>answer").reasoning, "abc");
}

TEST(ReasoningParser, WithoutEndTagEverythingIsReasoning) {
  expect_stream("still thinking about </thi", "still thinking about </thi", "");
  const ReasoningText whole = ReasoningParser().parse("  still thinking \n");
  EXPECT_EQ(whole.reasoning, "still thinking");
  EXPECT_EQ(whole.content, "");
}

TEST(ReasoningParser, UnforcedParserNeedsTheStartTag) {
  expect_stream("plain answer", "", "plain answer", /*force=*/false);
  expect_stream("pre<think>r</think>post", "r", "prepost", /*force=*/false);
}

TEST(ReasoningParser, TagsAfterTheReasoningAreContent) {
  expect_stream("r</think>a<think>b</think>c", "r", "a<think>b</think>c");
}

TEST(ReasoningParser, PartialTagsAreHeldBackUntilSettled) {
  ReasoningParser parser;
  ReasoningText out = parser.feed("abc</thi");
  EXPECT_EQ(out.reasoning, "abc");
  out = parser.feed("nk>x");
  EXPECT_EQ(out.reasoning, "");
  EXPECT_EQ(out.content, "x");

  ReasoningParser other;
  EXPECT_EQ(other.feed("a</th").reasoning, "a");
  EXPECT_EQ(other.feed("ere").reasoning, "</there");
  EXPECT_EQ(other.feed("</").reasoning, "");
  EXPECT_EQ(other.finish().reasoning, "</");
}

TEST(ReasoningParser, NamesFollowSglang) {
  EXPECT_EQ(ReasoningParser::for_name("deepseek-r1").parse("a</think>b").content, "b");
  EXPECT_THROW(ReasoningParser::for_name("qwen9"), Error);
}

}  // namespace
}  // namespace narwhal::text
