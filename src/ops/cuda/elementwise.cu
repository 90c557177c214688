// Memory-bound GPU ops: one CTA per row (a cluster of CTAs for argmax), FP32 math.
#include "ops/cuda/common.cuh"
#include "ops/cuda/elementwise.h"

#include <cooperative_groups.h>

#include <algorithm>
#include <climits>

namespace narwhal::ops::cuda {

namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;

// Block-wide sum through shared memory (blockDim.x a multiple of 32, at most 1024).
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  v = threadIdx.x < warps ? partial[threadIdx.x] : 0.0f;
  if (threadIdx.x < 32) v = warp_sum(v);
  if (threadIdx.x == 0) partial[0] = v;
  __syncthreads();
  v = partial[0];
  __syncthreads();
  return v;
}

__global__ void embedding_kernel(const int32_t* ids, const bf16* table, float* out, int64_t hidden) {
  const bf16* row = table + static_cast<int64_t>(ids[blockIdx.x]) * hidden;
  float* dst = out + blockIdx.x * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = __bfloat162float(row[i]);
}

__global__ void add_rms_norm_kernel(float* residual, const bf16* delta, const bf16* weight, float eps, bf16* out,
                                    int64_t hidden) {
  float* r = residual + blockIdx.x * hidden;
  const bf16* d = delta ? delta + blockIdx.x * hidden : nullptr;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    float v = r[i] + (d ? __bfloat162float(d[i]) : 0.0f);
    r[i] = v;
    sum += v * v;
  }
  const float inv = rsqrtf(block_sum(sum) / static_cast<float>(hidden) + eps);
  bf16* o = out + blockIdx.x * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) o[i] = __float2bfloat16(__bfloat162float(weight[i]) * (r[i] * inv));
}

__global__ void rms_norm_rows_kernel(bf16* x, int64_t n, int64_t row_stride, const bf16* weight, float eps) {
  bf16* row = x + blockIdx.x * row_stride;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = __bfloat162float(row[i]);
    sum += v * v;
  }
  const float inv = rsqrtf(block_sum(sum) / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    row[i] = __float2bfloat16(__bfloat162float(weight[i]) * (__bfloat162float(row[i]) * inv));
}

// Rotates pair i of a rope vector in place: interleaved (x[2i], x[2i+1]) or NeoX halves (x[i], x[i+half]).
__device__ __forceinline__ void rotate_pair(bf16* v, int i, int half, bool interleave, float c, float s) {
  bf16* a = interleave ? v + 2 * i : v + i;
  bf16* b = interleave ? v + 2 * i + 1 : v + i + half;
  const float x0 = __bfloat162float(*a), x1 = __bfloat162float(*b);
  *a = __float2bfloat16(x0 * c - x1 * s);
  *b = __float2bfloat16(x1 * c + x0 * s);
}

__global__ void rope_store_kernel(bf16* q, int heads, int q_width, int nope, const bf16* kv, int kv_width,
                                  int kv_lora, const int32_t* positions, const int64_t* slots,
                                  const float* inv_freq, float scaling, bool interleave, bf16* cache) {
  const int64_t t = blockIdx.x;
  const int half = (q_width - nope) / 2;
  const float pos = static_cast<float>(positions[t]);
  // q: every head's rope slice.
  for (int idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    float s, c;
    sincosf(pos * inv_freq[i], &s, &c);
    rotate_pair(q + (t * heads + h) * q_width + nope, i, half, interleave, c * scaling, s * scaling);
  }
  const int64_t slot = slots[t];
  if (slot < 0) return;
  bf16* dst = cache + slot * kv_width;
  const bf16* src = kv + t * kv_width;
  for (int i = threadIdx.x; i < kv_lora; i += blockDim.x) dst[i] = src[i];
  __syncthreads();
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    // Copy the pair, then rotate it in the cache.
    const int a = interleave ? 2 * i : i, b = interleave ? 2 * i + 1 : i + half;
    dst[kv_lora + a] = src[kv_lora + a];
    dst[kv_lora + b] = src[kv_lora + b];
    float s, c;
    sincosf(pos * inv_freq[i], &s, &c);
    rotate_pair(dst + kv_lora, i, half, interleave, c * scaling, s * scaling);
  }
}

__global__ void silu_and_mul_kernel(const bf16* gate_up, bf16* out, int64_t inter) {
  const bf16* g = gate_up + blockIdx.x * 2 * inter;
  const bf16* u = g + inter;
  bf16* o = out + blockIdx.x * inter;
  for (int64_t i = threadIdx.x; i < inter; i += blockDim.x) {
    const float x = __bfloat162float(g[i]);
    o[i] = __float2bfloat16(x / (1.0f + __expf(-x)) * __bfloat162float(u[i]));
  }
}

__global__ void gather_rows_kernel(const bf16* x, const int32_t* rows, bf16* out, int64_t width) {
  const bf16* src = x + static_cast<int64_t>(rows[blockIdx.x]) * width;
  bf16* dst = out + blockIdx.x * width;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) dst[i] = src[i];
}

__global__ void bf16_to_f32_kernel(const bf16* x, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = __bfloat162float(x[i]);
}

// Greedy choice, one cluster of kArgmaxBlocks CTAs per row (each on its own SM, so the row streams in at several
// SMs' bandwidth), the CTAs' winners merged through distributed shared memory. A candidate is one 64-bit key:
// the value's bits made to order as unsigned integers, then the complement of the index, so that the larger
// key is the larger value and, on ties, the lower index. NaN orders below every number.
constexpr int kArgmaxBlocks = 8;
constexpr int kArgmaxThreads = 512;
constexpr int kArgmaxUnroll = 4;

__device__ __forceinline__ uint64_t argmax_key(float v, int64_t i) {
  const uint32_t bits = __float_as_uint(v + 0.0f);  // -0 becomes +0: equal values, so the lower index wins
  const uint32_t ordered = v != v ? 0u : (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
  return (static_cast<uint64_t>(ordered) << 32) | (0xffffffffu - static_cast<uint32_t>(i));
}

__device__ __forceinline__ uint64_t warp_max_u64(uint64_t v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

__global__ void __cluster_dims__(kArgmaxBlocks, 1, 1) __launch_bounds__(kArgmaxThreads)
    argmax_kernel(const float* logits, int64_t vocab, bool vectorized, int32_t* ids) {
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const float* row = logits + blockIdx.y * vocab;
  // This CTA's slice, a multiple of 4 long so that float4 loads stay aligned.
  const int64_t slice = ceil_div(ceil_div(vocab, kArgmaxBlocks), 4) * 4;
  const int64_t begin = rank * slice, end = min(vocab, begin + slice);
  uint64_t best = 0;
  if (vectorized) {
    // kArgmaxUnroll loads in flight per thread: a V2-Lite slice (12,800 floats) is two round trips to memory.
    constexpr int64_t kStride = 4 * kArgmaxThreads;
    for (int64_t i0 = begin + 4 * threadIdx.x; i0 < end; i0 += kStride * kArgmaxUnroll) {
      float4 v[kArgmaxUnroll];
#pragma unroll
      for (int u = 0; u < kArgmaxUnroll; ++u)
        if (i0 + u * kStride < end) v[u] = *reinterpret_cast<const float4*>(row + i0 + u * kStride);
#pragma unroll
      for (int u = 0; u < kArgmaxUnroll; ++u) {
        const int64_t i = i0 + u * kStride;
        if (i < end)
          best = max(best, max(max(argmax_key(v[u].x, i), argmax_key(v[u].y, i + 1)),
                               max(argmax_key(v[u].z, i + 2), argmax_key(v[u].w, i + 3))));
      }
    }
  } else {
    for (int64_t i = begin + threadIdx.x; i < end; i += kArgmaxThreads) best = max(best, argmax_key(row[i], i));
  }
  __shared__ uint64_t warp_best[kArgmaxThreads / 32];
  __shared__ uint64_t block_best;
  best = warp_max_u64(best);
  if (threadIdx.x % 32 == 0) warp_best[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x < 32) {
    best = warp_max_u64(threadIdx.x < kArgmaxThreads / 32 ? warp_best[threadIdx.x] : 0);
    if (threadIdx.x == 0) block_best = best;
  }
  cluster.sync();  // every CTA's block_best is written
  if (rank == 0 && threadIdx.x < 32) {
    best = warp_max_u64(threadIdx.x < kArgmaxBlocks ? *cluster.map_shared_rank(&block_best, threadIdx.x) : 0);
    if (threadIdx.x == 0) ids[blockIdx.y] = static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(best));
  }
  cluster.sync();  // rank 0 is done reading the others' shared memory before they exit
}

void check_cuda(const Tensor& t, DType dtype, const char* what) {
  NW_CHECK(t.device == Device::kCUDA && t.dtype == dtype, what, ": expected a ", dtype_name(dtype),
           " CUDA tensor, got ", dtype_name(t.dtype), t.device == Device::kCUDA ? " on CUDA" : " on the host");
}

}  // namespace

void embedding(const Tensor& ids, const Tensor& table, Tensor& out, cudaStream_t stream) {
  check_cuda(ids, DType::kI32, "embedding ids");
  check_cuda(table, DType::kBF16, "embedding table");
  check_cuda(out, DType::kF32, "embedding out");
  if (ids.numel() == 0) return;
  embedding_kernel<<<ids.numel(), kThreads, 0, stream>>>(ids.ptr<int32_t>(), device_ptr<bf16>(table), out.f32(),
                                                         table.size(1));
  NW_CUDA_CHECK_LAUNCH();
}

void add_rms_norm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps, Tensor& out,
                  cudaStream_t stream) {
  check_cuda(residual, DType::kF32, "add_rms_norm residual");
  check_cuda(out, DType::kBF16, "add_rms_norm out");
  if (delta.defined()) check_cuda(delta, DType::kBF16, "add_rms_norm delta");
  if (residual.size(0) == 0) return;
  add_rms_norm_kernel<<<residual.size(0), kThreads, 0, stream>>>(
      residual.f32(), delta.defined() ? device_ptr<bf16>(delta) : nullptr, device_ptr<bf16>(weight), eps,
      device_ptr<bf16>(out), residual.size(1));
  NW_CUDA_CHECK_LAUNCH();
}

void rms_norm_rows(void* x, int64_t rows, int64_t n, int64_t row_stride, const Tensor& weight, float eps,
                   cudaStream_t stream) {
  check_cuda(weight, DType::kBF16, "rms_norm weight");
  if (rows == 0) return;
  rms_norm_rows_kernel<<<rows, kThreads, 0, stream>>>(static_cast<bf16*>(x), n, row_stride, device_ptr<bf16>(weight),
                                                     eps);
  NW_CUDA_CHECK_LAUNCH();
}

void rope_and_store_latents(Tensor& q, int64_t nope_dim, const Tensor& kv, const Tensor& positions,
                            const Tensor& slots, const RopeTable& rope, Tensor& cache, cudaStream_t stream) {
  check_cuda(q, DType::kBF16, "rope q");
  check_cuda(kv, DType::kBF16, "rope kv");
  check_cuda(cache, DType::kBF16, "latent cache");
  check_cuda(positions, DType::kI32, "rope positions");
  check_cuda(slots, DType::kI64, "cache slots");
  const int64_t kv_width = kv.size(1), rope_dim = q.size(2) - nope_dim;
  NW_CHECK(cache.size(2) == kv_width && rope.inv_freq.numel() * 2 == rope_dim,
           "rope_and_store_latents: cache width ", cache.size(2), " / rope table do not match kv width ", kv_width);
  if (q.size(0) == 0) return;
  rope_store_kernel<<<q.size(0), 128, 0, stream>>>(
      device_ptr<bf16>(q), static_cast<int>(q.size(1)), static_cast<int>(q.size(2)), static_cast<int>(nope_dim),
      device_ptr<bf16>(kv), static_cast<int>(kv_width), static_cast<int>(kv_width - rope_dim),
      positions.ptr<int32_t>(), slots.ptr<int64_t>(), rope.inv_freq.f32(), rope.scaling, rope.interleave,
      device_ptr<bf16>(cache));
  NW_CUDA_CHECK_LAUNCH();
}

void silu_and_mul(const Tensor& gate_up, Tensor& out, cudaStream_t stream) {
  check_cuda(gate_up, DType::kBF16, "silu_and_mul input");
  check_cuda(out, DType::kBF16, "silu_and_mul out");
  if (gate_up.size(0) == 0) return;
  silu_and_mul_kernel<<<gate_up.size(0), kThreads, 0, stream>>>(device_ptr<bf16>(gate_up), device_ptr<bf16>(out),
                                                                gate_up.size(1) / 2);
  NW_CUDA_CHECK_LAUNCH();
}

void gather_rows(const Tensor& x, const Tensor& rows, Tensor& out, cudaStream_t stream) {
  check_cuda(x, DType::kBF16, "gather_rows input");
  check_cuda(rows, DType::kI32, "gather_rows rows");
  check_cuda(out, DType::kBF16, "gather_rows out");
  if (rows.numel() == 0) return;
  gather_rows_kernel<<<rows.numel(), kThreads, 0, stream>>>(device_ptr<bf16>(x), rows.ptr<int32_t>(),
                                                            device_ptr<bf16>(out), x.size(1));
  NW_CUDA_CHECK_LAUNCH();
}

void bf16_to_f32(const Tensor& x, Tensor& out, cudaStream_t stream) {
  check_cuda(x, DType::kBF16, "bf16_to_f32 input");
  check_cuda(out, DType::kF32, "bf16_to_f32 out");
  NW_CHECK(out.numel() >= x.numel(), "bf16_to_f32: output smaller than input");
  if (x.numel() == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(x.numel(), kThreads), 4096));
  bf16_to_f32_kernel<<<blocks, kThreads, 0, stream>>>(device_ptr<bf16>(x), out.f32(), x.numel());
  NW_CUDA_CHECK_LAUNCH();
}

void argmax(const Tensor& logits, Tensor& ids, cudaStream_t stream) {
  check_cuda(logits, DType::kF32, "argmax logits");
  check_cuda(ids, DType::kI32, "argmax ids");
  if (logits.size(0) == 0) return;
  NW_CHECK(logits.size(1) > 0 && logits.size(1) <= INT32_MAX && logits.size(0) <= 65535, "argmax: logits",
           logits.shape_string(), " out of range (rows <= 65535, 0 < vocab <= INT32_MAX)");
  const bool vectorized = logits.size(1) % 4 == 0 && reinterpret_cast<uintptr_t>(logits.data) % 16 == 0;
  argmax_kernel<<<dim3(kArgmaxBlocks, logits.size(0)), kArgmaxThreads, 0, stream>>>(logits.f32(), logits.size(1),
                                                                                     vectorized, ids.ptr<int32_t>());
  NW_CUDA_CHECK_LAUNCH();
}

}  // namespace narwhal::ops::cuda
