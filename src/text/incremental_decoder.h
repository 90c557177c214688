// Streaming detokenization: feed generated ids one at a time, get text only at complete UTF-8 characters.
#pragma once

#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace narwhal::text {

// The concatenation of everything feed() and finish() return equals tokenizer.decode(all ids,
// skip_special_tokens). Bytes of a character split across tokens are held back until it completes; bytes that
// can never form a character come out as U+FFFD as soon as that is certain, as in the full decode.
class IncrementalDecoder {
 public:
  IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // Text completed by this id (often empty while a character is still incomplete).
  std::string feed(int id);
  // The rest at the end of the stream: a trailing incomplete character becomes U+FFFD.
  std::string finish();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;  // bytes not yet emitted: at most an incomplete character
};

}  // namespace narwhal::text
