// Metrics: the server's Prometheus counters, gauges and latency histograms (SGLang's metric names, narwhal: prefix).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "server/http_server.h"

namespace narwhal::server {

// A cumulative histogram with fixed upper bounds, as Prometheus exposes them.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // Appends `name`_bucket/_sum/_count lines with `labels` (e.g. model_name="x").
  void write(std::string& out, const std::string& name, const std::string& help, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<int64_t> counts_;  // per bound, plus +Inf
  double sum_ = 0.0;
  int64_t count_ = 0;
};

class Metrics {
 public:
  explicit Metrics(std::string model_name);

  void count_response(const std::string& route, int status);
  // A generation request's life: queued at submit, running from its first output, gone at its end.
  void request_submitted() { ++queued_; }
  void first_output(double seconds_since_submit);
  void request_finished(bool started, double e2e_seconds);
  void inter_token(double seconds_per_token) { inter_token_.observe(seconds_per_token); }

  int64_t queued() const { return queued_; }
  int64_t running() const { return running_; }
  // The Prometheus text exposition (format 0.0.4) of everything, engine counters included.
  std::string render(const EngineStats& engine, const TransportCounters& transport) const;

 private:
  std::string labels_;
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> responses_;  // (route, status) -> count
  std::atomic<int64_t> queued_{0}, running_{0};
  Histogram ttft_, inter_token_, e2e_;
};

}  // namespace narwhal::server
