// FP8 e4m3 quantization as DeepSeek-V3 uses it: activations per row per 128-column group, weights in 128x128
// blocks; scales multiply (x ~= fp8(q) * scale). CPU references of the GPU quantization and FP8 GEMMs.
#pragma once

#include "core/tensor.h"

namespace narwhal::ops {

// Per row and 128-column group: scale = max(amax, 1e-10) / 448, q = fp8_e4m3(x / scale) (round to nearest
// even, saturating). x [M, K] F32 -> q [M, K] F8_E4M3, scale [M, ceil(K/128)] F32 (host tensors, overwritten).
void quantize_fp8_token_groups(const Tensor& x, Tensor& q, Tensor& scale);

// x[r, c] = fp8(q[r, c]) * scale[r / block_rows, c / block_cols]: q [R, C] F8_E4M3, scale
// [ceil(R/block_rows), >= ceil(C/block_cols)] F32 (a wider scale row is padding) -> F32 [R, C].
Tensor dequantize_fp8(const Tensor& q, const Tensor& scale, int64_t block_rows, int64_t block_cols);

}  // namespace narwhal::ops
