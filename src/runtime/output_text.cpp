// OutputText: stop-string search over the newest bytes and UTF-8-safe, stop-safe streaming.
#include "runtime/output_text.h"

#include <algorithm>

namespace narwhal {

namespace {

// The largest cut <= `cut` that does not split a UTF-8 character of `s`.
size_t whole_characters(std::string_view s, size_t cut) {
  if (cut == 0) return 0;
  size_t start = cut - 1;
  while (start > 0 && cut - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  const unsigned char lead = static_cast<unsigned char>(s[start]);
  const size_t length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  return start + length > cut ? start : cut;
}

}  // namespace

OutputText::OutputText(const std::vector<std::string>& stop_strings) : stops_(stop_strings) {
  for (const std::string& s : stops_) hold_back_ = std::max(hold_back_, s.size() - 1);
}

std::optional<std::string> OutputText::append(std::string_view bytes, bool keep_stop) {
  const size_t old_size = text_.size();
  text_.append(bytes);
  // Only a match that ends in the new bytes is new; the earliest one in the text wins.
  const size_t from = old_size > hold_back_ ? old_size - hold_back_ : 0;
  size_t best = std::string::npos;
  const std::string* matched = nullptr;
  for (const std::string& s : stops_) {
    const size_t at = text_.find(s, from);
    if (at != std::string::npos && at < best) {
      best = at;
      matched = &s;
    }
  }
  if (!matched) return std::nullopt;
  text_.resize(keep_stop ? best + matched->size() : best);
  return *matched;
}

std::string OutputText::take(bool final) {
  size_t end = text_.size();
  if (!final) end = whole_characters(text_, end > taken_ + hold_back_ ? end - hold_back_ : taken_);
  if (end <= taken_) return {};
  std::string out = text_.substr(taken_, end - taken_);
  taken_ = end;
  return out;
}

}  // namespace narwhal
