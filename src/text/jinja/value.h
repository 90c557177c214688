// Values of the Jinja interpreter, with Python's semantics (what HF chat templates are written against).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace narwhal::text::jinja {

class Value;

struct List {
  std::vector<Value> items;
  bool is_tuple = false;  // only changes how it prints: (1, 2)
};

// Insertion-ordered like a Python dict. Keys are strings, as in JSON.
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;  // namespace(): the one object templates may assign attributes to

  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value value);
};

struct CallArgs;
// Built-in functions and macros.
using Function = std::function<Value(const CallArgs& args)>;

struct Undefined {
  std::string name;  // what was looked up, for error messages
};

class Value {
 public:
  using Storage = std::variant<Undefined, std::nullptr_t, bool, int64_t, double, std::string, std::shared_ptr<List>,
                               std::shared_ptr<Dict>, std::shared_ptr<Function>>;

  Value() : v_(Undefined{}) {}
  Value(std::nullptr_t) : v_(nullptr) {}
  Value(bool b) : v_(b) {}
  Value(int i) : v_(static_cast<int64_t>(i)) {}
  Value(int64_t i) : v_(i) {}
  Value(double d) : v_(d) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(std::shared_ptr<List> l) : v_(std::move(l)) {}
  Value(std::shared_ptr<Dict> d) : v_(std::move(d)) {}
  Value(Function f) : v_(std::make_shared<Function>(std::move(f))) {}
  static Value undefined(std::string name) { return Value(Storage(Undefined{std::move(name)})); }
  static Value list(std::vector<Value> items = {}, bool is_tuple = false);
  static Value dict();
  // JSON objects keep their key order, as Python dicts from json.load do. Throws Error for a value nested deeper
  // than kMaxJsonDepth: repr, tojson, == and the destructor all recurse once per level.
  static Value from_json(const nlohmann::ordered_json& json);
  static constexpr int kMaxJsonDepth = 512;

  bool is_undefined() const { return std::holds_alternative<Undefined>(v_); }
  bool is_none() const { return std::holds_alternative<std::nullptr_t>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_int() const { return std::holds_alternative<int64_t>(v_) || is_bool(); }  // Python: bool is an int
  bool is_float() const { return std::holds_alternative<double>(v_); }
  bool is_number() const { return is_int() || is_float(); }
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_list() const { return std::holds_alternative<std::shared_ptr<List>>(v_); }
  bool is_dict() const { return std::holds_alternative<std::shared_ptr<Dict>>(v_); }
  bool is_callable() const { return std::holds_alternative<std::shared_ptr<Function>>(v_); }

  int64_t as_int() const { return is_bool() ? std::get<bool>(v_) : std::get<int64_t>(v_); }
  double as_double() const { return is_float() ? std::get<double>(v_) : static_cast<double>(as_int()); }
  const std::string& as_string() const { return std::get<std::string>(v_); }
  List& as_list() const { return *std::get<std::shared_ptr<List>>(v_); }
  Dict& as_dict() const { return *std::get<std::shared_ptr<Dict>>(v_); }
  Function& as_function() const { return *std::get<std::shared_ptr<Function>>(v_); }
  const std::string& undefined_name() const { return std::get<Undefined>(v_).name; }

  // Python's bool(), str(), repr(), ==, <; type_name() as in Python's error messages.
  bool truthy() const;
  std::string str() const;
  std::string repr() const;
  bool equals(const Value& other) const;
  bool less(const Value& other) const;  // throws Error for unorderable types
  std::string type_name() const;

  // Elements when iterated: list items, dict keys, string characters; Error for anything else.
  std::vector<Value> iterate() const;
  size_t length() const;

 private:
  explicit Value(Storage v) : v_(std::move(v)) {}
  Storage v_;
};

// Positional and keyword arguments of a filter, test, method or function call.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;

  // The argument at `index` or named `name`, else `fallback`.
  const Value& get(size_t index, const char* name, const Value& fallback) const;
};

// Python's json.dumps(value, ensure_ascii, indent, separators, sort_keys): HF's tojson filter.
// indent: the text of one level, none for a single line.
std::string to_json(const Value& value, bool ensure_ascii, const std::optional<std::string>& indent,
                    const std::string& item_separator, const std::string& key_separator, bool sort_keys);

// Python's str.isspace() for one character, and str.strip / lstrip / rstrip (chars none: whitespace).
bool python_isspace(char32_t cp);
std::string python_strip(const std::string& text, const Value& chars, bool left, bool right);

// repr() of a float, as Python prints it: 1.0, 0.1, 1e-05, 1e+16, inf, nan.
std::string float_repr(double d);

}  // namespace narwhal::text::jinja
