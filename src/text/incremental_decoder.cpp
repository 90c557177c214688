// IncrementalDecoder: emits the stable UTF-8 prefix of the pending bytes after each token.
#include "text/incremental_decoder.h"

#include "text/utf8.h"

namespace narwhal::text {

std::string IncrementalDecoder::feed(int id) {
  if (skip_special_tokens_ && tokenizer_.is_special(id)) return {};
  pending_.append(tokenizer_.token_bytes(id));
  const size_t stable = utf8_stable_prefix(pending_);
  std::string text = utf8_lossy(std::string_view(pending_).substr(0, stable));
  pending_.erase(0, stable);
  return text;
}

std::string IncrementalDecoder::finish() {
  std::string text = utf8_lossy(pending_);
  pending_.clear();
  return text;
}

}  // namespace narwhal::text
