// Per-token-group FP8 e4m3 quantization of BF16 activations (DeepSeek-V3 recipe: one scale per row per 128
// columns, scale = amax / 448): 16 threads per group, 8 columns (one 16-byte load) each.
#include <cuda_fp8.h>

#include "ops/cuda/common.cuh"
#include "ops/cuda/gemm_kernels.h"
#include "ops/cuda/gemm.h"

namespace narwhal::ops::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kGroup = 128;
constexpr int kLanesPerGroup = 16;
constexpr int kColsPerLane = kGroup / kLanesPerGroup;
// Same floor as the CPU reference (ops/quant.h): an all-zero group quantizes to zeros, not NaN.
constexpr float kMinAmax = 1e-10f;

__global__ void quantize_fp8_kernel(QuantFp8Args a, int64_t kblocks, int64_t groups) {
  grid_dependency_wait();
  const int64_t group = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / kLanesPerGroup;
  const int lane = threadIdx.x % kLanesPerGroup;
  const bool active = group < groups;  // inactive lanes still take part in the shuffles
  const int64_t r = active ? group / kblocks : 0, kb = active ? group % kblocks : 0;
  const int64_t m = r / a.batch, b = r % a.batch;
  const int64_t col = kb * kGroup + lane * kColsPerLane;
  const bool valid = active && col < a.k;

  uint4 raw = make_uint4(0, 0, 0, 0);
  if (valid) raw = *reinterpret_cast<const uint4*>(static_cast<const bf16*>(a.x) + b * a.x_batch_stride +
                                                   m * a.x_row_stride + col);
  const bf16* vals = reinterpret_cast<const bf16*>(&raw);
  float v[kColsPerLane];
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < kColsPerLane; ++i) {
    v[i] = __bfloat162float(vals[i]);
    amax = fmaxf(amax, fabsf(v[i]));
  }
#pragma unroll
  for (int offset = kLanesPerGroup / 2; offset > 0; offset >>= 1)
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
  const float scale = fmaxf(amax, kMinAmax) / 448.0f;

  if (valid) {
    uint8_t packed[kColsPerLane];
#pragma unroll
    for (int i = 0; i < kColsPerLane; ++i) packed[i] = __nv_cvt_float_to_fp8(v[i] / scale, __NV_SATFINITE, __NV_E4M3);
    *reinterpret_cast<uint2*>(a.q + r * a.k + col) = *reinterpret_cast<const uint2*>(packed);
  }
  if (active && lane == 0)
    a.scale[r < a.main_rows ? kb * a.main_ld + r : a.tail_offset + kb * 4 + (r - a.main_rows)] = scale;
}

}  // namespace

void launch_quantize_fp8(const QuantFp8Args& a, cudaStream_t stream) {
  NW_CHECK(a.k % 16 == 0 && a.x_row_stride % 8 == 0 && a.x_batch_stride % 8 == 0,
           "fp8 quantization: K = ", a.k, " must be a multiple of 16 and row strides multiples of 8 elements");
  const int64_t kblocks = ceil_div(a.k, kGroup);
  const int64_t groups = a.batch * a.rows * kblocks;
  if (groups == 0) return;
  const int64_t blocks = ceil_div(groups * kLanesPerGroup, kThreads);
  launch(quantize_fp8_kernel, static_cast<unsigned>(blocks), kThreads, 0, stream, a, kblocks, groups);
}

void quantize_fp8_token_groups(const Tensor& x, Tensor& q, Tensor& scale, cudaStream_t stream) {
  const int64_t m = x.size(0), k = x.size(1);
  NW_CHECK(x.ndim() == 2 && x.dtype == DType::kBF16 && q.dtype == DType::kF8E4M3 && q.shape == x.shape &&
               scale.dtype == DType::kF32 && scale.shape == std::vector<int64_t>({ceil_div(k, kGroup), m}),
           "quantize_fp8_token_groups: x", x.shape_string(), " q", q.shape_string(), " scale", scale.shape_string());
  QuantFp8Args a;
  a.x = x.data;
  a.rows = m;
  a.k = k;
  a.x_row_stride = k;
  a.q = device_ptr<uint8_t>(q);
  a.scale = device_ptr<float>(scale);
  a.main_rows = m;
  a.main_ld = m;
  launch_quantize_fp8(a, stream);
}

}  // namespace narwhal::ops::cuda
