// Renders a parsed Jinja template with jinja2's semantics (scoping, undefined values, loop variables).
#pragma once

#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "text/jinja/ast.h"
#include "text/jinja/value.h"

namespace narwhal::text::jinja {

using Variables = std::vector<std::pair<std::string, Value>>;

// Renders `tpl` with `variables` (globals such as raise_exception included). Throws Error for template
// errors: raise_exception's message, undefined attribute access, type errors; each names the template line.
std::string render(const Template& tpl, const Variables& variables);

// Built-ins (builtins.cpp). Each returns false when `name` is not one.
bool apply_filter(const std::string& name, const Value& operand, const CallArgs& args, Value* result);
bool apply_test(const std::string& name, const Value& operand, const CallArgs& args, bool* result);
bool call_method(const Value& object, const std::string& name, const CallArgs& args, Value* result);
Variables builtin_globals();
// Arithmetic, comparison, membership and `~` with Python's rules (operators.cpp).
Value apply_operator(const std::string& op, const Value& left, const Value& right);

}  // namespace narwhal::text::jinja
