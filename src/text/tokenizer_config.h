// tokenizer_config.json: BOS/EOS policy, special token strings and the chat template.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace narwhal::text {

struct TokenizerConfig {
  // Unset when the file does not say; then tokenizer.json's post_processor decides.
  std::optional<bool> add_bos_token;
  std::optional<bool> add_eos_token;
  // transformers' special_tokens_map: role ("bos_token", "eos_token", ...) -> token text, for the roles set.
  std::vector<std::pair<std::string, std::string>> special_tokens;
  // The default chat template: "chat_template" of the config, or DIR/chat_template.jinja; empty if none.
  std::string chat_template;
  std::string chat_template_origin;  // the file it came from, for error messages

  const std::string* special_token(std::string_view role) const;

  // Reads DIR/tokenizer_config.json (absent: all defaults). Throws Error naming the file and field.
  static TokenizerConfig load(const std::string& dir);
};

}  // namespace narwhal::text
