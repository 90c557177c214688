// TokenizerTokenText: the engine's TokenText (bytes per token, for stop strings and streamed text) from a text::Tokenizer.
#pragma once

#include "runtime/output_text.h"
#include "text/tokenizer.h"

namespace narwhal {

// Special tokens add nothing to the output, as SGLang's skip_special_tokens default.
class TokenizerTokenText : public TokenText {
 public:
  explicit TokenizerTokenText(const text::Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::string_view bytes(int32_t token) const override {
    return tokenizer_.is_special(token) ? std::string_view() : tokenizer_.token_bytes(token);
  }

 private:
  const text::Tokenizer& tokenizer_;
};

}  // namespace narwhal
