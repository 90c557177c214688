// CPU RMSNorm: float32 mean of squares, then scale by the weight (transformers' order of operations).
#include "ops/norm.h"

#include <cmath>

#include "core/error.h"

namespace narwhal::ops {

void rms_norm_strided(float* x, int64_t rows, int64_t n, int64_t stride, const float* weight, float eps) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * stride;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(row[i]) * row[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(sum / static_cast<double>(n)) + eps);
    for (int64_t i = 0; i < n; ++i) row[i] = weight[i] * (row[i] * inv);
  }
}

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  NW_CHECK(x.ndim() == 2 && out.shape == x.shape && weight.numel() == x.size(1), "rms_norm: shapes x",
           x.shape_string(), " weight", weight.shape_string(), " out", out.shape_string(), " do not agree");
  if (out.data != x.data) std::memcpy(out.data, x.data, x.nbytes());
  rms_norm_strided(out.f32(), x.size(0), x.size(1), x.size(1), weight.f32(), eps);
}

}  // namespace narwhal::ops
