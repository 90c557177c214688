// Serving benchmark metrics as SGLang's calculate_metrics computes them, and its result table and JSONL fields.
#include "cli/bench_serving_metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "core/error.h"

namespace narwhal {

namespace {

using ordered_json = nlohmann::ordered_json;

// numpy.percentile's default (linear interpolation between closest ranks) over sorted values.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank)), hi = static_cast<size_t>(std::ceil(rank));
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - static_cast<double>(lo));
}

// str(float) of Python for the table's request rate: "inf", "4.0", "0.5".
std::string python_float(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  if (v == std::floor(v) && std::fabs(v) < 1e16) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

// Python's "{:<40} {:<10}" rows and "{:c^50}" headings.
void row(const char* label, const std::string& value) { std::printf("%-40s %-10s\n", label, value.c_str()); }
void row(const char* label, int64_t value) { row(label, std::to_string(value)); }
void row(const char* label, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", value);
  row(label, std::string(buf));
}
void heading(const std::string& title, char fill) {
  const size_t width = 50, pad = title.size() < width ? width - title.size() : 0;
  std::printf("%s%s%s\n", std::string(pad / 2, fill).c_str(), title.c_str(), std::string(pad - pad / 2, fill).c_str());
}

// Which statistics beyond mean, median and p99 SGLang reports for a latency.
struct ExtraStats {
  bool p90 = false, p95 = false, max = false;
};

// A section of the table: "Mean NAME (ms):", "Median NAME (ms):", the extra percentiles, "P99 NAME (ms):".
void latency_rows(const char* title, const char* name, const LatencyStats& s, ExtraStats extra) {
  heading(title, '-');
  row(cat("Mean ", name, " (ms):").c_str(), s.mean);
  row(cat("Median ", name, " (ms):").c_str(), s.median);
  if (extra.p90) row(cat("P90 ", name, " (ms):").c_str(), s.p90);
  if (extra.p95) row(cat("P95 ", name, " (ms):").c_str(), s.p95);
  row(cat("P99 ", name, " (ms):").c_str(), s.p99);
  if (extra.max) row(cat("Max ", name, " (ms):").c_str(), s.max);
}

// The busiest second by output tokens and by requests in flight, from each request's token arrival times.
void peaks(const std::vector<RequestOutcome>& outcomes, ServingMetrics& m) {
  double first_start = INFINITY, last_end = -INFINITY;
  for (const RequestOutcome& o : outcomes) {
    if (!o.success) continue;
    first_start = std::min(first_start, o.start_time);
    last_end = std::max(last_end, o.start_time + o.latency);
  }
  if (!std::isfinite(first_start)) return;
  const size_t seconds = static_cast<size_t>(std::ceil(last_end - first_start)) + 1;
  std::vector<double> tokens(seconds, 0);
  std::vector<int64_t> requests(seconds, 0);
  for (const RequestOutcome& o : outcomes) {
    if (!o.success) continue;
    double t = o.start_time + o.ttft;
    for (size_t k = 0;; ++k) {
      const double bucket = std::floor(t - first_start);
      if (bucket >= 0 && bucket < static_cast<double>(seconds)) tokens[static_cast<size_t>(bucket)] += 1;
      if (k == o.itl.size()) break;
      t += o.itl[k];
    }
    const size_t from = static_cast<size_t>(o.start_time - first_start);
    const size_t to = std::min(static_cast<size_t>(o.start_time + o.latency - first_start) + 1, seconds);
    for (size_t s = from; s < to; ++s) ++requests[s];
  }
  m.max_output_tokens_per_s = *std::max_element(tokens.begin(), tokens.end());
  m.max_concurrent_requests = *std::max_element(requests.begin(), requests.end());
}

// The JSONL fields of a latency: mean_NAME_ms, median_, std_, the extra percentiles, p99_ (SGLang's has no max).
ordered_json latency_fields(const char* name, const LatencyStats& s, ExtraStats extra) {
  ordered_json j;
  j[cat("mean_", name, "_ms")] = s.mean;
  j[cat("median_", name, "_ms")] = s.median;
  j[cat("std_", name, "_ms")] = s.std;
  if (extra.p90) j[cat("p90_", name, "_ms")] = s.p90;
  if (extra.p95) j[cat("p95_", name, "_ms")] = s.p95;
  j[cat("p99_", name, "_ms")] = s.p99;
  return j;
}

}  // namespace

LatencyStats latency_stats(std::vector<double> seconds) {
  LatencyStats s;
  if (seconds.empty()) return s;
  std::sort(seconds.begin(), seconds.end());
  const double n = static_cast<double>(seconds.size());
  const double mean = std::accumulate(seconds.begin(), seconds.end(), 0.0) / n;
  double square_sum = 0;
  for (double v : seconds) square_sum += (v - mean) * (v - mean);
  s.mean = mean * 1000;
  s.std = std::sqrt(square_sum / n) * 1000;  // numpy's population std
  s.median = percentile(seconds, 50) * 1000;
  s.p90 = percentile(seconds, 90) * 1000;
  s.p95 = percentile(seconds, 95) * 1000;
  s.p99 = percentile(seconds, 99) * 1000;
  s.max = seconds.back() * 1000;
  return s;
}

ServingMetrics compute_metrics(const RunResult& run, const text::Tokenizer& tokenizer) {
  ServingMetrics m;
  m.duration = run.duration;
  std::vector<double> ttfts, tpots, itls, e2es;
  for (const RequestOutcome& o : run.outcomes) {
    if (!o.success) {
      m.output_lens.push_back(0);
      if (m.failed++ == 0) m.first_error = o.error;
      continue;
    }
    ++m.completed;
    const int64_t retokenized = static_cast<int64_t>(tokenizer.encode(o.generated_text, false).size());
    // Where the stream stated no count (SGLang would take the tokens asked for), the text's own tokens.
    const int64_t output_len = o.output_len >= 0 ? o.output_len : retokenized;
    m.output_lens.push_back(output_len);
    m.total_output += output_len;
    m.total_output_retokenized += retokenized;
    m.total_input += o.prompt_len;
    if (output_len > 1) tpots.push_back((o.latency - o.ttft) / static_cast<double>(output_len - 1));
    itls.insert(itls.end(), o.itl.begin(), o.itl.end());
    ttfts.push_back(o.ttft);
    e2es.push_back(o.latency);
  }
  const double d = run.duration > 0 ? run.duration : 1e-9;
  m.request_throughput = static_cast<double>(m.completed) / d;
  m.input_throughput = static_cast<double>(m.total_input) / d;
  m.output_throughput = static_cast<double>(m.total_output) / d;
  m.total_throughput = static_cast<double>(m.total_input + m.total_output) / d;
  m.concurrency = std::accumulate(e2es.begin(), e2es.end(), 0.0) / d;
  m.ttft = latency_stats(std::move(ttfts));
  m.tpot = latency_stats(std::move(tpots));
  m.itl = latency_stats(std::move(itls));
  m.e2e = latency_stats(std::move(e2es));
  peaks(run.outcomes, m);
  return m;
}

void print_serving_table(const RunDescription& run, const ServingMetrics& m) {
  std::printf("\n");
  heading(" Serving Benchmark Result ", '=');
  row("Backend:", run.backend);
  row("Traffic request rate:", python_float(run.request_rate));
  row("Max request concurrency:", run.max_concurrency > 0 ? std::to_string(run.max_concurrency) : "not set");
  row("Successful requests:", m.completed);
  if (m.failed > 0) row("Failed requests:", m.failed);
  row("Benchmark duration (s):", m.duration);
  row("Total input tokens:", m.total_input);
  row("Total input text tokens:", m.total_input);
  row("Total generated tokens:", m.total_output);
  row("Total generated tokens (retokenized):", m.total_output_retokenized);
  row("Request throughput (req/s):", m.request_throughput);
  row("Input token throughput (tok/s):", m.input_throughput);
  row("Output token throughput (tok/s):", m.output_throughput);
  row("Peak output token throughput (tok/s):", m.max_output_tokens_per_s);
  row("Peak concurrent requests:", m.max_concurrent_requests);
  row("Total token throughput (tok/s):", m.total_throughput);
  row("Concurrency:", m.concurrency);
  if (run.accept_length && *run.accept_length > 0) row("Accept length:", *run.accept_length);
  latency_rows("End-to-End Latency", "E2E Latency", m.e2e, {.p90 = true});
  latency_rows("Time to First Token", "TTFT", m.ttft, {});
  latency_rows("Time per Output Token (excl. 1st token)", "TPOT", m.tpot, {});
  latency_rows("Inter-Token Latency", "ITL", m.itl, {.p95 = true, .max = true});
  std::printf("%s\n", std::string(50, '=').c_str());
  std::fflush(stdout);
}

ordered_json serving_result_json(const RunDescription& run, const ServingMetrics& m, const ordered_json& server_info,
                                 const RunResult* details) {
  auto optional_int = [](int v) { return v > 0 ? ordered_json(v) : ordered_json(nullptr); };
  ordered_json j = {
      {"backend", run.backend},
      {"dataset_name", run.dataset_name},
      // JSON has no infinity (Python writes a non-standard Infinity): an unlimited rate is the string "inf".
      {"request_rate", std::isfinite(run.request_rate) ? ordered_json(run.request_rate) : ordered_json("inf")},
      {"max_concurrency", optional_int(run.max_concurrency)},
      {"sharegpt_output_len", optional_int(run.sharegpt_output_len)},
      {"random_input_len", run.random_input_len},
      {"random_output_len", run.random_output_len},
      {"random_range_ratio", run.random_range_ratio},
      {"server_info", server_info},
      {"duration", m.duration},
      {"completed", m.completed},
      {"total_input_tokens", m.total_input},
      {"total_input_text_tokens", m.total_input},
      {"total_input_vision_tokens", 0},
      {"total_output_tokens", m.total_output},
      {"total_output_tokens_retokenized", m.total_output_retokenized},
      {"request_throughput", m.request_throughput},
      {"input_throughput", m.input_throughput},
      {"output_throughput", m.output_throughput},
      {"total_throughput", m.total_throughput},
  };
  j.update(latency_fields("e2e_latency", m.e2e, {.p90 = true}));
  j.update(latency_fields("ttft", m.ttft, {}));
  j.update(latency_fields("tpot", m.tpot, {}));
  j.update(latency_fields("itl", m.itl, {.p95 = true}));
  j["concurrency"] = m.concurrency;
  j["accept_length"] = run.accept_length ? ordered_json(*run.accept_length) : ordered_json(nullptr);
  j["max_output_tokens_per_s"] = m.max_output_tokens_per_s;
  j["max_concurrent_requests"] = m.max_concurrent_requests;
  if (details != nullptr) {
    ordered_json input_lens = ordered_json::array(), ttfts = ordered_json::array(), itls = ordered_json::array(),
                 texts = ordered_json::array(), errors = ordered_json::array();
    for (const RequestOutcome& o : details->outcomes) {
      input_lens.push_back(o.prompt_len);
      ttfts.push_back(o.ttft);
      itls.push_back(o.itl);
      texts.push_back(o.generated_text);
      errors.push_back(o.error);
    }
    j["input_lens"] = std::move(input_lens);
    j["output_lens"] = m.output_lens;
    j["ttfts"] = std::move(ttfts);
    j["itls"] = std::move(itls);
    j["generated_texts"] = std::move(texts);
    j["errors"] = std::move(errors);
  }
  return j;
}

}  // namespace narwhal
