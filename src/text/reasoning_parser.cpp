// ReasoningParser: a small state machine over <think> / </think> that holds back partial tags.
#include "text/reasoning_parser.h"

#include "core/error.h"
#include "text/stream_tags.h"

namespace narwhal::text {
namespace {

constexpr std::string_view kWhitespace = " \t\n\r\f\v";

std::string_view trim_left(std::string_view s) {
  const size_t first = s.find_first_not_of(kWhitespace);
  return first == std::string_view::npos ? std::string_view() : s.substr(first);
}

std::string_view trim_right(std::string_view s) {
  const size_t last = s.find_last_not_of(kWhitespace);
  return last == std::string_view::npos ? std::string_view() : s.substr(0, last + 1);
}

}  // namespace

ReasoningParser ReasoningParser::for_name(std::string_view name) {
  NW_CHECK(name == "deepseek-r1", "unknown reasoning parser \"", name, "\" (supported: deepseek-r1)");
  return ReasoningParser(/*force_reasoning=*/true);
}

ReasoningText ReasoningParser::feed(std::string_view delta) {
  ReasoningText out;
  pending_.append(delta);
  std::string_view rest = pending_;
  while (!rest.empty()) {
    if (ended_) {  // after </think>: everything is content
      out.content.append(rest);
      rest = {};
      break;
    }
    if (in_reasoning_) {
      const size_t start = start_seen_ ? std::string_view::npos : rest.find(kStart);
      const size_t end = rest.find(kEnd);
      if (start != std::string_view::npos && (end == std::string_view::npos || start < end)) {
        out.reasoning.append(rest.substr(0, start));  // the model's own <think> is dropped
        rest.remove_prefix(start + kStart.size());
        start_seen_ = true;
        continue;
      }
      if (end != std::string_view::npos) {
        out.reasoning.append(rest.substr(0, end));
        rest.remove_prefix(end + kEnd.size());
        in_reasoning_ = false;
        ended_ = true;
        continue;
      }
      const size_t held = start_seen_ ? partial_tag_suffix(rest, {kEnd}) : partial_tag_suffix(rest, {kStart, kEnd});
      out.reasoning.append(rest.substr(0, rest.size() - held));
      rest = rest.substr(rest.size() - held);
      break;
    }
    // Content before any reasoning: only an unforced parser gets here; a <think> opens the reasoning.
    const size_t start = rest.find(kStart);
    if (start != std::string_view::npos) {
      out.content.append(rest.substr(0, start));
      rest.remove_prefix(start + kStart.size());
      start_seen_ = in_reasoning_ = true;
      continue;
    }
    const size_t held = partial_tag_suffix(rest, {kStart});
    out.content.append(rest.substr(0, rest.size() - held));
    rest = rest.substr(rest.size() - held);
    break;
  }
  pending_ = std::string(rest);
  return out;
}

ReasoningText ReasoningParser::finish() {
  ReasoningText out;
  (in_reasoning_ ? out.reasoning : out.content) = std::move(pending_);
  pending_.clear();
  return out;
}

ReasoningText ReasoningParser::parse(std::string_view text) const {
  ReasoningParser parser(force_reasoning_);
  ReasoningText whole = parser.feed(text);
  ReasoningText tail = parser.finish();
  whole.reasoning += tail.reasoning;
  whole.content += tail.content;
  std::string_view reasoning = trim_left(whole.reasoning);
  if (!parser.ended_) reasoning = trim_right(reasoning);
  return {std::string(reasoning), std::string(trim_right(trim_left(whole.content)))};
}

}  // namespace narwhal::text
