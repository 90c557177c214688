// Jinja lexer with Hugging Face's environment settings (trim_blocks, lstrip_blocks) and whitespace control.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace narwhal::text::jinja {

struct Token {
  enum class Type { kText, kVariableBegin, kVariableEnd, kBlockBegin, kBlockEnd, kName, kString, kInteger, kFloat,
                    kOperator, kEnd };
  Type type;
  std::string text;  // text, name, operator, or the decoded string literal
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
};

// Splits a template into tokens. Text tokens already have the whitespace removed that `{%-`, `-%}`,
// trim_blocks and lstrip_blocks remove. Throws Error with the line number on malformed input.
std::vector<Token> lex(std::string_view source);

}  // namespace narwhal::text::jinja
