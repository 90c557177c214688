// JsonGrammar (a JSON Schema, or any JSON object, as a tree of value nodes) and JsonMatcher (which bytes may come
// next): structured output's byte-level half; grammar_vocab.h turns a matcher's state into a token mask.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/json.h"

namespace narwhal {

// Schemas keep their keys' order: the output lists an object's properties in it.
using SchemaJson = nlohmann::ordered_json;

// One value the output may hold at some place. Objects list their properties in the schema's order, as xgrammar
// generates them: each may be left out unless required; with `free_keys` any string key may come, any number of
// times, with the `value` node's values (a JSON object of any keys). Unions are alternatives (anyOf, oneOf, enum,
// several types); literals are exact byte strings, one of a set (const, enum values, true / false / null): one parse
// follows the whole set, so an enum of any size costs one.
struct GrammarNode {
  enum class Kind { kObject, kArray, kString, kNumber, kInteger, kLiteral, kUnion };
  struct Property {
    std::string key;  // JSON-encoded, quotes included: "\"name\""
    int value = -1;
    bool required = false;
  };
  Kind kind = Kind::kUnion;
  std::vector<Property> properties;  // kObject
  bool free_keys = false;            // kObject: any keys, each with `value`
  int value = -1;                    // kObject with free_keys: the values' node; kArray: the items' node
  int64_t min_items = 0, max_items = -1;  // kArray (-1: no limit)
  std::vector<std::string> literals;  // kLiteral: sorted, unique
  std::vector<int> options;          // kUnion

  static GrammarNode of(Kind kind, int value = -1) {
    GrammarNode n;
    n.kind = kind;
    n.value = value;
    return n;
  }
  static GrammarNode one_of(std::vector<std::string> literals);
  static GrammarNode any_of(std::vector<int> options) {
    GrammarNode n;
    n.options = std::move(options);
    return n;
  }
  static GrammarNode free_object(int value) {
    GrammarNode n = of(Kind::kObject, value);
    n.free_keys = true;
    return n;
  }
};

// Where a parse stands: a stack of frames, innermost last (empty: the value is complete).
struct GrammarFrame {
  int32_t node = 0;
  int32_t phase = 0;
  // Phase data: a property index, an item count, or the first literal still matching (a); a key or literal offset,
  // or the whitespace bytes in a row (b). A literal set's frame keeps the end of its matching range in phase.
  int32_t a = 0, b = 0;
  auto operator<=>(const GrammarFrame&) const = default;
};
using GrammarStack = std::vector<GrammarFrame>;
// The parses the bytes so far allow: several where alternatives share a prefix; none once the bytes broke them all.
using GrammarState = std::vector<GrammarStack>;

// The automaton over bytes. JSON's whitespace may come between the tokens of objects and arrays (kMaxSpaceRun
// bytes in a row at most); none before or after the whole value. Strings take any byte but the quote, the backslash
// (escapes are checked) and control characters: UTF-8 is not validated. Nesting deeper than kMaxDepth is not
// allowed (a model cannot open brackets forever).
class JsonGrammar {
 public:
  static constexpr size_t kMaxDepth = 64;
  // Whitespace bytes in a row between an object's or array's tokens: a newline and 4-space indents 7 levels deep,
  // few enough that a model cannot spend its tokens on it (one that favours whitespace still reaches the end).
  static constexpr int32_t kMaxSpaceRun = 32;
  // Parses followed at once (alternatives sharing a prefix): more are dropped, the last in sort order first, which
  // only narrows what may come next (every parse kept can still complete). It bounds a hostile schema's cost.
  static constexpr size_t kMaxParses = 256;
  // Nodes a schema may compile to, and properties an object may list (a larger one is refused by name). At a key
  // every property up to the next required one is a parse, so the properties' cap keeps an object within
  // kMaxParses.
  static constexpr size_t kMaxNodes = 1 << 16;
  static constexpr size_t kMaxProperties = kMaxParses;

  JsonGrammar() : string_(add(GrammarNode::of(GrammarNode::Kind::kString))) {}

  // OpenAI's response_format {"type": "json_object"}: one JSON object, any keys and values.
  static std::shared_ptr<const JsonGrammar> any_object();
  // A JSON Schema: type (one or a list), properties / required / additionalProperties, items / minItems /
  // maxItems, enum, const, anyOf / oneOf, allOf of one schema, $ref into #/$defs or #/definitions (recursion too);
  // annotations (title, description, default, examples, ...) are ignored. Any other keyword, which would constrain
  // what is not enforced (pattern, format, minimum, ...), throws Error naming it and where it stands.
  // `suffix`: bytes that must follow the value before the output may end (a tool call's closing tags).
  static std::shared_ptr<const JsonGrammar> from_schema(const SchemaJson& schema, std::string suffix = {});

  GrammarState start() const;
  // `in` after one more byte, into `out` (sorted, without repeats); false when no parse survives.
  bool advance(const GrammarState& in, unsigned char byte, GrammarState& out) const;
  // The value may end here (a complete value, or a number that could also go on).
  bool can_end(const GrammarState& state) const;
  // Nothing may follow: every parse is complete.
  static bool finished(const GrammarState& state);
  // Every parse is inside a string's characters, where any byte but '"', '\\' and controls leaves it as it is.
  bool in_plain_string(const GrammarState& state) const;

  const GrammarNode& node(int id) const { return nodes_[static_cast<size_t>(id)]; }

 private:
  friend class SchemaCompiler;
  int add(GrammarNode node);
  int any_value();  // the node for any JSON value (made once)
  // Pushes node `id`'s frame onto `stack` (a union: a copy per option) into `out`.
  void enter(GrammarStack stack, int id, GrammarState& out) const;
  // enter() through a union: each union once (`seen`), so unions of unions that meet again, or refer to themselves,
  // cost their size, not paths through them.
  void enter_union(const GrammarStack& stack, int id, GrammarState& out, std::vector<int>& seen) const;
  // Feeds `byte` to `stack`'s innermost frame (a finished number pops first and passes it on), into `out`.
  void step(GrammarStack stack, unsigned char byte, GrammarState& out) const;
  void step_object(GrammarStack& stack, unsigned char byte, GrammarState& out) const;
  void step_array(GrammarStack& stack, unsigned char byte, GrammarState& out) const;
  bool step_number(GrammarFrame& f, bool integer, unsigned char byte) const;

  std::vector<GrammarNode> nodes_;
  int string_;  // any string: free keys' frames
  int root_ = -1;
  int suffix_ = -1;  // a literal under the root's frame: it takes over once the value is complete
  int any_ = -1;
};

// One sequence's place in its grammar.
class JsonMatcher {
 public:
  explicit JsonMatcher(std::shared_ptr<const JsonGrammar> grammar)
      : grammar_(std::move(grammar)), state_(grammar_->start()) {}
  // Takes `bytes`; false (and the state unchanged) if the grammar does not allow them here.
  bool advance(std::string_view bytes);
  bool can_end() const { return grammar_->can_end(state_); }
  bool finished() const { return JsonGrammar::finished(state_); }
  const JsonGrammar& grammar() const { return *grammar_; }
  const GrammarState& state() const { return state_; }

 private:
  std::shared_ptr<const JsonGrammar> grammar_;
  GrammarState state_;
};

}  // namespace narwhal
