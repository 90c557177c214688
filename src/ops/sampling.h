// Token choice from logits: greedy argmax (ties to the lowest id, as torch.argmax).
#pragma once

#include <cstdint>

namespace narwhal::ops {

int32_t argmax(const float* logits, int64_t n);

}  // namespace narwhal::ops

namespace narwhal::ops {

// Samples from softmax(logits / temperature) by inverting the CDF at `uniform` in [0, 1);
// the caller owns the random stream, so results are reproducible per seed.
int32_t sample_with_temperature(const float* logits, int64_t n, float temperature, double uniform);

}  // namespace narwhal::ops
