// Launchers of the GEMM family's own kernels (FP8 activation quantization, small-M FP8 and BF16 GEMMs), for
// gemm_runner.cpp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace narwhal::ops::cuda {

// Per-token-group FP8 quantization of a BF16 batch of rows: row (m, b) of x, flattened as r = m * batch + b, goes
// to q[r * k ...] and its scale for columns [kb*128, kb*128+128) (amax / 448, multiplying) to
//   scale[kb * main_ld + r]                           for r <  main_rows,
//   scale[tail_offset + kb * 4 + (r - main_rows)]     for r >= main_rows (at most 3 rows: see gemm_runner.cpp).
// The split lets cuBLASLt read rows [0, main_rows) as its M-major VEC128 scale matrix when M % 4 != 0.
struct QuantFp8Args {
  const void* x = nullptr;  // BF16, element (b, m, c) at b * x_batch_stride + m * x_row_stride + c
  int64_t batch = 1, rows = 0, k = 0, x_row_stride = 0, x_batch_stride = 0;
  uint8_t* q = nullptr;
  float* scale = nullptr;
  int64_t main_rows = 0, main_ld = 0, tail_offset = 0;
};
void launch_quantize_fp8(const QuantFp8Args& args, cudaStream_t stream);

// y[b] (BF16) = dequant(x[b]) dequant(w[b])^T with per-row-per-128 activation scales and 128x128 weight block
// scales. Byte / element strides below; k % 16 == 0.
struct Fp8SmallMArgs {
  const uint8_t* x = nullptr;  // x[b][m][c] at b * x_batch + m * x_row + c
  int64_t x_row = 0, x_batch = 0;
  const float* sx = nullptr;  // scale of x[b][m][kb*128 ...] at b * sx_batch + m * sx_row + kb * sx_kb
  int64_t sx_row = 0, sx_kb = 0, sx_batch = 0;
  const uint8_t* w = nullptr;  // w[b][n][c] at b * w_batch + n * k + c
  int64_t w_batch = 0;
  const float* sw = nullptr;  // scale of block (nb, kb) of w[b] at b * sw_batch + nb * sw_ld + kb
  int64_t sw_ld = 0, sw_batch = 0;
  void* y = nullptr;  // BF16 y[b][m][n] at b * y_batch + m * y_row + n
  int64_t y_row = 0, y_batch = 0;
  int64_t batch = 1, m = 0, n = 0, k = 0;
};

// y[b] (BF16) = x[b] w[b]^T (+ y[b] when accumulate) for at most kBf16SmallMMaxKernelRows rows, BF16 in, FP32
// accumulation; element strides. Decode's products: a GEMV streaming the weight, faster than cuBLASLt there, and
// batch invariant (a row's bits do not depend on M). GemmRunner sends it up to kBf16SmallMMaxRows (gemm.h).
inline constexpr int64_t kBf16SmallMMaxKernelRows = 8;
inline constexpr int kBf16SmallMWarps = 8;  // warps a CTA; each computes `columns` output columns
struct Bf16SmallMArgs {
  const void* x = nullptr;  // x[b][m][c] at b * x_batch + m * x_row + c
  int64_t x_row = 0, x_batch = 0;
  const void* w = nullptr;  // w[b][n][c] at b * w_batch + n * w_row + c
  int64_t w_row = 0, w_batch = 0;
  void* y = nullptr;  // y[b][m][n] at b * y_batch + m * y_row + n
  int64_t y_row = 0, y_batch = 0;
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool accumulate = false;
  int columns = 1;  // output columns a warp: 1, 2 (m >= 3) or 4 (m >= 5); the bits do not depend on it
};
// Whether the kernel takes these sizes: m <= kBf16SmallMMaxKernelRows, k and the x / w strides multiples of 8, x
// and w 16-byte aligned.
bool bf16_small_m_fits(const Bf16SmallMArgs& args);
void launch_bf16_small_m(const Bf16SmallMArgs& args, cudaStream_t stream);

// Split-K scratch of the small-M kernel: FP32 partial tiles and one arrival counter per output tile. The counters
// start at zero (cudaMemset once) and each reducing CTA puts its counter back to zero, so no per-call reset.
struct SplitKWorkspace {
  float* partials = nullptr;
  int64_t partial_floats = 0;
  unsigned* counters = nullptr;
  int64_t counter_count = 0;
  int num_sms = 132;
};
void launch_fp8_gemm_small_m(const Fp8SmallMArgs& args, const SplitKWorkspace& workspace, cudaStream_t stream);

}  // namespace narwhal::ops::cuda
