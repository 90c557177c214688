// The request loop of the serving benchmarks: arrival timers, a queue behind the concurrency limit, one
// StreamMeter per request.
#include "cli/bench_serving_runner.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "core/progress.h"

namespace narwhal {

namespace {

using Clock = BenchHttpClient::Clock;

class RequestLoop {
 public:
  RequestLoop(BenchHttpClient& client, const Backend& backend, const std::vector<DatasetRow>& rows,
              const RequestOptions& request_options, const RunOptions& run_options)
      : client_(client), backend_(backend), rows_(rows), request_options_(request_options),
        max_concurrency_(run_options.max_concurrency), outcomes_(rows.size()) {
    if (run_options.progress) progress_.emplace(run_options.progress_label, static_cast<int64_t>(rows.size()));
  }

  // Row i arrives `arrival[i]` seconds after the start.
  RunResult run(const std::vector<double>& arrival, int io_threads) {
    start_ = Clock::now();
    arrive_from(0, arrival);
    client_.run(io_threads);
    RunResult result;
    result.duration = std::chrono::duration<double>(Clock::now() - start_).count();
    if (progress_) progress_->finish();
    result.outcomes = std::move(outcomes_);
    return result;
  }

 private:
  // Every row due by now arrives; a timer brings the next one.
  void arrive_from(size_t next, const std::vector<double>& arrival) {
    const double now = std::chrono::duration<double>(Clock::now() - start_).count();
    for (; next < rows_.size() && arrival[next] <= now; ++next) arrive(next);
    if (next < rows_.size())
      client_.after(arrival[next] - now, [this, next, &arrival] { arrive_from(next, arrival); });
  }

  void arrive(size_t i) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (max_concurrency_ > 0 && in_flight_ >= max_concurrency_) waiting_.push_back(i);
    else send(i);
  }

  // Called with mutex_ held.
  void send(size_t i) {
    ++in_flight_;
    const DatasetRow& row = rows_[i];
    RequestOutcome* outcome = &outcomes_[i];
    outcome->prompt_len = row.prompt_len;
    const Clock::time_point sent = Clock::now();
    outcome->start_time = std::chrono::duration<double>(sent - start_).count();
    auto meter = std::make_shared<StreamMeter>(backend_.api, sent, outcome);
    client_.post_streaming(
        backend_.path(), request_body(backend_, row, request_options_),
        [meter](Clock::time_point arrived, std::string_view line) { meter->on_line(arrived, line); },
        [this, meter](const HttpResult& result) {
          meter->on_done(result);
          finished();
        });
  }

  void finished() {
    std::lock_guard<std::mutex> lock(mutex_);
    --in_flight_;
    if (progress_) progress_->advance();
    if (waiting_.empty()) return;
    const size_t next = waiting_.front();
    waiting_.pop_front();
    send(next);
  }

  BenchHttpClient& client_;
  const Backend& backend_;
  const std::vector<DatasetRow>& rows_;
  const RequestOptions& request_options_;
  const int max_concurrency_;
  std::vector<RequestOutcome> outcomes_;
  std::optional<ProgressBar> progress_;
  Clock::time_point start_;
  std::mutex mutex_;  // the I/O threads share the queue, the in-flight count and the progress bar
  std::deque<size_t> waiting_;
  int in_flight_ = 0;
};

}  // namespace

int bench_io_threads() { return std::clamp(static_cast<int>(std::thread::hardware_concurrency()) / 8, 1, 4); }

RunResult run_requests(BenchHttpClient& client, const Backend& backend, const std::vector<DatasetRow>& rows,
                       const RequestOptions& request_options, const RunOptions& run_options, std::mt19937_64& rng) {
  // SGLang's get_request: the first request at time 0, then exponential gaps of mean 1 / rate.
  std::vector<double> arrival(rows.size(), 0.0);
  if (std::isfinite(run_options.request_rate)) {
    std::exponential_distribution<double> gap(run_options.request_rate);
    for (size_t i = 1; i < arrival.size(); ++i) arrival[i] = arrival[i - 1] + gap(rng);
  }
  RequestLoop loop(client, backend, rows, request_options, run_options);
  return loop.run(arrival, run_options.io_threads);
}

}  // namespace narwhal
