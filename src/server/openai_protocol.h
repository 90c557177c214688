// OpenAI request parsing: chat and completion bodies into checked internal requests (400s for anything wrong).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "runtime/sampling_params.h"
#include "server/request_fields.h"

namespace narwhal::server {

// What both endpoints share: sampling, streaming, logprobs.
struct GenerationOptions {
  std::string model;              // as the client named it (empty: not given)
  SamplingParams params;          // n, stop, seed, ...
  // Whether params.max_new_tokens is the client's own limit (a prompt + limit beyond the context is a 400) or a
  // default that the room left in the context clips.
  bool max_tokens_given = false;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool logprobs = false;
  int top_logprobs = 0;
};

enum class ToolChoice { kNone, kAuto, kRequired, kNamed };

struct ChatRequest {
  GenerationOptions options;
  nlohmann::ordered_json messages;  // normalized: content parts joined into text, "developer" read as "system"
  nlohmann::ordered_json tools;     // null when none (or tool_choice "none")
  ToolChoice tool_choice = ToolChoice::kAuto;
  std::string tool_name;            // kNamed
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();  // chat_template_kwargs
  bool separate_reasoning = true;   // SGLang's extra: false leaves reasoning in content
};

// One completion prompt: text to tokenize or token ids as given.
struct CompletionPrompt {
  std::optional<std::string> text;
  std::vector<int32_t> ids;
};

struct CompletionRequest {
  GenerationOptions options;
  std::vector<CompletionPrompt> prompts;  // OpenAI's batch form: choice index = prompt * n + choice
  bool echo = false;
};

// Throw ApiError(400) naming the parameter at fault. `body` is the parsed JSON object.
ChatRequest parse_chat_request(const Body& body);
CompletionRequest parse_completion_request(const Body& body);

}  // namespace narwhal::server
