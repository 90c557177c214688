// MLA prefill attention (non-absorbed form): varlen causal FlashAttention-2 over decompressed K/V, mma.sync.
//
// One CTA = 128 queries of one head of one sequence, 8 warps of 16 query rows each. Keys stream through shared
// memory in tiles of 64 (cp.async, two stages); each warp keeps its Q rows in registers, computes S = Q K^T and
// O += P V with m16n8k16 BF16 tensor-core MMAs, and runs the online softmax in FP32 on the S accumulators.
// K is assembled per tile from two sources without copies: k_nope (the first 128 of a head's 256-wide row of
// the decompressed kv) and k_pe (the last 64 of the gathered latent row, shared by all heads).
#include "ops/cuda/mla.h"
#include "ops/cuda/mma.cuh"

namespace narwhal::ops::cuda {

namespace {

// DeepSeek's MLA head dims; the tiles below are built around them.
constexpr int kNope = 128, kRope = 64, kV = 128;
constexpr int kQk = kNope + kRope;  // 192: query/key width
constexpr int kKv = kNope + kV;     // 256: one head's row of the decompressed kv
constexpr int kBlockM = 64;         // queries per CTA
constexpr int kBlockN = 64;         // keys per tile
constexpr int kWarps = kBlockM / 16;
constexpr int kThreads = kWarps * 32;
constexpr int kQkChunks = kQk / 8, kVChunks = kV / 8;  // 16-byte chunks per shared-memory row
constexpr size_t kSmemBytes = (kBlockM * kQk + 2 * kBlockN * (kQk + kV)) * sizeof(bf16);
// Every thread copies the same number of 16-byte chunks of each tile.
static_assert(kBlockN * kVChunks % kThreads == 0 && kBlockN * kQkChunks % kThreads == 0 &&
              kBlockM * kVChunks % kThreads == 0);

struct PrefillParams {
  const bf16* q;        // [T, H, 192]
  const bf16* kv;       // [S_total, H, 256]
  const bf16* latents;  // [S_total, latent_width], k_pe in the last 64
  bf16* out;            // [T, H, 128]
  const int32_t* cu_seqlens_q;
  const int32_t* cu_seqlens_k;
  int heads;
  int latent_width;
  float scale_log2;  // softmax scale * log2(e): softmax runs on exp2
};

// Issues the cp.async copies of key tile rows [n0, n0 + kBlockN) of one head: K = [k_nope | k_pe] and V.
__device__ __forceinline__ void load_kv_tile(const PrefillParams& p, int head, int k_begin, int k_len, int n0,
                                             bf16* k_tile, bf16* v_tile) {
  const int64_t kv_ld = static_cast<int64_t>(p.heads) * kKv;
#pragma unroll
  for (int it = 0; it < kBlockN * kQkChunks / kThreads; ++it) {
    const int i = threadIdx.x + it * kThreads, r = i / kQkChunks, c = i % kQkChunks;
    const bool valid = n0 + r < k_len;
    const int64_t row = k_begin + (valid ? n0 + r : 0);
    const bf16* src = c < kNope / 8 ? p.kv + row * kv_ld + head * kKv + c * 8
                                    : p.latents + row * p.latent_width + (p.latent_width - kRope) + (c - kNope / 8) * 8;
    cp_async_16(k_tile + swizzle(r, c, kQkChunks), src, valid);
  }
#pragma unroll
  for (int it = 0; it < kBlockN * kVChunks / kThreads; ++it) {
    const int i = threadIdx.x + it * kThreads, r = i / kVChunks, c = i % kVChunks;
    const bool valid = n0 + r < k_len;
    const int64_t row = k_begin + (valid ? n0 + r : 0);
    cp_async_16(v_tile + swizzle(r, c, kVChunks), p.kv + row * kv_ld + head * kKv + kNope + c * 8, valid);
  }
}

// Grid: (heads, query blocks of the longest sequence, sequences). Query blocks run last-first: the latest
// blocks of a causal sequence see the most keys, and starting them first shortens the tail of the launch.
__global__ void __launch_bounds__(kThreads, 1) mla_prefill_kernel(const PrefillParams p) {
  grid_dependency_wait();
  const int head = blockIdx.x, seq = blockIdx.z;
  const int q_begin = p.cu_seqlens_q[seq], q_len = p.cu_seqlens_q[seq + 1] - q_begin;
  const int m0 = (gridDim.y - 1 - blockIdx.y) * kBlockM;
  if (m0 >= q_len) return;
  const int k_begin = p.cu_seqlens_k[seq], k_len = p.cu_seqlens_k[seq + 1] - k_begin;
  // The keys are the cached prefix then the new tokens: query i sits at position prefix + i, sees keys 0..it.
  const int prefix = k_len - q_len;
  const int num_tiles = static_cast<int>(ceil_div(min(k_len, prefix + m0 + kBlockM), kBlockN));

  extern __shared__ uint4 smem_raw[];
  bf16* q_smem = reinterpret_cast<bf16*>(smem_raw);  // [kBlockM, 192], reused for the output tile
  bf16* k_smem = q_smem + kBlockM * kQk;             // 2 stages of [kBlockN, 192]
  bf16* v_smem = k_smem + 2 * kBlockN * kQk;         // 2 stages of [kBlockN, 128]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  const int64_t q_ld = static_cast<int64_t>(p.heads) * kQk;
#pragma unroll
  for (int it = 0; it < kBlockM * kQkChunks / kThreads; ++it) {
    const int i = threadIdx.x + it * kThreads, r = i / kQkChunks, c = i % kQkChunks;
    const bool valid = m0 + r < q_len;
    const bf16* src = p.q + (q_begin + (valid ? m0 + r : 0)) * q_ld + head * kQk + c * 8;
    cp_async_16(q_smem + swizzle(r, c, kQkChunks), src, valid);
  }
  load_kv_tile(p, head, k_begin, k_len, 0, k_smem, v_smem);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // A fragments of this warp's 16 query rows over all 12 k-steps of 192.
  uint32_t q_frag[kQk / 16][4];
#pragma unroll
  for (int ks = 0; ks < kQk / 16; ++ks)
    ldmatrix_x4(q_frag[ks], q_smem + swizzle(warp * 16 + (lane & 15), ks * 2 + (lane >> 4), kQkChunks));

  // This thread's accumulator rows are warp_row0 + lane / 4 and that + 8 (local query indices).
  const int warp_row0 = m0 + warp * 16;
  const int row_pos = prefix + warp_row0 + lane / 4;  // position of the first of them
  float o_acc[kV / 8][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};  // this lane's partial sums; the quad reduces them at the end

  for (int t = 0; t < num_tiles; ++t) {
    // Tile t landed, and every warp is done with tile t - 1, whose stage the prefetch below overwrites.
    cp_async_wait<0>();
    __syncthreads();
    if (t + 1 < num_tiles)
      load_kv_tile(p, head, k_begin, k_len, (t + 1) * kBlockN, k_smem + ((t + 1) & 1) * kBlockN * kQk,
                   v_smem + ((t + 1) & 1) * kBlockN * kV);
    cp_async_commit();

    const int n0 = t * kBlockN;
    // Every key of the tile lies after all of this warp's rows: they would all be masked.
    if (n0 > prefix + warp_row0 + 15) continue;
    const bf16* k_tile = k_smem + (t & 1) * kBlockN * kQk;
    const bf16* v_tile = v_smem + (t & 1) * kBlockN * kV;

    float s[kBlockN / 8][4] = {};
#pragma unroll
    for (int ks = 0; ks < kQk / 16; ++ks) {
#pragma unroll
      for (int np = 0; np < kBlockN / 16; ++np) {
        uint32_t b[4];
        ldmatrix_x4(b, k_tile + swizzle(np * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1),
                                        kQkChunks));
        mma_bf16(s[2 * np], q_frag[ks], b[0], b[1]);
        mma_bf16(s[2 * np + 1], q_frag[ks], b[2], b[3]);
      }
    }

    // Causal mask, needed only where the tile reaches past this warp's first row. Tile 0 holds key 0, which
    // every row sees, so each row's running max is finite from the first tile on and exp2(-inf - max) = 0.
    if (n0 + kBlockN - 1 > prefix + warp_row0) {
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (n0 + j * 8 + (lane % 4) * 2 + (e & 1) > row_pos + (e >> 1) * 8) s[j][e] = -INFINITY;
    }

    // Online softmax per row (r = 0: elements 0, 1; r = 1: elements 2, 3 of each n-tile).
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float tile_max = row_max[r];
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) tile_max = fmaxf(tile_max, fmaxf(s[j][2 * r], s[j][2 * r + 1]));
      tile_max = quad_max(tile_max);
      const float max_scaled = tile_max * p.scale_log2;
      const float rescale = fast_exp2(row_max[r] * p.scale_log2 - max_scaled);
      row_max[r] = tile_max;
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j)
#pragma unroll
        for (int e = 2 * r; e < 2 * r + 2; ++e) {
          s[j][e] = fast_exp2(fmaf(s[j][e], p.scale_log2, -max_scaled));
          sum += s[j][e];
        }
      row_sum[r] = row_sum[r] * rescale + sum;
#pragma unroll
      for (int d = 0; d < kV / 8; ++d) {
        o_acc[d][2 * r] *= rescale;
        o_acc[d][2 * r + 1] *= rescale;
      }
    }

    // O += P V: the S accumulators of two n-tiles form one A fragment over 16 keys.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < kV / 16; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, v_tile + swizzle(kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3),
                                              dp * 2 + (lane >> 4), kVChunks));
        mma_bf16(o_acc[2 * dp], a, b[0], b[1]);
        mma_bf16(o_acc[2 * dp + 1], a, b[2], b[3]);
      }
    }
  }

  // Normalise, stage the BF16 tile in shared memory (the Q area, unused since the fragments were loaded) and
  // write it with 16-byte stores: each output row of a head is 256 contiguous bytes.
  const float inv_sum[2] = {1.0f / quad_sum(row_sum[0]), 1.0f / quad_sum(row_sum[1])};
  bf16* o_smem = q_smem;
#pragma unroll
  for (int d = 0; d < kV / 8; ++d)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp * 16 + lane / 4 + r * 8;
      *reinterpret_cast<uint32_t*>(o_smem + swizzle(row, d, kVChunks) + (lane % 4) * 2) =
          pack_bf16(o_acc[d][2 * r] * inv_sum[r], o_acc[d][2 * r + 1] * inv_sum[r]);
    }
  __syncthreads();
  const int64_t out_ld = static_cast<int64_t>(p.heads) * kV;
#pragma unroll
  for (int it = 0; it < kBlockM * kVChunks / kThreads; ++it) {
    const int i = threadIdx.x + it * kThreads, r = i / kVChunks, c = i % kVChunks;
    if (m0 + r < q_len)
      *reinterpret_cast<uint4*>(p.out + (q_begin + m0 + r) * out_ld + head * kV + c * 8) =
          *reinterpret_cast<const uint4*>(o_smem + swizzle(r, c, kVChunks));
  }
}

}  // namespace

void mla_prefill_attention(const Tensor& q, const Tensor& kv, const Tensor& latents, const Tensor& cu_seqlens_q,
                           const Tensor& cu_seqlens_k, int64_t max_seqlen_q, float softmax_scale, Tensor& out,
                           cudaStream_t stream) {
  const int64_t heads = q.ndim() == 3 ? q.size(1) : 0;
  NW_CHECK(q.dtype == DType::kBF16 && kv.dtype == DType::kBF16 && latents.dtype == DType::kBF16 &&
               out.dtype == DType::kBF16 && q.ndim() == 3 && q.size(2) == kQk && kv.ndim() == 3 &&
               kv.size(1) == heads && kv.size(2) == kKv && latents.ndim() == 2 &&
               latents.size(0) == kv.size(0) && latents.size(1) >= kRope && latents.size(1) % 8 == 0 &&
               out.ndim() == 3 && out.size(0) == q.size(0) && out.size(1) == heads && out.size(2) == kV &&
               cu_seqlens_q.dtype == DType::kI32 && cu_seqlens_k.dtype == DType::kI32 &&
               cu_seqlens_q.ndim() == 1 && cu_seqlens_k.shape == cu_seqlens_q.shape,
           "mla_prefill_attention: q", q.shape_string(), " kv", kv.shape_string(), " latents",
           latents.shape_string(), " cu_seqlens_q", cu_seqlens_q.shape_string(), " cu_seqlens_k",
           cu_seqlens_k.shape_string(), " out", out.shape_string(),
           " do not agree (head dims must be nope 128, rope 64, v 128)");
  const int64_t num_seqs = cu_seqlens_q.size(0) - 1;
  if (num_seqs <= 0 || max_seqlen_q == 0 || heads == 0) return;
  const PrefillParams params{device_ptr<const bf16>(q),
                             device_ptr<const bf16>(kv),
                             device_ptr<const bf16>(latents),
                             device_ptr<bf16>(out),
                             device_ptr<const int32_t>(cu_seqlens_q),
                             device_ptr<const int32_t>(cu_seqlens_k),
                             static_cast<int>(heads),
                             static_cast<int>(latents.size(1)),
                             softmax_scale * 1.4426950408889634f};
  NW_CUDA_CHECK(cudaFuncSetAttribute(mla_prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(kSmemBytes)));
  const dim3 grid(static_cast<unsigned>(heads), static_cast<unsigned>(ceil_div(max_seqlen_q, kBlockM)),
                  static_cast<unsigned>(num_seqs));
  launch(mla_prefill_kernel, grid, kThreads, kSmemBytes, stream, params);
}

}  // namespace narwhal::ops::cuda
