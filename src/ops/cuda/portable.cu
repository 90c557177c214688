// Portable GPU ops: shape-generic MLA attention, the FP32 router product, dense MoE combine, random fills.
#include <cuda_fp8.h>

#include <algorithm>

#include "ops/cuda/common.cuh"
#include "ops/cuda/portable.h"

namespace narwhal::ops::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

struct PortableAttention {
  const bf16* q;
  int64_t q_row_stride, q_head_stride;
  int a_len, b_len, v_len;
  const bf16 *key_a, *key_b, *value;
  int64_t a_row, a_head, b_row, b_head, v_row, v_head;
  bf16* out;
  const int32_t *cu_q, *cu_k;
  const int32_t* parents;  // per query row: a speculative tree's parent (visible_new_tokens); null: causal
  float scale;
};

constexpr int kKeyChunk = 1024;     // keys whose scores sit in shared memory at once (online softmax over chunks)
constexpr int kMaxValuePerThread = 8;  // output dims per thread: v_len <= kThreads * 8

// Block-wide max or sum of one value per thread (all threads get the result); `scratch` holds kWarps floats.
template <bool kMax>
__device__ float block_reduce(float v, float* scratch) {
  v = kMax ? warp_max(v) : warp_sum(v);
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) scratch[warp] = v;
  __syncthreads();
  v = scratch[0];
  for (int w = 1; w < kWarps; ++w) v = kMax ? fmaxf(v, scratch[w]) : v + scratch[w];
  __syncthreads();  // scratch is reused by the next reduction
  return v;
}

__global__ void portable_attention_kernel(PortableAttention p) {
  grid_dependency_wait();
  extern __shared__ float smem[];
  __shared__ float scratch[kWarps];
  const int head = blockIdx.x, i = blockIdx.y, seq = blockIdx.z;
  const int q_begin = p.cu_q[seq], len_q = p.cu_q[seq + 1] - q_begin;
  if (i >= len_q) return;
  const int k_begin = p.cu_k[seq], len_k = p.cu_k[seq + 1] - k_begin;
  const int new0 = len_k - len_q;  // the first new token's key
  // A tree (at most 32 new tokens) masks the new tokens that are not the row's ancestors; keys past the row's own are
  // never read either way.
  const uint32_t visible = p.parents ? visible_new_tokens(p.parents + q_begin, i, len_q) : 0u;
  const int keys = new0 + i + 1;
  const int qk = p.a_len + p.b_len;
  float* q = smem;
  float* scores = smem + qk;
  const bf16* q_row = p.q + (q_begin + i) * p.q_row_stride + head * p.q_head_stride;
  for (int d = threadIdx.x; d < qk; d += kThreads) q[d] = __bfloat162float(q_row[d]);
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Online softmax over chunks of keys: running max m, running sum l, and this thread's output dims rescaled as m
  // grows, so any number of keys fits in the chunk's shared memory.
  float m = -INFINITY, l = 0.0f, acc[kMaxValuePerThread] = {};
  for (int c0 = 0; c0 < keys; c0 += kKeyChunk) {
    const int n = min(kKeyChunk, keys - c0);
    for (int k = warp; k < n; k += kWarps) {
      const int64_t key = k_begin + c0 + k;
      const bf16* a = p.key_a + key * p.a_row + head * p.a_head;
      const bf16* b = p.key_b + key * p.b_row + head * p.b_head;
      float s = 0.0f;
      for (int d = lane; d < p.a_len; d += 32) s += q[d] * __bfloat162float(a[d]);
      for (int d = lane; d < p.b_len; d += 32) s += q[p.a_len + d] * __bfloat162float(b[d]);
      s = warp_sum(s);
      const int j = c0 + k - new0;  // the key's place among the new tokens (j <= i < 32 in a tree)
      if (lane == 0) scores[k] = p.parents && j >= 0 && !((visible >> j) & 1u) ? -INFINITY : s * p.scale;
    }
    __syncthreads();
    float chunk_max = -INFINITY;
    for (int k = threadIdx.x; k < n; k += kThreads) chunk_max = fmaxf(chunk_max, scores[k]);
    const float m_new = fmaxf(m, block_reduce<true>(chunk_max, scratch));
    const float rescale = __expf(m - m_new);  // 0 on the first chunk (m = -inf)
    float chunk_sum = 0.0f;
    for (int k = threadIdx.x; k < n; k += kThreads) {
      const float e = __expf(scores[k] - m_new);
      scores[k] = e;
      chunk_sum += e;
    }
    l = l * rescale + block_reduce<false>(chunk_sum, scratch);  // its syncs also publish the exponentials
#pragma unroll
    for (int j = 0; j < kMaxValuePerThread; ++j) {
      const int d = threadIdx.x + j * kThreads;
      if (d >= p.v_len) break;
      float sum = 0.0f;
      for (int k = 0; k < n; ++k)
        sum += scores[k] * __bfloat162float(p.value[(k_begin + c0 + k) * p.v_row + head * p.v_head + d]);
      acc[j] = acc[j] * rescale + sum;
    }
    m = m_new;
    __syncthreads();  // the next chunk overwrites the scores
  }
  const float inv = 1.0f / l;
  bf16* out = p.out + (static_cast<int64_t>(q_begin + i) * gridDim.x + head) * p.v_len;
#pragma unroll
  for (int j = 0; j < kMaxValuePerThread; ++j) {
    const int d = threadIdx.x + j * kThreads;
    if (d < p.v_len) out[d] = __float2bfloat16(acc[j] * inv);
  }
}

// 8 consecutive input values as floats (BF16 or F32 rows, 16-byte aligned).
__device__ __forceinline__ void load8(const bf16* p, float (&v)[8]) {
  bf16x8_to_float(*reinterpret_cast<const uint4*>(p), v);
}
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

// One warp per (token, expert): 16-byte weight loads over the hidden dim (hidden % 8 == 0), FP32 sums. Blocks
// of 8 warps cover 8 experts of one token, so even one token spreads over E / 8 blocks.
template <typename In>
__global__ void router_kernel(const In* x, const bf16* w, float* logits, int hidden, int experts) {
  grid_dependency_wait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, e = blockIdx.y * 8 + warp;
  if (e >= experts) return;
  const In* row = x + static_cast<int64_t>(blockIdx.x) * hidden;
  const bf16* wr = w + static_cast<int64_t>(e) * hidden;
  float s = 0.0f;
  for (int d = lane * 8; d < hidden; d += 256) {
    float a[8], b[8];
    load8(row + d, a);
    load8(wr + d, b);
#pragma unroll
    for (int i = 0; i < 8; ++i) s += a[i] * b[i];
  }
  s = warp_sum(s);
  if (lane == 0) logits[static_cast<int64_t>(blockIdx.x) * experts + e] = s;
}

// Prefill-sized batches: a block computes 16 tokens x every expert (E <= 384), staging 32-wide slices of x (F32)
// and of the weights (BF16) in shared memory, so the weights are read once per 16 tokens instead of once per
// token. Thread i owns tokens 4 (i / 64) .. +3 and experts i % 64 + 64 j, and reads 4 columns at a time (one
// 16-byte load per token, one 8-byte load per expert for 16 FMAs each). At 8192 tokens x 64 experts x 2048
// (V2-Lite's prefill chunk): 254 us per layer, the warp kernel above 535 us.
constexpr int kRouterTileTokens = 16, kRouterTileK = 32, kRouterMaxExpertTiles = 6;  // 6 x 64 = 384 experts
constexpr int64_t kRouterTiledMinTokens = 4096;  // 256 blocks: about two per SM

template <typename In>
__global__ void __launch_bounds__(256) router_tiled_kernel(const In* x, const bf16* w, float* logits, int64_t tokens,
                                                           int hidden, int experts) {
  // Rows padded to 36: 16-byte aligned x rows; weight rows 72 bytes apart, so 16 lanes' 8-byte loads hit 32 banks.
  __shared__ __align__(16) float xs[kRouterTileTokens][kRouterTileK + 4];
  __shared__ __align__(16) bf16 ws[kRouterMaxExpertTiles * 64][kRouterTileK + 4];
  grid_dependency_wait();
  const int tid = threadIdx.x, row0 = (tid / 64) * 4, col = tid % 64;
  const int64_t token0 = static_cast<int64_t>(blockIdx.x) * kRouterTileTokens;
  float acc[4][kRouterMaxExpertTiles] = {};
  for (int k0 = 0; k0 < hidden; k0 += kRouterTileK) {
    for (int i = tid; i < kRouterTileTokens * kRouterTileK; i += 256) {
      const int r = i / kRouterTileK, k = i % kRouterTileK;
      const int64_t token = token0 + r;
      xs[r][k] = token < tokens && k0 + k < hidden ? static_cast<float>(x[token * hidden + k0 + k]) : 0.0f;
    }
    for (int i = tid; i < experts * kRouterTileK; i += 256) {
      const int e = i / kRouterTileK, k = i % kRouterTileK;
      ws[e][k] = k0 + k < hidden ? w[static_cast<int64_t>(e) * hidden + k0 + k] : __float2bfloat16(0.0f);
    }
    __syncthreads();
#pragma unroll 2
    for (int k = 0; k < kRouterTileK; k += 4) {
      float4 xv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) xv[r] = *reinterpret_cast<const float4*>(&xs[row0 + r][k]);
#pragma unroll
      for (int j = 0; j < kRouterMaxExpertTiles; ++j) {
        const int e = col + 64 * j;
        if (e >= experts) break;
        const uint2 packed = *reinterpret_cast<const uint2*>(&ws[e][k]);
        const float2 w01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&packed.x));
        const float2 w23 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&packed.y));
#pragma unroll
        for (int r = 0; r < 4; ++r)
          acc[r][j] += xv[r].x * w01.x + xv[r].y * w01.y + xv[r].z * w23.x + xv[r].w * w23.y;
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t token = token0 + row0 + r;
    if (token >= tokens) break;
#pragma unroll
    for (int j = 0; j < kRouterMaxExpertTiles; ++j) {
      const int e = col + 64 * j;
      if (e < experts) logits[token * experts + e] = acc[r][j];
    }
  }
}

__global__ void combine_kernel(const bf16* expert_out, const int32_t* ids, const float* weights, int top_k,
                               int num_routed, int num_shared, int64_t tokens, int64_t hidden, bf16* out) {
  grid_dependency_wait();
  const int64_t t = blockIdx.x;
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < top_k; ++j)
      acc += weights[t * top_k + j] * __bfloat162float(expert_out[(ids[t * top_k + j] * tokens + t) * hidden + h]);
    for (int s = 0; s < num_shared; ++s)
      acc += __bfloat162float(expert_out[((num_routed + s) * tokens + t) * hidden + h]);
    out[t * hidden + h] = __float2bfloat16(acc);
  }
}

__device__ __forceinline__ float hash_uniform(uint64_t seed, uint64_t i) {  // in [-1, 1)
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

template <typename T>
__global__ void fill_kernel(T* data, int64_t n, uint64_t seed, float scale, bool random) {
  grid_dependency_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = random ? hash_uniform(seed, i) * scale : scale;
    if constexpr (std::is_same_v<T, float>) data[i] = v;
    else if constexpr (std::is_same_v<T, bf16>) data[i] = __float2bfloat16(v);
    else data[i] = __nv_fp8_e4m3(v);
  }
}

template <typename T>
void launch_fill(Tensor& t, uint64_t seed, float scale, bool random, cudaStream_t stream) {
  if (t.numel() == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(t.numel(), 256), 8192));
  launch(fill_kernel<T>, blocks, 256, 0, stream, static_cast<T*>(t.data), t.numel(), seed, scale, random);
}

}  // namespace

void mla_attention_portable(const Tensor& q, int64_t a_len, int64_t b_len, const HeadOperand& key_a,
                            const HeadOperand& key_b, const HeadOperand& value, int64_t v_len,
                            const Tensor& cu_seqlens_q, const Tensor& cu_seqlens_k, int64_t max_seqlen_q,
                            const Tensor& tree_parents, float softmax_scale, Tensor& out, cudaStream_t stream) {
  NW_CHECK(!tree_parents.defined() || (tree_parents.dtype == DType::kI32 && tree_parents.numel() == q.size(0) &&
                                       max_seqlen_q <= 32),
           "mla_attention_portable: tree_parents", tree_parents.shape_string(), " must be I32, one per query row (",
           q.size(0), "), and a tree at most 32 tokens (", max_seqlen_q, ")");
  NW_CHECK(q.ndim() == 3 && q.dtype == DType::kBF16 && a_len + b_len <= q.size(2) && out.ndim() == 3 &&
               out.dtype == DType::kBF16 && out.size(0) == q.size(0) && out.size(1) == q.size(1) &&
               out.size(2) == v_len && cu_seqlens_q.dtype == DType::kI32 && cu_seqlens_k.shape == cu_seqlens_q.shape,
           "mla_attention_portable: q", q.shape_string(), " out", out.shape_string(), " for key dims ", a_len, " + ",
           b_len, " and value dim ", v_len);
  NW_CHECK(v_len <= kThreads * kMaxValuePerThread && a_len + b_len <= 8192, "mla_attention_portable: value dim ",
           v_len, " (at most ", kThreads * kMaxValuePerThread, ") or key dims ", a_len, " + ", b_len,
           " (at most 8192) too large");
  const int64_t seqs = cu_seqlens_q.numel() - 1;
  if (seqs <= 0 || max_seqlen_q == 0) return;
  // At most 36 KB, inside the 48 KB any launch may take, so the function's attribute is never set: setting it to one
  // call's size raced the launches of device-local TP ranks (threads on one GPU) that needed more.
  static_assert((8192 + kKeyChunk) * sizeof(float) <= 48 * 1024);
  const size_t smem = static_cast<size_t>(a_len + b_len + kKeyChunk) * sizeof(float);
  PortableAttention p{device_ptr<bf16>(q), q.size(1) * q.size(2), q.size(2), static_cast<int>(a_len),
                      static_cast<int>(b_len), static_cast<int>(v_len), static_cast<const bf16*>(key_a.data),
                      static_cast<const bf16*>(key_b.data), static_cast<const bf16*>(value.data), key_a.row_stride,
                      key_a.head_stride, key_b.row_stride, key_b.head_stride, value.row_stride, value.head_stride,
                      device_ptr<bf16>(out), device_ptr<int32_t>(cu_seqlens_q), device_ptr<int32_t>(cu_seqlens_k),
                      tree_parents.defined() ? device_ptr<int32_t>(tree_parents) : nullptr, softmax_scale};
  const dim3 grid(static_cast<unsigned>(q.size(1)), static_cast<unsigned>(max_seqlen_q), static_cast<unsigned>(seqs));
  launch(portable_attention_kernel, grid, kThreads, smem, stream, p);
}

void router_logits_f32(const Tensor& x, const Tensor& w, Tensor& logits, cudaStream_t stream) {
  NW_CHECK(x.ndim() == 2 && w.ndim() == 2 && x.size(1) == w.size(1) &&
               (x.dtype == DType::kBF16 || x.dtype == DType::kF32) && w.dtype == DType::kBF16 &&
               logits.dtype == DType::kF32 && logits.numel() >= x.size(0) * w.size(0),
           "router_logits_f32: x", x.shape_string(), " ", dtype_name(x.dtype), " w", w.shape_string(), " logits",
           logits.shape_string());
  NW_CHECK(x.size(1) % 8 == 0, "router_logits_f32: hidden ", x.size(1), " must be a multiple of 8");
  if (x.size(0) == 0) return;
  const int hidden = static_cast<int>(x.size(1)), experts = static_cast<int>(w.size(0));
  // From 4096 tokens the tiled kernel (weights read once per 16 tokens; 6.6 vs 13.9 ms over V2-Lite's 26 MoE
  // layers at 8192 tokens); below, a warp per (token, expert): at a decode batch of 256 the tiled kernel's 16
  // blocks left most SMs idle (served ITL 15.4 -> 20.3 ms).
  if (x.size(0) >= kRouterTiledMinTokens && experts <= kRouterMaxExpertTiles * 64) {
    const unsigned blocks = static_cast<unsigned>(ceil_div(x.size(0), kRouterTileTokens));
    if (x.dtype == DType::kF32)
      launch(router_tiled_kernel<float>, blocks, 256, 0, stream, x.f32(), device_ptr<bf16>(w), logits.f32(),
             x.size(0), hidden, experts);
    else
      launch(router_tiled_kernel<bf16>, blocks, 256, 0, stream, device_ptr<bf16>(x), device_ptr<bf16>(w),
             logits.f32(), x.size(0), hidden, experts);
    return;
  }
  const dim3 grid(static_cast<unsigned>(x.size(0)), static_cast<unsigned>(ceil_div(w.size(0), 8)));
  if (x.dtype == DType::kF32)
    launch(router_kernel<float>, grid, 256, 0, stream, x.f32(), device_ptr<bf16>(w), logits.f32(), hidden, experts);
  else
    launch(router_kernel<bf16>, grid, 256, 0, stream, device_ptr<bf16>(x), device_ptr<bf16>(w), logits.f32(), hidden,
           experts);
}

void moe_combine_dense(const Tensor& expert_out, const Tensor& topk_ids, const Tensor& topk_weights,
                       int num_routed, int num_shared, Tensor& out, cudaStream_t stream) {
  const int64_t tokens = out.size(0), hidden = out.size(1);
  NW_CHECK(expert_out.ndim() == 3 && expert_out.size(0) == num_routed + num_shared && expert_out.size(1) == tokens &&
               expert_out.size(2) == hidden && topk_ids.size(0) == tokens && topk_weights.shape == topk_ids.shape,
           "moe_combine_dense: expert_out", expert_out.shape_string(), " out", out.shape_string());
  if (tokens == 0) return;
  launch(combine_kernel, static_cast<unsigned>(tokens), 256, 0, stream,
         device_ptr<bf16>(expert_out), device_ptr<int32_t>(topk_ids), topk_weights.f32(),
         static_cast<int>(topk_ids.size(1)), num_routed, num_shared, tokens, hidden, device_ptr<bf16>(out));
}

void fill_random(Tensor& t, uint64_t seed, float std, cudaStream_t stream) {
  const float scale = std * 1.7320508f;  // uniform on [-a, a] has std a / sqrt(3)
  if (t.dtype == DType::kF32) launch_fill<float>(t, seed, scale, true, stream);
  else if (t.dtype == DType::kBF16) launch_fill<bf16>(t, seed, scale, true, stream);
  else NW_CHECK(false, "fill_random: F32 or BF16 expected, got ", dtype_name(t.dtype));
}

void fill_random_fp8(Tensor& t, uint64_t seed, float range, cudaStream_t stream) {
  NW_CHECK(t.dtype == DType::kF8E4M3, "fill_random_fp8: F8_E4M3 expected, got ", dtype_name(t.dtype));
  launch_fill<__nv_fp8_e4m3>(t, seed, range, true, stream);
}

void fill_constant(Tensor& t, float value, cudaStream_t stream) {
  if (t.dtype == DType::kF32) launch_fill<float>(t, 0, value, false, stream);
  else if (t.dtype == DType::kBF16) launch_fill<bf16>(t, 0, value, false, stream);
  else NW_CHECK(false, "fill_constant: F32 or BF16 expected, got ", dtype_name(t.dtype));
}

}  // namespace narwhal::ops::cuda
