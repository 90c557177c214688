// Chat templates: renders a conversation into prompt text as transformers' apply_chat_template does.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "text/jinja/ast.h"
#include "text/tokenizer_config.h"

namespace narwhal::text {

class ChatTemplate {
 public:
  // Parses the template once; throws Error naming `origin` (the file it came from) and the template line on
  // syntax errors, so that a server refusing to start says which file to fix.
  explicit ChatTemplate(const std::string& source, const std::string& origin = "chat template");

  // Renders with the variables transformers passes: messages, tools (None when absent), documents (None),
  // add_generation_prompt, the special tokens of `config` (bos_token, eos_token, ...), then `extra`'s keys.
  // Throws Error for template errors, including the template's own raise_exception().
  std::string render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                     bool add_generation_prompt, const TokenizerConfig& config,
                     const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;

 private:
  jinja::Template template_;
};

}  // namespace narwhal::text
