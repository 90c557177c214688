// Memory-bound GPU ops: one CTA per row, 16-byte loads where the layout allows, FP32 math.
#include "ops/cuda/common.cuh"
#include "ops/cuda/elementwise.h"

#include <algorithm>

namespace narwhal::ops::cuda {

namespace {

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

__global__ void argmax_kernel(const float* logits, int64_t vocab, int32_t* ids) {
  const float* row = logits + blockIdx.x * vocab;
  float best = -INFINITY;
  int64_t best_id = vocab;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
    if (row[i] > best) best = row[i], best_id = i;  // strided scan keeps the lowest index per thread
  __shared__ float values[kThreads];
  __shared__ int64_t indices[kThreads];
  values[threadIdx.x] = best;
  indices[threadIdx.x] = best_id;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      const float v = values[threadIdx.x + stride];
      const int64_t j = indices[threadIdx.x + stride];
      if (v > values[threadIdx.x] || (v == values[threadIdx.x] && j < indices[threadIdx.x]))
        values[threadIdx.x] = v, indices[threadIdx.x] = j;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) ids[blockIdx.x] = static_cast<int32_t>(indices[0]);
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
  argmax_kernel<<<logits.size(0), kThreads, 0, stream>>>(logits.f32(), logits.size(1), ids.ptr<int32_t>());
  NW_CUDA_CHECK_LAUNCH();
}

}  // namespace narwhal::ops::cuda
