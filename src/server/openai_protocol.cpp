// OpenAI request parsing: sampling options, chat messages and tools, completion prompts.
#include "server/openai_protocol.h"

#include <limits>

#include "core/error.h"

namespace narwhal::server {

namespace {

constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();

ApiError missing(const std::string& param) {
  return invalid_request("Missing required parameter: '" + param + "'.", param, "missing_required_parameter");
}

ApiError unsupported(const std::string& param, const std::string& what) {
  return invalid_request(cat("'", param, "': ", what, " is not supported by narwhal."), param, "unsupported_parameter");
}

// The options every generation endpoint shares. `chat` picks the chat spellings (max_completion_tokens,
// boolean logprobs + top_logprobs) over the legacy completion ones (max_tokens default 16, integer logprobs).
GenerationOptions parse_options(const Body& b, bool chat) {
  GenerationOptions o;
  o.model = read_string(b, "model").value_or("");
  o.stream = read_bool(b, "stream").value_or(false);
  if (auto it = b.find("stream_options"); it != b.end() && !it->is_null()) {
    if (!o.stream)
      throw invalid_request("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                            "stream_options", "invalid_value");
    if (!it->is_object()) throw invalid_request("Invalid type for 'stream_options': expected an object.",
                                                "stream_options", "invalid_type");
    o.include_usage = read_bool(*it, "include_usage").value_or(false);
  }
  SamplingParams& p = o.params;
  std::optional<int64_t> max_tokens = read_int(b, "max_tokens", 1, kMaxInt);
  if (chat) {
    if (auto m = read_int(b, "max_completion_tokens", 1, kMaxInt)) max_tokens = m;
  } else if (!max_tokens) {
    max_tokens = 16;  // the legacy completions API's default
  }
  o.max_tokens_given = max_tokens.has_value();
  if (max_tokens) p.max_new_tokens = *max_tokens;
  if (auto m = read_int(b, "min_tokens", 0, kMaxInt)) p.min_new_tokens = *m;
  p.temperature = read_number(b, "temperature", 0.0, 2.0).value_or(1.0);
  // top_p = 0 means "only the most likely token"; the sampler wants a positive mass, and any tiny one keeps one.
  p.top_p = std::max(read_number(b, "top_p", 0.0, 1.0).value_or(1.0), 1e-9);
  p.n = static_cast<int>(read_int(b, "n", 1, 128).value_or(1));
  if (auto seed = read_int(b, "seed", std::numeric_limits<int64_t>::min(), kMaxInt))
    p.seed = static_cast<uint64_t>(*seed);
  p.presence_penalty = read_number(b, "presence_penalty", -2.0, 2.0).value_or(0.0);
  p.frequency_penalty = read_number(b, "frequency_penalty", -2.0, 2.0).value_or(0.0);
  p.repetition_penalty = read_number(b, "repetition_penalty", 0.0, 2.0).value_or(1.0);
  if (p.repetition_penalty == 0.0)
    throw invalid_request("Invalid 'repetition_penalty': must be > 0.", "repetition_penalty", "invalid_value");
  const int64_t top_k = read_int(b, "top_k", -1, kMaxInt).value_or(-1);
  p.top_k = top_k == 0 ? -1 : top_k;  // 0 disables top-k, as in vLLM
  p.min_p = read_number(b, "min_p", 0.0, 1.0).value_or(0.0);
  p.ignore_eos = read_bool(b, "ignore_eos").value_or(false);
  p.no_stop_trim = read_bool(b, "no_stop_trim").value_or(false);
  p.stop = read_stop(b);
  if (auto it = b.find("stop_token_ids"); it != b.end() && !it->is_null()) {
    if (!it->is_array()) throw invalid_request("Invalid type for 'stop_token_ids': expected an array of integers.",
                                               "stop_token_ids", "invalid_type");
    for (const Body& id : *it) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
        throw invalid_request("Invalid 'stop_token_ids': expected token ids.", "stop_token_ids", "invalid_value");
      p.stop_token_ids.push_back(id.get<int32_t>());
    }
  }
  if (chat) {
    o.logprobs = read_bool(b, "logprobs").value_or(false);
    if (auto top = read_int(b, "top_logprobs", 0, 20)) {
      if (!o.logprobs && *top > 0)
        throw invalid_request("Invalid value for 'top_logprobs': 'logprobs' must be true to use 'top_logprobs'.",
                              "top_logprobs", "invalid_value");
      o.top_logprobs = static_cast<int>(*top);
    }
  } else if (auto top = read_int(b, "logprobs", 0, 5)) {
    o.logprobs = true;
    o.top_logprobs = static_cast<int>(*top);
  }
  if (auto it = b.find("logit_bias"); it != b.end() && !it->is_null() && !it->empty())
    throw unsupported("logit_bias", "logit bias");
  if (auto it = b.find("response_format"); it != b.end() && it->is_object() && it->value("type", "text") != "text")
    throw unsupported("response_format", "structured output");
  return o;
}

// Chat content: a string, or text parts (joined), or null where the role allows it.
Body normalize_content(const Body& content, const std::string& where, bool null_allowed) {
  if (content.is_string()) return content;
  if (content.is_null()) {
    if (!null_allowed) throw missing(where);
    return content;
  }
  if (!content.is_array())
    throw invalid_request("Invalid type for '" + where + "': expected a string or an array of content parts.",
                          where, "invalid_type");
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const Body& part = content[i];
    const std::string part_where = cat(where, "[", i, "]");
    if (!part.is_object() || !part.contains("type"))
      throw invalid_request("Invalid '" + part_where + "': expected a content part object with a 'type'.",
                            part_where, "invalid_type");
    if (part["type"] != "text") throw unsupported(part_where + ".type", cat("content of type ", part["type"].dump()));
    const auto t = read_string(part, "text");
    if (!t) throw missing(part_where + ".text");
    text += *t;
  }
  return text;
}

Body normalize_tool_calls(const Body& calls, const std::string& where) {
  if (!calls.is_array()) throw invalid_request("Invalid type for '" + where + "': expected an array.", where,
                                               "invalid_type");
  Body out = Body::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    const std::string call_where = cat(where, "[", i, "]");
    const Body& call = calls[i];
    if (!call.is_object() || !call.contains("function") || !call["function"].is_object())
      throw missing(call_where + ".function");
    Body function = call["function"];
    if (!function.contains("name") || !function["name"].is_string()) throw missing(call_where + ".function.name");
    if (!function.contains("arguments")) function["arguments"] = "{}";
    if (!function["arguments"].is_string()) function["arguments"] = function["arguments"].dump();
    Body normalized = call;
    normalized["type"] = call.value("type", "function");
    normalized["function"] = std::move(function);
    out.push_back(std::move(normalized));
  }
  return out;
}

Body normalize_messages(const Body& b) {
  auto it = b.find("messages");
  if (it == b.end() || it->is_null()) throw missing("messages");
  if (!it->is_array()) throw invalid_request("Invalid type for 'messages': expected an array of message objects.",
                                             "messages", "invalid_type");
  if (it->empty())
    throw invalid_request("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                          "empty array instead.",
                          "messages", "empty_array");
  Body out = Body::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const Body& m = (*it)[i];
    const std::string where = cat("messages[", i, "]");
    if (!m.is_object()) throw invalid_request("Invalid type for '" + where + "': expected an object.", where,
                                              "invalid_type");
    const auto role = read_string(m, "role");
    if (!role) throw missing(where + ".role");
    if (*role != "system" && *role != "developer" && *role != "user" && *role != "assistant" && *role != "tool")
      throw invalid_request("Invalid value: '" + *role + "'. Supported values are: 'system', 'assistant', 'user', "
                            "'tool', and 'developer'.",
                            where + ".role", "invalid_value");
    Body message = m;
    if (*role == "developer") message["role"] = "system";
    const bool is_assistant = *role == "assistant";
    message["content"] = normalize_content(m.value("content", Body()), where + ".content", is_assistant);
    if (is_assistant) {
      const bool has_calls = m.contains("tool_calls") && !m["tool_calls"].is_null() && !m["tool_calls"].empty();
      if (has_calls) {
        message["tool_calls"] = normalize_tool_calls(m["tool_calls"], where + ".tool_calls");
        // DeepSeek's template renders the calls only for a null content.
        if (message["content"].is_string() && message["content"].get<std::string>().empty())
          message["content"] = nullptr;
      } else {
        message.erase("tool_calls");
        if (message["content"].is_null()) message["content"] = "";
      }
    }
    out.push_back(std::move(message));
  }
  return out;
}

void parse_tools(const Body& b, ChatRequest& r) {
  if (auto it = b.find("tools"); it != b.end() && !it->is_null()) {
    if (!it->is_array()) throw invalid_request("Invalid type for 'tools': expected an array.", "tools", "invalid_type");
    for (size_t i = 0; i < it->size(); ++i) {
      const Body& tool = (*it)[i];
      const std::string where = cat("tools[", i, "]");
      if (!tool.is_object() || tool.value("type", "function") != "function")
        throw invalid_request("Invalid '" + where + "': expected a function tool.", where, "invalid_value");
      if (!tool.contains("function") || !tool["function"].is_object()) throw missing(where + ".function");
      if (!tool["function"].contains("name") || !tool["function"]["name"].is_string())
        throw missing(where + ".function.name");
    }
    if (!it->empty()) r.tools = *it;
  }
  auto choice = b.find("tool_choice");
  if (choice == b.end() || choice->is_null()) {
    r.tool_choice = ToolChoice::kAuto;
  } else if (choice->is_string()) {
    const std::string c = choice->get<std::string>();
    if (c == "none") r.tool_choice = ToolChoice::kNone;
    else if (c == "auto") r.tool_choice = ToolChoice::kAuto;
    else if (c == "required") r.tool_choice = ToolChoice::kRequired;
    else throw invalid_request("Invalid value: '" + c + "'. Supported values are: 'none', 'auto', and 'required'.",
                               "tool_choice", "invalid_value");
  } else if (choice->is_object() && choice->contains("function") && (*choice)["function"].is_object() &&
             (*choice)["function"].contains("name") && (*choice)["function"]["name"].is_string()) {
    r.tool_choice = ToolChoice::kNamed;
    r.tool_name = (*choice)["function"]["name"].get<std::string>();
  } else {
    throw invalid_request("Invalid 'tool_choice': expected 'none', 'auto', 'required' or "
                          "{\"type\": \"function\", \"function\": {\"name\": ...}}.",
                          "tool_choice", "invalid_value");
  }
  if ((r.tool_choice == ToolChoice::kRequired || r.tool_choice == ToolChoice::kNamed) && r.tools.is_null())
    throw invalid_request("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                          "tool_choice", "invalid_value");
  if (r.tool_choice == ToolChoice::kNamed) {
    bool known = false;
    for (const Body& tool : r.tools) known = known || tool["function"]["name"] == r.tool_name;
    if (!known) throw invalid_request("Invalid 'tool_choice': no tool named '" + r.tool_name + "' in 'tools'.",
                                      "tool_choice", "invalid_value");
  }
}

std::vector<int32_t> read_ids(const Body& ids, const std::string& where) {
  std::vector<int32_t> out;
  for (const Body& id : ids) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      throw invalid_request("Invalid '" + where + "': expected token ids (non-negative integers).", where,
                            "invalid_value");
    out.push_back(id.get<int32_t>());
  }
  return out;
}

std::vector<CompletionPrompt> parse_prompts(const Body& b) {
  auto it = b.find("prompt");
  if (it == b.end() || it->is_null()) throw missing("prompt");
  const Body& prompt = *it;
  const ApiError bad = invalid_request(
      "Invalid type for 'prompt': expected a string, an array of strings, an array of tokens, or an array of "
      "token arrays.",
      "prompt", "invalid_type");
  std::vector<CompletionPrompt> prompts;
  if (prompt.is_string()) {
    prompts.push_back({prompt.get<std::string>(), {}});
  } else if (prompt.is_array() && !prompt.empty() && prompt[0].is_number()) {
    prompts.push_back({std::nullopt, read_ids(prompt, "prompt")});
  } else if (prompt.is_array()) {
    for (size_t i = 0; i < prompt.size(); ++i) {
      if (prompt[i].is_string()) prompts.push_back({prompt[i].get<std::string>(), {}});
      else if (prompt[i].is_array()) prompts.push_back({std::nullopt, read_ids(prompt[i], cat("prompt[", i, "]"))});
      else throw bad;
    }
  } else {
    throw bad;
  }
  if (prompts.empty())
    throw invalid_request("Invalid 'prompt': empty array. Expected an array with minimum length 1.", "prompt",
                          "empty_array");
  for (const CompletionPrompt& p : prompts)
    if (!p.text && p.ids.empty()) throw invalid_request("Invalid 'prompt': a token array is empty.", "prompt",
                                                        "empty_array");
  return prompts;
}

}  // namespace

ChatRequest parse_chat_request(const Body& b) {
  ChatRequest r;
  r.messages = normalize_messages(b);
  r.options = parse_options(b, true);
  parse_tools(b, r);
  if (auto it = b.find("chat_template_kwargs"); it != b.end() && !it->is_null()) {
    if (!it->is_object()) throw invalid_request("Invalid type for 'chat_template_kwargs': expected an object.",
                                                "chat_template_kwargs", "invalid_type");
    r.template_kwargs = *it;
  }
  r.separate_reasoning = read_bool(b, "separate_reasoning").value_or(true);
  return r;
}

CompletionRequest parse_completion_request(const Body& b) {
  CompletionRequest r;
  r.prompts = parse_prompts(b);
  r.options = parse_options(b, false);
  r.echo = read_bool(b, "echo").value_or(false);
  if (auto suffix = read_string(b, "suffix"); suffix && !suffix->empty()) throw unsupported("suffix", "suffix");
  if (auto best_of = read_int(b, "best_of", 1, 128); best_of && *best_of != r.options.params.n)
    throw unsupported("best_of", "best_of other than n");
  return r;
}

}  // namespace narwhal::server
