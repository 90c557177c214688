// JsonReader: a byte-driven state machine over an explicit stack of open arrays and objects.
#include "core/json_reader.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>

namespace narwhal {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_number_char(char c) { return is_digit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'; }

// RFC 8259's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?; `integer` when neither part follows.
bool valid_number(std::string_view s, bool* integer) {
  size_t i = 0;
  auto digits = [&] {
    const size_t start = i;
    while (i < s.size() && is_digit(s[i])) ++i;
    return i > start;
  };
  if (i < s.size() && s[i] == '-') ++i;
  if (i < s.size() && s[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  *integer = true;
  if (i < s.size() && s[i] == '.') {
    ++i;
    *integer = false;
    if (!digits()) return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    *integer = false;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == s.size();
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string printable(char c) {
  const auto byte = static_cast<unsigned char>(c);
  if (byte >= 0x20 && byte < 0x7f) return cat("'", c, "'");
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", byte);
  return buf;
}

}  // namespace

JsonLimits JsonLimits::for_body(int64_t max_body_bytes) {
  JsonLimits limits;
  limits.max_values = std::max<int64_t>(max_body_bytes / 8, int64_t{1} << 20);
  return limits;
}

JsonError::JsonError(int64_t offset, const std::string& message)
    : Error(cat("at byte ", offset, ": ", message)), offset_(offset) {}

JsonReader::JsonReader(JsonLimits limits) : limits_(limits) {}

void JsonReader::fail(const char* at, const std::string& message) const {
  throw JsonError(fed_before_ + (at - chunk_), message);
}

void JsonReader::feed(std::string_view bytes) {
  chunk_ = bytes.data();
  const char* p = bytes.data();
  const char* end = p + bytes.size();
  while (p < end) {
    switch (state_) {
      case State::kString: p = read_string(p, end); break;
      case State::kEscape: p = read_escape(p); break;
      case State::kUnicode: p = read_unicode(p, end); break;
      case State::kNumber: p = read_number(p, end); break;
      case State::kLiteral: p = read_literal(p, end); break;
      case State::kStart:
        if (*p == '\xEF') {
          state_ = State::kBom;
          bom_matched_ = 1;
          ++p;
        } else {
          state_ = State::kValue;
        }
        break;
      case State::kBom:
        if (*p != "\xEF\xBB\xBF"[bom_matched_]) fail(p, "a byte order mark is cut short");
        ++p;
        if (++bom_matched_ == 3) state_ = State::kValue;
        break;
      case State::kLowSurrogate:
      case State::kLowSurrogateU:
        if (*p != (state_ == State::kLowSurrogate ? '\\' : 'u'))
          fail(p, "a high surrogate escape (\\uD800-\\uDBFF) must be followed by a low one (\\uDC00-\\uDFFF)");
        state_ = state_ == State::kLowSurrogate ? State::kLowSurrogateU : State::kUnicode;
        ++p;
        break;
      default: p = structural(p, end); break;
    }
  }
  fed_before_ += static_cast<int64_t>(bytes.size());
  chunk_ = nullptr;
}

nlohmann::ordered_json JsonReader::finish() {
  if (state_ == State::kNumber) end_number(fed_before_);
  if (state_ == State::kStart || (state_ == State::kValue && stack_.empty()))
    throw JsonError(fed_before_, "the body is empty: a JSON value is required");
  if (state_ != State::kDone) throw JsonError(fed_before_, "the JSON text ends before its value is complete");
  return std::move(root_);
}

// Whitespace, punctuation and the first byte of each value.
const char* JsonReader::structural(const char* p, const char* end) {
  while (p < end && is_space(*p)) ++p;
  if (p == end) return p;
  const char c = *p;
  switch (state_) {
    case State::kFirstItem:
      if (c == ']') {
        close();
        return p + 1;
      }
      return begin_value(p);
    case State::kValue: return begin_value(p);
    case State::kFirstKey:
      if (c == '}') {
        close();
        return p + 1;
      }
      [[fallthrough]];
    case State::kKey:
      if (c != '"') fail(p, cat("expected a string key, found ", printable(c)));
      count_value(p);
      string_is_key_ = true;
      state_ = State::kString;
      return p + 1;
    case State::kColon:
      if (c != ':') fail(p, cat("expected ':' after an object key, found ", printable(c)));
      state_ = State::kValue;
      return p + 1;
    case State::kNext: {
      const bool in_object = stack_.back().is_object;
      if (c == ',') {
        state_ = in_object ? State::kKey : State::kValue;
        return p + 1;
      }
      if (c == (in_object ? '}' : ']')) {
        close();
        return p + 1;
      }
      fail(p, cat("expected ',' or '", in_object ? '}' : ']', "', found ", printable(c)));
    }
    case State::kDone: fail(p, cat("unexpected ", printable(c), " after the JSON value"));
    default: fail(p, "internal: not a structural state");
  }
}

const char* JsonReader::begin_value(const char* p) {
  const char c = *p;
  count_value(p);
  switch (c) {
    case '{':
    case '[': open(c == '{', p); return p + 1;
    case '"':
      string_is_key_ = false;
      state_ = State::kString;
      return p + 1;
    case 't': literal_ = "true"; break;
    case 'f': literal_ = "false"; break;
    case 'n': literal_ = "null"; break;
    default:
      if (c == '-' || is_digit(c)) {
        state_ = State::kNumber;
        return p;
      }
      fail(p, cat("expected a JSON value, found ", printable(c)));
  }
  literal_matched_ = 0;
  state_ = State::kLiteral;
  return p;
}

// The bulk of a string: runs of plain bytes are appended at once; UTF-8 is checked as RFC 3629 defines it
// (no overlong forms, no surrogates, nothing past U+10FFFF), across chunk boundaries.
const char* JsonReader::read_string(const char* p, const char* end) {
  const char* run = p;
  for (; p < end; ++p) {
    const auto byte = static_cast<unsigned char>(*p);
    if (utf8_pending_ > 0) {
      if (byte < utf8_min_ || byte > utf8_max_) fail(p, "invalid UTF-8 in a string");
      utf8_min_ = 0x80;
      utf8_max_ = 0xBF;
      --utf8_pending_;
      continue;
    }
    if (byte == '"' || byte == '\\') {
      append(run, p);
      if (byte == '"') {
        end_string();
      } else {
        state_ = State::kEscape;
      }
      return p + 1;
    }
    if (byte < 0x20) fail(p, cat("control character ", printable(*p), " in a string (it must be escaped)"));
    if (byte < 0x80) continue;
    if (byte >= 0xC2 && byte <= 0xDF) {
      utf8_pending_ = 1;
    } else if (byte >= 0xE0 && byte <= 0xEF) {
      utf8_pending_ = 2;
      if (byte == 0xE0) utf8_min_ = 0xA0;  // else overlong
      if (byte == 0xED) utf8_max_ = 0x9F;  // else a surrogate
    } else if (byte >= 0xF0 && byte <= 0xF4) {
      utf8_pending_ = 3;
      if (byte == 0xF0) utf8_min_ = 0x90;  // else overlong
      if (byte == 0xF4) utf8_max_ = 0x8F;  // else past U+10FFFF
    } else {
      fail(p, "invalid UTF-8 in a string");
    }
  }
  append(run, p);
  return p;
}

const char* JsonReader::read_escape(const char* p) {
  char decoded;
  switch (*p) {
    case '"': decoded = '"'; break;
    case '\\': decoded = '\\'; break;
    case '/': decoded = '/'; break;
    case 'b': decoded = '\b'; break;
    case 'f': decoded = '\f'; break;
    case 'n': decoded = '\n'; break;
    case 'r': decoded = '\r'; break;
    case 't': decoded = '\t'; break;
    case 'u':
      state_ = State::kUnicode;
      return p + 1;
    default: fail(p, cat("invalid escape \\", *p, " in a string"));
  }
  text_.push_back(decoded);
  state_ = State::kString;
  return p + 1;
}

const char* JsonReader::read_unicode(const char* p, const char* end) {
  for (; p < end && hex_digits_ < 4; ++p, ++hex_digits_) {
    const int digit = hex_value(*p);
    if (digit < 0) fail(p, "a \\u escape needs four hex digits");
    code_unit_ = code_unit_ << 4 | static_cast<uint32_t>(digit);
  }
  if (hex_digits_ < 4) return p;
  const uint32_t unit = code_unit_;
  code_unit_ = 0;
  hex_digits_ = 0;
  state_ = State::kString;
  if (high_surrogate_ != 0) {
    if (unit < 0xDC00 || unit > 0xDFFF)
      fail(p, "a high surrogate escape (\\uD800-\\uDBFF) must be followed by a low one (\\uDC00-\\uDFFF)");
    append_code_point(0x10000 + ((high_surrogate_ - 0xD800) << 10) + (unit - 0xDC00));
    high_surrogate_ = 0;
  } else if (unit >= 0xD800 && unit <= 0xDBFF) {
    high_surrogate_ = unit;
    state_ = State::kLowSurrogate;
  } else if (unit >= 0xDC00 && unit <= 0xDFFF) {
    fail(p, "a low surrogate escape (\\uDC00-\\uDFFF) without a high one before it");
  } else {
    append_code_point(unit);
  }
  return p;
}

void JsonReader::append_code_point(uint32_t cp) {
  if (cp < 0x80) {
    text_.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    text_.push_back(static_cast<char>(0xC0 | cp >> 6));
    text_.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    text_.push_back(static_cast<char>(0xE0 | cp >> 12));
    text_.push_back(static_cast<char>(0x80 | (cp >> 6 & 0x3F)));
    text_.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    text_.push_back(static_cast<char>(0xF0 | cp >> 18));
    text_.push_back(static_cast<char>(0x80 | (cp >> 12 & 0x3F)));
    text_.push_back(static_cast<char>(0x80 | (cp >> 6 & 0x3F)));
    text_.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

void JsonReader::end_string() {
  if (string_is_key_) {
    stack_.back().key = std::move(text_);
    text_.clear();
    state_ = State::kColon;
    return;
  }
  add(Json(std::move(text_)));
  text_.clear();
}

// A number ends at the first byte that cannot belong to one, which may come in a later chunk (or never, for a
// number alone at the top level: finish() ends it).
const char* JsonReader::read_number(const char* p, const char* end) {
  const char* start = p;
  while (p < end && is_number_char(*p)) ++p;
  if (text_.size() + static_cast<size_t>(p - start) > kMaxNumberChars)
    fail(p, cat("a number of more than ", kMaxNumberChars, " characters"));
  append(start, p);
  if (p < end) end_number(fed_before_ + (p - chunk_));
  return p;
}

// As nlohmann: integers that fit are int64 (negative) or uint64; every other number is a double.
void JsonReader::end_number(int64_t end_offset) {
  const int64_t at = end_offset - static_cast<int64_t>(text_.size());
  bool integer = false;
  if (!valid_number(text_, &integer)) throw JsonError(at, cat("invalid number '", text_.substr(0, 64), "'"));
  const char* first = text_.data();
  const char* last = first + text_.size();
  if (integer && text_[0] == '-') {
    int64_t value = 0;
    if (std::from_chars(first, last, value).ec == std::errc()) {
      text_.clear();
      return add(Json(value));
    }
  } else if (integer) {
    uint64_t value = 0;
    if (std::from_chars(first, last, value).ec == std::errc()) {
      text_.clear();
      return add(Json(value));
    }
  }
  const double value = std::strtod(text_.c_str(), nullptr);
  if (!std::isfinite(value))
    throw JsonError(at, cat("the number ", text_.substr(0, 64), " is out of range (beyond +-1.8e308)"));
  text_.clear();
  add(Json(value));
}

const char* JsonReader::read_literal(const char* p, const char* end) {
  for (; p < end && literal_[literal_matched_] != '\0'; ++p, ++literal_matched_) {
    if (*p != literal_[literal_matched_]) fail(p, cat("invalid literal: expected '", literal_, "'"));
  }
  if (literal_[literal_matched_] != '\0') return p;
  switch (literal_[0]) {
    case 't': add(Json(true)); break;
    case 'f': add(Json(false)); break;
    default: add(Json(nullptr)); break;
  }
  return p;
}

void JsonReader::count_value(const char* at) {
  if (++values_ > limits_.max_values)
    fail(at, cat("more than ", limits_.max_values, " values (the server's limit for a body of this size)"));
}

void JsonReader::open(bool is_object, const char* at) {
  if (static_cast<int>(stack_.size()) >= limits_.max_depth)
    fail(at, cat("arrays and objects nest deeper than ", limits_.max_depth, " levels (the server's limit)"));
  stack_.push_back(Frame{is_object, {}, {}, {}});
  state_ = is_object ? State::kFirstKey : State::kFirstItem;
}

void JsonReader::close() {
  Frame frame = std::move(stack_.back());
  stack_.pop_back();
  if (frame.is_object) return add(build_object(std::move(frame.members)));
  Json array(Json::value_t::array);
  array.get_ref<Json::array_t&>() = std::move(frame.items);
  add(std::move(array));
}

void JsonReader::add(Json&& value) {
  if (stack_.empty()) {
    root_ = std::move(value);
    state_ = State::kDone;
    return;
  }
  Frame& top = stack_.back();
  if (top.is_object) {
    top.members.emplace_back(std::move(top.key), std::move(value));
    top.key.clear();
  } else {
    top.items.push_back(std::move(value));
  }
  state_ = State::kNext;
}

// ordered_map's own insertion searches its keys linearly (quadratic for a wide object), so duplicates are
// folded here first, through a hash for objects of more than a few keys, and the survivors appended directly.
nlohmann::ordered_json JsonReader::build_object(std::vector<std::pair<std::string, Json>>&& members) {
  constexpr size_t kLinearSearchKeys = 8;
  std::vector<bool> dropped(members.size(), false);
  auto fold = [&](size_t first, size_t again) {
    members[first].second = std::move(members[again].second);
    dropped[again] = true;
  };
  if (members.size() <= kLinearSearchKeys) {
    for (size_t i = 1; i < members.size(); ++i) {
      for (size_t j = 0; j < i; ++j) {
        if (!dropped[j] && members[j].first == members[i].first) {
          fold(j, i);
          break;
        }
      }
    }
  } else {
    std::unordered_map<std::string_view, size_t> first_index;
    first_index.reserve(members.size());
    for (size_t i = 0; i < members.size(); ++i) {
      const auto [it, inserted] = first_index.emplace(members[i].first, i);
      if (!inserted) fold(it->second, i);
    }
  }
  Json object(Json::value_t::object);
  auto& entries = static_cast<Json::object_t::Container&>(object.get_ref<Json::object_t&>());
  entries.reserve(members.size());
  for (size_t i = 0; i < members.size(); ++i) {
    if (!dropped[i]) entries.emplace_back(std::move(members[i].first), std::move(members[i].second));
  }
  return object;
}

}  // namespace narwhal
