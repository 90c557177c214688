// Backtracking execution of a compiled Regex program over UTF-8 text.
#include "text/regex.h"

#include "text/unicode.h"
#include "text/utf8.h"

namespace narwhal::text {

bool Regex::CharClass::contains(char32_t cp) const {
  if (cp < 128) return (ascii[cp >> 6] >> (cp & 63)) & 1;
  bool hit = false;
  const uint8_t props = unicode_properties(cp);
  if ((categories >> (props & kCategoryMask)) & 1) hit = true;
  else if (props & property_bits) hit = true;
  else if (~props & absent_property_bits) hit = true;
  else {
    for (const auto& [lo, hi] : ranges) {
      if (cp >= lo && cp <= hi) {
        hit = true;
        break;
      }
    }
  }
  return hit != negated;
}

bool Regex::match_at(std::string_view text, size_t pos, int pc, size_t* end) const {
  // Backtrack points (pc, position); one stack per thread, shared by nested look-aheads.
  thread_local std::vector<std::pair<int, size_t>> stack;
  const size_t base = stack.size();
  stack.emplace_back(pc, pos);
  while (stack.size() > base) {
    auto [at, p] = stack.back();
    stack.pop_back();
    for (bool alive = true; alive;) {
      const Instruction& in = program_[at];
      switch (in.op) {
        case Op::kClass: {
          if (p >= text.size()) {
            alive = false;
            break;
          }
          size_t next = p;
          if (classes_[in.x].contains(next_code_point(text, next))) {
            p = next;
            ++at;
          } else {
            alive = false;
          }
          break;
        }
        case Op::kSplit:
          stack.emplace_back(in.y, p);
          at = in.x;
          break;
        case Op::kJump:
          at = in.x;
          break;
        case Op::kLookAhead: {
          size_t ignored;
          if (match_at(text, p, at + 1, &ignored) != in.negate) at = in.x;
          else alive = false;
          break;
        }
        case Op::kMatch:
          stack.resize(base);
          *end = p;
          return true;
      }
    }
  }
  return false;
}

void Regex::compute_start_bytes() {
  // Walk every path from the first instruction to the first character it consumes.
  std::vector<bool> seen(program_.size());
  std::vector<int> todo{0};
  bool any = false;  // a match may begin with no character consumed: every position qualifies
  while (!todo.empty()) {
    const int at = todo.back();
    todo.pop_back();
    if (seen[at]) continue;
    seen[at] = true;
    const Instruction& in = program_[at];
    switch (in.op) {
      case Op::kClass:
        for (char32_t c = 0; c < 128; ++c) may_start_[c] = may_start_[c] || classes_[in.x].contains(c);
        for (int b = 0xC0; b < 256; ++b) may_start_[b] = true;  // some non-ASCII code point may match
        break;
      case Op::kSplit:
        todo.push_back(in.x);
        todo.push_back(in.y);
        break;
      case Op::kJump:
        todo.push_back(in.x);
        break;
      case Op::kLookAhead:
      case Op::kMatch:
        any = true;
        break;
    }
  }
  if (any) may_start_.fill(true);
}

bool Regex::find(std::string_view text, size_t from, size_t* match_begin, size_t* match_end) const {
  for (size_t start = from; start <= text.size();) {
    if (start < text.size() && !may_start_[static_cast<unsigned char>(text[start])]) {
      ++start;  // an ASCII byte (lead bytes are all allowed), so one byte is one code point
      continue;
    }
    if (match_at(text, start, 0, match_end)) {
      *match_begin = start;
      return true;
    }
    if (start == text.size()) break;
    next_code_point(text, start);
  }
  return false;
}

}  // namespace narwhal::text
