// bench-one-batch's speculative oracle: drafts from the target's own greedy tokens, timed verify + draft steps.
#include "cli/bench_speculative.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"

namespace narwhal {

OracleResult time_oracle_verify(ModelRunner& runner, const std::vector<std::vector<int32_t>>& tables,
                                const std::vector<std::vector<int32_t>>& truth, int64_t input, int accept,
                                int num_steps, int steps) {
  const size_t batch = truth.size();
  const int32_t vocab = static_cast<int32_t>(runner.config().vocab_size);
  SamplingParams greedy;
  greedy.temperature = 0.0;
  const TokenCounts none;
  std::vector<SampleRequest> samples(batch);
  for (size_t s = 0; s < batch; ++s) samples[s] = {static_cast<int64_t>(s), &greedy, &none};
  for (SampleRequest& r : samples) r.max_draft = num_steps;
  std::vector<size_t> at(batch, 0);  // truth index of each sequence's pending token
  std::vector<double> times;
  int64_t taken = 0;
  for (int step = 0; step < steps; ++step) {
    ForwardBatch fb;
    for (size_t s = 0; s < batch; ++s) {
      NW_CHECK(at[s] + static_cast<size_t>(num_steps) < truth[s].size(), "oracle: sequence ", s, " ran past the ",
               truth[s].size(), " greedy tokens decoded for it");
      std::vector<int32_t> fed{truth[s][at[s]]};
      for (int k = 1; k <= num_steps; ++k) {
        const int32_t right = truth[s][at[s] + static_cast<size_t>(k)];
        fed.push_back(k < accept ? right : (right + 1) % vocab);
      }
      fb.add_sequence(fed, input + static_cast<int64_t>(at[s]), tables[s], num_steps);
    }
    const auto t0 = std::chrono::steady_clock::now();
    runner.launch(fb, samples, false);
    const StepOutput out = runner.finish();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    NW_CHECK(out.accepted.size() == batch, "oracle: the runner did not speculate (start it with "
             "--speculative-algorithm NEXTN)");
    for (size_t s = 0; s < batch; ++s) {
      at[s] += static_cast<size_t>(out.accepted[s]);
      taken += out.accepted[s];
    }
  }
  std::sort(times.begin(), times.end());
  return {times[times.size() / 2], static_cast<double>(taken) / static_cast<double>(batch * steps)};
}

}  // namespace narwhal
