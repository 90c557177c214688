// Shared device-code helpers of the CUDA ops: BF16 conversions, integer division, warp reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <utility>

#include "core/cuda_check.h"
#include "core/tensor.h"

namespace narwhal::ops::cuda {

using bf16 = __nv_bfloat16;

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Which of a sequence's q_len new tokens token `token` sees, as bits (bit j: new token j): itself and every token
// before it (causal), or with a speculative tree (`parents` [q_len] of the sequence, parents[j] < j, -1 a root)
// itself and its ancestors; q_len <= 32. Rows past q_len (padding) see all. A parent that is not earlier ends the walk.
__device__ __forceinline__ uint32_t visible_new_tokens(const int32_t* parents, int token, int q_len) {
  if (token >= q_len) return 0xffffffffu;
  if (!parents) return (2u << token) - 1u;
  uint32_t bits = 0;
  for (int j = token; j >= 0; j = parents[j] < j ? parents[j] : -1) bits |= 1u << j;
  return bits;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Programmatic dependent launch (sm_90). Every kernel here is launched with launch(), which lets its CTAs start
// while the kernel before it on the stream drains (in CUDA graphs too), so launch latency and the first weight
// loads overlap the previous kernel's tail. The price: a kernel must call grid_dependency_wait() before it reads
// anything an earlier kernel wrote or writes anything at all; only reads of weights may come before it.
__device__ __forceinline__ void grid_dependency_wait() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  // Past the wait the previous kernel is complete, so the next one may start launching: at most two overlap.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

// NARWHAL_DISABLE_PDL=1 launches every kernel plainly (for A/B measurements of the overlap).
inline bool pdl_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("NARWHAL_DISABLE_PDL");
    return !(v && v[0] == '1');
  }();
  return enabled;
}

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = 1;
  const cudaError_t status = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  if (status != cudaSuccess) {  // name the kernel and its shape: what a caller got wrong shows there
    const char* name = "?";
    if (cudaFuncGetName(&name, reinterpret_cast<const void*>(kernel)) != cudaSuccess) name = "?";
    throw Error(cat("launch of ", name, " failed: ", cudaGetErrorString(status), " (grid ", grid.x, " x ", grid.y,
                    " x ", grid.z, ", block ", block.x, " x ", block.y, " x ", block.z, ", ", smem,
                    " bytes of shared memory)"));
  }
}

// 8 BF16 values of one 16-byte load as floats.
__device__ __forceinline__ void bf16x8_to_float(const uint4& raw, float (&v)[8]) {
  const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(p[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

template <typename T>
T* device_ptr(const Tensor& t) {
  return static_cast<T*>(t.data);
}

}  // namespace narwhal::ops::cuda
