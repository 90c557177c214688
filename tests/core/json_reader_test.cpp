// JsonReader against nlohmann on a seeded corpus (fed in random pieces), and on hostile shapes, each in seconds.
#include "core/json_reader.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <random>

namespace narwhal {
namespace {

using Json = nlohmann::ordered_json;

// Feeds `text` in pieces of random sizes (all of it at once when `rng` is null).
Json read(std::string_view text, std::mt19937* rng = nullptr, JsonLimits limits = {}) {
  JsonReader reader(limits);
  while (!text.empty()) {
    const size_t n = rng ? std::min<size_t>(text.size(), 1 + (*rng)() % 17) : text.size();
    reader.feed(text.substr(0, n));
    text.remove_prefix(n);
  }
  return reader.finish();
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Random JSON text written by hand (not by nlohmann), so that whitespace, escapes, number spellings and raw
// UTF-8 vary as clients write them.
class TextMaker {
 public:
  explicit TextMaker(uint32_t seed) : rng_(seed) {}
  std::mt19937& rng() { return rng_; }

  std::string value(int depth) {
    switch (pick(depth < 5 ? 9 : 7)) {
      case 0: return "null";
      case 1: return pick(2) ? "true" : "false";
      case 2:
      case 3: return number();
      case 4:
      case 5:
      case 6: return string();
      case 7: {
        std::string out = "[" + space();
        const int n = pick(5);
        for (int i = 0; i < n; ++i) out += (i ? "," + space() : "") + value(depth + 1) + space();
        return out + "]";
      }
      default: {
        std::string out = "{" + space();
        const int n = pick(6);
        for (int i = 0; i < n; ++i) {
          // Few distinct keys, so that objects repeat some.
          const std::string key = pick(3) ? "\"k" + std::to_string(pick(6)) + "\"" : string();
          out += (i ? "," + space() : "") + key + space() + ":" + space() + value(depth + 1) + space();
        }
        return out + "}";
      }
    }
  }

  std::string number() {
    static const char* kSpellings[] = {"0", "-0", "7", "-12", "3.25", "-0.5", "1e3", "1E-3", "2.5e+10", "1e-400",
                                       "18446744073709551615", "18446744073709551616", "-9223372036854775808",
                                       "-9223372036854775809", "9223372036854775807", "0.1", "123456789.125e-7",
                                       "1e308", "-1.7976931348623157e308", "5e-324"};
    if (pick(3) == 0) return std::to_string(static_cast<int64_t>(rng_()) - (1LL << 31));
    return kSpellings[pick(std::size(kSpellings))];
  }

  std::string string() {
    static const char* kPieces[] = {"a", "hello", " ", "\\n", "\\\"", "\\\\", "\\/", "\\t", "\\u0041", "\\u00e9",
                                    "\\u4e2d", "\\ud83d\\ude00", "\\u0000", "é", "中文", "😀", "\x7f", "\\b\\f\\r"};
    std::string out = "\"";
    const int n = pick(5);
    for (int i = 0; i < n; ++i) out += kPieces[pick(std::size(kPieces))];
    return out + "\"";
  }

  // Breaks the text: cut it, or overwrite, insert or delete a byte (often a structural one).
  std::string mutate(std::string text) {
    static const char kBytes[] = "{}[],:\"\\ 0-e.tfnx\x80\xC3\xED\xF4\x01";
    if (text.empty()) return text;
    const size_t at = rng_() % text.size();
    const char byte = pick(4) ? kBytes[pick(sizeof kBytes - 1)] : static_cast<char>(rng_());
    switch (pick(4)) {
      case 0: return text.substr(0, at);
      case 1: text[at] = byte; return text;
      case 2: return text.insert(at, 1, byte);
      default: return text.erase(at, 1);
    }
  }

 private:
  int pick(size_t n) { return static_cast<int>(rng_() % n); }
  std::string space() {
    static const char* kSpace[] = {"", "", "", " ", "\n  ", "\t", "\r\n"};
    return kSpace[pick(std::size(kSpace))];
  }
  std::mt19937 rng_;
};

TEST(JsonReader, EqualsNlohmannOnASeededCorpus) {
  TextMaker maker(20261123);
  int valid = 0, invalid = 0;
  for (int i = 0; i < 6000; ++i) {
    std::string text = maker.value(0);
    if (i % 2) text = maker.mutate(text);
    std::optional<Json> expected;
    try {
      expected = Json::parse(text);
    } catch (const Json::exception&) {  // parse_error, and out_of_range for 1e400-like numbers
    }
    SCOPED_TRACE(text);
    if (expected) {
      ++valid;
      const Json got = read(text, &maker.rng());
      ASSERT_EQ(got.dump(), expected->dump());  // the same values, types and key order
      ASSERT_EQ(got, *expected);
    } else {
      ++invalid;
      ASSERT_THROW(read(text, &maker.rng()), JsonError);
    }
  }
  EXPECT_GT(valid, 3000);
  EXPECT_GT(invalid, 1500);
}

TEST(JsonReader, EveryPrefixOfADocumentAgreesWithNlohmann) {
  const std::string text = "\xEF\xBB\xBF {\"a\": [1, -2.5e3, {\"b\": null}], \"c\": \"x\\u00e9\\ud83d\\ude00\", "
                           "\"d\": true, \"e\": false, \"a\": 7}";
  for (size_t n = 0; n <= text.size(); ++n) {
    const std::string prefix = text.substr(0, n);
    bool nlohmann_ok = true;
    try {
      (void)Json::parse(prefix);
    } catch (const Json::exception&) {
      nlohmann_ok = false;
    }
    SCOPED_TRACE(prefix);
    if (nlohmann_ok) {
      EXPECT_EQ(read(prefix), Json::parse(prefix));
    } else {
      EXPECT_THROW(read(prefix), JsonError);
    }
  }
  const Json whole = read(text);
  ASSERT_EQ(whole.size(), 4u) << "the repeated key keeps its first position";
  EXPECT_EQ(whole.begin().key(), "a");
  EXPECT_EQ(whole["a"], 7) << "and its last value";
}

TEST(JsonReader, RefusesNestingPastTheDepthLimitAtOnce) {
  const JsonLimits limits;
  std::string ok = std::string(limits.max_depth, '[') + std::string(limits.max_depth, ']');
  EXPECT_NO_THROW(read(ok));
  for (const char* open : {"[", "{\"a\":", "[{\"k\":"}) {
    std::string deep;
    for (int i = 0; i < 100000; ++i) deep += open;
    const auto start = std::chrono::steady_clock::now();
    try {
      read(deep);
      ADD_FAILURE() << "100,000 levels of " << open << " were accepted";
    } catch (const JsonError& e) {
      EXPECT_LE(e.offset(), static_cast<int64_t>(limits.max_depth * std::string(open).size() + 1));
      EXPECT_NE(std::string(e.what()).find("nest deeper than 128"), std::string::npos) << e.what();
    }
    EXPECT_LT(seconds_since(start), 1.0);
  }
  EXPECT_THROW(read(std::string(limits.max_depth + 1, '[') + std::string(limits.max_depth + 1, ']')), JsonError);
}

TEST(JsonReader, BuildsWideObjectsInLinearTime) {
  std::string distinct = "{", repeated = "{";
  for (int i = 0; i < 200000; ++i) {
    distinct += (i ? ",\"key" : "\"key") + std::to_string(i) + "\":" + std::to_string(i);
    repeated += std::string(i ? "," : "") + "\"same\":" + std::to_string(i);
  }
  distinct += "}";
  repeated += "}";
  auto start = std::chrono::steady_clock::now();
  const Json wide = read(distinct);
  const double wide_seconds = seconds_since(start);
  ASSERT_EQ(wide.size(), 200000u);
  EXPECT_EQ(wide.begin().key(), "key0");
  EXPECT_EQ((--wide.end()).key(), "key199999");
  start = std::chrono::steady_clock::now();
  const Json same = read(repeated);
  const double same_seconds = seconds_since(start);
  ASSERT_EQ(same.size(), 1u);
  EXPECT_EQ(same["same"], 199999);
  std::printf("200,000 keys (%.1f MB): %.0f ms distinct, %.0f ms all the same key\n", distinct.size() / 1e6,
              wide_seconds * 1e3, same_seconds * 1e3);
  EXPECT_LT(wide_seconds, 2.0);
  EXPECT_LT(same_seconds, 2.0);
}

TEST(JsonReader, NumbersBeyondDoubleAreErrorsAndUnderflowIsZero) {
  for (const char* text : {"1e400", "-1e400", "[1,2,1E+999]", "{\"x\": 123456789e301}"}) {
    try {
      read(text);
      ADD_FAILURE() << text << " was accepted";
    } catch (const JsonError& e) {
      EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(read("1e-400").get<double>(), 0.0);
  EXPECT_TRUE(read("18446744073709551615").is_number_unsigned());
  EXPECT_TRUE(read("18446744073709551616").is_number_float());
  EXPECT_TRUE(read("-9223372036854775808").is_number_integer());
  EXPECT_TRUE(read("-0").is_number_integer());
  EXPECT_THROW(read("1" + std::string(JsonReader::kMaxNumberChars, '0')), JsonError);
  for (const char* bad : {"01", "1.", ".5", "-", "+1", "1e", "1e+", "0x10", "1.5.5", "--1", "NaN", "Infinity"})
    EXPECT_THROW(read(bad), JsonError) << bad;
}

TEST(JsonReader, StringsAreStrictUtf8AndPairedSurrogates) {
  EXPECT_EQ(read("\"\xF0\x9F\x98\x80 \xE4\xB8\xAD \xC3\xA9\"").get<std::string>(),
            "\xF0\x9F\x98\x80 \xE4\xB8\xAD \xC3\xA9");
  EXPECT_EQ(read(R"("\ud83d\ude00")").get<std::string>(), "\xF0\x9F\x98\x80");
  EXPECT_EQ(read(R"("a\u0000b")").get<std::string>(), std::string("a\0b", 3));
  for (const char* bad : {"\"\xC0\x80\"", "\"\xC1\xBF\"", "\"\xE0\x80\xAF\"", "\"\xED\xA0\x80\"",
                          "\"\xF4\x90\x80\x80\"", "\"\xF5\x80\x80\x80\"", "\"\xFF\"", "\"\x80\"", "\"\xC3\"",
                          "\"\xE4\xB8\"", "\"a\x01\"", "\"\t\"", R"("\ud83d")", R"("\ud83dx")", R"("\ud83d\u0041")",
                          R"("\ude00")", R"("\x")", R"("\u12G4")", "\"abc"}) {
    EXPECT_THROW(read(bad), JsonError) << bad;
    EXPECT_THROW(Json::parse(bad), Json::parse_error) << "nlohmann refuses it too: " << bad;
  }
}

TEST(JsonReader, LongInputsParseAtSpeed) {
  std::mt19937 rng(7);
  // One long string (a long prompt), a long conversation of short messages, and as many token ids as the
  // value limit of a 32 MiB body lets through (4M).
  std::string text = "{\"prompt\": \"";
  while (text.size() < 30'000'000) text += "Lorem ipsum dolor sit amet, \\\"consectetur\\\" adipiscing elit. ";
  text += "\"}";
  std::string chat = "{\"messages\": [";
  while (chat.size() < 30'000'000)
    chat += "{\"role\": \"user\", \"content\": \"message " + std::to_string(rng()) + " \u00e9 \\n\"}, ";
  chat += "{\"role\": \"user\", \"content\": \"\"}]}";
  std::string ids = "{\"input_ids\": [";
  for (int i = 0; i < 4'194'300; ++i) ids += std::to_string(rng() % 129280) + ", ";
  ids += "0]}";
  for (const auto& [name, body] : {std::pair{"one long string", &text}, {"conversation", &chat}, {"input_ids", &ids}}) {
    const auto start = std::chrono::steady_clock::now();
    JsonReader reader(JsonLimits::for_body(32 << 20));
    for (size_t at = 0; at < body->size(); at += 65536) reader.feed(std::string_view(*body).substr(at, 65536));
    const Json document = reader.finish();
    const double seconds = seconds_since(start);
    std::printf("%s: %.1f MB in 64 KiB pieces: %.0f ms (%.0f MB/s)\n", name, body->size() / 1e6, seconds * 1e3,
                body->size() / 1e6 / seconds);
    EXPECT_LT(seconds, 5.0);
  }
  ids.insert(ids.size() - 2, "1, 2, ");
  EXPECT_THROW(read(ids, nullptr, JsonLimits::for_body(32 << 20)), JsonError) << "4M values and a few more";
}

TEST(JsonReader, EnforcesTheValueLimitAndRejectsTrailingData) {
  JsonLimits limits;
  limits.max_values = 10;
  EXPECT_NO_THROW(read("[1,2,3,4,5,6,7,8,9]", nullptr, limits));
  EXPECT_THROW(read("[1,2,3,4,5,6,7,8,9,10]", nullptr, limits), JsonError);
  EXPECT_THROW(read("{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}", nullptr, limits), JsonError) << "keys count";
  for (const char* bad : {"", "  ", "\xEF\xBB\xBF", "\xEF\xBB", " \xEF\xBB\xBF{}", "{} {}", "[1,]", "{\"a\":1,}",
                          "[,1]", "{\"a\" 1}", "{1:2}", "tru", "nul", "truex", "[1 2]", "{\"a\":1 \"b\":2}", "]",
                          "}"}) {
    EXPECT_THROW(read(bad), JsonError) << bad;
  }
  EXPECT_EQ(read("\xEF\xBB\xBF[true]"), Json::parse("[true]"));
}

}  // namespace
}  // namespace narwhal
