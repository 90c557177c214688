// BF16 products of decode-sized rows (M <= 8): y[b] = x[b] w[b]^T as a weight-streaming GEMV, one warp per
// 1, 2 or 4 output columns, 16-byte weight loads, several in flight per lane. At M = 1 cuBLASLt reads the weight at
// about 1.2 TB/s (docs/performance.md); this is a pure bandwidth problem, so it wants every SM streaming.
// Batch invariant: a row's sum runs in the same order whatever M is (its own accumulator, the same lanes and
// K steps, one warp_sum), so a verify of up to 8 rows gets a decode's bits (docs/speculative.md). Its FP32 FMAs on
// CUDA cores grow with M while cuBLASLt's tensor cores do not: large weights stream faster through cuBLASLt from
// 4 rows (bench_gemm_bf16), and at 16 rows the whole decode was (batch 16 13.5 ms against 9.9 ms at batch 32).
#include "ops/cuda/common.cuh"
#include "ops/cuda/gemm_kernels.h"

namespace narwhal::ops::cuda {

namespace {

constexpr int kWarps = kBf16SmallMWarps;
constexpr int kLoadsInFlight = 4;  // 16-byte weight loads per lane in flight, over the warp's columns
constexpr int kChunk = 8;          // BF16 elements per 16-byte load

// Products of 8 BF16 pairs, added to acc in FP32.
__device__ __forceinline__ float dot8(const uint4& w, const uint4& x, float acc) {
  const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&w);
  const __nv_bfloat162* x2 = reinterpret_cast<const __nv_bfloat162*>(&x);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = __bfloat1622float2(w2[i]), b = __bfloat1622float2(x2[i]);
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
  }
  return acc;
}

// One iteration's weight loads of one column: kUnroll 16-byte chunks of its row, zero past k.
template <int kUnroll>
__device__ __forceinline__ void load_weights(const bf16* w, int64_t k0, int64_t k, uint4 (&wv)[kUnroll]) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int64_t i = k0 + u * 32 * kChunk;
    wv[u] = i < k ? __ldcs(reinterpret_cast<const uint4*>(w + i)) : make_uint4(0, 0, 0, 0);  // read once
  }
}

// A warp computes kCols adjacent output columns, so each x chunk it loads serves all of them: from 3 rows on the x
// loads, not the weight's, are what a one-column warp waits for. Lane l always sums the chunks l, l + 32, ... of K in
// ascending order, whatever kM, kCols and the unroll, which is what keeps a row's bits independent of M.
template <int kM, int kCols>
__global__ void __launch_bounds__(kWarps * 32) gemm_bf16_small_m_kernel(const Bf16SmallMArgs a) {
  constexpr int kUnroll = kLoadsInFlight / kCols;
  constexpr int kStep = 32 * kChunk * kUnroll;  // elements of one weight row a warp reads per iteration
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t n0 = (blockIdx.x * int64_t{kWarps} + warp) * kCols, b = blockIdx.y;
  const bool active = n0 < a.n;
  const bf16* w[kCols];
#pragma unroll
  for (int c = 0; c < kCols; ++c)  // columns past N read the last row and store nothing
    w[c] = static_cast<const bf16*>(a.w) + b * a.w_batch + (n0 + c < a.n ? n0 + c : a.n - 1) * a.w_row;
  const bf16* x = static_cast<const bf16*>(a.x) + b * a.x_batch;
  // The first weight loads go out before the wait: the previous kernel does not write weights, so they overlap
  // its tail.
  uint4 wv[kCols][kUnroll];
  if (active)
#pragma unroll
    for (int c = 0; c < kCols; ++c) load_weights(w[c], lane * kChunk, a.k, wv[c]);
  grid_dependency_wait();
  if (!active) return;
  float acc[kCols][kM] = {};
  for (int64_t k0 = lane * kChunk; k0 < a.k; k0 += kStep) {
    uint4 next[kCols][kUnroll];
    if (k0 + kStep < a.k)
#pragma unroll
      for (int c = 0; c < kCols; ++c) load_weights(w[c], k0 + kStep, a.k, next[c]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t k = k0 + u * 32 * kChunk;
      if (k >= a.k) break;
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x + m * a.x_row + k));
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[c][m] = dot8(wv[c][u], xv, acc[c][m]);
      }
    }
#pragma unroll
    for (int c = 0; c < kCols; ++c)
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) wv[c][u] = next[c][u];
  }
#pragma unroll
  for (int c = 0; c < kCols; ++c) {
    if (n0 + c >= a.n) break;  // the same for every lane: warp_sum stays convergent
#pragma unroll
    for (int m = 0; m < kM; ++m) {
      const float sum = warp_sum(acc[c][m]);
      if (lane == 0) {
        bf16* y = static_cast<bf16*>(a.y) + b * a.y_batch + m * a.y_row + n0 + c;
        *y = __float2bfloat16(a.accumulate ? sum + __bfloat162float(*y) : sum);
      }
    }
  }
}

template <int kM, int kCols>
void launch_rows(const Bf16SmallMArgs& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div(a.n, int64_t{kWarps} * kCols)), static_cast<unsigned>(a.batch));
  launch(gemm_bf16_small_m_kernel<kM, kCols>, grid, kWarps * 32, 0, stream, a);
}

// kM rows at a.columns columns a warp (1, and 2 or 4 where kM allows them).
template <int kM>
void launch_columns(const Bf16SmallMArgs& a, cudaStream_t stream) {
  if constexpr (kM >= 5)
    if (a.columns == 4) return launch_rows<kM, 4>(a, stream);
  if constexpr (kM >= 3)
    if (a.columns == 2) return launch_rows<kM, 2>(a, stream);
  launch_rows<kM, 1>(a, stream);
}

}  // namespace

bool bf16_small_m_fits(const Bf16SmallMArgs& a) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return a.m >= 1 && a.m <= kBf16SmallMMaxKernelRows && a.k % kChunk == 0 && a.x_row % kChunk == 0 &&
         a.x_batch % kChunk == 0 && a.w_row % kChunk == 0 && a.w_batch % kChunk == 0 && aligned(a.x) && aligned(a.w) &&
         a.batch <= 65535;
}

void launch_bf16_small_m(const Bf16SmallMArgs& a, cudaStream_t stream) {
  switch (a.m) {
    case 1: return launch_columns<1>(a, stream);
    case 2: return launch_columns<2>(a, stream);
    case 3: return launch_columns<3>(a, stream);
    case 4: return launch_columns<4>(a, stream);
    case 5: return launch_columns<5>(a, stream);
    case 6: return launch_columns<6>(a, stream);
    case 7: return launch_columns<7>(a, stream);
    default: return launch_columns<8>(a, stream);
  }
}

}  // namespace narwhal::ops::cuda
