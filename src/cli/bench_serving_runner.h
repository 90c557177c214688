// Sends a benchmark's requests: Poisson arrivals (or all at once), at most --max-concurrency in flight, a progress
// bar; every stream read on the client's I/O threads.
#pragma once

#include <limits>
#include <string>
#include <vector>

#include "cli/bench_serving_backend.h"

namespace narwhal {

struct RunOptions {
  double request_rate = std::numeric_limits<double>::infinity();  // requests per second; inf: all at time 0
  int max_concurrency = 0;  // requests in flight at most; 0: no limit
  bool progress = true;     // a progress bar on stderr
  std::string progress_label = "bench-serving";
  int io_threads = 1;
};

// A few I/O threads, so that parsing thousands of streams keeps pace, but a small share of a machine the server
// may be running on.
int bench_io_threads();

struct RunResult {
  std::vector<RequestOutcome> outcomes;  // by row
  double duration = 0;                   // seconds from the first request sent to the last one finished
};

// Sends one request per row, each asking for its row's output_len; `rng` draws the arrival gaps.
RunResult run_requests(BenchHttpClient& client, const Backend& backend, const std::vector<DatasetRow>& rows,
                       const RequestOptions& request_options, const RunOptions& run_options, std::mt19937_64& rng);

}  // namespace narwhal
