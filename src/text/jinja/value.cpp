// Python semantics of Jinja values: truth, equality, ordering, iteration, conversion from JSON.
#include "text/jinja/value.h"

#include <cmath>

#include "core/error.h"
#include "text/utf8.h"

namespace narwhal::text::jinja {

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Dict::set(const std::string& key, Value value) {
  for (auto& [k, v] : items) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(key, std::move(value));
}

const Value& CallArgs::get(size_t index, const char* name, const Value& fallback) const {
  if (index < positional.size()) return positional[index];
  for (const auto& [key, value] : keywords) {
    if (key == name) return value;
  }
  return fallback;
}

Value Value::list(std::vector<Value> items, bool is_tuple) {
  auto l = std::make_shared<List>();
  l->items = std::move(items);
  l->is_tuple = is_tuple;
  return Value(std::move(l));
}

Value Value::dict() { return Value(std::make_shared<Dict>()); }

namespace {

Value from_json_at(const nlohmann::ordered_json& json, int depth) {
  if (depth > Value::kMaxJsonDepth && json.is_structured())
    throw Error(cat("template input nests arrays and objects deeper than ", Value::kMaxJsonDepth, " levels"));
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null: return Value(nullptr);
    case nlohmann::ordered_json::value_t::boolean: return Value(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {  // beyond int64, a float as close as Python's would be
      const uint64_t u = json.get<uint64_t>();
      return u <= static_cast<uint64_t>(INT64_MAX) ? Value(static_cast<int64_t>(u)) : Value(static_cast<double>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value(json.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      Value out = Value::list();
      for (const auto& item : json) out.as_list().items.push_back(from_json_at(item, depth + 1));
      return out;
    }
    case nlohmann::ordered_json::value_t::object: {
      Value out = Value::dict();
      for (const auto& [key, item] : json.items()) out.as_dict().items.emplace_back(key, from_json_at(item, depth + 1));
      return out;
    }
    default: throw Error("unsupported JSON value in template input");
  }
}

}  // namespace

Value Value::from_json(const nlohmann::ordered_json& json) { return from_json_at(json, 1); }

bool Value::truthy() const {
  if (is_undefined() || is_none()) return false;
  if (is_bool()) return std::get<bool>(v_);
  if (is_int()) return as_int() != 0;
  if (is_float()) return as_double() != 0.0;
  if (is_string()) return !as_string().empty();
  if (is_list()) return !as_list().items.empty();
  if (is_dict()) return as_dict().is_namespace || !as_dict().items.empty();
  return true;
}

std::string Value::type_name() const {
  if (is_undefined()) return "Undefined";
  if (is_none()) return "NoneType";
  if (is_bool()) return "bool";
  if (is_int()) return "int";
  if (is_float()) return "float";
  if (is_string()) return "str";
  if (is_list()) return as_list().is_tuple ? "tuple" : "list";
  if (is_dict()) return as_dict().is_namespace ? "Namespace" : "dict";
  return "function";
}

std::string Value::str() const {
  if (is_undefined()) return "";
  if (is_string()) return as_string();
  return repr();
}

std::string Value::repr() const {
  if (is_undefined()) return "Undefined";
  if (is_none()) return "None";
  if (is_bool()) return std::get<bool>(v_) ? "True" : "False";
  if (is_int()) return std::to_string(as_int());
  if (is_float()) return float_repr(as_double());
  if (is_string()) {
    // Python prefers single quotes unless the text has one and no double quote.
    const std::string& s = as_string();
    const char quote = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
    std::string out(1, quote);
    for (unsigned char c : s) {
      if (c == '\\' || c == quote) out += '\\', out += static_cast<char>(c);
      else if (c == '\n') out += "\\n";
      else if (c == '\r') out += "\\r";
      else if (c == '\t') out += "\\t";
      else if (c < 0x20 || c == 0x7F) out += cat("\\x", "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15]);
      else out += static_cast<char>(c);
    }
    return out + quote;
  }
  if (is_list()) {
    const List& l = as_list();
    std::string out = l.is_tuple ? "(" : "[";
    for (size_t i = 0; i < l.items.size(); ++i) out += (i ? ", " : "") + l.items[i].repr();
    if (l.is_tuple && l.items.size() == 1) out += ",";
    return out + (l.is_tuple ? ")" : "]");
  }
  if (is_dict()) {
    const Dict& d = as_dict();
    std::string out = d.is_namespace ? "<Namespace {" : "{";
    for (size_t i = 0; i < d.items.size(); ++i) {
      out += (i ? ", " : "") + Value(d.items[i].first).repr() + ": " + d.items[i].second.repr();
    }
    return out + (d.is_namespace ? "}>" : "}");
  }
  return "<function>";
}

bool Value::equals(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (is_float() || other.is_float()) return as_double() == other.as_double();
    return as_int() == other.as_int();
  }
  if (v_.index() != other.v_.index()) return false;
  if (is_undefined() || is_none()) return true;
  if (is_string()) return as_string() == other.as_string();
  if (is_list()) {
    const auto& a = as_list().items;
    const auto& b = other.as_list().items;
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!a[i].equals(b[i])) return false;
    }
    return true;
  }
  if (is_dict()) {
    const Dict& a = as_dict();
    const Dict& b = other.as_dict();
    if (a.items.size() != b.items.size()) return false;
    for (const auto& [k, v] : a.items) {
      const Value* w = b.find(k);
      if (!w || !v.equals(*w)) return false;
    }
    return true;
  }
  return std::get<std::shared_ptr<Function>>(v_) == std::get<std::shared_ptr<Function>>(other.v_);
}

bool Value::less(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (is_float() || other.is_float()) return as_double() < other.as_double();
    return as_int() < other.as_int();
  }
  if (is_string() && other.is_string()) return as_string() < other.as_string();  // UTF-8 order = code point order
  if (is_list() && other.is_list()) {
    const auto& a = as_list().items;
    const auto& b = other.as_list().items;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
      if (!a[i].equals(b[i])) return a[i].less(b[i]);
    }
    return a.size() < b.size();
  }
  throw Error(cat("'<' not supported between instances of '", type_name(), "' and '", other.type_name(), "'"));
}

std::vector<Value> Value::iterate() const {
  if (is_undefined()) return {};
  if (is_list()) return as_list().items;
  if (is_dict()) {
    std::vector<Value> keys;
    for (const auto& item : as_dict().items) keys.emplace_back(item.first);
    return keys;
  }
  if (is_string()) {
    std::vector<Value> chars;
    const std::string& s = as_string();
    for (size_t pos = 0; pos < s.size();) {
      const size_t start = pos;
      next_code_point(s, pos);
      chars.emplace_back(s.substr(start, pos - start));
    }
    return chars;
  }
  throw Error(cat("'", type_name(), "' object is not iterable"));
}

size_t Value::length() const {
  if (is_string()) {
    size_t n = 0;
    for (unsigned char c : as_string()) n += (c & 0xC0) != 0x80;  // code points, as Python counts
    return n;
  }
  if (is_list()) return as_list().items.size();
  if (is_dict()) return as_dict().items.size();
  throw Error(cat("object of type '", type_name(), "' has no len()"));
}

}  // namespace narwhal::text::jinja
