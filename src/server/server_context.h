// ServerContext: what every handler shares: the engine, the tokenizer and template, metrics, in-flight bookkeeping.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_set>

#include "runtime/engine.h"
#include "server/metrics.h"
#include "server/output_workers.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace narwhal::server {

struct ServerOptions {
  std::string model_name;        // the id /v1/models lists and requests must name
  std::string model_path;
  std::string tokenizer_path;    // where tokenizer.json came from (--tokenizer-path, else --model-path)
  std::string api_key;           // empty: no authentication
  std::string reasoning_parser;  // "" or deepseek-r1
  std::string tool_call_parser;  // "" or deepseekv3
  int64_t max_sequences_per_request = 2048;  // prompts x n of one request (--max-sequences-per-request)
  bool allow_auto_truncate = false;  // --allow-auto-truncate: cut prompts past the context instead of a 400
  int output_threads = OutputWorkers::default_threads();  // threads formatting and writing streamed outputs
};

class ServerContext {
 public:
  ServerContext(Engine& engine, const text::Tokenizer& tokenizer, const text::ChatTemplate* chat_template,
                ServerOptions options);

  Engine& engine;
  const text::Tokenizer& tokenizer;
  const text::ChatTemplate* chat_template;  // null: the tokenizer has none (chat completions answer 400)
  const ServerOptions options;
  const int64_t context_length;             // prompt + output tokens one request may have (Engine::max_sequence_len)
  const int64_t started_at;                 // unix seconds
  Metrics metrics;
  OutputWorkers outputs;                    // where engine outputs become response bytes (off the engine loop)

  // Engine requests still producing output, so that a drain can wait for them or abort them.
  void track(uint64_t request_id);
  void untrack(uint64_t request_id);
  int64_t in_flight() const;
  void abort_all();

 private:
  mutable std::mutex mutex_;
  std::unordered_set<uint64_t> in_flight_;
};

int64_t unix_seconds();
// `prefix` + 24 random alphanumerics: response and tool call ids as OpenAI writes them.
std::string random_id(const char* prefix);

}  // namespace narwhal::server
