// UTF-8 helpers for the tokenizer and detokenizer: code point decoding, validation, lossy repair.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace narwhal::text {

// Decodes the code point starting at text[pos] of valid UTF-8 and advances pos past it.
inline char32_t next_code_point(std::string_view text, size_t& pos) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  if (lead < 0x80) return text[pos++];
  if (lead < 0xE0) {
    char32_t cp = ((lead & 0x1F) << 6) | (byte(pos + 1) & 0x3F);
    pos += 2;
    return cp;
  }
  if (lead < 0xF0) {
    char32_t cp = ((lead & 0x0F) << 12) | ((byte(pos + 1) & 0x3F) << 6) | (byte(pos + 2) & 0x3F);
    pos += 3;
    return cp;
  }
  char32_t cp = ((lead & 0x07) << 18) | ((byte(pos + 1) & 0x3F) << 12) | ((byte(pos + 2) & 0x3F) << 6) |
                (byte(pos + 3) & 0x3F);
  pos += 4;
  return cp;
}

// The code point that ends at text[end) of valid UTF-8 (end > 0), and its start in *start.
char32_t previous_code_point(std::string_view text, size_t end, size_t* start);

void append_utf8(std::string& out, char32_t cp);

// Byte offset of the first invalid UTF-8 sequence, or npos when the whole text is valid.
size_t find_invalid_utf8(std::string_view bytes);

// Like Rust's String::from_utf8_lossy (what Hugging Face decoders use): each maximal invalid subpart
// becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// Length of the longest prefix whose lossy decoding can no longer change when more bytes are appended:
// everything except a trailing sequence that is incomplete but still valid so far.
size_t utf8_stable_prefix(std::string_view bytes);

}  // namespace narwhal::text
