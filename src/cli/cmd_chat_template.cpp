// `narwhal chat-template`: renders a conversation with a tokenizer directory's chat template.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/arg_parser.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/json.h"
#include "text/chat_template.h"
#include "text/tokenizer_config.h"

namespace narwhal {

int run_chat_template(int argc, char** argv) {
  std::string tokenizer_path, messages_file;
  bool add_generation_prompt = false;
  ArgParser parser("chat-template", "Renders a conversation with the chat template of tokenizer_config.json and "
                                    "prints the text exactly (no newline added).");
  parser.add("tokenizer-path", &tokenizer_path, "directory with tokenizer_config.json (or chat_template.jinja)");
  parser.add("messages-file", &messages_file,
             "JSON: a list of messages, or {\"messages\": [...], \"tools\": [...], other template variables}");
  parser.add_switch("add-generation-prompt", &add_generation_prompt, "end with the assistant turn's opening");
  if (!parser.parse(argc, argv, 2)) return 0;
  NW_CHECK(!tokenizer_path.empty(), "--tokenizer-path is required");
  NW_CHECK(!messages_file.empty(), "--messages-file is required");

  const text::TokenizerConfig config = text::TokenizerConfig::load(tokenizer_path);
  NW_CHECK(!config.chat_template.empty(), tokenizer_path, ": tokenizer_config.json has no chat_template");
  nlohmann::ordered_json input;  // key order matters: templates print dicts (tojson, items())
  try {
    input = nlohmann::ordered_json::parse(read_text_file(messages_file));
  } catch (const nlohmann::ordered_json::exception& e) {
    throw Error(cat(messages_file, ": not valid JSON: ", e.what()));
  }
  nlohmann::ordered_json messages = input, tools, extra = nlohmann::ordered_json::object();
  if (input.is_object()) {
    NW_CHECK(input.contains("messages"), messages_file, ": the object has no \"messages\"");
    messages = input["messages"];
    tools = input.value("tools", nlohmann::ordered_json());
    for (const auto& [key, value] : input.items()) {
      if (key != "messages" && key != "tools") extra[key] = value;
    }
  }
  NW_CHECK(messages.is_array(), messages_file, ": \"messages\" must be a list");
  const text::ChatTemplate chat_template(config.chat_template, config.chat_template_origin);
  const std::string rendered = chat_template.render(messages, tools, add_generation_prompt, config, extra);
  std::fwrite(rendered.data(), 1, rendered.size(), stdout);
  return 0;
}

}  // namespace narwhal
