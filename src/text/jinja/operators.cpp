// Binary operators of Jinja expressions with Python's typing rules.
#include <cmath>

#include "core/error.h"
#include "text/jinja/interpreter.h"

namespace narwhal::text::jinja {
namespace {

[[noreturn]] void unsupported(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) throw Error(cat("'", a.undefined_name(), "' is undefined"));
  if (b.is_undefined()) throw Error(cat("'", b.undefined_name(), "' is undefined"));
  throw Error(cat("unsupported operand type(s) for ", op, ": '", a.type_name(), "' and '", b.type_name(), "'"));
}

Value repeat(const Value& sequence, int64_t times) {
  if (sequence.is_string()) {
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += sequence.as_string();
    return Value(std::move(out));
  }
  std::vector<Value> out;
  for (int64_t i = 0; i < times; ++i) {
    out.insert(out.end(), sequence.as_list().items.begin(), sequence.as_list().items.end());
  }
  return Value::list(std::move(out));
}

bool contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    if (!item.is_string()) throw Error(cat("'in <string>' requires string as left operand, not ", item.type_name()));
    return container.as_string().find(item.as_string()) != std::string::npos;
  }
  if (container.is_dict()) return item.is_string() && container.as_dict().find(item.as_string());
  if (container.is_list()) {
    for (const Value& v : container.as_list().items) {
      if (v.equals(item)) return true;
    }
    return false;
  }
  if (container.is_undefined()) return false;
  throw Error(cat("argument of type '", container.type_name(), "' is not iterable"));
}

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number()) unsupported(op, a, b);
  const bool real = a.is_float() || b.is_float();
  if (op == "/") {
    if (b.as_double() == 0) throw Error("division by zero");
    return Value(a.as_double() / b.as_double());
  }
  if (op == "**") {
    if (!real && b.as_int() >= 0) return Value(static_cast<int64_t>(std::llround(std::pow(a.as_double(), b.as_double()))));
    return Value(std::pow(a.as_double(), b.as_double()));
  }
  if (real) {
    const double x = a.as_double(), y = b.as_double();
    if (op == "+") return Value(x + y);
    if (op == "-") return Value(x - y);
    if (op == "*") return Value(x * y);
    if (y == 0) throw Error("float division by zero");
    const double floor = std::floor(x / y);
    return op == "//" ? Value(floor) : Value(x - floor * y);  // Python's % takes the divisor's sign
  }
  const int64_t x = a.as_int(), y = b.as_int();
  if (op == "+") return Value(x + y);
  if (op == "-") return Value(x - y);
  if (op == "*") return Value(x * y);
  if (y == 0) throw Error("integer division or modulo by zero");
  int64_t q = x / y;
  if ((x % y != 0) && ((x < 0) != (y < 0))) --q;  // floor division
  return op == "//" ? Value(q) : Value(x - q * y);
}

}  // namespace

Value apply_operator(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return Value(a.equals(b));
  if (op == "!=") return Value(!a.equals(b));
  if (op == "<") return Value(a.less(b));
  if (op == ">") return Value(b.less(a));
  if (op == "<=") return Value(a.less(b) || a.equals(b));
  if (op == ">=") return Value(b.less(a) || a.equals(b));
  if (op == "in") return Value(contains(b, a));
  if (op == "not in") return Value(!contains(b, a));
  if (op == "~") return Value(a.str() + b.str());
  if (op == "+") {
    if (a.is_string() && b.is_string()) return Value(a.as_string() + b.as_string());
    if (a.is_list() && b.is_list()) {
      std::vector<Value> items = a.as_list().items;
      items.insert(items.end(), b.as_list().items.begin(), b.as_list().items.end());
      return Value::list(std::move(items));
    }
  }
  if (op == "*") {
    if ((a.is_string() || a.is_list()) && b.is_int() && !b.is_float()) return repeat(a, b.as_int());
    if ((b.is_string() || b.is_list()) && a.is_int() && !a.is_float()) return repeat(b, a.as_int());
  }
  if (op == "%" && a.is_string()) throw Error("printf-style string formatting is not supported");
  return arithmetic(op, a, b);
}

}  // namespace narwhal::text::jinja
