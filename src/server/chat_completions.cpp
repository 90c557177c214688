// Chat completions: messages -> template -> ids -> GenerationJob; outputs as chat.completion(.chunk) objects.
#include "server/chat_completions.h"

#include "core/logging.h"
#include "server/chat_output.h"
#include "server/completions.h"
#include "server/generation_job.h"
#include "server/openai_logprobs.h"
#include "text/reasoning_parser.h"
#include "text/tool_call_parser.h"

namespace narwhal::server {

namespace {

class ChatJob : public GenerationJob {
 public:
  ChatJob(ServerContext& context, std::shared_ptr<Responder> responder, const ChatRequest& request,
          std::vector<int32_t> prompt, const std::string& forced_prefix)
      : GenerationJob(context, std::move(responder), request.options, {std::move(prompt)}, "chatcmpl-"),
        logprobs_sent_(choices_.size(), 0) {
    ChatOutputOptions output_options;
    // A forced tool call opens the turn right after the prompt: there is no reasoning to split off.
    if (request.separate_reasoning && forced_prefix.empty())
      output_options.reasoning_parser = context.options.reasoning_parser;
    if (request.tool_choice != ToolChoice::kNone && !request.tools.is_null()) {
      output_options.tool_call_parser = context.options.tool_call_parser;
      for (const auto& tool : request.tools) output_options.tool_names.push_back(tool["function"]["name"]);
    }
    output_options.forced_prefix = forced_prefix;
    for (size_t i = 0; i < choices_.size(); ++i) outputs_.emplace_back(output_options);
  }

 protected:
  const char* chunk_object() const override { return "chat.completion.chunk"; }

  void on_stream_start() override {
    for (size_t i = 0; i < choices_.size(); ++i)
      send_choice(static_cast<int>(i), {{"role", "assistant"}, {"content", ""}}, nullptr, nullptr);
  }

  void on_delta(int choice, const std::string& delta, const RequestOutput& output) override {
    ChatOutput& parsed = outputs_[static_cast<size_t>(choice)];
    json d = parsed.feed(delta, output.finish.has_value());
    if (!options_.stream) return;
    json logprobs = nullptr;
    const ChoiceState& state = choices_[static_cast<size_t>(choice)];
    if (options_.logprobs && state.logprobs.size() > logprobs_sent_[choice]) {
      logprobs = chat_logprobs(context_.tokenizer, state.logprobs, logprobs_sent_[choice]);
      logprobs_sent_[choice] = state.logprobs.size();
    }
    if (!d.empty() || !logprobs.is_null()) send_choice(choice, std::move(d), std::move(logprobs), nullptr);
    if (output.finish) send_choice(choice, json::object(), nullptr, finish_reason(choice));
  }

  json final_response() override {
    json out = base("chat.completion");
    json choices = json::array();
    for (size_t i = 0; i < choices_.size(); ++i) {
      const ChoiceState& state = choices_[i];
      json message = outputs_[i].message();
      json c = {{"index", i}, {"message", std::move(message)}, {"logprobs", nullptr},
                {"finish_reason", finish_reason(static_cast<int>(i))}};
      if (options_.logprobs) c["logprobs"] = chat_logprobs(context_.tokenizer, state.logprobs);
      choices.push_back(std::move(c));
    }
    out["choices"] = std::move(choices);
    out["usage"] = usage();
    out["system_fingerprint"] = nullptr;
    return out;
  }

 private:
  json finish_reason(int choice) const {
    const ChoiceState& state = choices_[static_cast<size_t>(choice)];
    if (!state.finish) return nullptr;
    if (outputs_[static_cast<size_t>(choice)].has_tool_calls() && state.finish->kind == FinishReason::Kind::kStop)
      return "tool_calls";
    return finish_reason_name(*state.finish);
  }

  void send_choice(int index, json delta, json logprobs, json finish) {
    json chunk = base(chunk_object());
    chunk["system_fingerprint"] = nullptr;
    chunk["choices"] = json::array({{{"index", index}, {"delta", std::move(delta)}, {"logprobs", std::move(logprobs)},
                                     {"finish_reason", std::move(finish)}}});
    send_chunk(chunk);
  }

  std::vector<ChatOutput> outputs_;
  std::vector<size_t> logprobs_sent_;
};

// For tool_choice "required" or a named function the assistant turn is opened with the start of a tool call,
// so that the model can only continue with one (DeepSeek-V3's tool call syntax).
std::string forced_tool_prefix(const ServerContext& context, const ChatRequest& request) {
  if (context.options.tool_call_parser.empty()) return "";
  if (request.tool_choice == ToolChoice::kRequired)
    return "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>";
  if (request.tool_choice == ToolChoice::kNamed)
    return "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>" + request.tool_name + "\n```json\n";
  return "";
}

// A named function's call: its arguments as JSON of its parameters' schema, then the call's closing tags, so the
// call always parses. A schema the grammar cannot enforce (pattern, minimum, ...) leaves the arguments free.
std::shared_ptr<const JsonGrammar> named_tool_grammar(const ChatRequest& request) {
  using text::ToolCallParser;
  for (const Body& tool : request.tools) {
    const Body& function = tool["function"];
    if (function.value("name", "") != request.tool_name) continue;
    const Body parameters = function.contains("parameters") ? function["parameters"] : Body::object();
    try {
      return JsonGrammar::from_schema(parameters, cat("\n```", ToolCallParser::kCallEnd, ToolCallParser::kCallsEnd));
    } catch (const Error& e) {
      NW_LOG(Debug) << "tool " << request.tool_name << ": its arguments are not constrained (" << e.what() << ")";
      return nullptr;
    }
  }
  return nullptr;
}

}  // namespace

void handle_chat_completions(ServerContext& context, const HttpRequest& request,
                             std::shared_ptr<Responder> responder) {
  ChatRequest parsed = parse_chat_request(parse_body(request));
  check_model(context, parsed.options.model);
  check_fan_out(context, 1, parsed.options.params.n);
  if (!context.chat_template)
    throw invalid_request("The model's tokenizer has no chat template; pass --chat-template or use /v1/completions.");
  std::string prompt;
  try {
    prompt = context.chat_template->render(parsed.messages, parsed.tools, true, context.tokenizer.config(),
                                           parsed.template_kwargs);
  } catch (const std::exception& e) {
    throw invalid_request(std::string("The chat template cannot render these messages: ") + e.what(), "messages");
  }
  // A reasoning model writes its thinking first: the output's grammar starts after "</think>" where that is one
  // token (R1's tokenizer), as SGLang's reasoner grammar does; otherwise at the first token.
  if (parsed.options.params.grammar && parsed.separate_reasoning && !context.options.reasoning_parser.empty())
    parsed.options.params.grammar_after_token = context.tokenizer.token_to_id(text::ReasoningParser::kEnd);
  const std::string forced = forced_tool_prefix(context, parsed);
  if (!forced.empty() && parsed.options.params.grammar)
    throw invalid_request("'response_format' json_object / json_schema cannot be combined with tool_choice "
                          "'required' or a named function: the output is a tool call.", "response_format");
  if (!forced.empty() && parsed.tool_choice == ToolChoice::kNamed)
    parsed.options.params.grammar = named_tool_grammar(parsed);
  std::vector<int> ids;
  try {
    ids = context.tokenizer.encode(prompt + forced, false);
  } catch (const std::exception& e) {
    throw invalid_request(std::string("Invalid 'messages': ") + e.what(), "messages");
  }
  auto job = std::make_shared<ChatJob>(context, std::move(responder), parsed, std::vector<int32_t>(ids.begin(), ids.end()),
                                       forced);
  job->start();
}

}  // namespace narwhal::server
