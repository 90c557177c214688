// ChatOutput: the reasoning parser first, then the tool-call parser over the content it leaves.
#include "server/chat_output.h"

#include "server/server_context.h"

namespace narwhal::server {

namespace {

json tool_call_json(const text::ToolCall& call) {
  return {{"index", call.index}, {"id", random_id("call_")}, {"type", "function"},
          {"function", {{"name", call.name}, {"arguments", call.arguments}}}};
}

}  // namespace

ChatOutput::ChatOutput(const ChatOutputOptions& options)
    : text_(options.forced_prefix), prefix_pending_(options.forced_prefix) {
  if (!options.reasoning_parser.empty()) reasoning_ = text::ReasoningParser::for_name(options.reasoning_parser);
  if (!options.tool_call_parser.empty())
    tools_ = text::ToolCallParser::for_name(options.tool_call_parser, options.tool_names);
}

void ChatOutput::add_content(json& delta, const std::string& content) {
  text::ToolCallText parsed;
  if (tools_) parsed = tools_->feed(content);
  else parsed.normal_text = content;
  if (!parsed.normal_text.empty()) delta["content"] = delta.value("content", std::string()) + parsed.normal_text;
  for (const text::ToolCall& call : parsed.calls) {
    if (!delta.contains("tool_calls")) delta["tool_calls"] = json::array();
    delta["tool_calls"].push_back(tool_call_json(call));
    tool_calls_seen_ = true;
  }
}

json ChatOutput::feed(const std::string& text, bool final) {
  const std::string piece = prefix_pending_ + text;  // the forced prefix goes through the parsers first
  prefix_pending_.clear();
  text_ += text;
  json delta = json::object();
  text::ReasoningText split;
  if (reasoning_) {
    split = reasoning_->feed(piece);
    if (final) {
      text::ReasoningText rest = reasoning_->finish();
      split.reasoning += rest.reasoning;
      split.content += rest.content;
    }
  } else {
    split.content = piece;
  }
  if (!split.reasoning.empty()) delta["reasoning_content"] = split.reasoning;
  add_content(delta, split.content);
  if (final && tools_) {
    const text::ToolCallText rest = tools_->finish();
    if (!rest.normal_text.empty()) delta["content"] = delta.value("content", std::string()) + rest.normal_text;
    for (const text::ToolCall& call : rest.calls) {
      if (!delta.contains("tool_calls")) delta["tool_calls"] = json::array();
      delta["tool_calls"].push_back(tool_call_json(call));
      tool_calls_seen_ = true;
    }
  }
  return delta;
}

json ChatOutput::message() const {
  text::ReasoningText split;
  if (reasoning_) split = reasoning_->parse(text_);
  else split.content = text_;
  text::ToolCallText parsed;
  if (tools_) parsed = tools_->parse(split.content);
  else parsed.normal_text = split.content;
  json calls = json::array();
  for (const text::ToolCall& call : parsed.calls) calls.push_back(tool_call_json(call));
  json m = {{"role", "assistant"},
            {"content", parsed.normal_text.empty() && !calls.empty() ? json(nullptr) : json(parsed.normal_text)},
            {"refusal", nullptr}};
  if (reasoning_) m["reasoning_content"] = split.reasoning.empty() ? json(nullptr) : json(split.reasoning);
  if (!calls.empty()) m["tool_calls"] = std::move(calls);
  return m;
}

}  // namespace narwhal::server
