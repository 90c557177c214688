// FP8 e4m3 quantization references (per-token groups, block dequantization).
#include "ops/quant.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace narwhal::ops {

namespace {
constexpr int64_t kGroup = 128;
}  // namespace

void quantize_fp8_token_groups(const Tensor& x, Tensor& q, Tensor& scale) {
  const int64_t m = x.size(0), k = x.size(1), groups = (k + kGroup - 1) / kGroup;
  NW_CHECK(x.ndim() == 2 && x.dtype == DType::kF32 && q.dtype == DType::kF8E4M3 && q.shape == x.shape &&
               scale.dtype == DType::kF32 && scale.shape == std::vector<int64_t>({m, groups}),
           "quantize_fp8_token_groups: x", x.shape_string(), " q", q.shape_string(), " scale", scale.shape_string());
  for (int64_t r = 0; r < m; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      const float* row = x.f32() + r * k;
      const int64_t begin = g * kGroup, end = std::min(k, begin + kGroup);
      float amax = 0.0f;
      for (int64_t c = begin; c < end; ++c) amax = std::max(amax, std::fabs(row[c]));
      const float s = std::max(amax, 1e-10f) / 448.0f;
      scale.f32()[r * groups + g] = s;
      for (int64_t c = begin; c < end; ++c) q.ptr<uint8_t>()[r * k + c] = float_to_fp8_e4m3(row[c] / s);
    }
}

Tensor dequantize_fp8(const Tensor& q, const Tensor& scale, int64_t block_rows, int64_t block_cols) {
  const int64_t rows = q.size(0), cols = q.size(1), pitch = scale.size(1);
  NW_CHECK(q.ndim() == 2 && q.dtype == DType::kF8E4M3 && scale.ndim() == 2 && scale.dtype == DType::kF32 &&
               scale.size(0) == (rows + block_rows - 1) / block_rows && pitch >= (cols + block_cols - 1) / block_cols,
           "dequantize_fp8: q", q.shape_string(), " scale", scale.shape_string(), " blocks ", block_rows, "x",
           block_cols);
  Tensor out = Tensor::zeros(DType::kF32, {rows, cols});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out.f32()[r * cols + c] =
          fp8_e4m3_to_float(q.ptr<uint8_t>()[r * cols + c]) * scale.f32()[(r / block_rows) * pitch + c / block_cols];
  return out;
}

}  // namespace narwhal::ops
