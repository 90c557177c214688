// JsonReader: a bounded, incremental JSON parser: bytes go in as they arrive, an nlohmann::ordered_json comes out.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"

namespace narwhal {

// Arrays and objects open at once, at most: the reader's limit and the request parsers' (server/request_fields.h).
// Far above any real request (OpenAI caps structured-output schemas at 10 levels; tool schemas nest a handful),
// and low enough that the recursive consumers of a document (nlohmann's dump and comparison, the chat template's
// Value::from_json and tojson) stay within a few hundred KiB of any thread's stack.
inline constexpr int kMaxJsonDepth = 128;

// What one document may hold. Each limit fails the parse at the first byte past it, so that neither the time
// to read a hostile document nor the memory it builds can grow beyond what its size allows.
struct JsonLimits {
  int max_depth = kMaxJsonDepth;
  // Scalars, arrays, objects and object keys together: each costs 16 to 80 bytes once built.
  int64_t max_values = INT64_MAX;

  // For a request body of at most `max_body_bytes`: one value per 8 bytes (a 30 MB conversation of short
  // messages has one per 12, a token id list one per 6 or 7), and never fewer than a million. Only bodies
  // made of tiny values reach it, and it holds what they build to about 10x the body limit.
  static JsonLimits for_body(int64_t max_body_bytes);
};

// Malformed input or a limit passed, found at byte `offset` of the input.
class JsonError : public Error {
 public:
  JsonError(int64_t offset, const std::string& message);
  int64_t offset() const { return offset_; }

 private:
  int64_t offset_;
};

// Reads one JSON text (RFC 8259, as nlohmann::json::parse does: a UTF-8 BOM at the start is skipped, strings
// must be valid UTF-8 and unpaired surrogate escapes are errors) with an explicit stack instead of recursion.
// Objects keep their key order; a repeated key keeps its first position and its last value (Python's json and
// nlohmann do the same), found through a hash of the object's keys, so that building any object takes time
// linear in its size. Integers are int64 when negative and uint64 otherwise, as in nlohmann, and beyond those,
// doubles; a number beyond double's range is an error, as is one longer than kMaxNumberChars.
class JsonReader {
 public:
  // A number of more digits than this is refused rather than handed to strtod: no real request has one.
  static constexpr size_t kMaxNumberChars = 1024;

  explicit JsonReader(JsonLimits limits = {});

  // The next bytes of the text, any split; throws JsonError at the first byte that cannot continue valid JSON.
  // After a throw the reader is spent.
  void feed(std::string_view bytes);
  // The document, once every byte has been fed; throws JsonError when the text is empty or ends early.
  nlohmann::ordered_json finish();

 private:
  using Json = nlohmann::ordered_json;
  enum class State : uint8_t {
    kStart,      // nothing read: a BOM or a value
    kBom,        // inside the BOM
    kValue,      // a value is due
    kFirstItem,  // after '[': a value or ']'
    kFirstKey,   // after '{': a key or '}'
    kKey,        // after ',' in an object: a key
    kColon,      // after a key
    kNext,       // after a value in an array or object: ',' or its end
    kString,     // inside a string or key
    kEscape,     // after '\' in a string
    kUnicode,    // inside \uXXXX
    kLowSurrogate,    // after a high surrogate escape: '\' of the low one is due
    kLowSurrogateU,   // then its 'u'
    kNumber,
    kLiteral,    // inside true, false or null
    kDone,       // the value is complete: only whitespace may follow
  };
  // An array or object being read: its items, or its members in order with the key of the value being read.
  struct Frame {
    bool is_object;
    std::vector<Json> items;
    std::vector<std::pair<std::string, Json>> members;
    std::string key;
  };

  const char* structural(const char* p, const char* end);
  const char* begin_value(const char* p);
  const char* read_string(const char* p, const char* end);
  const char* read_escape(const char* p);
  const char* read_unicode(const char* p, const char* end);
  const char* read_number(const char* p, const char* end);
  const char* read_literal(const char* p, const char* end);
  void append(const char* from, const char* to) { text_.append(from, static_cast<size_t>(to - from)); }
  void append_code_point(uint32_t code_point);
  void end_string();
  void end_number(int64_t end_offset);  // the input offset just past the number
  void open(bool is_object, const char* at);
  void close();
  void count_value(const char* at);
  void add(Json&& value);
  static Json build_object(std::vector<std::pair<std::string, Json>>&& members);
  [[noreturn]] void fail(const char* at, const std::string& message) const;

  const JsonLimits limits_;
  State state_ = State::kStart;
  std::vector<Frame> stack_;
  Json root_;
  std::string text_;          // the string, number or literal being read
  bool string_is_key_ = false;
  const char* literal_ = nullptr;  // the literal being matched ("true", ...) and how much of it has been
  size_t literal_matched_ = 0;
  int bom_matched_ = 0;
  uint32_t code_unit_ = 0;    // of the \u escape being read, and its hex digits so far
  int hex_digits_ = 0;
  uint32_t high_surrogate_ = 0;
  int utf8_pending_ = 0;      // continuation bytes the current UTF-8 sequence still needs
  unsigned char utf8_min_ = 0x80, utf8_max_ = 0xBF;  // the range of the next one
  int64_t values_ = 0;
  int64_t fed_before_ = 0;    // bytes in earlier feeds, and the current one's start, for error offsets
  const char* chunk_ = nullptr;
};

}  // namespace narwhal
