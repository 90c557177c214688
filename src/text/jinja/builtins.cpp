// Jinja tests, the Python str/dict methods templates call, and the globals of HF's chat template environment.
#include <algorithm>
#include <ctime>

#include "core/error.h"
#include "text/jinja/interpreter.h"
#include "text/utf8.h"

namespace narwhal::text::jinja {
namespace {

const Value kNone(nullptr);

std::vector<Value> split(const std::string& s, const Value& separator, int64_t max_split) {
  std::vector<Value> parts;
  if (separator.is_none() || separator.is_undefined()) {
    // Runs of whitespace separate; leading and trailing whitespace yields nothing.
    size_t pos = 0, at;
    while (pos < s.size()) {
      while (pos < s.size()) {
        at = pos;
        if (!python_isspace(next_code_point(s, at))) break;
        pos = at;
      }
      if (pos >= s.size()) break;
      if (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split) {
        parts.emplace_back(python_strip(s.substr(pos), kNone, false, true));
        break;
      }
      const size_t start = pos;
      while (pos < s.size()) {
        at = pos;
        if (python_isspace(next_code_point(s, at))) break;
        pos = at;
      }
      parts.emplace_back(s.substr(start, pos - start));
    }
    return parts;
  }
  const std::string& sep = separator.as_string();
  if (sep.empty()) throw Error("empty separator");
  size_t pos = 0;
  for (;;) {
    const size_t hit = s.find(sep, pos);
    if (hit == std::string::npos || (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split)) break;
    parts.emplace_back(s.substr(pos, hit - pos));
    pos = hit + sep.size();
  }
  parts.emplace_back(s.substr(pos));
  return parts;
}

bool affix_matches(const std::string& s, const Value& affixes, bool at_start) {
  const auto one = [&](const Value& a) {
    const std::string& x = a.as_string();
    return x.size() <= s.size() && s.compare(at_start ? 0 : s.size() - x.size(), x.size(), x) == 0;
  };
  if (affixes.is_list()) return std::any_of(affixes.as_list().items.begin(), affixes.as_list().items.end(), one);
  if (!affixes.is_string()) throw Error("startswith/endswith need a string or a tuple of strings");
  return one(affixes);
}

bool string_method(const std::string& s, const std::string& name, const CallArgs& args, Value* result) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    *result = Value(python_strip(s, args.get(0, "chars", kNone), name != "rstrip", name != "lstrip"));
  } else if (name == "split") {
    *result = Value::list(split(s, args.get(0, "sep", kNone), args.get(1, "maxsplit", Value(-1)).as_int()));
  } else if (name == "startswith" || name == "endswith") {
    *result = Value(affix_matches(s, args.get(0, "prefix", kNone), name == "startswith"));
  } else if (name == "upper" || name == "lower" || name == "capitalize" || name == "replace") {
    apply_filter(name, Value(s), args, result);
  } else if (name == "find") {
    const size_t hit = s.find(args.get(0, "sub", Value("")).str());
    *result = Value(hit == std::string::npos ? int64_t{-1} : static_cast<int64_t>(Value(s.substr(0, hit)).length()));
  } else if (name == "count") {
    const std::string sub = args.get(0, "sub", Value("")).str();
    int64_t n = 0;
    for (size_t pos = 0; !sub.empty() && (pos = s.find(sub, pos)) != std::string::npos; pos += sub.size()) ++n;
    *result = Value(n);
  } else if (name == "join") {
    std::string out;
    bool first = true;
    for (const Value& item : args.get(0, "iterable", kNone).iterate()) {
      if (!item.is_string()) throw Error(cat("sequence item: expected str instance, ", item.type_name(), " found"));
      out += (first ? "" : s) + item.as_string();
      first = false;
    }
    *result = Value(std::move(out));
  } else {
    return false;
  }
  return true;
}

bool dict_method(const Dict& d, const std::string& name, const CallArgs& args, Value* result) {
  std::vector<Value> out;
  if (name == "items") {
    for (const auto& [k, v] : d.items) out.push_back(Value::list({Value(k), v}, true));
  } else if (name == "keys") {
    for (const auto& item : d.items) out.emplace_back(item.first);
  } else if (name == "values") {
    for (const auto& item : d.items) out.push_back(item.second);
  } else if (name == "get") {
    const Value key = args.get(0, "key", kNone);
    const Value* found = key.is_string() ? d.find(key.as_string()) : nullptr;
    *result = found ? *found : args.get(1, "default", kNone);
    return true;
  } else {
    return false;
  }
  *result = Value::list(std::move(out));
  return true;
}

}  // namespace

bool call_method(const Value& object, const std::string& name, const CallArgs& args, Value* result) {
  if (object.is_string()) return string_method(object.as_string(), name, args, result);
  if (object.is_dict() && !object.as_dict().is_namespace) return dict_method(object.as_dict(), name, args, result);
  return false;
}

bool apply_test(const std::string& name, const Value& v, const CallArgs& args, bool* result) {
  const Value& other = args.get(0, "other", kNone);
  if (name == "defined") *result = !v.is_undefined();
  else if (name == "undefined") *result = v.is_undefined();
  else if (name == "none") *result = v.is_none();
  else if (name == "boolean") *result = v.is_bool();
  else if (name == "true" || name == "false") *result = v.is_bool() && v.truthy() == (name == "true");
  else if (name == "integer") *result = v.is_int() && !v.is_bool();
  else if (name == "float") *result = v.is_float();
  else if (name == "number") *result = v.is_number();
  else if (name == "string") *result = v.is_string();
  else if (name == "mapping") *result = v.is_dict();
  else if (name == "iterable") *result = v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  else if (name == "sequence") *result = v.is_list() || v.is_dict() || v.is_string();
  else if (name == "callable") *result = v.is_callable();
  else if (name == "sameas") *result = v.equals(other) && (v.is_none() || v.is_bool() || v.is_list() || v.is_dict());
  else if (name == "odd" || name == "even") *result = v.is_int() && (v.as_int() % 2 != 0) == (name == "odd");
  else if (name == "divisibleby") *result = other.as_int() != 0 && v.as_int() % other.as_int() == 0;
  else if (name == "lower" || name == "upper") {
    const std::string s = v.str();
    *result = std::none_of(s.begin(), s.end(), [&](char c) { return name == "lower" ? std::isupper(c) : std::islower(c); });
  } else {
    static const std::pair<const char*, const char*> kComparisons[] = {
        {"equalto", "=="}, {"eq", "=="}, {"==", "=="}, {"ne", "!="}, {"!=", "!="}, {"lt", "<"}, {"<", "<"},
        {"lessthan", "<"}, {"le", "<="}, {"<=", "<="}, {"gt", ">"}, {">", ">"}, {"greaterthan", ">"},
        {"ge", ">="}, {">=", ">="}, {"in", "in"}};
    for (const auto& [test, op] : kComparisons) {
      if (name == test) {
        *result = apply_operator(op, v, other).truthy();
        return true;
      }
    }
    return false;
  }
  return true;
}

Variables builtin_globals() {
  Variables globals;
  globals.emplace_back("range", Value(Function([](const CallArgs& args) {
    const auto& p = args.positional;
    if (p.empty() || p.size() > 3) throw Error("range expects 1 to 3 arguments");
    const int64_t start = p.size() > 1 ? p[0].as_int() : 0, stop = p.size() > 1 ? p[1].as_int() : p[0].as_int();
    const int64_t step = p.size() > 2 ? p[2].as_int() : 1;
    if (step == 0) throw Error("range() arg 3 must not be zero");
    std::vector<Value> out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.emplace_back(i);
    return Value::list(std::move(out));
  })));
  globals.emplace_back("namespace", Value(Function([](const CallArgs& args) {
    Value ns = Value::dict();
    ns.as_dict().is_namespace = true;
    for (const Value& initial : args.positional) {
      if (initial.is_dict()) ns.as_dict().items = initial.as_dict().items;
    }
    for (const auto& [key, value] : args.keywords) ns.as_dict().set(key, value);
    return ns;
  })));
  globals.emplace_back("dict", Value(Function([](const CallArgs& args) {
    Value d = Value::dict();
    for (const auto& [key, value] : args.keywords) d.as_dict().set(key, value);
    return d;
  })));
  // HF's chat template globals.
  globals.emplace_back("raise_exception", Value(Function([](const CallArgs& args) -> Value {
    throw Error(args.get(0, "message", Value("")).str());
  })));
  globals.emplace_back("strftime_now", Value(Function([](const CallArgs& args) {
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buf[256];
    const size_t n = std::strftime(buf, sizeof buf, args.get(0, "format", Value("")).str().c_str(), &local);
    return Value(std::string(buf, n));
  })));
  return globals;
}

}  // namespace narwhal::text::jinja
