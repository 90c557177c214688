// Metrics: histogram bookkeeping and the Prometheus text exposition.
#include "server/metrics.h"

#include <cstdio>

namespace narwhal::server {

namespace {

std::string number(double v) {
  char buf[40];
  int len = std::snprintf(buf, sizeof buf, "%.9g", v);
  return std::string(buf, static_cast<size_t>(len));
}

void write_metric(std::string& out, const std::string& name, const char* type, const std::string& help,
                  const std::string& labels, double value) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  out += name + "{" + labels + "} " + number(value) + "\n";
}

// Label values escape backslash, quote and newline (exposition format).
std::string escape_label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  std::lock_guard<std::mutex> lock(mutex_);
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& help,
                      const std::string& labels) const {
  std::lock_guard<std::mutex> lock(mutex_);
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  int64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out += name + "_bucket{" + labels + ",le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_sum{" + labels + "} " + number(sum_) + "\n";
  out += name + "_count{" + labels + "} " + std::to_string(count_) + "\n";
}

Metrics::Metrics(std::string model_name)
    : labels_("model_name=\"" + escape_label(model_name) + "\""),
      ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 15, 20, 25, 30}),
      inter_token_({0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3,
                    0.4, 0.5, 0.75, 1, 2}),
      e2e_({0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 500, 1000}) {}

void Metrics::count_response(const std::string& route, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++responses_[{route, status}];
}

void Metrics::first_output(double seconds_since_submit) {
  --queued_;
  ++running_;
  ttft_.observe(seconds_since_submit);
}

void Metrics::request_finished(bool started, double e2e_seconds) {
  --(started ? running_ : queued_);
  e2e_.observe(e2e_seconds);
}

std::string Metrics::render(const EngineStats& engine, const TransportCounters& transport) const {
  std::string out;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::string name = "narwhal:http_requests_total";
    out += "# HELP " + name + " HTTP responses by route and status code\n# TYPE " + name + " counter\n";
    for (const auto& [key, count] : responses_)
      out += name + "{" + labels_ + ",route=\"" + escape_label(key.first) + "\",code=\"" +
             std::to_string(key.second) + "\"} " + std::to_string(count) + "\n";
  }
  const double prompt = static_cast<double>(engine.prompt_tokens.load());
  const double cached = static_cast<double>(engine.cached_tokens.load());
  write_metric(out, "narwhal:prompt_tokens_total", "counter", "prompt tokens of admitted requests", labels_, prompt);
  write_metric(out, "narwhal:generation_tokens_total", "counter", "generated tokens", labels_,
               static_cast<double>(engine.generated_tokens.load()));
  write_metric(out, "narwhal:cached_tokens_total", "counter", "prompt tokens served from the prefix cache", labels_,
               cached);
  write_metric(out, "narwhal:num_requests_total", "counter", "requests the engine finished", labels_,
               static_cast<double>(engine.finished_requests.load()));
  write_metric(out, "narwhal:num_aborted_requests_total", "counter", "requests aborted (client gone, shutdown)",
               labels_, static_cast<double>(engine.aborted_requests.load()));
  write_metric(out, "narwhal:num_retractions_total", "counter", "requests preempted when the cache ran out", labels_,
               static_cast<double>(engine.retractions.load()));
  write_metric(out, "narwhal:num_running_reqs", "gauge", "requests generating", labels_,
               static_cast<double>(running_.load()));
  write_metric(out, "narwhal:num_queue_reqs", "gauge", "requests waiting for their first token", labels_,
               static_cast<double>(queued_.load()));
  write_metric(out, "narwhal:cache_hit_rate", "gauge", "fraction of prompt tokens served from the prefix cache",
               labels_, prompt > 0 ? cached / prompt : 0.0);
  write_metric(out, "narwhal:open_connections", "gauge", "open HTTP connections", labels_,
               static_cast<double>(transport.open_connections.load()));
  write_metric(out, "narwhal:slow_client_closes_total", "counter",
               "connections closed because the client stopped reading (--max-queued-response-bytes)", labels_,
               static_cast<double>(transport.slow_client_closes.load()));
  const auto gauge = [&](const char* name, const char* help, const std::atomic<int64_t>& value) {
    write_metric(out, name, "gauge", help, labels_, static_cast<double>(value.load()));
  };
  gauge("narwhal:engine_running_seqs", "sequences in the engine's running batch", engine.running_requests);
  gauge("narwhal:engine_waiting_seqs", "sequences waiting for admission to the engine", engine.waiting_requests);
  gauge("narwhal:kv_total_pages", "pages of the KV (MLA latent) cache", engine.kv_total_pages);
  gauge("narwhal:kv_used_pages", "KV cache pages held by requests or the radix cache", engine.kv_used_pages);
  gauge("narwhal:kv_evictable_pages", "KV cache pages only the radix cache holds", engine.kv_evictable_pages);
  const double total_pages = static_cast<double>(engine.kv_total_pages.load());
  write_metric(out, "narwhal:token_usage", "gauge", "fraction of the KV cache held by requests (SGLang's token_usage)",
               labels_,
               total_pages > 0 ? static_cast<double>(engine.kv_used_pages - engine.kv_evictable_pages) / total_pages
                               : 0.0);
  // SGLang's spec_accept_length: tokens per decode step of speculating sequences (1: no draft kept), since start.
  write_metric(out, "narwhal:spec_accept_length", "gauge",
               "mean tokens a speculative decode step gave (kept drafts + 1); 0 before any", labels_,
               engine.spec_accept_length());
  write_metric(out, "narwhal:spec_verify_steps_total", "counter", "decode steps of speculating sequences", labels_,
               static_cast<double>(engine.spec_verifies.load()));
  write_metric(out, "narwhal:engine_alive", "gauge", "1 while the engine loop runs", labels_,
               engine.loop_running ? 1.0 : 0.0);
  // Each DP rank's load (one rank without DP attention): a rank that lags shows here before it shows in latency.
  const std::vector<DpRankLoad> loads = engine.dp_loads();
  const auto per_rank = [&](const std::string& name, const char* help, double (*value)(const DpRankLoad&)) {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " gauge\n";
    for (size_t r = 0; r < loads.size(); ++r)
      out += name + "{" + labels_ + ",dp_rank=\"" + std::to_string(r) + "\"} " + number(value(loads[r])) + "\n";
  };
  per_rank("narwhal:dp_rank_running_seqs", "sequences in a DP rank's running batch",
           [](const DpRankLoad& l) { return static_cast<double>(l.running); });
  per_rank("narwhal:dp_rank_waiting_seqs", "sequences waiting for admission to a DP rank",
           [](const DpRankLoad& l) { return static_cast<double>(l.waiting); });
  const std::vector<int64_t> experts = engine.expert_tokens();
  if (!experts.empty()) {
    const std::string name = "narwhal:expert_routed_tokens_total";
    out += "# HELP " + name + " tokens the router sent to a routed expert, over all MoE layers\n# TYPE " + name +
           " counter\n";
    for (size_t e = 0; e < experts.size(); ++e)
      out += name + "{" + labels_ + ",expert=\"" + std::to_string(e) + "\"} " + number(static_cast<double>(experts[e])) + "\n";
  }
  per_rank("narwhal:dp_rank_token_usage", "fraction of a DP rank's KV cache held by requests",
           [](const DpRankLoad& l) {
             return l.kv_total_pages > 0 ? static_cast<double>(l.kv_used_pages) / l.kv_total_pages : 0.0;
           });
  ttft_.write(out, "narwhal:time_to_first_token_seconds", "time to first token", labels_);
  inter_token_.write(out, "narwhal:inter_token_latency_seconds", "time per output token after the first", labels_);
  e2e_.write(out, "narwhal:e2e_request_latency_seconds", "request latency from submit to the last token", labels_);
  return out;
}

}  // namespace narwhal::server
