// JsonGrammar's automaton: a byte moves every parse's innermost frame on (objects, arrays, strings, numbers,
// literals), and a union entered branches the parse.
#include "runtime/json_grammar.h"

#include <algorithm>

#include "core/error.h"

namespace narwhal {

namespace {

using Kind = GrammarNode::Kind;

bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_hex(unsigned char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Object phases: before '{'; after '{' (a: the next property); in a key literal (a: the property, b: its offset);
// after a key; after ':'; after a value (a: its property); after ',' (a: the next property).
enum ObjectPhase { kOpen, kFirstKey, kInKey, kAfterKey, kAfterColon, kAfterValue, kNextKey };
// Array phases: before '['; after '['; after an item (a: items so far); after ','.
enum ArrayPhase { kArrayOpen, kFirstItem, kAfterItem, kNextItem };
// String phases: before '"'; in its characters; after '\\'; in \uXXXX (a: hex digits so far).
enum StringPhase { kQuote, kChars, kEscape, kUnicode };
// Number phases (JSON's grammar): before it; after '-'; after a leading 0; in the integer digits; after '.';
// in the fraction; after 'e'; after the exponent's sign; in the exponent.
enum NumberPhase { kStart, kMinus, kZero, kInt, kDot, kFrac, kExp, kExpSign, kExpDigits };

bool number_may_end(int32_t phase) {
  return phase == kZero || phase == kInt || phase == kFrac || phase == kExpDigits;
}

// Whether properties [from, end) hold a required one.
bool requires_more(const GrammarNode& n, int32_t from) {
  for (size_t j = static_cast<size_t>(from); j < n.properties.size(); ++j)
    if (n.properties[j].required) return true;
  return false;
}

}  // namespace

GrammarNode GrammarNode::one_of(std::vector<std::string> literals) {
  std::sort(literals.begin(), literals.end());
  literals.erase(std::unique(literals.begin(), literals.end()), literals.end());
  NW_CHECK(!literals.empty() && !literals[0].empty(), "a literal set needs non-empty literals");
  GrammarNode n = of(Kind::kLiteral);
  n.literals = std::move(literals);
  return n;
}

int JsonGrammar::add(GrammarNode node) {
  NW_CHECK(nodes_.size() < kMaxNodes, "the schema is too large for structured output (more than ", kMaxNodes,
           " values and alternatives)");
  nodes_.push_back(std::move(node));
  return static_cast<int>(nodes_.size()) - 1;
}

int JsonGrammar::any_value() {
  if (any_ >= 0) return any_;
  any_ = add({});  // a union, filled below: its object and array refer back to it
  std::vector<int> options = {add(GrammarNode::free_object(any_)), add(GrammarNode::of(Kind::kArray, any_)), string_,
                              add(GrammarNode::of(Kind::kNumber))};
  options.push_back(add(GrammarNode::one_of({"true", "false", "null"})));
  nodes_[static_cast<size_t>(any_)].options = std::move(options);
  return any_;
}

std::shared_ptr<const JsonGrammar> JsonGrammar::any_object() {
  auto g = std::make_shared<JsonGrammar>();
  const int value = g->any_value();
  g->root_ = g->add(GrammarNode::free_object(value));
  return g;
}

GrammarState JsonGrammar::start() const {
  GrammarState state;
  GrammarStack base;
  if (suffix_ >= 0) base.push_back({suffix_, 1, 0, 0});  // a set of one literal: [0, 1) at offset 0
  enter(base, root_, state);
  std::sort(state.begin(), state.end());
  state.erase(std::unique(state.begin(), state.end()), state.end());
  if (state.size() > kMaxParses) state.resize(kMaxParses);
  return state;
}

void JsonGrammar::enter(GrammarStack stack, int id, GrammarState& out) const {
  const GrammarNode& n = node(id);
  if (n.kind == Kind::kUnion) {
    std::vector<int> seen;
    enter_union(stack, id, out, seen);
    return;
  }
  if (stack.size() >= kMaxDepth) return;
  const int32_t phase = n.kind == Kind::kLiteral ? static_cast<int32_t>(n.literals.size()) : 0;
  stack.push_back({id, phase, 0, 0});
  out.push_back(std::move(stack));
}

void JsonGrammar::enter_union(const GrammarStack& stack, int id, GrammarState& out, std::vector<int>& seen) const {
  if (std::find(seen.begin(), seen.end(), id) != seen.end()) return;  // its frames are in `out` already
  seen.push_back(id);
  for (int option : node(id).options) {
    if (node(option).kind == Kind::kUnion) enter_union(stack, option, out, seen);
    else enter(stack, option, out);
  }
}

bool JsonGrammar::advance(const GrammarState& in, unsigned char byte, GrammarState& out) const {
  out.clear();
  for (const GrammarStack& stack : in) step(stack, byte, out);
  if (out.size() > 1) {
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    if (out.size() > kMaxParses) out.resize(kMaxParses);
  }
  return !out.empty();
}

bool JsonGrammar::can_end(const GrammarState& state) const {
  return std::any_of(state.begin(), state.end(), [&](const GrammarStack& s) {
    if (s.empty()) return true;
    const Kind kind = node(s[0].node).kind;  // a number alone, where it may end, ends the value
    return s.size() == 1 && (kind == Kind::kNumber || kind == Kind::kInteger) && number_may_end(s[0].phase);
  });
}

bool JsonGrammar::finished(const GrammarState& state) {
  return !state.empty() && std::all_of(state.begin(), state.end(), [](const GrammarStack& s) { return s.empty(); });
}

bool JsonGrammar::in_plain_string(const GrammarState& state) const {
  return !state.empty() && std::all_of(state.begin(), state.end(), [&](const GrammarStack& s) {
    return !s.empty() && node(s.back().node).kind == Kind::kString && s.back().phase == kChars;
  });
}

void JsonGrammar::step(GrammarStack stack, unsigned char byte, GrammarState& out) const {
  if (stack.empty()) return;  // complete: nothing may follow
  GrammarFrame& f = stack.back();
  const GrammarNode& n = node(f.node);
  switch (n.kind) {
    case Kind::kLiteral: {
      // Literals [a, phase) share their first b bytes; those that go on with `byte` are a run of them.
      const auto& all = n.literals;
      const size_t at = static_cast<size_t>(f.b);
      const auto at_byte = [&](const std::string& l) { return static_cast<unsigned char>(l[at]); };
      const auto first = std::lower_bound(all.begin() + f.a, all.begin() + f.phase, byte,
                                          [&](const std::string& l, unsigned char c) { return at_byte(l) < c; });
      const auto last = std::upper_bound(first, all.begin() + f.phase, byte,
                                         [&](unsigned char c, const std::string& l) { return c < at_byte(l); });
      if (first == last) return;
      f.a = static_cast<int32_t>(first - all.begin());
      f.phase = static_cast<int32_t>(last - all.begin());
      f.b += 1;
      if (first->size() == at + 1) {  // one literal ends here (sorted first); the longer ones may go on
        GrammarStack done = stack;
        done.pop_back();
        out.push_back(std::move(done));
        if (++f.a == f.phase) return;
      }
      out.push_back(std::move(stack));
      return;
    }
    case Kind::kString:
      if (f.phase == kQuote) {
        if (byte != '"') return;
        f.phase = kChars;
      } else if (f.phase == kChars) {
        if (byte < 0x20) return;
        if (byte == '"') stack.pop_back();
        else if (byte == '\\') f.phase = kEscape;
      } else if (f.phase == kEscape) {
        if (byte == 'u') {
          f.phase = kUnicode;
          f.a = 0;
        } else if (std::string_view("\"\\/bfnrt").find(static_cast<char>(byte)) != std::string_view::npos) {
          f.phase = kChars;
        } else {
          return;
        }
      } else {
        if (!is_hex(byte)) return;
        if (++f.a == 4) f.phase = kChars;
      }
      out.push_back(std::move(stack));
      return;
    case Kind::kNumber:
    case Kind::kInteger:
      if (step_number(f, n.kind == Kind::kInteger, byte)) {
        out.push_back(std::move(stack));
      } else if (number_may_end(f.phase)) {  // the number ends here; the byte is its container's
        stack.pop_back();
        step(std::move(stack), byte, out);
      }
      return;
    case Kind::kObject: step_object(stack, byte, out); return;
    case Kind::kArray: step_array(stack, byte, out); return;
    case Kind::kUnion: return;  // never on a stack: enter() branches it
  }
}

bool JsonGrammar::step_number(GrammarFrame& f, bool integer, unsigned char c) const {
  const auto to = [&](NumberPhase p) {
    f.phase = p;
    return true;
  };
  switch (f.phase) {
    case kStart: return c == '-' ? to(kMinus) : c == '0' ? to(kZero) : is_digit(c) ? to(kInt) : false;
    case kMinus: return c == '0' ? to(kZero) : is_digit(c) ? to(kInt) : false;
    case kZero:
    case kInt:
      if (f.phase == kInt && is_digit(c)) return true;
      if (integer) return false;
      return c == '.' ? to(kDot) : (c == 'e' || c == 'E') ? to(kExp) : false;
    case kDot: return is_digit(c) ? to(kFrac) : false;
    case kFrac: return is_digit(c) ? true : (c == 'e' || c == 'E') ? to(kExp) : false;
    case kExp: return (c == '+' || c == '-') ? to(kExpSign) : is_digit(c) ? to(kExpDigits) : false;
    case kExpSign: return is_digit(c) ? to(kExpDigits) : false;
    case kExpDigits: return is_digit(c);
  }
  return false;
}

void JsonGrammar::step_object(GrammarStack& stack, unsigned char c, GrammarState& out) const {
  GrammarFrame& f = stack.back();
  const GrammarNode& n = node(f.node);
  const int32_t count = static_cast<int32_t>(n.properties.size());
  const bool space_ok = f.phase != kOpen && f.phase != kInKey;
  if (space_ok && is_space(c)) {
    if (f.b++ < kMaxSpaceRun) out.push_back(std::move(stack));
    return;
  }
  if (f.phase != kInKey) f.b = 0;
  switch (f.phase) {
    case kOpen:
      if (c != '{') return;
      f.phase = kFirstKey;
      f.a = 0;
      out.push_back(std::move(stack));
      return;
    case kFirstKey:
    case kNextKey:
      if (c == '}' && f.phase == kFirstKey && (n.free_keys || !requires_more(n, f.a))) {
        stack.pop_back();
        out.push_back(std::move(stack));
        return;
      }
      if (c != '"') return;
      if (n.free_keys) {  // the key is any string: its frame takes the characters
        f.phase = kAfterKey;
        stack.push_back({string_, kChars, 0, 0});
        out.push_back(std::move(stack));
        return;
      }
      // Which property this is: the next one, or a later one past optional ones (never past a required one).
      for (int32_t j = f.a; j < count; ++j) {
        GrammarStack branch = stack;
        branch.back() = {f.node, kInKey, j, 1};
        out.push_back(std::move(branch));
        if (n.properties[static_cast<size_t>(j)].required) break;
      }
      return;
    case kInKey: {
      const std::string& key = n.properties[static_cast<size_t>(f.a)].key;
      if (c != static_cast<unsigned char>(key[static_cast<size_t>(f.b)])) return;
      if (++f.b == static_cast<int32_t>(key.size())) {
        f.phase = kAfterKey;
        f.b = 0;
      }
      out.push_back(std::move(stack));
      return;
    }
    case kAfterKey:
      if (c != ':') return;
      f.phase = kAfterColon;
      out.push_back(std::move(stack));
      return;
    case kAfterColon: {
      f.phase = kAfterValue;
      const int value = n.free_keys ? n.value : n.properties[static_cast<size_t>(f.a)].value;
      GrammarState entered;
      enter(std::move(stack), value, entered);
      for (GrammarStack& s : entered) step(std::move(s), c, out);
      return;
    }
    case kAfterValue:
      if (c == ',' && (n.free_keys || f.a + 1 < count)) {
        f.phase = kNextKey;
        f.a += 1;
        out.push_back(std::move(stack));
      } else if (c == '}' && (n.free_keys || !requires_more(n, f.a + 1))) {
        stack.pop_back();
        out.push_back(std::move(stack));
      }
      return;
  }
}

void JsonGrammar::step_array(GrammarStack& stack, unsigned char c, GrammarState& out) const {
  GrammarFrame& f = stack.back();
  const GrammarNode& n = node(f.node);
  if (f.phase != kArrayOpen && is_space(c)) {
    if (f.b++ < kMaxSpaceRun) out.push_back(std::move(stack));
    return;
  }
  f.b = 0;
  const auto close = [&] {
    stack.pop_back();
    out.push_back(std::move(stack));
  };
  const auto item = [&] {
    f.phase = kAfterItem;
    f.a += 1;
    GrammarState entered;
    enter(std::move(stack), n.value, entered);
    for (GrammarStack& s : entered) step(std::move(s), c, out);
  };
  switch (f.phase) {
    case kArrayOpen:
      if (c != '[') return;
      f.phase = kFirstItem;
      f.a = 0;
      out.push_back(std::move(stack));
      return;
    case kFirstItem:
      if (c == ']') {
        if (n.min_items == 0) close();
      } else if (n.max_items != 0) {
        item();
      }
      return;
    case kAfterItem:
      if (c == ',' && (n.max_items < 0 || f.a < n.max_items)) {
        f.phase = kNextItem;
        out.push_back(std::move(stack));
      } else if (c == ']' && f.a >= n.min_items) {
        close();
      }
      return;
    case kNextItem: item(); return;
  }
}

bool JsonMatcher::advance(std::string_view bytes) {
  GrammarState state = state_, next;
  for (char c : bytes) {
    if (!grammar_->advance(state, static_cast<unsigned char>(c), next)) return false;
    std::swap(state, next);
  }
  state_ = std::move(state);
  return true;
}

}  // namespace narwhal
