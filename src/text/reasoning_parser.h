// Reasoning parser "deepseek-r1" (SGLang's --reasoning-parser): splits generated text into reasoning_content
// and content at <think> ... </think>.
#pragma once

#include <string>
#include <string_view>

namespace narwhal::text {

struct ReasoningText {
  std::string reasoning;  // OpenAI's reasoning_content
  std::string content;
};

// DeepSeek-R1's chat template ends the prompt with "<think>\n", so the output usually starts inside the
// reasoning without an opening tag (force_reasoning, as SGLang's DeepSeekR1Detector); a "<think>" the model
// writes itself is dropped. Everything after "</think>" is content.
//
// Streaming: one parser per request; feed() each decoded delta and send on what it returns; finish() at the
// end of the generation. Bytes that may be the start of a tag ("</thi") are held back until the next delta
// settles it. Non-streaming: parse() on the whole text, with SGLang's trimming (leading whitespace of the
// reasoning and both ends of the content removed; the reasoning also loses trailing whitespace when no
// "</think>" came).
class ReasoningParser {
 public:
  explicit ReasoningParser(bool force_reasoning = true)
      : force_reasoning_(force_reasoning), in_reasoning_(force_reasoning) {}

  // The parser for a --reasoning-parser name ("deepseek-r1"); throws Error for an unknown name.
  static ReasoningParser for_name(std::string_view name);

  ReasoningText feed(std::string_view delta);
  ReasoningText finish();

  // Splits a whole generation (uses a fresh parser with this one's settings; this one is not changed).
  ReasoningText parse(std::string_view text) const;

  static constexpr std::string_view kStart = "<think>";
  static constexpr std::string_view kEnd = "</think>";

 private:
  bool force_reasoning_;
  bool in_reasoning_;
  bool start_seen_ = false;  // a "<think>" was consumed: a later one is ordinary text
  bool ended_ = false;       // "</think>" was seen: the rest is content
  std::string pending_;      // held-back bytes: a possible partial tag
};

}  // namespace narwhal::text
