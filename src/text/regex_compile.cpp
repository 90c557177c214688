// Parses a pre-tokenizer regex into a small AST and compiles it to a backtracking program.
#include <algorithm>

#include "core/error.h"
#include "text/regex.h"
#include "text/unicode.h"
#include "text/utf8.h"

namespace narwhal::text {

class RegexCompiler {
 public:
  RegexCompiler(Regex& regex) : regex_(regex), text_(regex.pattern_) {}

  void compile() {
    const Node root = parse_alternation();
    if (pos_ != text_.size()) fail("unbalanced ')'");
    emit(root);
    regex_.program_.push_back({Regex::Op::kMatch});
  }

 private:
  struct Node {
    enum class Kind { kEmpty, kClass, kConcat, kAlternate, kRepeat, kLookAhead } kind = Kind::kEmpty;
    int class_index = -1;
    std::vector<Node> children;
    int min = 0, max = -1;  // kRepeat; max -1 = unbounded
    bool greedy = true;
    bool negate = false;  // kLookAhead
  };

  static Node make_node(Node::Kind kind) {
    Node node;
    node.kind = kind;
    return node;
  }

  // A class under construction: explicit code point ranges plus property-based items.
  struct ClassBuilder {
    std::vector<std::pair<char32_t, char32_t>> ranges;
    uint32_t categories = 0;
    uint8_t property_bits = 0, absent_property_bits = 0;
    bool negated = false;
  };

  [[noreturn]] void fail(const std::string& why) const {
    throw Error(cat("pre-tokenizer regex \"", text_, "\": ", why, " (at offset ", pos_, ")"));
  }
  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }
  bool eat(char c) {
    if (peek() != c || at_end()) return false;
    ++pos_;
    return true;
  }
  char32_t next_char() {
    if (at_end()) fail("unexpected end of pattern");
    return next_code_point(text_, pos_);
  }

  Node parse_alternation() {
    Node alt = make_node(Node::Kind::kAlternate);
    alt.children.push_back(parse_concat());
    while (eat('|')) alt.children.push_back(parse_concat());
    return alt.children.size() == 1 ? std::move(alt.children[0]) : alt;
  }

  Node parse_concat() {
    Node seq = make_node(Node::Kind::kConcat);
    while (!at_end() && peek() != '|' && peek() != ')') seq.children.push_back(parse_quantified());
    return seq;
  }

  Node parse_quantified() {
    Node atom = parse_atom();
    for (;;) {
      int min, max;
      const size_t start = pos_;
      if (eat('*')) min = 0, max = -1;
      else if (eat('+')) min = 1, max = -1;
      else if (eat('?')) min = 0, max = 1;
      else if (!parse_braces(&min, &max)) return atom;
      Node rep = make_node(Node::Kind::kRepeat);
      rep.min = min;
      rep.max = max;
      rep.greedy = !eat('?');
      if (peek() == '+') fail("possessive quantifiers are not supported");
      if (max == -1 && nullable(atom)) {
        pos_ = start;
        fail("an unbounded repeat of something that can match empty is not supported");
      }
      rep.children.push_back(std::move(atom));
      atom = std::move(rep);
    }
  }

  // {n} {n,} {n,m} {,m}; anything else leaves '{' to be read as a literal, as Oniguruma does.
  bool parse_braces(int* min, int* max) {
    if (peek() != '{') return false;
    size_t p = pos_ + 1;
    auto number = [&](int* out) {
      const size_t begin = p;
      int value = 0;
      while (p < text_.size() && text_[p] >= '0' && text_[p] <= '9') value = value * 10 + (text_[p++] - '0');
      *out = value;
      return p > begin;
    };
    const bool has_min = number(min);
    if (!has_min) *min = 0;
    if (p < text_.size() && text_[p] == ',') {
      ++p;
      if (!number(max)) *max = -1;
    } else {
      if (!has_min) return false;
      *max = *min;
    }
    if (p >= text_.size() || text_[p] != '}' || (!has_min && *max == -1)) return false;
    if (*max != -1 && *max < *min) fail("bad repeat range");
    pos_ = p + 1;
    return true;
  }

  Node parse_atom() {
    if (eat('(')) return parse_group();
    if (eat('[')) return class_node(parse_class());
    if (eat('.')) {
      ClassBuilder dot;  // Oniguruma's default: anything but a newline
      dot.ranges.push_back({'\n', '\n'});
      dot.negated = true;
      return class_node(dot);
    }
    const char c = peek();
    if (c == '^' || c == '$') fail("anchors are not supported");
    if (c == '*' || c == '+' || c == '?') fail("quantifier without operand");
    ClassBuilder single;
    if (eat('\\')) {
      if (!parse_escape(single)) add_literal(single, parse_literal_escape());
    } else {
      add_literal(single, next_char());
    }
    return class_node(single);
  }

  Node parse_group() {
    bool saved_case = case_insensitive_;
    Node result;
    if (eat('?')) {
      if (eat(':')) {
        result = parse_alternation();
      } else if (peek() == '=' || peek() == '!') {
        result = make_node(Node::Kind::kLookAhead);
        result.negate = text_[pos_++] == '!';
        result.children.push_back(parse_alternation());
      } else if (eat('i') && eat(':')) {
        case_insensitive_ = true;
        result = parse_alternation();
      } else {
        fail("unsupported group syntax");
      }
    } else {
      result = parse_alternation();  // captures are irrelevant for splitting
    }
    case_insensitive_ = saved_case;
    if (!eat(')')) fail("missing ')'");
    return result;
  }

  ClassBuilder parse_class() {
    ClassBuilder cls;
    cls.negated = eat('^');
    bool first = true;
    while (!eat(']') || first) {
      if (first && peek() == ']') {  // a leading ']' is a literal
        ++pos_;
        add_literal(cls, ']');
        first = false;
        continue;
      }
      first = false;
      if (at_end()) fail("missing ']'");
      if (peek() == '[') fail("nested classes are not supported");
      char32_t lo;
      if (eat('\\')) {
        if (parse_escape(cls)) continue;
        lo = parse_literal_escape();
      } else {
        lo = next_char();
      }
      if (peek() == '-' && pos_ + 1 < text_.size() && text_[pos_ + 1] != ']') {
        ++pos_;
        char32_t hi;
        if (eat('\\')) hi = parse_literal_escape();
        else hi = next_char();
        if (hi < lo) fail("reversed class range");
        add_range(cls, lo, hi);
      } else {
        add_literal(cls, lo);
      }
    }
    return cls;
  }

  // Class escapes (\p{..} \P{..} \s \S \d \D \w \W) add to `cls`; false leaves a literal escape to read.
  bool parse_escape(ClassBuilder& cls) {
    const char c = peek();
    uint8_t bit = 0;
    if (c == 's' || c == 'S') bit = kSpaceBit;
    if (c == 'd' || c == 'D') bit = kDigitBit;
    if (c == 'w' || c == 'W') bit = kWordBit;
    if (bit) {
      ++pos_;
      (c >= 'a' ? cls.property_bits : cls.absent_property_bits) |= bit;
      return true;
    }
    if (c != 'p' && c != 'P') return false;
    ++pos_;
    std::string name;
    if (eat('{')) {
      while (!at_end() && peek() != '}') name.push_back(text_[pos_++]);
      if (!eat('}')) fail("missing '}' after \\p{");
    } else {
      name.push_back(static_cast<char>(next_char()));
    }
    const uint32_t set = category_set(name.data(), name.size());
    if (set == 0) fail(cat("unsupported Unicode property '", name, "'"));
    cls.categories |= c == 'p' ? set : ~set & ((1u << static_cast<int>(GeneralCategory::kCount)) - 1);
    return true;
  }

  char32_t parse_literal_escape() {
    const char32_t c = next_char();
    auto hex = [&](size_t digits) {
      char32_t value = 0;
      for (size_t i = 0; i < digits; ++i) {
        const char h = peek();
        const int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                    : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0) fail("bad hex escape");
        ++pos_;
        value = value * 16 + d;
      }
      return value;
    };
    switch (c) {
      case 'n': return '\n';
      case 'r': return '\r';
      case 't': return '\t';
      case 'f': return '\f';
      case 'v': return '\v';
      case 'a': return '\a';
      case 'e': return 0x1B;
      case '0': return 0;
      case 'u': return hex(4);
      case 'x':
        if (eat('{')) {
          char32_t value = 0;
          while (peek() != '}') value = value * 16 + hex(1);
          ++pos_;
          return value;
        }
        return hex(2);
      default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
          fail(cat("unsupported escape \\", static_cast<char>(c)));
        return c;
    }
  }

  void add_literal(ClassBuilder& cls, char32_t cp) { add_range(cls, cp, cp); }

  void add_range(ClassBuilder& cls, char32_t lo, char32_t hi) {
    cls.ranges.push_back({lo, hi});
    if (!case_insensitive_) return;
    if (hi >= 128) fail("case-insensitive matching of non-ASCII characters is not supported");
    for (char32_t c = lo; c <= hi; ++c) {
      const char32_t lower = c | 0x20;
      if (lower < 'a' || lower > 'z') continue;
      cls.ranges.push_back({lower, lower});
      cls.ranges.push_back({lower & ~0x20u, lower & ~0x20u});
      // Unicode simple case folding maps these two non-ASCII letters onto ASCII ones.
      if (lower == 's') cls.ranges.push_back({0x17F, 0x17F});
      if (lower == 'k') cls.ranges.push_back({0x212A, 0x212A});
    }
  }

  Node class_node(const ClassBuilder& b) {
    Regex::CharClass cls;
    cls.categories = b.categories;
    cls.property_bits = b.property_bits;
    cls.absent_property_bits = b.absent_property_bits;
    cls.negated = b.negated;
    for (const auto& range : b.ranges) {
      if (range.second >= 128) cls.ranges.push_back({std::max<char32_t>(range.first, 128), range.second});
    }
    // Decide every ASCII code point now, so that matching ASCII is one bit test.
    for (char32_t c = 0; c < 128; ++c) {
      const uint8_t props = unicode_properties(c);
      bool hit = ((b.categories >> (props & kCategoryMask)) & 1) || (props & b.property_bits) ||
                 (~props & b.absent_property_bits);
      for (const auto& [lo, hi] : b.ranges) hit = hit || (c >= lo && c <= hi);
      if (hit != b.negated) cls.ascii[c >> 6] |= uint64_t{1} << (c & 63);
    }
    regex_.classes_.push_back(std::move(cls));
    Node node = make_node(Node::Kind::kClass);
    node.class_index = static_cast<int>(regex_.classes_.size() - 1);
    return node;
  }

  static bool nullable(const Node& n) {
    switch (n.kind) {
      case Node::Kind::kClass: return false;
      case Node::Kind::kConcat:
        for (const Node& c : n.children) {
          if (!nullable(c)) return false;
        }
        return true;
      case Node::Kind::kAlternate:
        for (const Node& c : n.children) {
          if (nullable(c)) return true;
        }
        return false;
      case Node::Kind::kRepeat: return n.min == 0 || nullable(n.children[0]);
      default: return true;
    }
  }

  int push(Regex::Op op) {
    regex_.program_.push_back({op});
    return static_cast<int>(regex_.program_.size() - 1);
  }
  int here() const { return static_cast<int>(regex_.program_.size()); }
  void set_split(int at, int preferred, int other) {
    regex_.program_[at].x = preferred;
    regex_.program_[at].y = other;
  }

  void emit(const Node& n) {
    auto& program = regex_.program_;
    switch (n.kind) {
      case Node::Kind::kEmpty: break;
      case Node::Kind::kClass: program[push(Regex::Op::kClass)].x = n.class_index; break;
      case Node::Kind::kConcat:
        for (const Node& c : n.children) emit(c);
        break;
      case Node::Kind::kAlternate: {
        std::vector<int> exits;
        for (size_t i = 0; i + 1 < n.children.size(); ++i) {
          const int split = push(Regex::Op::kSplit);
          emit(n.children[i]);
          exits.push_back(push(Regex::Op::kJump));
          set_split(split, split + 1, here());
        }
        emit(n.children.back());
        for (int e : exits) program[e].x = here();
        break;
      }
      case Node::Kind::kRepeat: {
        for (int i = 0; i < n.min; ++i) emit(n.children[0]);
        if (n.max == -1) {
          const int split = push(Regex::Op::kSplit);
          emit(n.children[0]);
          program[push(Regex::Op::kJump)].x = split;
          n.greedy ? set_split(split, split + 1, here()) : set_split(split, here(), split + 1);
          break;
        }
        // Optional copies nest: skipping one skips the rest, so lengths are tried longest (or shortest) first.
        std::vector<int> splits;
        for (int i = n.min; i < n.max; ++i) {
          splits.push_back(push(Regex::Op::kSplit));
          emit(n.children[0]);
        }
        for (int s : splits) n.greedy ? set_split(s, s + 1, here()) : set_split(s, here(), s + 1);
        break;
      }
      case Node::Kind::kLookAhead: {
        const int look = push(Regex::Op::kLookAhead);
        program[look].negate = n.negate;
        emit(n.children[0]);
        push(Regex::Op::kMatch);
        program[look].x = here();
        break;
      }
    }
  }

  Regex& regex_;
  std::string_view text_;
  size_t pos_ = 0;
  bool case_insensitive_ = false;
};

Regex::Regex(std::string_view pattern) : pattern_(pattern) {
  RegexCompiler(*this).compile();
  compute_start_bytes();
}

}  // namespace narwhal::text
