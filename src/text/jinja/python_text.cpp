// Python's text forms that templates print: float repr and json.dumps (HF's tojson filter).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "text/jinja/value.h"
#include "text/unicode.h"
#include "text/utf8.h"

namespace narwhal::text::jinja {

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, then Python's layout: fixed for exponents -4..15, else d.ddde+XX.
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, end);
  const size_t e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  const int exponent = std::stoi(sci.substr(e + 1));
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits += c;
  }
  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    std::snprintf(buf, sizeof buf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + buf;
  }
  if (exponent < 0) return out + "0." + std::string(-exponent - 1, '0') + digits;
  if (static_cast<int>(digits.size()) <= exponent + 1) return out + digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
  return out + digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
}

bool python_isspace(char32_t cp) {
  // White_Space plus the information separators U+001C..U+001F, which Python counts as whitespace.
  return (unicode_properties(cp) & kSpaceBit) || (cp >= 0x1C && cp <= 0x1F);
}

std::string python_strip(const std::string& text, const Value& chars, bool left, bool right) {
  if (!chars.is_none() && !chars.is_undefined() && !chars.is_string()) throw Error("strip arg must be None or str");
  std::vector<char32_t> set;
  if (chars.is_string()) {
    for (size_t pos = 0; pos < chars.as_string().size();) set.push_back(next_code_point(chars.as_string(), pos));
  }
  const auto strippable = [&](char32_t cp) {
    return chars.is_string() ? std::find(set.begin(), set.end(), cp) != set.end() : python_isspace(cp);
  };
  size_t begin = 0, end = text.size(), at;
  while (left && begin < end) {
    at = begin;
    if (!strippable(next_code_point(text, at))) break;
    begin = at;
  }
  while (right && end > begin && strippable(previous_code_point(text, end, &at))) end = at;
  return text.substr(begin, end - begin);
}

namespace {

void append_json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  char buf[16];
  out += '"';
  for (size_t pos = 0; pos < s.size();) {
    const unsigned char c = s[pos];
    const char* escape = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                       : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : nullptr;
    if (escape) {
      out += escape;
      ++pos;
    } else if (c < 0x20 || (ensure_ascii && c == 0x7F)) {
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      ++pos;
    } else if (c < 0x80 || !ensure_ascii) {
      out += static_cast<char>(c);
      ++pos;
    } else {
      char32_t cp = next_code_point(s, pos);
      if (cp >= 0x10000) {  // a surrogate pair, as Python writes it
        cp -= 0x10000;
        std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", static_cast<unsigned>(0xD800 + (cp >> 10)),
                      static_cast<unsigned>(0xDC00 + (cp & 0x3FF)));
      } else {
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(cp));
      }
      out += buf;
    }
  }
  out += '"';
}

struct JsonStyle {
  bool ensure_ascii;
  const std::optional<std::string>& indent;
  const std::string& item_separator;
  const std::string& key_separator;
  bool sort_keys;
};

void append_json(std::string& out, const Value& v, const JsonStyle& style, int depth) {
  if (v.is_undefined() || v.is_callable()) throw Error(cat("Object of type ", v.type_name(), " is not JSON serializable"));
  if (v.is_none()) out += "null";
  else if (v.is_bool()) out += v.truthy() ? "true" : "false";
  else if (v.is_int()) out += std::to_string(v.as_int());
  else if (v.is_float()) {
    const double d = v.as_double();
    out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : float_repr(d);
  } else if (v.is_string()) append_json_string(out, v.as_string(), style.ensure_ascii);
  else {
    // Python's json module: newline plus one indent unit per level when indent is given.
    const auto newline = [&](int level) {
      if (!style.indent) return;
      out += '\n';
      for (int i = 0; i < level; ++i) out += *style.indent;
    };
    const bool is_list = v.is_list();
    std::vector<std::pair<std::string, Value>> entries;
    if (!is_list) {
      entries = v.as_dict().items;
      if (style.sort_keys) std::stable_sort(entries.begin(), entries.end(), [](auto& a, auto& b) { return a.first < b.first; });
    }
    const size_t count = is_list ? v.as_list().items.size() : entries.size();
    out += is_list ? '[' : '{';
    for (size_t i = 0; i < count; ++i) {
      if (i) out += style.item_separator;
      newline(depth + 1);
      if (is_list) {
        append_json(out, v.as_list().items[i], style, depth + 1);
      } else {
        append_json_string(out, entries[i].first, style.ensure_ascii);
        out += style.key_separator;
        append_json(out, entries[i].second, style, depth + 1);
      }
    }
    if (count) newline(depth);
    out += is_list ? ']' : '}';
  }
}

}  // namespace

std::string to_json(const Value& value, bool ensure_ascii, const std::optional<std::string>& indent,
                    const std::string& item_separator, const std::string& key_separator, bool sort_keys) {
  std::string out;
  append_json(out, value, JsonStyle{ensure_ascii, indent, item_separator, key_separator, sort_keys}, 0);
  return out;
}

}  // namespace narwhal::text::jinja
