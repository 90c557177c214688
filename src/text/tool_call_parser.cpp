// ToolCallParser: DeepSeek-V3's tool-call markup, whole-text and streaming, never throwing on model output.
#include "text/tool_call_parser.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/stream_tags.h"

namespace narwhal::text {
namespace {

constexpr std::string_view kWhitespace = " \t\n\r\f\v";
constexpr std::string_view kJsonOpen = "\n```json\n";
constexpr std::string_view kJsonClose = "\n```";

std::string_view trim(std::string_view s) {
  const size_t first = s.find_first_not_of(kWhitespace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kWhitespace) + 1 - first);
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

}  // namespace

ToolCallParser ToolCallParser::for_name(std::string_view name, std::vector<std::string> tool_names) {
  NW_CHECK(name == "deepseekv3", "unknown tool-call parser \"", name, "\" (supported: deepseekv3)");
  return ToolCallParser(std::move(tool_names));
}

bool ToolCallParser::known(const std::string& name) const {
  return tool_names_.empty() || std::find(tool_names_.begin(), tool_names_.end(), name) != tool_names_.end();
}

bool ToolCallParser::parse_call(std::string_view call, ToolCall* out) {
  if (!starts_with(call, kCallBegin) || call.size() < kCallBegin.size() + kCallEnd.size()) return false;
  std::string_view body = call.substr(kCallBegin.size(), call.size() - kCallBegin.size() - kCallEnd.size());
  const size_t sep = body.find(kSep);
  if (sep == std::string_view::npos) return false;
  body.remove_prefix(sep + kSep.size());
  const size_t open = body.find(kJsonOpen);
  const size_t close = body.rfind(kJsonClose);
  if (open == std::string_view::npos || close == std::string_view::npos || close < open + kJsonOpen.size() ||
      !trim(body.substr(close + kJsonClose.size())).empty()) {
    return false;
  }
  const std::string_view name = trim(body.substr(0, open));
  const std::string_view arguments = trim(body.substr(open + kJsonOpen.size(), close - open - kJsonOpen.size()));
  if (name.empty() || !nlohmann::json::accept(arguments)) return false;
  out->name = std::string(name);
  out->arguments = std::string(arguments);
  return true;
}

ToolCallText ToolCallParser::parse(std::string_view text) const {
  const size_t begin = text.find(kCallsBegin);
  if (begin == std::string_view::npos) return {std::string(text), {}};
  ToolCallText out{std::string(trim(text.substr(0, begin))), {}};
  for (size_t pos = text.find(kCallBegin, begin); pos != std::string_view::npos; pos = text.find(kCallBegin, pos)) {
    const size_t end = text.find(kCallEnd, pos);
    if (end == std::string_view::npos) break;  // an unfinished last call is not a call
    ToolCall call;
    if (!parse_call(text.substr(pos, end + kCallEnd.size() - pos), &call)) return {std::string(text), {}};
    if (known(call.name)) {
      call.index = static_cast<int>(out.calls.size());
      out.calls.push_back(std::move(call));
    }
    pos = end + kCallEnd.size();
  }
  return out;
}

ToolCallText ToolCallParser::feed(std::string_view delta) {
  ToolCallText out;
  pending_.append(delta);
  std::string_view rest = pending_;
  while (!rest.empty()) {
    if (state_ == State::kAfterCalls) {
      out.normal_text.append(rest);
      rest = {};
      break;
    }
    if (state_ == State::kText) {
      // SGLang also takes a bare <｜tool▁call▁begin｜> as the start of the calls.
      const size_t begin = std::min(rest.find(kCallsBegin), rest.find(kCallBegin));
      if (begin == std::string_view::npos) {
        const size_t held = partial_tag_suffix(rest, {kCallsBegin, kCallBegin});
        out.normal_text.append(rest.substr(0, rest.size() - held));
        rest = rest.substr(rest.size() - held);
        break;
      }
      out.normal_text.append(rest.substr(0, begin));
      rest.remove_prefix(begin);
      if (starts_with(rest, kCallsBegin)) rest.remove_prefix(kCallsBegin.size());
      state_ = State::kCalls;
      continue;
    }
    // Between calls: whitespace, the next call, or the end of the calls.
    const std::string_view trimmed = rest.substr(std::min(rest.size(), rest.find_first_not_of(kWhitespace)));
    if (trimmed.empty()) break;  // wait: whitespace may precede another call
    if (starts_with(trimmed, kCallsEnd)) {
      rest = trimmed.substr(kCallsEnd.size());
      state_ = State::kAfterCalls;
      continue;
    }
    if (starts_with(trimmed, kCallBegin)) {
      const size_t end = trimmed.find(kCallEnd);
      if (end == std::string_view::npos) break;  // the call is still arriving
      const std::string_view raw = trimmed.substr(0, end + kCallEnd.size());
      ToolCall call;
      if (!parse_call(raw, &call)) {
        out.normal_text.append(raw);
      } else if (known(call.name)) {
        call.index = next_index_++;
        out.calls.push_back(std::move(call));
      }
      rest = trimmed.substr(raw.size());
      continue;
    }
    if (kCallsEnd.substr(0, trimmed.size()) == trimmed || kCallBegin.substr(0, trimmed.size()) == trimmed) break;
    // Anything else inside the calls block is not markup: pass it on as text up to the next tag.
    const size_t next = std::min(trimmed.find(kCallBegin), trimmed.find(kCallsEnd));
    const size_t upto =
        next != std::string_view::npos ? next : trimmed.size() - partial_tag_suffix(trimmed, {kCallBegin, kCallsEnd});
    out.normal_text.append(rest.substr(0, rest.size() - trimmed.size() + upto));
    rest = trimmed.substr(upto);
    if (upto == 0) break;
  }
  pending_ = std::string(rest);
  return out;
}

ToolCallText ToolCallParser::finish() {
  // Whatever is left (a partial tag, an unfinished call) is text the model wrote; whitespace between calls is not.
  ToolCallText out{state_ == State::kCalls && trim(pending_).empty() ? std::string() : std::move(pending_), {}};
  pending_.clear();
  return out;
}

}  // namespace narwhal::text
