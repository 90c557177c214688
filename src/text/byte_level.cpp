// Inverse of GPT-2's bytes_to_unicode table.
#include "text/byte_level.h"

#include <array>

#include "text/utf8.h"

namespace narwhal::text {
namespace {

// Code point -> byte for the 256 characters of the alphabet; -1 elsewhere. Printable Latin-1 bytes stand
// for themselves; the other 68 bytes take the code points from U+0100 on, in byte order.
const std::array<int, 324>& char_to_byte() {
  static const std::array<int, 324> table = [] {
    std::array<int, 324> t;
    t.fill(-1);
    int next_shifted = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[printable ? b : next_shifted++] = b;
    }
    return t;
  }();
  return table;
}

}  // namespace

std::string byte_level_to_bytes(std::string_view token) {
  std::string bytes;
  bytes.reserve(token.size());
  for (size_t pos = 0; pos < token.size();) {
    const char32_t cp = next_code_point(token, pos);
    if (cp >= char_to_byte().size() || char_to_byte()[cp] < 0) return std::string(token);
    bytes.push_back(static_cast<char>(char_to_byte()[cp]));
  }
  return bytes;
}

}  // namespace narwhal::text
