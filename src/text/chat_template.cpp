// ChatTemplate: the jinja environment of transformers' chat templates around the interpreter.
#include "text/chat_template.h"

#include "core/error.h"
#include "text/jinja/interpreter.h"
#include "text/jinja/parser.h"

namespace narwhal::text {

namespace {

jinja::Template parse_named(const std::string& source, const std::string& origin) {
  try {
    return jinja::parse(source);
  } catch (const Error& e) {
    throw Error(cat(origin, ": ", e.what()));
  }
}

}  // namespace

ChatTemplate::ChatTemplate(const std::string& source, const std::string& origin)
    : template_(parse_named(source, origin)) {}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                 bool add_generation_prompt, const TokenizerConfig& config,
                                 const nlohmann::ordered_json& extra) const {
  jinja::Variables variables = jinja::builtin_globals();
  variables.emplace_back("messages", jinja::Value::from_json(messages));
  variables.emplace_back("tools", jinja::Value::from_json(tools));
  variables.emplace_back("documents", jinja::Value(nullptr));
  variables.emplace_back("add_generation_prompt", jinja::Value(add_generation_prompt));
  for (const auto& [role, token] : config.special_tokens) variables.emplace_back(role, jinja::Value(token));
  for (const auto& [key, value] : extra.items()) variables.emplace_back(key, jinja::Value::from_json(value));
  return jinja::render(template_, variables);
}

}  // namespace narwhal::text
