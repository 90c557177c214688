// UTF-8 validation and lossy repair with the "maximal subpart" rule of Unicode (and Rust's from_utf8_lossy).
#include "text/utf8.h"

namespace narwhal::text {
namespace {

// Length of the valid sequence at bytes[pos], 0 when invalid; *complete_prefix gets how many bytes form a
// valid but possibly unfinished prefix (the maximal subpart replaced by one U+FFFD when invalid).
size_t valid_sequence_length(std::string_view bytes, size_t pos, size_t* prefix) {
  const auto at = [&](size_t i) { return static_cast<unsigned char>(bytes[i]); };
  const unsigned char lead = at(pos);
  *prefix = 1;
  if (lead < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) lo = 0xA0;  // overlong
    if (lead == 0xED) hi = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) lo = 0x90;  // overlong
    if (lead == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  for (size_t i = 1; i < need; ++i) {
    if (pos + i >= bytes.size()) return 0;
    const unsigned char b = at(pos + i);
    const bool ok = i == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return 0;
    *prefix = i + 1;
  }
  return need;
}

}  // namespace

char32_t previous_code_point(std::string_view text, size_t end, size_t* start) {
  size_t pos = end - 1;
  while (pos > 0 && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) --pos;
  *start = pos;
  return next_code_point(text, pos);
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t find_invalid_utf8(std::string_view bytes) {
  size_t prefix;
  for (size_t pos = 0; pos < bytes.size();) {
    const size_t n = valid_sequence_length(bytes, pos, &prefix);
    if (n == 0) return pos;
    pos += n;
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t prefix;
  for (size_t pos = 0; pos < bytes.size();) {
    const size_t n = valid_sequence_length(bytes, pos, &prefix);
    if (n > 0) {
      out.append(bytes.substr(pos, n));
      pos += n;
    } else {
      out.append("\xEF\xBF\xBD");
      pos += prefix;
    }
  }
  return out;
}

size_t utf8_stable_prefix(std::string_view bytes) {
  // A pending sequence starts at most 3 bytes before the end.
  const size_t first = bytes.size() > 3 ? bytes.size() - 3 : 0;
  size_t prefix;
  for (size_t pos = first; pos < bytes.size(); ++pos) {
    const unsigned char b = static_cast<unsigned char>(bytes[pos]);
    if (b < 0xC2 || b > 0xF4) continue;  // not a lead byte of a multi-byte sequence
    if (valid_sequence_length(bytes, pos, &prefix) == 0 && pos + prefix == bytes.size()) return pos;
  }
  return bytes.size();
}

}  // namespace narwhal::text
