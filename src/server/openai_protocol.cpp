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

// The object at `key` (null when absent or null), or a 400 naming `parent`.`key` when it is something else.
const Body* read_object(const Body& object, const char* key, const std::string& parent = "") {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  const std::string param = parent.empty() ? std::string(key) : cat(parent, ".", key);
  if (!it->is_object()) throw invalid_request("Invalid type for '" + param + "': expected an object.", param,
                                              "invalid_type");
  return &*it;
}

// Tools, tool calls and a named tool_choice are all of "type": "function" (the default when absent).
void check_function_type(const Body& object, const std::string& where) {
  const std::string type = read_string(object, "type", where).value_or("function");
  if (type != "function")
    throw invalid_request("Invalid value: '" + type + "'. Supported values are: 'function'.", where + ".type",
                          "invalid_value");
}

// The options every generation endpoint shares. `chat` picks the chat spellings (max_completion_tokens,
// boolean logprobs + top_logprobs) over the legacy completion ones (max_tokens default 16, integer logprobs).
GenerationOptions parse_options(const Body& b, bool chat) {
  GenerationOptions o;
  o.model = read_string(b, "model").value_or("");
  o.stream = read_bool(b, "stream").value_or(false);
  if (const Body* options = read_object(b, "stream_options")) {
    if (!o.stream)
      throw invalid_request("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                            "stream_options", "invalid_value");
    o.include_usage = read_bool(*options, "include_usage", "stream_options").value_or(false);
  }
  SamplingParams& p = o.params;
  std::optional<int64_t> max_tokens = read_int(b, "max_tokens", 1, kMaxInt);
  if (chat) {
    if (auto m = read_int(b, "max_completion_tokens", 1, kMaxInt)) max_tokens = m;
  } else if (!max_tokens) {
    max_tokens = 16;  // the legacy completions API's default
  }
  o.max_tokens_given = max_tokens.has_value();
  p.max_new_tokens = max_tokens.value_or(kMaxInt);  // none: whatever room the context leaves
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
  if (auto it = b.find("stop_token_ids"); it != b.end() && !it->is_null())
    p.stop_token_ids = read_token_ids(*it, "stop_token_ids");
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
  if (auto it = b.find("logit_bias"); it != b.end() && !it->is_null())
    p.logit_bias = read_logit_bias(*it, "logit_bias");
  if (const Body* format = read_object(b, "response_format")) {
    const std::string type = read_string(*format, "type", "response_format").value_or("text");
    if (type == "json_object") {
      p.grammar = JsonGrammar::any_object();
    } else if (type == "json_schema") {
      const Body* spec = read_object(*format, "json_schema", "response_format");
      if (!spec) throw missing("response_format.json_schema");
      if (!read_string(*spec, "name", "response_format.json_schema"))
        throw missing("response_format.json_schema.name");
      read_bool(*spec, "strict", "response_format.json_schema");  // the output always keeps to the schema
      const Body* schema = read_object(*spec, "schema", "response_format.json_schema");
      p.grammar = read_json_schema(schema ? *schema : Body::object(), "response_format.json_schema.schema");
    } else if (type != "text") {
      throw invalid_request("Invalid value: '" + type + "'. Supported values are: 'text', 'json_object', and "
                            "'json_schema'.",
                            "response_format.type", "invalid_value");
    }
  }
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
    if (!part.is_object()) throw invalid_request("Invalid type for '" + part_where + "': expected an object.",
                                                 part_where, "invalid_type");
    const auto type = read_string(part, "type", part_where);
    if (!type) throw missing(part_where + ".type");
    if (*type != "text") throw unsupported(part_where + ".type", "content of type '" + *type + "'");
    const auto t = read_string(part, "text", part_where);
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
    if (!call.is_object()) throw invalid_request("Invalid type for '" + call_where + "': expected an object.",
                                                 call_where, "invalid_type");
    check_function_type(call, call_where);
    const Body* given = read_object(call, "function", call_where);
    if (!given) throw missing(call_where + ".function");
    Body function = *given;
    if (!read_string(function, "name", call_where + ".function")) throw missing(call_where + ".function.name");
    // OpenAI sends the arguments as a JSON string; an object (some clients) is serialized as one.
    if (!function.contains("arguments") || function["arguments"].is_null()) function["arguments"] = "{}";
    if (!function["arguments"].is_string()) function["arguments"] = function["arguments"].dump();
    Body normalized = call;
    normalized["type"] = "function";
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
      if (!tool.is_object())
        throw invalid_request("Invalid type for '" + where + "': expected an object.", where, "invalid_type");
      check_function_type(tool, where);
      const Body* function = read_object(tool, "function", where);
      if (!function) throw missing(where + ".function");
      if (!read_string(*function, "name", where + ".function")) throw missing(where + ".function.name");
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
  } else if (choice->is_object()) {
    check_function_type(*choice, "tool_choice");
    const Body* function = read_object(*choice, "function", "tool_choice");
    if (!function) throw missing("tool_choice.function");
    const auto name = read_string(*function, "name", "tool_choice.function");
    if (!name) throw missing("tool_choice.function.name");
    r.tool_choice = ToolChoice::kNamed;
    r.tool_name = *name;
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
    prompts.push_back({std::nullopt, read_token_ids(prompt, "prompt")});
  } else if (prompt.is_array()) {
    for (size_t i = 0; i < prompt.size(); ++i) {
      if (prompt[i].is_string()) prompts.push_back({prompt[i].get<std::string>(), {}});
      else if (prompt[i].is_array())
        prompts.push_back({std::nullopt, read_token_ids(prompt[i], cat("prompt[", i, "]"))});
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
  check_nesting(b);  // first: what follows copies and serializes client values recursively
  ChatRequest r;
  r.messages = normalize_messages(b);
  r.options = parse_options(b, true);
  parse_tools(b, r);
  if (const Body* kwargs = read_object(b, "chat_template_kwargs")) r.template_kwargs = *kwargs;
  r.separate_reasoning = read_bool(b, "separate_reasoning").value_or(true);
  return r;
}

CompletionRequest parse_completion_request(const Body& b) {
  check_nesting(b);  // first: what follows copies client values recursively
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
