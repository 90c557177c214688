// CPU greedy choice.
#include "ops/sampling.h"

#include <cmath>

namespace narwhal::ops {

int32_t argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int32_t>(best);
}

}  // namespace narwhal::ops

namespace narwhal::ops {

int32_t sample_with_temperature(const float* logits, int64_t n, float temperature, double uniform) {
  const float mx = logits[argmax(logits, n)];
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += std::exp(static_cast<double>(logits[i] - mx) / temperature);
  double target = uniform * total, running = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    running += std::exp(static_cast<double>(logits[i] - mx) / temperature);
    if (running > target) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(n - 1);
}

}  // namespace narwhal::ops
