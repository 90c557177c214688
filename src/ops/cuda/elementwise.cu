// Memory-bound GPU ops: one CTA per row (several for SiLU-and-mul, a cluster for argmax), FP32 math.
#include "ops/cuda/common.cuh"
#include "ops/cuda/elementwise.h"
#include "ops/sampling_math.h"

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

__global__ void embedding_kernel(const int32_t* ids, const bf16* table, float* out, int64_t hidden, int64_t first_id,
                                 int64_t rows) {
  grid_dependency_wait();
  const int64_t row = static_cast<int64_t>(ids[blockIdx.x]) - first_id;
  float* dst = out + blockIdx.x * hidden;
  if (row < 0 || row >= rows) {  // another rank's row of a vocab-parallel table
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = 0.0f;
    return;
  }
  const bf16* src = table + row * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = __bfloat162float(src[i]);
}

// add_rms_norm over 8-element chunks, at most kNormChunks per thread, held in registers between the two passes.
constexpr int kNormChunks = 4;
constexpr int kNormMaxThreads = 1024;

__global__ void __launch_bounds__(kNormMaxThreads) add_rms_norm_kernel(float* residual, const bf16* delta,
                                                                         const bf16* weight, float eps, bf16* out,
                                                                         float* out_f32, int hidden) {
  const int chunks = hidden / 8;
  uint4 w[kNormChunks];
  // The norm weight is read before the wait: the previous kernel does not write it.
#pragma unroll
  for (int j = 0; j < kNormChunks; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < chunks) w[j] = *reinterpret_cast<const uint4*>(weight + 8 * c);
  }
  grid_dependency_wait();
  float4* r = reinterpret_cast<float4*>(residual + static_cast<int64_t>(blockIdx.x) * hidden);
  const uint4* d_row = delta ? reinterpret_cast<const uint4*>(delta + static_cast<int64_t>(blockIdx.x) * hidden)
                             : nullptr;
  float x[kNormChunks][8];
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kNormChunks; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c >= chunks) break;
    const float4 lo = r[2 * c], hi = r[2 * c + 1];
    float d[8] = {};
    if (d_row) bf16x8_to_float(d_row[c], d);
    const float v[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      x[j][i] = v[i] + d[i];
      sum += x[j][i] * x[j][i];
    }
    if (d_row) {
      r[2 * c] = make_float4(x[j][0], x[j][1], x[j][2], x[j][3]);
      r[2 * c + 1] = make_float4(x[j][4], x[j][5], x[j][6], x[j][7]);
    }
  }
  const float inv = rsqrtf(block_sum(sum) / static_cast<float>(hidden) + eps);
#pragma unroll
  for (int j = 0; j < kNormChunks; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c >= chunks) break;
    float g[8];
    bf16x8_to_float(w[j], g);
    float y[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) y[i] = g[i] * (x[j][i] * inv);
    uint4 packed;
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
    for (int i = 0; i < 4; ++i) o[i] = __floats2bfloat162_rn(y[2 * i], y[2 * i + 1]);
    *reinterpret_cast<uint4*>(out + static_cast<int64_t>(blockIdx.x) * hidden + 8 * c) = packed;
    if (out_f32) {
      float4* f = reinterpret_cast<float4*>(out_f32 + static_cast<int64_t>(blockIdx.x) * hidden + 8 * c);
      f[0] = make_float4(y[0], y[1], y[2], y[3]);
      f[1] = make_float4(y[4], y[5], y[6], y[7]);
    }
  }
}

__global__ void rms_norm_rows_kernel(bf16* x, int64_t n, int64_t row_stride, const bf16* weight, float eps) {
  grid_dependency_wait();
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

// Rotates pair i of a rope vector from `in` to `out` (may be the same): interleaved (x[2i], x[2i+1]) or NeoX
// halves (x[i], x[i+half]).
__device__ __forceinline__ void rotate_pair(const bf16* in, bf16* out, int i, int half, bool interleave, float c,
                                            float s) {
  const int a = interleave ? 2 * i : i, b = interleave ? 2 * i + 1 : i + half;
  const float x0 = __bfloat162float(in[a]), x1 = __bfloat162float(in[b]);
  out[a] = __float2bfloat16(x0 * c - x1 * s);
  out[b] = __float2bfloat16(x1 * c + x0 * s);
}

struct MlaRopeStoreArgs {
  const bf16* q;  // [T, heads, q_width], rope slice from column nope
  bf16* q_out;    // rotated q_pe goes to q_out[(t * heads + h) * out_width + out_col ...]
  int heads, q_width, nope, out_width, out_col, rope_dim;
  const bf16* kv;  // [T, kv_width]: compressed kv (kv_lora wide), then k_pe
  const bf16* norm_weight;
  float eps;
  int kv_width, kv_lora;
  const int32_t* positions;
  const int64_t* slots;
  const float* inv_freq;
  float scaling;
  bool interleave;
  bf16* cache;
};

constexpr int kRopeThreads = 256;
constexpr int kMaxRopeHalf = 128;

__global__ void __launch_bounds__(kRopeThreads) mla_rope_store_kernel(const MlaRopeStoreArgs a) {
  __shared__ float cos_s[kMaxRopeHalf], sin_s[kMaxRopeHalf];
  grid_dependency_wait();
  const int64_t t = blockIdx.x;
  const int half = a.rope_dim / 2;
  const float pos = static_cast<float>(a.positions[t]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float s, c;
    sincosf(pos * a.inv_freq[i], &s, &c);
    cos_s[i] = c * a.scaling;
    sin_s[i] = s * a.scaling;
  }
  const bf16* src = a.kv + t * a.kv_width;
  float sum = 0.0f;
  for (int i = threadIdx.x; i < a.kv_lora; i += blockDim.x) {
    const float v = __bfloat162float(src[i]);
    sum += v * v;
  }
  const float inv = rsqrtf(block_sum(sum) / static_cast<float>(a.kv_lora) + a.eps);  // syncs: cos_s/sin_s ready
  for (int idx = threadIdx.x; idx < a.heads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    rotate_pair(a.q + (t * a.heads + h) * a.q_width + a.nope, a.q_out + (t * a.heads + h) * a.out_width + a.out_col,
                i, half, a.interleave, cos_s[i], sin_s[i]);
  }
  const int64_t slot = a.slots[t];
  if (slot < 0) return;
  bf16* dst = a.cache + slot * a.kv_width;
  for (int i = threadIdx.x; i < a.kv_lora; i += blockDim.x)
    dst[i] = __float2bfloat16(__bfloat162float(a.norm_weight[i]) * (__bfloat162float(src[i]) * inv));
  for (int i = threadIdx.x; i < half; i += blockDim.x)
    rotate_pair(src + a.kv_lora, dst + a.kv_lora, i, half, a.interleave, cos_s[i], sin_s[i]);
}

constexpr int kSiluCols = 1024;  // columns per CTA: a decode row spreads over several SMs

__global__ void silu_and_mul_kernel(const bf16* gate_up, bf16* out, int64_t inter) {
  grid_dependency_wait();
  const bf16* g = gate_up + blockIdx.x * 2 * inter;
  const bf16* u = g + inter;
  bf16* o = out + blockIdx.x * inter;
  const int64_t end = min(inter, (blockIdx.y + 1) * int64_t{kSiluCols});
  for (int64_t i = blockIdx.y * int64_t{kSiluCols} + threadIdx.x; i < end; i += blockDim.x) {
    const float x = __bfloat162float(g[i]);
    o[i] = __float2bfloat16(x / (1.0f + __expf(-x)) * __bfloat162float(u[i]));
  }
}

__global__ void gather_rows_kernel(const bf16* x, const int32_t* rows, bf16* out, int64_t width) {
  grid_dependency_wait();
  const bf16* src = x + static_cast<int64_t>(rows[blockIdx.x]) * width;
  bf16* dst = out + blockIdx.x * width;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) dst[i] = src[i];
}

// Layer blockIdx.x; thread c moves 16-byte chunk c of each row, move after move, so the moves' order holds per chunk.
__global__ void move_rows_kernel(bf16* x, int64_t layer_elems, int64_t chunks, const int64_t* moves, int64_t n) {
  grid_dependency_wait();
  uint4* layer = reinterpret_cast<uint4*>(x + blockIdx.x * layer_elems);
  for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x)
    for (int64_t i = 0; i < n; ++i) layer[moves[2 * i + 1] * chunks + c] = layer[moves[2 * i] * chunks + c];
}

// Row b of out (blockIdx.y), its columns strided over the x blocks: column v is rank v / per's column v % per.
__global__ void join_vocab_shards_kernel(const float* shards, int64_t rows, int64_t per_rank, int64_t vocab,
                                         float* out) {
  grid_dependency_wait();
  const int64_t b = blockIdx.y;
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < vocab;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = v / per_rank;
    out[b * vocab + v] = shards[(r * rows + b) * per_rank + (v - r * per_rank)];
  }
}

__global__ void bf16_to_f32_kernel(const bf16* x, float* out, int64_t n) {
  grid_dependency_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = __bfloat162float(x[i]);
}

__global__ void f32_to_bf16_kernel(const float* x, bf16* out, int64_t n) {
  grid_dependency_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(x[i]);
}

// Greedy choice, one cluster of kArgmaxBlocks CTAs per row (each on its own SM, so the row streams in at several
// SMs' bandwidth), the CTAs' winners merged through distributed shared memory. A candidate is one 64-bit key,
// the sampler's logit_key: the larger key is the larger value and, on ties, the lower index; NaN orders below
// every number.
constexpr int kArgmaxBlocks = 8;
constexpr int kArgmaxThreads = 512;
constexpr int kArgmaxUnroll = 4;

__device__ __forceinline__ uint64_t warp_max_u64(uint64_t v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

__global__ void __cluster_dims__(kArgmaxBlocks, 1, 1) __launch_bounds__(kArgmaxThreads)
    argmax_kernel(const float* logits, int64_t vocab, bool vectorized, int32_t* ids) {
  grid_dependency_wait();
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
          best = max(best, max(max(logit_key(v[u].x, i), logit_key(v[u].y, i + 1)),
                               max(logit_key(v[u].z, i + 2), logit_key(v[u].w, i + 3))));
      }
    }
  } else {
    for (int64_t i = begin + threadIdx.x; i < end; i += kArgmaxThreads) best = max(best, logit_key(row[i], i));
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
    if (threadIdx.x == 0) ids[blockIdx.y] = logit_key_id(best);
  }
  cluster.sync();  // rank 0 is done reading the others' shared memory before they exit
}

void check_cuda(const Tensor& t, DType dtype, const char* what) {
  NW_CHECK(t.device == Device::kCUDA && t.dtype == dtype, what, ": expected a ", dtype_name(dtype),
           " CUDA tensor, got ", dtype_name(t.dtype), t.device == Device::kCUDA ? " on CUDA" : " on the host");
}

}  // namespace

void embedding(const Tensor& ids, const Tensor& table, Tensor& out, cudaStream_t stream, int64_t first_id) {
  check_cuda(ids, DType::kI32, "embedding ids");
  check_cuda(table, DType::kBF16, "embedding table");
  check_cuda(out, DType::kF32, "embedding out");
  if (ids.numel() == 0) return;
  launch(embedding_kernel, ids.numel(), kThreads, 0, stream, ids.ptr<int32_t>(), device_ptr<bf16>(table), out.f32(),
         table.size(1), first_id, table.size(0));
}

void add_rms_norm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps, Tensor& out,
                  cudaStream_t stream, Tensor* out_f32) {
  check_cuda(residual, DType::kF32, "add_rms_norm residual");
  check_cuda(out, DType::kBF16, "add_rms_norm out");
  if (out_f32) check_cuda(*out_f32, DType::kF32, "add_rms_norm out_f32");
  if (delta.defined()) check_cuda(delta, DType::kBF16, "add_rms_norm delta");
  const int64_t hidden = residual.size(1), chunks = hidden / 8;
  const int threads = static_cast<int>(std::min<int64_t>(kNormMaxThreads, ceil_div(chunks, 32) * 32));
  NW_CHECK(hidden % 8 == 0 && chunks <= int64_t{kNormChunks} * kNormMaxThreads, "add_rms_norm: hidden size ",
           hidden, " must be a multiple of 8 and at most ", 8 * kNormChunks * kNormMaxThreads);
  if (residual.size(0) == 0) return;
  launch(add_rms_norm_kernel, residual.size(0), threads, 0, stream, residual.f32(),
         delta.defined() ? device_ptr<bf16>(delta) : nullptr, device_ptr<bf16>(weight), eps, device_ptr<bf16>(out),
         out_f32 ? out_f32->f32() : nullptr, static_cast<int>(hidden));
}

void rms_norm_rows(void* x, int64_t rows, int64_t n, int64_t row_stride, const Tensor& weight, float eps,
                   cudaStream_t stream) {
  check_cuda(weight, DType::kBF16, "rms_norm weight");
  if (rows == 0) return;
  launch(rms_norm_rows_kernel, rows, kThreads, 0, stream, static_cast<bf16*>(x), n, row_stride,
         device_ptr<bf16>(weight), eps);
}

void mla_rope_and_store(const Tensor& q, int64_t nope_dim, const Tensor& kv, const Tensor& kv_norm, float eps,
                        const Tensor& positions, const Tensor& slots, const RopeTable& rope, Tensor& cache,
                        Tensor& q_pe_out, int64_t q_pe_col, cudaStream_t stream) {
  check_cuda(q, DType::kBF16, "rope q");
  check_cuda(q_pe_out, DType::kBF16, "rope q_pe_out");
  check_cuda(kv, DType::kBF16, "rope kv");
  check_cuda(kv_norm, DType::kBF16, "kv_a norm weight");
  check_cuda(cache, DType::kBF16, "latent cache");
  check_cuda(positions, DType::kI32, "rope positions");
  check_cuda(slots, DType::kI64, "cache slots");
  const int64_t kv_width = kv.size(1), rope_dim = q.size(2) - nope_dim, kv_lora = kv_width - rope_dim;
  NW_CHECK(cache.size(2) == kv_width && rope.inv_freq.numel() * 2 == rope_dim && rope_dim / 2 <= kMaxRopeHalf &&
               kv_norm.numel() == kv_lora && q_pe_out.ndim() == 3 && q_pe_out.size(0) == q.size(0) &&
               q_pe_out.size(1) == q.size(1) && q_pe_col + rope_dim <= q_pe_out.size(2),
           "mla_rope_and_store: q", q.shape_string(), " kv", kv.shape_string(), " cache", cache.shape_string(),
           " q_pe_out", q_pe_out.shape_string(), " at column ", q_pe_col, " and ", rope.inv_freq.numel(),
           " rope frequencies do not agree");
  if (q.size(0) == 0) return;
  MlaRopeStoreArgs a{};
  a.q = device_ptr<bf16>(q);
  a.q_out = device_ptr<bf16>(q_pe_out);
  a.heads = static_cast<int>(q.size(1));
  a.q_width = static_cast<int>(q.size(2));
  a.nope = static_cast<int>(nope_dim);
  a.out_width = static_cast<int>(q_pe_out.size(2));
  a.out_col = static_cast<int>(q_pe_col);
  a.rope_dim = static_cast<int>(rope_dim);
  a.kv = device_ptr<bf16>(kv);
  a.norm_weight = device_ptr<bf16>(kv_norm);
  a.eps = eps;
  a.kv_width = static_cast<int>(kv_width);
  a.kv_lora = static_cast<int>(kv_lora);
  a.positions = positions.ptr<int32_t>();
  a.slots = slots.ptr<int64_t>();
  a.inv_freq = rope.inv_freq.f32();
  a.scaling = rope.scaling;
  a.interleave = rope.interleave;
  a.cache = device_ptr<bf16>(cache);
  launch(mla_rope_store_kernel, q.size(0), kRopeThreads, 0, stream, a);
}

void silu_and_mul(const Tensor& gate_up, Tensor& out, cudaStream_t stream) {
  check_cuda(gate_up, DType::kBF16, "silu_and_mul input");
  check_cuda(out, DType::kBF16, "silu_and_mul out");
  if (gate_up.size(0) == 0) return;
  const int64_t inter = gate_up.size(1) / 2;
  const dim3 grid(static_cast<unsigned>(gate_up.size(0)), static_cast<unsigned>(ceil_div(inter, kSiluCols)));
  launch(silu_and_mul_kernel, grid, kThreads, 0, stream, device_ptr<bf16>(gate_up), device_ptr<bf16>(out), inter);
}

void gather_rows(const Tensor& x, const Tensor& rows, Tensor& out, cudaStream_t stream) {
  check_cuda(x, DType::kBF16, "gather_rows input");
  check_cuda(rows, DType::kI32, "gather_rows rows");
  check_cuda(out, DType::kBF16, "gather_rows out");
  if (rows.numel() == 0) return;
  launch(gather_rows_kernel, rows.numel(), kThreads, 0, stream, device_ptr<bf16>(x), rows.ptr<int32_t>(),
         device_ptr<bf16>(out), x.size(1));
}

void move_rows(Tensor& x, int64_t width, const Tensor& moves, cudaStream_t stream) {
  check_cuda(x, DType::kBF16, "move_rows rows");
  check_cuda(moves, DType::kI64, "move_rows moves");
  NW_CHECK(x.ndim() == 2 && width > 0 && width % 8 == 0 && x.size(1) % width == 0 && moves.ndim() == 2 &&
               moves.size(1) == 2,
           "move_rows: x", x.shape_string(), " rows of ", width, " (a multiple of 8) and moves", moves.shape_string(),
           " [n, 2]");
  if (moves.size(0) == 0 || x.size(0) == 0) return;
  launch(move_rows_kernel, static_cast<unsigned>(x.size(0)), 128, 0, stream, device_ptr<bf16>(x), x.size(1),
         width / 8, moves.ptr<int64_t>(), moves.size(0));
}

void bf16_to_f32(const Tensor& x, Tensor& out, cudaStream_t stream) {
  check_cuda(x, DType::kBF16, "bf16_to_f32 input");
  check_cuda(out, DType::kF32, "bf16_to_f32 out");
  NW_CHECK(out.numel() >= x.numel(), "bf16_to_f32: output smaller than input");
  if (x.numel() == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(x.numel(), kThreads), 4096));
  launch(bf16_to_f32_kernel, blocks, kThreads, 0, stream, device_ptr<bf16>(x), out.f32(), x.numel());
}

void copy_columns(Tensor& dst, int64_t dst_col, const Tensor& src, int64_t src_col, int64_t width,
                  cudaStream_t stream) {
  check_cuda(dst, DType::kBF16, "copy_columns dst");
  check_cuda(src, DType::kBF16, "copy_columns src");
  NW_CHECK(dst.ndim() == 2 && src.ndim() == 2 && dst.size(0) >= src.size(0) && dst_col >= 0 && src_col >= 0 &&
               width >= 0 && dst_col + width <= dst.size(1) && src_col + width <= src.size(1),
           "copy_columns: columns ", src_col, "+", width, " of src", src.shape_string(), " to ", dst_col, " of dst",
           dst.shape_string());
  if (src.size(0) == 0 || width == 0) return;
  const size_t elem = sizeof(bf16);
  NW_CUDA_CHECK(cudaMemcpy2DAsync(static_cast<char*>(dst.data) + dst_col * elem, dst.size(1) * elem,
                                  static_cast<const char*>(src.data) + src_col * elem, src.size(1) * elem,
                                  width * elem, src.size(0), cudaMemcpyDeviceToDevice, stream));
}

void f32_to_bf16(const Tensor& x, Tensor& out, cudaStream_t stream) {
  check_cuda(x, DType::kF32, "f32_to_bf16 input");
  check_cuda(out, DType::kBF16, "f32_to_bf16 out");
  NW_CHECK(out.numel() >= x.numel(), "f32_to_bf16: output smaller than input");
  if (x.numel() == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(x.numel(), kThreads), 4096));
  launch(f32_to_bf16_kernel, blocks, kThreads, 0, stream, x.f32(), device_ptr<bf16>(out), x.numel());
}

void join_vocab_shards(const Tensor& shards, int64_t parts, Tensor& out, cudaStream_t stream) {
  check_cuda(shards, DType::kF32, "join_vocab_shards shards");
  check_cuda(out, DType::kF32, "join_vocab_shards out");
  const int64_t rows = out.size(0), vocab = out.size(1), per_rank = shards.size(1);
  NW_CHECK(parts >= 1 && shards.size(0) == parts * rows && parts * per_rank >= vocab && rows <= 65535,
           "join_vocab_shards: ", parts, " shards ", shards.shape_string(), " cannot make logits ", out.shape_string());
  if (rows == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(vocab, kThreads), 64));
  launch(join_vocab_shards_kernel, dim3(blocks, static_cast<unsigned>(rows)), kThreads, 0, stream, shards.f32(), rows,
         per_rank, vocab, out.f32());
}

void argmax(const Tensor& logits, Tensor& ids, cudaStream_t stream) {
  check_cuda(logits, DType::kF32, "argmax logits");
  check_cuda(ids, DType::kI32, "argmax ids");
  if (logits.size(0) == 0) return;
  NW_CHECK(logits.size(1) > 0 && logits.size(1) <= INT32_MAX && logits.size(0) <= 65535, "argmax: logits",
           logits.shape_string(), " out of range (rows <= 65535, 0 < vocab <= INT32_MAX)");
  const bool vectorized = logits.size(1) % 4 == 0 && reinterpret_cast<uintptr_t>(logits.data) % 16 == 0;
  launch(argmax_kernel, dim3(kArgmaxBlocks, logits.size(0)), kArgmaxThreads, 0, stream, logits.f32(),
         logits.size(1), vectorized, ids.ptr<int32_t>());
}

}  // namespace narwhal::ops::cuda
