// Rotary position embedding applied in place to the rope slice of q and k (DeepSeek: interleaved pairs, YaRN).
#pragma once

#include <cstdint>
#include <vector>

namespace narwhal::ops {

struct RopeParams {
  std::vector<float> inv_freq;  // one per rotated pair
  float scaling = 1.0f;         // multiplies cos and sin (YaRN attention factor)
  bool interleave = true;       // pairs (x0,x1),(x2,x3)..; false: NeoX halves (x_i, x_{i+d/2})
};

// Rotates, for each of `rows` rows, `heads` vectors of width 2*inv_freq.size() found at
// x + row*row_stride + head*head_stride, by the angle position[row] * inv_freq.
// Interleaved pairs stay in place (transformers' V3 interleave writes them de-interleaved; q.k is identical).
void apply_rope(float* x, int64_t rows, int64_t heads, int64_t row_stride, int64_t head_stride,
                const int32_t* positions, const RopeParams& params);

}  // namespace narwhal::ops
