// What a serving benchmark run measured: SGLang's BenchmarkMetrics, its "Serving Benchmark Result" table and
// the JSONL result line with its field names.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cli/bench_serving_runner.h"
#include "core/json.h"
#include "text/tokenizer.h"

namespace narwhal {

// A latency distribution in milliseconds (numpy's mean, median, std and linear percentiles; 0 when empty).
struct LatencyStats {
  double mean = 0, median = 0, std = 0, p90 = 0, p95 = 0, p99 = 0, max = 0;
};
LatencyStats latency_stats(std::vector<double> seconds);

struct ServingMetrics {
  int64_t completed = 0;
  int64_t failed = 0;
  std::string first_error;
  int64_t total_input = 0;
  int64_t total_output = 0;
  int64_t total_output_retokenized = 0;  // the generated texts encoded again, without special tokens
  double duration = 0;
  double request_throughput = 0, input_throughput = 0, output_throughput = 0, total_throughput = 0;
  LatencyStats ttft, tpot, itl, e2e;
  double concurrency = 0;  // sum of the requests' latencies over the duration
  double max_output_tokens_per_s = 0;  // the busiest second, from the token arrival times
  int64_t max_concurrent_requests = 0;
  std::vector<int64_t> output_lens;  // by request, 0 for failed ones
};

ServingMetrics compute_metrics(const RunResult& run, const text::Tokenizer& tokenizer);

// How the run was asked for, as the table and the JSONL line report it.
struct RunDescription {
  std::string backend;
  std::string dataset_name;
  double request_rate = 0;
  int max_concurrency = 0;  // 0: not set
  int sharegpt_output_len = 0;  // 0: not set
  int random_input_len = 0, random_output_len = 0;
  double random_range_ratio = 0;
  std::optional<double> accept_length;  // SGLang servers with speculative decoding report it
};

void print_serving_table(const RunDescription& run, const ServingMetrics& metrics);

// The JSONL result line (SGLang's fields, in its order); with `details` also the per-request lists of
// --output-details.
nlohmann::ordered_json serving_result_json(const RunDescription& run, const ServingMetrics& metrics,
                                           const nlohmann::ordered_json& server_info, const RunResult* details);

}  // namespace narwhal
