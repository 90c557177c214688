// Jinja parser: template source to syntax tree, for the subset Hugging Face chat templates use.
#pragma once

#include <string_view>

#include "text/jinja/ast.h"

namespace narwhal::text::jinja {

// Throws Error naming the template line for syntax errors and for unsupported tags (include, extends, ...).
Template parse(std::string_view source);

}  // namespace narwhal::text::jinja
