// ServerContext: in-flight request tracking for drains.
#include "server/server_context.h"

#include <random>

namespace narwhal::server {

ServerContext::ServerContext(Engine& e, const text::Tokenizer& t, const text::ChatTemplate* c, ServerOptions o)
    : engine(e),
      tokenizer(t),
      chat_template(c),
      options(std::move(o)),
      context_length(e.max_sequence_len()),
      started_at(unix_seconds()),
      metrics(options.model_name),
      outputs(options.output_threads) {}

void ServerContext::track(uint64_t request_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  in_flight_.insert(request_id);
}

void ServerContext::untrack(uint64_t request_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  in_flight_.erase(request_id);
}

int64_t ServerContext::in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(in_flight_.size());
}

void ServerContext::abort_all() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (uint64_t id : in_flight_) engine.abort(id);
}

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string random_id(const char* prefix) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  static const char kAlphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += kAlphabet[rng() % (sizeof kAlphabet - 1)];
  return id;
}

}  // namespace narwhal::server
