// The benchmark's backends: the request each one sends, and how its stream yields TTFT, inter-token latencies
// and the output token count (SGLang's bench_serving request functions).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cli/bench_serving_dataset.h"
#include "cli/bench_serving_http.h"
#include "core/json.h"

namespace narwhal {

enum class ServingApi {
  kGenerate,         // SGLang's native /generate: every event carries the text so far and meta_info
  kCompletions,      // OpenAI /v1/completions
  kChatCompletions,  // OpenAI /v1/chat/completions
};

struct Backend {
  std::string name;
  ServingApi api = ServingApi::kGenerate;
  const char* path() const;
  bool takes_token_ids() const { return api != ServingApi::kChatCompletions; }
  bool is_sglang() const { return api == ServingApi::kGenerate; }  // has /get_server_info, /flush_cache
};

// narwhal, sglang, sglang-native: /generate; openai, sglang-oai, vllm, lmdeploy: /v1/completions;
// openai-chat, sglang-oai-chat, vllm-chat, lmdeploy-chat: /v1/chat/completions. Error otherwise.
Backend parse_backend(const std::string& name);

struct RequestOptions {
  std::string model;       // the served model id (OpenAI backends)
  bool ignore_eos = true;  // --disable-ignore-eos clears it
  double temperature = 0.0;
  json extra_body = json::object();  // --extra-request-body: merged into the payload last
};

// The JSON payload asking for the row's output_len tokens of its prompt, streamed (greedy unless a temperature is
// set).
std::string request_body(const Backend& backend, const DatasetRow& row, const RequestOptions& options);

// One request's measurements (SGLang's RequestFuncOutput); times in seconds.
struct RequestOutcome {
  bool success = false;
  std::string generated_text;
  double start_time = 0;  // when it was sent, from the start of the run
  double ttft = 0;        // sent -> first chunk with output
  double latency = 0;     // sent -> last line of the stream
  std::vector<double> itl;
  int64_t prompt_len = 0;
  int64_t output_len = -1;  // as the server counted it (usage, meta_info); -1: it did not say
  std::string error;
};

// Follows one streamed response and fills a RequestOutcome as SGLang's request function for the backend does.
class StreamMeter {
 public:
  StreamMeter(ServingApi api, BenchHttpClient::Clock::time_point sent, RequestOutcome* outcome);
  void on_line(BenchHttpClient::Clock::time_point arrived, std::string_view line);
  void on_done(const HttpResult& result);

 private:
  // The output an event carries: text to append (or the whole text so far for /generate), the completion
  // token count when the event states one (-1 otherwise).
  void on_output(BenchHttpClient::Clock::time_point arrived, const std::string& text, int64_t completion_tokens);
  double since_sent(BenchHttpClient::Clock::time_point t) const;

  ServingApi api_;
  BenchHttpClient::Clock::time_point sent_;
  BenchHttpClient::Clock::time_point last_token_;
  RequestOutcome* out_;
  bool first_token_seen_ = false;
  int64_t last_output_len_ = 0;
};

}  // namespace narwhal
