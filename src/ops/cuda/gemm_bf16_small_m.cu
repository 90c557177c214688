// BF16 products of decode-sized rows (M <= 4): y[b] = x[b] w[b]^T as a weight-streaming GEMV, one warp per
// output column, 16-byte weight loads, several in flight per lane. At M = 1 cuBLASLt reads the weight at about
// 1.2 TB/s (docs/performance.md); this is a pure bandwidth problem, so it wants every SM streaming.
// Batch invariant: a row's sum runs in the same order whatever M is (its own accumulator, the same lanes and
// K steps, one warp_sum), so a verify of up to 4 rows gets a decode's bits (docs/speculative.md). Beyond 4 rows
// its FP32 FMAs on CUDA cores cost more than cuBLASLt's tensor cores (measured: batch 16 decode 13.5 ms against
// 9.9 ms at batch 32 on cuBLASLt), so larger M goes there.
#include "ops/cuda/common.cuh"
#include "ops/cuda/gemm_kernels.h"

namespace narwhal::ops::cuda {

namespace {

constexpr int kWarps = 8;       // output columns per CTA
constexpr int kUnroll = 4;      // 16-byte weight loads per lane in flight per output column
constexpr int kChunk = 8;       // BF16 elements per 16-byte load

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

// One iteration's weight loads: kUnroll 16-byte chunks of the warp's row, zero past k.
__device__ __forceinline__ void load_weights(const bf16* w, int64_t k0, int64_t k, uint4 (&wv)[kUnroll]) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int64_t i = k0 + u * 32 * kChunk;
    wv[u] = i < k ? __ldcs(reinterpret_cast<const uint4*>(w + i)) : make_uint4(0, 0, 0, 0);  // read once
  }
}

template <int kM>
__global__ void __launch_bounds__(kWarps * 32) gemm_bf16_small_m_kernel(const Bf16SmallMArgs a) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t n = blockIdx.x * int64_t{kWarps} + warp, b = blockIdx.y;
  const bool active = n < a.n;
  const bf16* w = static_cast<const bf16*>(a.w) + b * a.w_batch + n * a.w_row;
  const bf16* x = static_cast<const bf16*>(a.x) + b * a.x_batch;
  constexpr int kStep = 32 * kChunk * kUnroll;  // elements of one weight row a warp reads per iteration
  // The first weight loads go out before the wait: the previous kernel does not write weights, so they overlap
  // its tail.
  uint4 wv[kUnroll];
  if (active) load_weights(w, lane * kChunk, a.k, wv);
  grid_dependency_wait();
  if (!active) return;
  float acc[kM] = {};
  for (int64_t k0 = lane * kChunk; k0 < a.k; k0 += kStep) {
    uint4 next[kUnroll];
    if (k0 + kStep < a.k) load_weights(w, k0 + kStep, a.k, next);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t k = k0 + u * 32 * kChunk;
      if (k >= a.k) break;
#pragma unroll
      for (int m = 0; m < kM; ++m) acc[m] = dot8(wv[u], __ldg(reinterpret_cast<const uint4*>(x + m * a.x_row + k)), acc[m]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) wv[u] = next[u];
  }
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    const float sum = warp_sum(acc[m]);
    if (lane == 0) {
      bf16* y = static_cast<bf16*>(a.y) + b * a.y_batch + m * a.y_row + n;
      *y = __float2bfloat16(a.accumulate ? sum + __bfloat162float(*y) : sum);
    }
  }
}

}  // namespace

bool bf16_small_m_fits(const Bf16SmallMArgs& a) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return a.m >= 1 && a.m <= kBf16SmallMMaxRows && a.k % kChunk == 0 && a.x_row % kChunk == 0 &&
         a.x_batch % kChunk == 0 && a.w_row % kChunk == 0 && a.w_batch % kChunk == 0 && aligned(a.x) && aligned(a.w) &&
         a.batch <= 65535;
}

void launch_bf16_small_m(const Bf16SmallMArgs& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div(a.n, kWarps)), static_cast<unsigned>(a.batch));
  switch (a.m) {
    case 1: launch(gemm_bf16_small_m_kernel<1>, grid, kWarps * 32, 0, stream, a); break;
    case 2: launch(gemm_bf16_small_m_kernel<2>, grid, kWarps * 32, 0, stream, a); break;
    case 3: launch(gemm_bf16_small_m_kernel<3>, grid, kWarps * 32, 0, stream, a); break;
    default: launch(gemm_bf16_small_m_kernel<4>, grid, kWarps * 32, 0, stream, a); break;
  }
}

}  // namespace narwhal::ops::cuda
