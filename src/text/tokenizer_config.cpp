// Reading tokenizer_config.json the way transformers does for the fields narwhal uses.
#include "text/tokenizer_config.h"

#include <filesystem>

#include "core/error.h"
#include "core/json.h"

namespace narwhal::text {

const std::string* TokenizerConfig::special_token(std::string_view role) const {
  for (const auto& [name, token] : special_tokens) {
    if (name == role) return &token;
  }
  return nullptr;
}

TokenizerConfig TokenizerConfig::load(const std::string& dir) {
  TokenizerConfig config;
  const std::filesystem::path path = std::filesystem::path(dir) / "tokenizer_config.json";
  const std::string where = path.string();
  if (std::filesystem::exists(path)) {
    const nlohmann::json json = read_json_file(where);
    NW_CHECK(json.is_object(), where, ": expected a JSON object");
    for (const char* flag : {"add_bos_token", "add_eos_token"}) {
      if (!json.contains(flag) || json[flag].is_null()) continue;
      NW_CHECK(json[flag].is_boolean(), where, ": \"", flag, "\" must be true or false");
      std::optional<bool>& setting = std::string_view(flag) == "add_bos_token" ? config.add_bos_token
                                                                                : config.add_eos_token;
      setting = json[flag].get<bool>();
    }
    // The order of transformers' SpecialTokensMixin.SPECIAL_TOKENS_ATTRIBUTES.
    for (const char* role :
         {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
      if (!json.contains(role) || json[role].is_null()) continue;
      const nlohmann::json& token = json[role];
      if (token.is_string()) {
        config.special_tokens.emplace_back(role, token.get<std::string>());
      } else {
        NW_CHECK(token.is_object() && token.contains("content") && token["content"].is_string(), where, ": \"",
                 role, "\" must be a string or an object with a string \"content\"");
        config.special_tokens.emplace_back(role, token["content"].get<std::string>());
      }
    }
    if (json.contains("chat_template") && !json["chat_template"].is_null()) {
      const nlohmann::json& tpl = json["chat_template"];
      config.chat_template_origin = where + " (chat_template)";
      if (tpl.is_string()) {
        config.chat_template = tpl.get<std::string>();
      } else {
        // A list of named templates: the one called "default" is what apply_chat_template uses.
        NW_CHECK(tpl.is_array(), where, ": \"chat_template\" must be a string or a list of {name, template}");
        for (const nlohmann::json& named : tpl) {
          if (named.value("name", "") == "default") config.chat_template = named.value("template", "");
        }
      }
    }
  }
  const std::filesystem::path jinja = std::filesystem::path(dir) / "chat_template.jinja";
  if (config.chat_template.empty() && std::filesystem::exists(jinja)) {
    config.chat_template = read_text_file(jinja.string());
    config.chat_template_origin = jinja.string();
  }
  return config;
}

}  // namespace narwhal::text
