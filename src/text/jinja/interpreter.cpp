// Statement execution and expression evaluation for Jinja templates.
#include "text/jinja/interpreter.h"

#include <algorithm>
#include <optional>
#include <unordered_map>

#include "core/error.h"

namespace narwhal::text::jinja {
namespace {

using Frame = std::unordered_map<std::string, Value>;
enum class Flow { kNormal, kBreak, kContinue };

class Renderer {
 public:
  explicit Renderer(const Variables& variables) {
    frames_.emplace_back();
    for (const auto& [name, value] : variables) frames_[0][name] = value;
  }

  Flow exec(const Body& body, std::string& out) {
    for (const auto& stmt : body) {
      const Flow flow = exec(*stmt, out);
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  Value eval(const Expr& e);

 private:
  [[noreturn]] static void fail(int line, const std::string& why) { throw Error(cat("template line ", line, ": ", why)); }

  Value lookup(const std::string& name) const {
    for (auto frame = frames_.rbegin(); frame != frames_.rend(); ++frame) {
      const auto it = frame->find(name);
      if (it != frame->end()) return it->second;
    }
    return Value::undefined(name);
  }

  Flow exec(const Stmt& s, std::string& out);
  Flow exec_for(const Stmt& s, std::string& out);
  void assign(const Stmt& s, Value value);
  Value define_macro(const Stmt& s);
  Value eval_binary(const Expr& e);
  Value eval_call(const Expr& e);
  CallArgs eval_args(const Expr& e, size_t first);

  std::vector<Frame> frames_;  // [0]: template globals and top-level `set`; then loop and macro frames
};

Flow Renderer::exec(const Stmt& s, std::string& out) {
  switch (s.kind) {
    case Stmt::Kind::kText: out += s.text; break;
    case Stmt::Kind::kOutput: out += eval(*s.expr).str(); break;
    case Stmt::Kind::kIf:
      for (const auto& [condition, body] : s.branches) {
        if (eval(*condition).truthy()) return exec(body, out);
      }
      return exec(s.else_body, out);
    case Stmt::Kind::kFor: return exec_for(s, out);
    case Stmt::Kind::kSet: assign(s, eval(*s.expr)); break;
    case Stmt::Kind::kSetBlock: {
      std::string captured;
      exec(s.body, captured);
      assign(s, Value(std::move(captured)));
      break;
    }
    case Stmt::Kind::kMacro: frames_.back()[s.targets[0]] = define_macro(s); break;
    case Stmt::Kind::kGeneration: return exec(s.body, out);
    case Stmt::Kind::kBreak: return Flow::kBreak;
    case Stmt::Kind::kContinue: return Flow::kContinue;
  }
  return Flow::kNormal;
}

void Renderer::assign(const Stmt& s, Value value) {
  if (!s.attribute.empty()) {
    const Value target = lookup(s.targets[0]);
    if (!target.is_dict() || !target.as_dict().is_namespace) {
      fail(s.line, cat("cannot assign attribute on non-namespace object '", s.targets[0], "'"));
    }
    target.as_dict().set(s.attribute, std::move(value));
    return;
  }
  if (s.targets.size() == 1) {
    frames_.back()[s.targets[0]] = std::move(value);
    return;
  }
  const std::vector<Value> items = value.iterate();
  if (items.size() != s.targets.size()) fail(s.line, cat("cannot unpack ", items.size(), " values into ", s.targets.size()));
  for (size_t i = 0; i < items.size(); ++i) frames_.back()[s.targets[i]] = items[i];
}

Flow Renderer::exec_for(const Stmt& s, std::string& out) {
  const Value iterable = eval(*s.expr);
  if (!iterable.is_undefined() && !iterable.is_list() && !iterable.is_dict() && !iterable.is_string()) {
    fail(s.line, cat("'", iterable.type_name(), "' object is not iterable"));
  }
  std::vector<Value> items = iterable.iterate();
  // Each iteration gets a fresh frame: assignments in the body do not outlive it, as in jinja2.
  const auto bind = [&](Frame& frame, const Value& item) {
    if (s.targets.size() == 1) {
      frame[s.targets[0]] = item;
      return;
    }
    const std::vector<Value> parts = item.iterate();
    if (parts.size() != s.targets.size()) fail(s.line, cat("cannot unpack ", parts.size(), " values into ", s.targets.size()));
    for (size_t i = 0; i < parts.size(); ++i) frame[s.targets[i]] = parts[i];
  };
  if (s.filter) {
    std::vector<Value> kept;
    for (const Value& item : items) {
      frames_.emplace_back();
      bind(frames_.back(), item);
      const bool keep = eval(*s.filter).truthy();
      frames_.pop_back();
      if (keep) kept.push_back(item);
    }
    items = std::move(kept);
  }
  if (items.empty()) return exec(s.else_body, out);
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    frames_.emplace_back();
    bind(frames_.back(), items[i]);
    Value loop = Value::dict();
    Dict& d = loop.as_dict();
    d.items = {{"index", Value(i + 1)}, {"index0", Value(i)}, {"revindex", Value(n - i)},
               {"revindex0", Value(n - i - 1)}, {"first", Value(i == 0)}, {"last", Value(i == n - 1)},
               {"length", Value(n)}, {"depth", Value(1)}, {"depth0", Value(0)},
               {"previtem", i > 0 ? items[i - 1] : Value::undefined("previtem")},
               {"nextitem", i + 1 < n ? items[i + 1] : Value::undefined("nextitem")}};
    d.items.emplace_back("cycle", Value(Function([i](const CallArgs& args) {
      if (args.positional.empty()) throw Error("loop.cycle needs at least one argument");
      return args.positional[i % args.positional.size()];
    })));
    frames_.back()["loop"] = loop;
    const Flow flow = exec(s.body, out);
    frames_.pop_back();
    if (flow == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

Value Renderer::define_macro(const Stmt& s) {
  const Stmt* macro = &s;
  return Value(Function([this, macro](const CallArgs& args) {
    Frame locals;
    for (size_t i = 0; i < macro->params.size(); ++i) {
      const auto& [name, default_value] = macro->params[i];
      Value fallback = default_value ? eval(*default_value) : Value::undefined(name);
      locals[name] = args.get(i, name.c_str(), fallback);
    }
    if (args.positional.size() > macro->params.size()) {
      fail(macro->line, cat("macro '", macro->targets[0], "' takes ", macro->params.size(), " arguments"));
    }
    // A macro sees the template's globals and its arguments, not the caller's loop variables.
    std::vector<Frame> caller_frames(std::make_move_iterator(frames_.begin() + 1), std::make_move_iterator(frames_.end()));
    frames_.resize(1);
    frames_.push_back(std::move(locals));
    std::string out;
    exec(macro->body, out);
    frames_.resize(1);
    for (Frame& f : caller_frames) frames_.push_back(std::move(f));
    return Value(std::move(out));
  }));
}

Value Renderer::eval_binary(const Expr& e) {
  const Value left = eval(*e.args[0]);
  // Python's `and` / `or` evaluate lazily and return an operand, not a bool.
  if (e.name == "and") return left.truthy() ? eval(*e.args[1]) : left;
  if (e.name == "or") return left.truthy() ? left : eval(*e.args[1]);
  try {
    return apply_operator(e.name, left, eval(*e.args[1]));
  } catch (const Error& error) {
    fail(e.line, error.what());
  }
}

CallArgs Renderer::eval_args(const Expr& e, size_t first) {
  CallArgs args;
  for (size_t i = first; i < e.args.size(); ++i) args.positional.push_back(eval(*e.args[i]));
  for (const auto& [name, value] : e.kwargs) args.keywords.emplace_back(name, eval(*value));
  return args;
}

Value Renderer::eval_call(const Expr& e) {
  const Expr& callee = *e.args[0];
  CallArgs args = eval_args(e, 1);
  if (callee.kind == Expr::Kind::kAttribute) {
    const Value object = eval(*callee.args[0]);
    Value result;
    if (!object.is_dict() || !object.as_dict().find(callee.name)) {
      if (call_method(object, callee.name, args, &result)) return result;
      if (object.is_undefined()) fail(e.line, cat("'", object.undefined_name(), "' is undefined"));
      fail(e.line, cat("'", object.type_name(), "' object has no method '", callee.name, "'"));
    }
  }
  const Value function = eval(callee);
  if (function.is_undefined()) fail(e.line, cat("'", function.undefined_name(), "' is undefined"));
  if (!function.is_callable()) fail(e.line, cat("'", function.type_name(), "' object is not callable"));
  return function.as_function()(args);
}

Value Renderer::eval(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kLiteral: return e.value;
    case Expr::Kind::kName: return lookup(e.name);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      std::vector<Value> items;
      for (const auto& item : e.args) items.push_back(eval(*item));
      return Value::list(std::move(items), e.kind == Expr::Kind::kTuple);
    }
    case Expr::Kind::kDict: {
      Value d = Value::dict();
      for (const auto& [key, value] : e.entries) {
        const Value k = eval(*key);
        if (!k.is_string()) fail(e.line, "dictionary keys must be strings");
        d.as_dict().set(k.as_string(), eval(*value));
      }
      return d;
    }
    case Expr::Kind::kAttribute:
    case Expr::Kind::kItem: {
      const Value object = eval(*e.args[0]);
      if (object.is_undefined()) fail(e.line, cat("'", object.undefined_name(), "' is undefined"));
      const Value key = e.kind == Expr::Kind::kAttribute ? Value(e.name) : eval(*e.args[1]);
      if (object.is_dict() && key.is_string()) {
        const Value* found = object.as_dict().find(key.as_string());
        return found ? *found : Value::undefined(key.as_string());
      }
      if ((object.is_list() || object.is_string()) && key.is_int()) {
        const std::vector<Value> items = object.is_list() ? object.as_list().items : object.iterate();
        int64_t i = key.as_int();
        if (i < 0) i += static_cast<int64_t>(items.size());
        if (i >= 0 && i < static_cast<int64_t>(items.size())) return items[i];
      }
      return Value::undefined(key.str());
    }
    case Expr::Kind::kSlice: {
      const Value object = eval(*e.args[0]);
      if (!object.is_list() && !object.is_string()) fail(e.line, cat("cannot slice '", object.type_name(), "'"));
      const std::vector<Value> items = object.iterate();
      const int64_t n = static_cast<int64_t>(items.size());
      const auto part = [&](int k) { return e.args[k] ? std::optional<Value>(eval(*e.args[k])) : std::nullopt; };
      const std::optional<Value> start = part(1), stop = part(2), step_value = part(3);
      const int64_t step = step_value && !step_value->is_none() ? step_value->as_int() : 1;
      if (step == 0) fail(e.line, "slice step cannot be zero");
      // Python's slice.indices().
      const auto bound = [&](const std::optional<Value>& v, int64_t fallback) {
        if (!v || v->is_none()) return fallback;
        int64_t i = v->as_int();
        if (i < 0) i += n;
        return step > 0 ? std::clamp<int64_t>(i, 0, n) : std::clamp<int64_t>(i, -1, n - 1);
      };
      const int64_t from = bound(start, step > 0 ? 0 : n - 1), to = bound(stop, step > 0 ? n : -1);
      std::vector<Value> picked;
      for (int64_t i = from; step > 0 ? i < to : i > to; i += step) picked.push_back(items[i]);
      if (object.is_list()) return Value::list(std::move(picked));
      std::string s;
      for (const Value& c : picked) s += c.as_string();
      return Value(std::move(s));
    }
    case Expr::Kind::kCall: return eval_call(e);
    case Expr::Kind::kFilter: {
      const Value operand = eval(*e.args[0]);
      Value result;
      if (!apply_filter(e.name, operand, eval_args(e, 1), &result)) fail(e.line, cat("no filter named '", e.name, "'"));
      return result;
    }
    case Expr::Kind::kTest: {
      const Value operand = eval(*e.args[0]);
      bool result;
      if (!apply_test(e.name, operand, eval_args(e, 1), &result)) fail(e.line, cat("no test named '", e.name, "'"));
      return Value(result != e.negated);
    }
    case Expr::Kind::kUnary: {
      const Value x = eval(*e.args[0]);
      if (e.name == "not") return Value(!x.truthy());
      if (!x.is_number()) fail(e.line, cat("bad operand type for unary ", e.name, ": '", x.type_name(), "'"));
      if (e.name == "+") return x.is_float() ? Value(x.as_double()) : Value(x.as_int());
      return x.is_float() ? Value(-x.as_double()) : Value(-x.as_int());
    }
    case Expr::Kind::kBinary: return eval_binary(e);
    case Expr::Kind::kCondition:
      if (eval(*e.args[1]).truthy()) return eval(*e.args[0]);
      return e.args[2] ? eval(*e.args[2]) : Value::undefined("");
  }
  return Value();
}

}  // namespace

std::string render(const Template& tpl, const Variables& variables) {
  Renderer renderer(variables);
  std::string out;
  renderer.exec(tpl.body, out);
  return out;
}

}  // namespace narwhal::text::jinja
