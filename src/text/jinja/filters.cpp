// Jinja's built-in filters that chat templates use, with HF's tojson override.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "text/jinja/interpreter.h"
#include "text/utf8.h"

namespace narwhal::text::jinja {
namespace {

const Value kNone(nullptr);
const Value kFalse(false);

std::string change_case(const std::string& s, bool upper) {
  std::string out = s;
  for (char& c : out) c = upper ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c));
  return out;
}

Value attribute_of(const Value& item, const Value& attribute) {
  if (!item.is_dict() || !attribute.is_string()) return Value::undefined(attribute.str());
  const Value* found = item.as_dict().find(attribute.as_string());
  return found ? *found : Value::undefined(attribute.as_string());
}

// select / reject / selectattr / rejectattr: positional args after the attribute name are the test and its args.
Value select(const Value& operand, const CallArgs& args, bool by_attribute, bool keep_when) {
  std::vector<Value> kept;
  const size_t first = by_attribute ? 1 : 0;
  CallArgs test_args;
  test_args.positional.assign(args.positional.begin() + std::min(args.positional.size(), first + 1), args.positional.end());
  for (const Value& item : operand.iterate()) {
    const Value subject = by_attribute ? attribute_of(item, args.get(0, "attribute", kNone)) : item;
    bool passed;
    if (args.positional.size() > first) {
      const std::string test = args.positional[first].str();
      if (!apply_test(test, subject, test_args, &passed)) throw Error(cat("no test named '", test, "'"));
    } else {
      passed = subject.truthy();
    }
    if (passed == keep_when) kept.push_back(item);
  }
  return Value::list(std::move(kept));
}

Value tojson(const Value& operand, const CallArgs& args) {
  const Value& indent = args.get(1, "indent", kNone);
  std::optional<std::string> indent_text;
  if (indent.is_int()) indent_text = std::string(std::max<int64_t>(indent.as_int(), 0), ' ');
  else if (indent.is_string()) indent_text = indent.as_string();
  std::string item_separator = indent_text ? "," : ", ", key_separator = ": ";
  const Value& separators = args.get(2, "separators", kNone);
  if (separators.is_list() && separators.as_list().items.size() == 2) {
    item_separator = separators.as_list().items[0].str();
    key_separator = separators.as_list().items[1].str();
  }
  return Value(to_json(operand, args.get(0, "ensure_ascii", kFalse).truthy(), indent_text, item_separator,
                       key_separator, args.get(3, "sort_keys", kFalse).truthy()));
}

Value sorted(const Value& operand, const CallArgs& args) {
  std::vector<Value> items = operand.iterate();
  const Value& attribute = args.get(2, "attribute", kNone);
  const bool case_sensitive = args.get(1, "case_sensitive", kFalse).truthy();
  const auto key = [&](const Value& v) {
    Value k = attribute.is_none() ? v : attribute_of(v, attribute);
    return k.is_string() && !case_sensitive ? Value(change_case(k.as_string(), false)) : k;
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) { return key(a).less(key(b)); });
  if (args.get(0, "reverse", kFalse).truthy()) std::reverse(items.begin(), items.end());
  return Value::list(std::move(items));
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  size_t pos = 0;
  for (int64_t done = 0; count < 0 || done < count; ++done) {
    const size_t hit = from.empty() ? (pos <= s.size() ? pos : std::string::npos) : s.find(from, pos);
    if (hit == std::string::npos) break;
    out += s.substr(pos, hit - pos) + to;
    if (from.empty()) {  // Python inserts between every character
      if (hit >= s.size()) return out;
      size_t next = hit;
      next_code_point(s, next);
      out += s.substr(hit, next - hit);
      pos = next;
    } else {
      pos = hit + from.size();
    }
  }
  return out + s.substr(std::min(pos, s.size()));
}

}  // namespace

bool apply_filter(const std::string& name, const Value& operand, const CallArgs& args, Value* result) {
  const auto text = [&] { return operand.str(); };
  if (name == "trim") *result = Value(python_strip(text(), args.get(0, "chars", kNone), true, true));
  else if (name == "tojson") *result = tojson(operand, args);
  else if (name == "length" || name == "count") *result = Value(static_cast<int64_t>(operand.is_undefined() ? 0 : operand.length()));
  else if (name == "default" || name == "d") {
    const bool use_default = operand.is_undefined() || (args.get(1, "boolean", kFalse).truthy() && !operand.truthy());
    *result = use_default ? args.get(0, "default_value", Value("")) : operand;
  } else if (name == "join") {
    std::string out;
    const Value& attribute = args.get(1, "attribute", kNone);
    bool first = true;
    for (const Value& item : operand.iterate()) {
      if (!first) out += args.get(0, "d", Value("")).str();
      out += (attribute.is_none() ? item : attribute_of(item, attribute)).str();
      first = false;
    }
    *result = Value(std::move(out));
  } else if (name == "replace") {
    const Value& count = args.get(2, "count", kNone);
    *result = Value(replace_all(text(), args.get(0, "old", Value("")).str(), args.get(1, "new", Value("")).str(),
                                count.is_none() ? -1 : count.as_int()));
  } else if (name == "lower" || name == "upper") *result = Value(change_case(text(), name == "upper"));
  else if (name == "capitalize") {
    std::string s = change_case(text(), false);
    if (!s.empty()) s[0] = std::toupper(static_cast<unsigned char>(s[0]));
    *result = Value(s);
  } else if (name == "title") {
    // jinja2 capitalizes after runs of '-', whitespace and opening brackets.
    std::string s = change_case(text(), false);
    for (size_t i = 0; i < s.size(); ++i) {
      if (i == 0 || std::strchr("-([{< \t\n\r\f\v", s[i - 1])) s[i] = std::toupper(static_cast<unsigned char>(s[i]));
    }
    *result = Value(s);
  } else if (name == "items") {
    std::vector<Value> pairs;
    if (operand.is_dict()) {
      for (const auto& [k, v] : operand.as_dict().items) pairs.push_back(Value::list({Value(k), v}, true));
    } else if (!operand.is_undefined()) {
      throw Error(cat("items filter needs a mapping, got '", operand.type_name(), "'"));
    }
    *result = Value::list(std::move(pairs));
  } else if (name == "dictsort") {
    NW_CHECK(operand.is_dict(), "dictsort filter needs a mapping, got '", operand.type_name(), "'");
    std::vector<Value> pairs;
    for (const auto& [k, v] : operand.as_dict().items) pairs.push_back(Value::list({Value(k), v}, true));
    const bool case_sensitive = args.get(0, "case_sensitive", kFalse).truthy();
    const std::string by = args.get(1, "by", Value("key")).str();
    NW_CHECK(by == "key" || by == "value", "dictsort: 'by' must be 'key' or 'value'");
    const auto key = [&](const Value& pair) {
      const Value k = pair.iterate()[by == "key" ? 0 : 1];
      return k.is_string() && !case_sensitive ? Value(change_case(k.as_string(), false)) : k;
    };
    std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& a, const Value& b) { return key(a).less(key(b)); });
    if (args.get(2, "reverse", kFalse).truthy()) std::reverse(pairs.begin(), pairs.end());
    *result = Value::list(std::move(pairs));
  } else if (name == "first" || name == "last") {
    const std::vector<Value> items = operand.iterate();
    *result = items.empty() ? Value::undefined(name) : (name == "first" ? items.front() : items.back());
  } else if (name == "list") *result = Value::list(operand.iterate());
  else if (name == "string") *result = Value(text());
  else if (name == "safe") *result = operand;
  else if (name == "int" || name == "float") {
    const bool integer = name == "int";
    Value fallback = args.get(0, "default", integer ? Value(0) : Value(0.0));
    if (operand.is_number()) *result = integer ? Value(static_cast<int64_t>(operand.as_double())) : Value(operand.as_double());
    else {
      try {
        const std::string s = python_strip(text(), kNone, true, true);
        size_t used;
        *result = integer ? Value(static_cast<int64_t>(std::stoll(s, &used))) : Value(std::stod(s, &used));
        if (used != s.size()) *result = fallback;
      } catch (const std::exception&) {
        *result = fallback;
      }
    }
  } else if (name == "abs") {
    if (!operand.is_number()) throw Error(cat("bad operand type for abs(): '", operand.type_name(), "'"));
    *result = operand.is_float() ? Value(std::fabs(operand.as_double())) : Value(static_cast<int64_t>(std::llabs(operand.as_int())));
  } else if (name == "round") {
    const double scale = std::pow(10.0, static_cast<double>(args.get(0, "precision", Value(0)).as_int()));
    *result = Value(std::round(operand.as_double() * scale) / scale);
  } else if (name == "reverse") {
    std::vector<Value> items = operand.iterate();
    std::reverse(items.begin(), items.end());
    if (operand.is_string()) {
      std::string s;
      for (const Value& c : items) s += c.as_string();
      *result = Value(s);
    } else {
      *result = Value::list(std::move(items));
    }
  } else if (name == "sort") *result = sorted(operand, args);
  else if (name == "unique") {
    std::vector<Value> out;
    for (const Value& item : operand.iterate()) {
      if (std::none_of(out.begin(), out.end(), [&](const Value& v) { return v.equals(item); })) out.push_back(item);
    }
    *result = Value::list(std::move(out));
  } else if (name == "min" || name == "max" || name == "sum") {
    const std::vector<Value> items = operand.iterate();
    if (name == "sum") {
      Value total = args.get(1, "start", Value(0));
      for (const Value& item : items) total = apply_operator("+", total, item);
      *result = total;
    } else if (items.empty()) {
      *result = Value::undefined(name);
    } else {
      *result = *std::min_element(items.begin(), items.end(), [&](const Value& a, const Value& b) {
        return name == "min" ? a.less(b) : b.less(a);
      });
    }
  } else if (name == "map") {
    std::vector<Value> out;
    const Value& attribute = args.get(99, "attribute", kNone);
    CallArgs filter_args;
    if (args.positional.size() > 1) filter_args.positional.assign(args.positional.begin() + 1, args.positional.end());
    for (const Value& item : operand.iterate()) {
      if (!attribute.is_none()) {
        Value v = attribute_of(item, attribute);
        out.push_back(v.is_undefined() ? args.get(99, "default", v) : v);
        continue;
      }
      if (args.positional.empty()) throw Error("map needs a filter name or attribute=");
      Value mapped;
      if (!apply_filter(args.positional[0].str(), item, filter_args, &mapped)) {
        throw Error(cat("no filter named '", args.positional[0].str(), "'"));
      }
      out.push_back(mapped);
    }
    *result = Value::list(std::move(out));
  } else if (name == "select" || name == "reject") *result = select(operand, args, false, name == "select");
  else if (name == "selectattr" || name == "rejectattr") *result = select(operand, args, true, name == "selectattr");
  else if (name == "indent") {
    const Value& width = args.get(0, "width", Value(4));
    const std::string pad = width.is_string() ? width.as_string() : std::string(width.as_int(), ' ');
    const bool indent_first = args.get(1, "first", kFalse).truthy(), blank = args.get(2, "blank", kFalse).truthy();
    std::string out, line;
    const std::string s = text();
    size_t start = 0;
    for (bool first = true; start <= s.size(); first = false) {
      const size_t nl = s.find('\n', start);
      line = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      if (!first) out += '\n';
      if (first ? indent_first : blank || !line.empty()) out += pad;
      out += line;
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
    *result = Value(out);
  } else {
    return false;
  }
  return true;
}

}  // namespace narwhal::text::jinja
