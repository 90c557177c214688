// A backtracking regex engine for the pre-tokenizer patterns of tokenizer.json (Oniguruma semantics).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace narwhal::text {

// Supports what Hugging Face pre-tokenizer patterns use: literals and escapes, `.`, classes `[...]` with
// ranges and \p{..} \P{..} \s \S \d \D \w \W, groups (..) (?:..) (?i:..), look-ahead (?=..) (?!..),
// alternation, and greedy or lazy quantifiers ? * + {n} {n,} {n,m}. Matching is leftmost-first with
// backtracking, as in Oniguruma (which Hugging Face tokenizers uses), and character classes use the
// property tables extracted from that engine, so both classify every code point alike.
// Anything else (anchors, look-behind, back-references) is rejected with an Error naming the pattern.
class Regex {
 public:
  explicit Regex(std::string_view pattern);

  // Finds the leftmost match in valid UTF-8 `text` that starts at or after byte `from`.
  bool find(std::string_view text, size_t from, size_t* match_begin, size_t* match_end) const;

  struct CharClass {
    std::array<uint64_t, 2> ascii{};  // membership of code points below 128, negation already applied
    uint32_t categories = 0;          // GeneralCategory bits that match
    uint8_t property_bits = 0;        // \s \w \d bits whose presence matches
    uint8_t absent_property_bits = 0; // \S \W \D: bits whose absence matches
    std::vector<std::pair<char32_t, char32_t>> ranges;
    bool negated = false;

    bool contains(char32_t cp) const;
  };

  enum class Op : uint8_t { kClass, kSplit, kJump, kLookAhead, kMatch };
  struct Instruction {
    Op op;
    bool negate = false;  // kLookAhead: (?!..)
    int x = 0;            // kClass: class index; kSplit: preferred branch; kJump: target; kLookAhead: resume pc
    int y = 0;            // kSplit: other branch
  };

 private:
  bool match_at(std::string_view text, size_t pos, int pc, size_t* end) const;
  // Fills may_start_: which first bytes of a position can begin a match (regex_match.cpp).
  void compute_start_bytes();

  std::string pattern_;  // for error messages while compiling
  std::vector<CharClass> classes_;
  std::vector<Instruction> program_;
  // may_start_[b]: a match can begin at a position whose first byte is b. find() skips the other positions
  // without running the program; exact for ASCII, conservatively true for every lead byte above it.
  std::array<bool, 256> may_start_{};

  friend class RegexCompiler;
};

}  // namespace narwhal::text
