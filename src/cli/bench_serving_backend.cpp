// Backends of the serving benchmarks: payloads and stream accounting, as SGLang's bench_serving request functions.
#include "cli/bench_serving_backend.h"

#include "core/error.h"

namespace narwhal {

namespace {

struct BackendName {
  const char* name;
  ServingApi api;
};

const BackendName kBackends[] = {
    {"narwhal", ServingApi::kGenerate},           {"sglang", ServingApi::kGenerate},
    {"sglang-native", ServingApi::kGenerate},     {"openai", ServingApi::kCompletions},
    {"sglang-oai", ServingApi::kCompletions},     {"vllm", ServingApi::kCompletions},
    {"lmdeploy", ServingApi::kCompletions},       {"openai-chat", ServingApi::kChatCompletions},
    {"sglang-oai-chat", ServingApi::kChatCompletions}, {"vllm-chat", ServingApi::kChatCompletions},
    {"lmdeploy-chat", ServingApi::kChatCompletions},
};

std::string_view trim(std::string_view s) {
  const size_t begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  return s.substr(begin, s.find_last_not_of(" \t\r\n") - begin + 1);
}

}  // namespace

const char* Backend::path() const {
  switch (api) {
    case ServingApi::kGenerate: return "/generate";
    case ServingApi::kCompletions: return "/v1/completions";
    case ServingApi::kChatCompletions: return "/v1/chat/completions";
  }
  return "/generate";
}

Backend parse_backend(const std::string& name) {
  std::string known;
  for (const BackendName& b : kBackends) {
    if (name == b.name) return {name, b.api};
    known += known.empty() ? b.name : std::string(", ") + b.name;
  }
  throw Error(cat("--backend ", name, ": expected one of ", known));
}

std::string request_body(const Backend& backend, const DatasetRow& row, const RequestOptions& options) {
  const json prompt = row.as_ids ? json(row.ids) : json(row.text);
  json payload;
  if (backend.api == ServingApi::kGenerate) {
    payload[row.as_ids ? "input_ids" : "text"] = prompt;
    payload["sampling_params"] = {
        {"temperature", options.temperature}, {"max_new_tokens", row.output_len}, {"ignore_eos", options.ignore_eos}};
    payload["stream"] = true;
  } else {
    payload["model"] = options.model;
    if (backend.api == ServingApi::kCompletions) {
      payload["prompt"] = prompt;
      payload["best_of"] = 1;
    } else {
      payload["messages"] = json::array({{{"role", "user"}, {"content", prompt}}});
    }
    payload["max_tokens"] = row.output_len;
    payload["temperature"] = options.temperature;
    payload["ignore_eos"] = options.ignore_eos;
    payload["stream"] = true;
    // The last chunk then states the completion tokens, which text chunks do not.
    payload["stream_options"] = {{"include_usage", true}};
  }
  payload.update(options.extra_body);
  return payload.dump(-1, ' ', false, json::error_handler_t::replace);
}

StreamMeter::StreamMeter(ServingApi api, BenchHttpClient::Clock::time_point sent, RequestOutcome* outcome)
    : api_(api), sent_(sent), last_token_(sent), out_(outcome) {}

double StreamMeter::since_sent(BenchHttpClient::Clock::time_point t) const {
  return std::chrono::duration<double>(t - sent_).count();
}

void StreamMeter::on_line(BenchHttpClient::Clock::time_point arrived, std::string_view raw) {
  std::string_view line = trim(raw);
  if (line.empty() || line.front() == ':') return;  // event separators and SSE comments
  if (line.rfind("data:", 0) == 0) line = trim(line.substr(5));
  out_->latency = since_sent(arrived);
  if (line == "[DONE]" || !out_->error.empty()) return;
  const json event = json::parse(line, nullptr, false);
  if (event.is_discarded() || !event.is_object()) {
    out_->error = cat("malformed stream event: ", line.substr(0, 200));
    return;
  }
  if (event.contains("error")) {
    out_->error = cat("error event: ", event["error"].dump());
    return;
  }
  if (auto usage = event.find("usage"); usage != event.end() && usage->is_object()) {
    if (auto n = usage->find("completion_tokens"); n != usage->end() && n->is_number_integer())
      out_->output_len = n->get<int64_t>();
  }
  std::string text;
  int64_t completion_tokens = -1;
  if (api_ == ServingApi::kGenerate) {
    if (auto t = event.find("text"); t != event.end() && t->is_string()) text = t->get<std::string>();
    if (auto meta = event.find("meta_info"); meta != event.end() && meta->is_object())
      completion_tokens = meta->value("completion_tokens", int64_t{-1});
  } else if (auto choices = event.find("choices"); choices != event.end() && choices->is_array() &&
                                                   !choices->empty() && (*choices)[0].is_object()) {
    // Completions carry choices[0].text, chat choices[0].delta.content.
    const json& choice = (*choices)[0];
    const bool chat = api_ == ServingApi::kChatCompletions;
    const json* holder = !chat ? &choice : choice.contains("delta") ? &choice["delta"] : nullptr;
    const char* key = chat ? "content" : "text";
    if (holder != nullptr && holder->is_object() && holder->contains(key) && (*holder)[key].is_string())
      text = (*holder)[key].get<std::string>();
  }
  // As SGLang: only events with output count as tokens (the last usage-only chunk carries none).
  if (!text.empty()) on_output(arrived, text, completion_tokens);
}

void StreamMeter::on_output(BenchHttpClient::Clock::time_point arrived, const std::string& text,
                            int64_t completion_tokens) {
  if (api_ != ServingApi::kGenerate) {
    out_->generated_text += text;
    if (!first_token_seen_) out_->ttft = since_sent(arrived);
    else out_->itl.push_back(std::chrono::duration<double>(arrived - last_token_).count());
    first_token_seen_ = true;
    last_token_ = arrived;
    return;
  }
  // /generate streams the whole text so far and meta_info.completion_tokens: a gap covering several tokens is
  // split evenly among them.
  out_->generated_text = text;
  if (completion_tokens >= 0) out_->output_len = completion_tokens;
  if (!first_token_seen_) {
    out_->ttft = since_sent(arrived);
  } else {
    const int64_t new_tokens = out_->output_len - last_output_len_;
    if (new_tokens <= 0) return;
    const double gap = std::chrono::duration<double>(arrived - last_token_).count() / static_cast<double>(new_tokens);
    out_->itl.insert(out_->itl.end(), static_cast<size_t>(new_tokens), gap);
  }
  first_token_seen_ = true;
  last_token_ = arrived;
  last_output_len_ = out_->output_len;
}

void StreamMeter::on_done(const HttpResult& result) {
  if (out_->error.empty() && !result.ok()) out_->error = result.describe();
  out_->success = out_->error.empty();
}

}  // namespace narwhal
