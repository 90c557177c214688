// CPU rotary embedding: float32 angles position * inv_freq, as transformers computes them.
#include "ops/rope.h"

#include <cmath>

namespace narwhal::ops {

void apply_rope(float* x, int64_t rows, int64_t heads, int64_t row_stride, int64_t head_stride,
                const int32_t* positions, const RopeParams& params) {
  const int64_t half = static_cast<int64_t>(params.inv_freq.size());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> cos_v(half), sin_v(half);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[r]) * params.inv_freq[i];
      cos_v[i] = std::cos(angle) * params.scaling;
      sin_v[i] = std::sin(angle) * params.scaling;
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + r * row_stride + h * head_stride;
      for (int64_t i = 0; i < half; ++i) {
        float* a = params.interleave ? v + 2 * i : v + i;
        float* b = params.interleave ? v + 2 * i + 1 : v + i + half;
        const float x0 = *a, x1 = *b;
        *a = x0 * cos_v[i] - x1 * sin_v[i];
        *b = x1 * cos_v[i] + x0 * sin_v[i];
      }
    }
  }
}

}  // namespace narwhal::ops
