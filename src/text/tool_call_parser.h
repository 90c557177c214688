// Tool-call parser "deepseekv3" (SGLang's --tool-call-parser): finds DeepSeek-V3's tool calls in generated text.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace narwhal::text {

struct ToolCall {
  int index = 0;          // position among this generation's calls: OpenAI's tool_calls[].index
  std::string name;       // function name
  std::string arguments;  // the JSON the model wrote, checked to be valid JSON, surrounding whitespace removed
};

struct ToolCallText {
  std::string normal_text;  // what the client sees as content
  std::vector<ToolCall> calls;
};

// DeepSeek-V3 writes tool calls as (its chat template renders past calls the same way)
//   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>
//   ...more <｜tool▁call▁begin｜>...<｜tool▁call▁end｜>, each possibly after a newline...<｜tool▁calls▁end｜>
//
// parse() (non-streaming) follows SGLang's DeepSeekV3Detector: without "<｜tool▁calls▁begin｜>" the text is
// all normal text; otherwise normal text is what precedes it (trimmed) and the calls are parsed; if any call
// is malformed (bad JSON, missing parts) nothing is a call and the whole text is returned as normal text.
// Calls to names not in `tool_names` are dropped (SGLang's default), unless `tool_names` is empty.
// Never throws.
//
// Streaming: one parser per request; feed() each decoded delta, finish() at the end. Normal text comes out
// as soon as it cannot be the start of a tag; each call comes out whole once its <｜tool▁call▁end｜> arrives
// (OpenAI clients accept the arguments in one delta). A malformed call comes out as normal text, raw. As in
// SGLang's streaming path, a bare <｜tool▁call▁begin｜> also opens the calls, and text after
// <｜tool▁calls▁end｜> is normal text.
//
// Input is text decoded with skip_special_tokens: DeepSeek-V3's tool-call tokens are not special, so they stay.
class ToolCallParser {
 public:
  explicit ToolCallParser(std::vector<std::string> tool_names = {}) : tool_names_(std::move(tool_names)) {}

  // The parser for a --tool-call-parser name ("deepseekv3"); throws Error for an unknown name.
  static ToolCallParser for_name(std::string_view name, std::vector<std::string> tool_names = {});

  ToolCallText feed(std::string_view delta);
  ToolCallText finish();

  ToolCallText parse(std::string_view text) const;

  static constexpr std::string_view kCallsBegin = "<｜tool▁calls▁begin｜>";
  static constexpr std::string_view kCallsEnd = "<｜tool▁calls▁end｜>";
  static constexpr std::string_view kCallBegin = "<｜tool▁call▁begin｜>";
  static constexpr std::string_view kCallEnd = "<｜tool▁call▁end｜>";
  static constexpr std::string_view kSep = "<｜tool▁sep｜>";

 private:
  enum class State { kText, kCalls, kAfterCalls };

  // Parses "<｜tool▁call▁begin｜>TYPE<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>"; false if malformed.
  static bool parse_call(std::string_view call, ToolCall* out);
  bool known(const std::string& name) const;

  std::vector<std::string> tool_names_;
  State state_ = State::kText;
  std::string pending_;
  int next_index_ = 0;
};

}  // namespace narwhal::text
