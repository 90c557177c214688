// OutputText: a sequence's decoded output, where stop strings are found and from which text is streamed.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace narwhal {

// What the engine needs of a tokenizer (src/text implements it; tests use a toy one): the bytes each
// token adds to the decoded output. DeepSeek's byte-level BPE decodes by concatenating them.
class TokenText {
 public:
  virtual ~TokenText() = default;
  // Empty for tokens the output skips (special tokens, as SGLang's skip_special_tokens default).
  virtual std::string_view bytes(int32_t token) const = 0;
};

class OutputText {
 public:
  OutputText() = default;
  explicit OutputText(const std::vector<std::string>& stop_strings);

  // Appends one token's bytes. If a stop string now occurs, cuts the text before it (or after it with
  // `keep_stop`) and returns it; every later byte is dropped.
  std::optional<std::string> append(std::string_view bytes, bool keep_stop);
  // The text not yet taken that can be handed out: whole UTF-8 characters that cannot be the start of
  // a stop string. With `final`, everything left.
  std::string take(bool final);
  const std::string& text() const { return text_; }

 private:
  std::vector<std::string> stops_;
  size_t hold_back_ = 0;  // longest stop string minus one: a stop string may still be completing there
  std::string text_;
  size_t taken_ = 0;
};

}  // namespace narwhal
