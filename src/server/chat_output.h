// ChatOutput: one chat choice's generated text split into reasoning_content, content and tool_calls
// (text/reasoning_parser and text/tool_call_parser), as OpenAI deltas while streaming and as the final message.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "text/reasoning_parser.h"
#include "text/tool_call_parser.h"

namespace narwhal::server {

struct ChatOutputOptions {
  std::string reasoning_parser;         // "" or a --reasoning-parser name
  std::string tool_call_parser;         // "" (or tool_choice none) or a --tool-call-parser name
  std::vector<std::string> tool_names;  // calls to other names are dropped
  std::string forced_prefix;            // text the prompt already holds of the answer (a forced tool call's opening)
};

class ChatOutput {
 public:
  explicit ChatOutput(const ChatOutputOptions& options);

  // Takes the choice's next text; returns the OpenAI delta fields it completes ({} when none yet). With `final`
  // everything held back comes out.
  json feed(const std::string& text, bool final);
  // The whole assistant message (non-streamed responses), parsed from the whole text.
  json message() const;
  bool has_tool_calls() const { return tool_calls_seen_; }

 private:
  void add_content(json& delta, const std::string& content);

  std::optional<text::ReasoningParser> reasoning_;
  std::optional<text::ToolCallParser> tools_;
  std::string text_;  // forced prefix + everything fed
  std::string prefix_pending_;  // the forced prefix until the first feed
  bool tool_calls_seen_ = false;
};

}  // namespace narwhal::server
