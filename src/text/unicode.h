// Unicode character properties for the pre-tokenizer regexes: general category and the \s \w \d classes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace narwhal::text {

// Order matches tools/extract_unicode_classes.py, which generates the table in unicode_data.cpp.
enum class GeneralCategory : uint8_t {
  Cn, Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps, Pe, Pi, Pf, Po,
  Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co, kCount
};

// Property byte of a code point: the category in the low 5 bits, then one bit per Perl class.
constexpr uint8_t kCategoryMask = 0x1F;
constexpr uint8_t kSpaceBit = 0x20;  // \s
constexpr uint8_t kWordBit = 0x40;   // \w
constexpr uint8_t kDigitBit = 0x80;  // \d

uint8_t unicode_properties(char32_t cp);

// Bit set over GeneralCategory for a property name as written in \p{...}: "L", "Lu", "N", ...;
// 0 when the name is unknown.
uint32_t category_set(const char* name, size_t length);

namespace detail {
// Runs of equal properties: each entry holds the first code point of a run; sorted ascending.
struct UnicodeRun {
  uint32_t first;
  uint8_t properties;
};
extern const UnicodeRun kUnicodeRuns[];
extern const size_t kUnicodeRunCount;
}  // namespace detail

}  // namespace narwhal::text
