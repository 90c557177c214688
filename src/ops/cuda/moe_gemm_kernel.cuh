// The fused MoE's grouped GEMM kernel: C[rows of an M-tile] = A[rows] x W_expert^T, both operands K-major.
// A multi-stage cp.async pipeline fills XOR-swizzled shared tiles that ldmatrix reads without bank conflicts;
// FP8 weights land raw and are converted (times their 128x128 block scale) into one BF16 tile per stage.
// Included by moe_gemm_bf16.cu and moe_gemm_fp8.cu only, which instantiate it for one weight dtype each.
#pragma once

#include <cuda_fp8.h>

#include "ops/cuda/mma.cuh"
#include "ops/cuda/moe_gemm.cuh"

namespace narwhal::ops::cuda::moe {

constexpr int kBlockK = 64;  // K per stage: one 128-byte BF16 row per tile row
constexpr int kGroupM = 8;   // M-tiles walked together across the N-tiles, so A and W tiles are reused in L2

// kDecode: memory-bound, a handful of rows per expert; small N tiles for enough blocks and a deep pipeline.
// kMedium / kPrefill: more rows per weight byte, larger warp tiles for tensor-core throughput.
template <Tile kTile>
struct TileShape;
template <>
struct TileShape<Tile::kDecode> {
  static constexpr int kM = 16, kN = 64, kWarpsM = 1, kWarpsN = 4, kStages = 6, kMinBlocks = 3;
};
template <>
struct TileShape<Tile::kMedium> {
  static constexpr int kM = 64, kN = 128, kWarpsM = 2, kWarpsN = 2, kStages = 4, kMinBlocks = 2;
};
template <>
struct TileShape<Tile::kPrefill> {
  static constexpr int kM = 128, kN = 128, kWarpsM = 2, kWarpsN = 4, kStages = 3, kMinBlocks = 2;
};

template <Tile kTile, bool kFp8>
struct SmemLayout {
  using S = TileShape<kTile>;
  static constexpr int kABytes = S::kM * kBlockK * 2;
  static constexpr int kBRowBytes = kFp8 ? kBlockK : kBlockK * 2;
  static constexpr int kStageBytes = kABytes + S::kN * kBRowBytes;
  static constexpr int kConvertedBytes = kFp8 ? S::kN * kBlockK * 2 : 0;  // the stage's B tile as BF16
  static constexpr int kBytes = S::kStages * kStageBytes + kConvertedBytes;
};

// Byte offset of 16-byte chunk `chunk` (0..7) of row `row` in a tile of 128-byte rows: XOR-swizzled so the
// 8 rows an ldmatrix phase reads, at one logical chunk, fall in 8 different bank groups.
__device__ __forceinline__ uint32_t swizzled(int row, int chunk) {
  return static_cast<uint32_t>(row * 128 + ((chunk ^ (row & 7)) << 4));
}

// Two FP8 e4m3 values (low byte first) times `scale`, as a BF16 pair.
__device__ __forceinline__ uint32_t fp8x2_to_bf16x2(uint32_t two, float scale) {
  const __half2 h(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two), __NV_E4M3));
  const float2 f = __half22float2(h);
  const __nv_bfloat162 b = __floats2bfloat162_rn(f.x * scale, f.y * scale);
  return *reinterpret_cast<const uint32_t*>(&b);
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

template <Tile kTile, bool kFp8, bool kGateUp>
__global__ void __launch_bounds__(TileShape<kTile>::kWarpsM* TileShape<kTile>::kWarpsN * 32,
                                  TileShape<kTile>::kMinBlocks)
    grouped_gemm_kernel(const GemmArgs args) {
  grid_dependency_wait();
  using S = TileShape<kTile>;
  using L = SmemLayout<kTile, kFp8>;
  constexpr int kThreads = S::kWarpsM * S::kWarpsN * 32;
  constexpr int kWarpTileM = S::kM / S::kWarpsM, kWarpTileN = S::kN / S::kWarpsN;
  constexpr int kMmaM = kWarpTileM / 16, kMmaN = kWarpTileN / 8;
  constexpr int kAChunks = S::kM * 8 / kThreads;  // 16-byte chunks per thread and stage
  constexpr int kBChunksPerRow = L::kBRowBytes / 16;
  constexpr int kBChunks = S::kN * kBChunksPerRow / kThreads;
  constexpr int kWeightBytes = kFp8 ? 1 : 2;
  static_assert(kMmaN % 2 == 0 && kWarpTileN % 16 == 0 && kAChunks >= 1 && kBChunks >= 1);
  static_assert(S::kM * 8 % kThreads == 0 && S::kN * kBChunksPerRow % kThreads == 0);

  // Block -> (M-tile, N-tile): kGroupM M-tiles side by side, walked across every N-tile.
  const int n_tiles = kGateUp ? args.n / (S::kN / 2) : args.n / S::kN;
  const int group_span = kGroupM * n_tiles;
  const int first_m = static_cast<int>(blockIdx.x) / group_span * kGroupM;
  const int group_m = min(args.max_tiles - first_m, kGroupM);
  const int m_tile = first_m + static_cast<int>(blockIdx.x) % group_span % group_m;
  const int n_tile = static_cast<int>(blockIdx.x) % group_span / group_m;
  if (m_tile >= *args.num_tiles) return;  // the grid covers the worst case of T; this tile is not in use
  const int expert = args.tile_expert[m_tile];
  const int m0 = m_tile * S::kM;

  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int warp_m = warp / S::kWarpsN, warp_n = warp % S::kWarpsN;

  // The A rows this thread copies: x rows of the tile's tokens (gate_up) or the tile's own act rows (down).
  // Padding rows copy nothing and are zero-filled.
  const bf16* a_src[kAChunks];
  uint32_t a_dst[kAChunks];
  bool a_real[kAChunks];
#pragma unroll
  for (int i = 0; i < kAChunks; ++i) {
    const int q = tid + i * kThreads, row = q / 8, chunk = q % 8;
    const int pair = args.sorted_pairs[m0 + row];
    a_real[i] = pair < args.num_pairs;
    const int64_t a_row = !a_real[i] ? 0 : kGateUp ? pair / args.pair_width : m0 + row;
    a_src[i] = args.a + a_row * args.k + chunk * 8;
    a_dst[i] = swizzled(row, chunk);
  }
  // The weight rows this thread copies. gate_up tiles interleave 8 gate rows with the matching 8 up rows, so
  // one thread's accumulators hold both halves of each SiLU-and-mul output.
  const uint8_t* b_src[kBChunks];
  uint32_t b_dst[kBChunks];
  const float* b_scale[kFp8 ? kBChunks : 1];
#pragma unroll
  for (int i = 0; i < kBChunks; ++i) {
    const int q = tid + i * kThreads, row = q / kBChunksPerRow, chunk = q % kBChunksPerRow;
    const int j = n_tile * (S::kN / 2) + row / 16 * 8 + row % 8;
    const int w_row = !kGateUp ? n_tile * S::kN + row : row % 16 < 8 ? j : args.n + j;
    const int64_t w_offset = (static_cast<int64_t>(expert) * args.b_rows + w_row) * args.k;
    b_src[i] = static_cast<const uint8_t*>(args.b) + w_offset * kWeightBytes + chunk * 16;
    b_dst[i] = kFp8 ? static_cast<uint32_t>(row * L::kBRowBytes + chunk * 16) : swizzled(row, chunk);
    if constexpr (kFp8)
      b_scale[i] = args.b_scale_inv + (static_cast<int64_t>(expert) * (args.b_rows / 128) + w_row / 128) *
                                          (args.k / 128);
  }

  auto load_stage = [&](int stage, int k_tile) {
    const uint32_t a_tile = smem_base + stage * L::kStageBytes, b_tile = a_tile + L::kABytes;
#pragma unroll
    for (int i = 0; i < kAChunks; ++i) cp_async_16(a_tile + a_dst[i], a_src[i] + k_tile * kBlockK, a_real[i]);
#pragma unroll
    for (int i = 0; i < kBChunks; ++i)
      cp_async_16(b_tile + b_dst[i], b_src[i] + k_tile * kBlockK * kWeightBytes, true);
  };

  // Each thread converts the FP8 chunks it copied: 16 values -> two swizzled BF16 chunks of the same row.
  auto convert_stage = [&](int stage, int k_tile) {
    const uint8_t* raw = smem + stage * L::kStageBytes + L::kABytes;
    uint8_t* converted = smem + S::kStages * L::kStageBytes;
#pragma unroll
    for (int i = 0; i < kBChunks; ++i) {
      const int q = tid + i * kThreads, row = q / kBChunksPerRow, chunk = q % kBChunksPerRow;
      const float scale = __ldg(b_scale[i] + k_tile * kBlockK / 128);
      const uint4 v = *reinterpret_cast<const uint4*>(raw + row * L::kBRowBytes + chunk * 16);
      const uint4 lo{fp8x2_to_bf16x2(v.x, scale), fp8x2_to_bf16x2(v.x >> 16, scale), fp8x2_to_bf16x2(v.y, scale),
                     fp8x2_to_bf16x2(v.y >> 16, scale)};
      const uint4 hi{fp8x2_to_bf16x2(v.z, scale), fp8x2_to_bf16x2(v.z >> 16, scale), fp8x2_to_bf16x2(v.w, scale),
                     fp8x2_to_bf16x2(v.w >> 16, scale)};
      *reinterpret_cast<uint4*>(converted + swizzled(row, 2 * chunk)) = lo;
      *reinterpret_cast<uint4*>(converted + swizzled(row, 2 * chunk + 1)) = hi;
    }
  };

  float acc[kMmaM][kMmaN][4] = {};
  auto mma_stage = [&](uint32_t a_tile, uint32_t b_tile) {
#pragma unroll
    for (int kk = 0; kk < kBlockK / 16; ++kk) {
      uint32_t a_frag[kMmaM][4], b_frag[kMmaN][2];
#pragma unroll
      for (int mi = 0; mi < kMmaM; ++mi) {
        // Matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15), in the order of the mma's A fragment.
        const int row = warp_m * kWarpTileM + mi * 16 + (lane & 15);
        ldmatrix_x4(a_frag[mi], a_tile + swizzled(row, kk * 2 + (lane >> 4)));
      }
#pragma unroll
      for (int nj = 0; nj < kMmaN / 2; ++nj) {
        // Matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15): two n8 B fragments.
        const int row = warp_n * kWarpTileN + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
        uint32_t r[4];
        ldmatrix_x4(r, b_tile + swizzled(row, kk * 2 + ((lane >> 3) & 1)));
        b_frag[2 * nj][0] = r[0];
        b_frag[2 * nj][1] = r[1];
        b_frag[2 * nj + 1][0] = r[2];
        b_frag[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < kMmaM; ++mi)
#pragma unroll
        for (int ni = 0; ni < kMmaN; ++ni) mma_bf16(acc[mi][ni], a_frag[mi], b_frag[ni][0], b_frag[ni][1]);
    }
  };

  const int k_tiles = args.k / kBlockK;
#pragma unroll
  for (int s = 0; s < S::kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<S::kStages - 2>();  // k-tile kt has landed (this thread's copies) ...
    __syncthreads();                  // ... and everyone's; the stage read at kt - 1 is free again
    const int next = kt + S::kStages - 1;
    if (next < k_tiles) load_stage(next % S::kStages, next);
    cp_async_commit();
    const int stage = kt % S::kStages;
    const uint32_t a_tile = smem_base + stage * L::kStageBytes;
    if constexpr (kFp8) {
      convert_stage(stage, kt);
      __syncthreads();
      mma_stage(a_tile, smem_base + S::kStages * L::kStageBytes);
    } else {
      mma_stage(a_tile, a_tile + L::kABytes);
    }
  }

  // Epilogue from the accumulators: thread holds rows lane/4 (+8), columns 2 * (lane % 4) (+1) of each mma tile.
  const int col = 2 * (lane % 4);
#pragma unroll
  for (int mi = 0; mi < kMmaM; ++mi)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = m0 + warp_m * kWarpTileM + mi * 16 + lane / 4 + half * 8;
      const int pair = args.sorted_pairs[row];
      if (pair >= args.num_pairs) continue;
      if constexpr (kGateUp) {
        // mma tile 2q holds gate columns, 2q + 1 the up columns of the same act columns.
        bf16* dst = args.c + static_cast<int64_t>(row) * args.n + n_tile * (S::kN / 2) + col;
#pragma unroll
        for (int q = 0; q < kMmaN / 2; ++q) {
          const float(&gate)[4] = acc[mi][2 * q];
          const float(&up)[4] = acc[mi][2 * q + 1];
          *reinterpret_cast<__nv_bfloat162*>(dst + (warp_n * kWarpTileN / 16 + q) * 8) = __floats2bfloat162_rn(
              silu(gate[2 * half]) * up[2 * half], silu(gate[2 * half + 1]) * up[2 * half + 1]);
        }
      } else {
        const int token = pair / args.pair_width, slot = pair % args.pair_width;
        const float w = slot < args.top_k ? args.topk_weights[static_cast<int64_t>(token) * args.top_k + slot] : 1.0f;
        bf16* dst = args.c + static_cast<int64_t>(pair) * args.n + n_tile * S::kN + warp_n * kWarpTileN + col;
#pragma unroll
        for (int ni = 0; ni < kMmaN; ++ni)
          *reinterpret_cast<__nv_bfloat162*>(dst + ni * 8) =
              __floats2bfloat162_rn(w * acc[mi][ni][2 * half], w * acc[mi][ni][2 * half + 1]);
      }
    }
}

template <Tile kTile, bool kFp8, bool kGateUp>
void launch_grouped_gemm(const GemmArgs& args, cudaStream_t stream) {
  using S = TileShape<kTile>;
  constexpr int kSmem = SmemLayout<kTile, kFp8>::kBytes;
  auto* kernel = grouped_gemm_kernel<kTile, kFp8, kGateUp>;
  NW_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const int n_tiles = kGateUp ? args.n / (S::kN / 2) : args.n / S::kN;
  launch(kernel, args.max_tiles * n_tiles, S::kWarpsM * S::kWarpsN * 32, kSmem, stream, args);
}

template <bool kFp8>
void dispatch_grouped_gemm(const GemmArgs& args, Tile tile, bool gate_up, cudaStream_t stream) {
  switch (tile) {
    case Tile::kDecode:
      return gate_up ? launch_grouped_gemm<Tile::kDecode, kFp8, true>(args, stream)
                     : launch_grouped_gemm<Tile::kDecode, kFp8, false>(args, stream);
    case Tile::kMedium:
      return gate_up ? launch_grouped_gemm<Tile::kMedium, kFp8, true>(args, stream)
                     : launch_grouped_gemm<Tile::kMedium, kFp8, false>(args, stream);
    case Tile::kPrefill:
      return gate_up ? launch_grouped_gemm<Tile::kPrefill, kFp8, true>(args, stream)
                     : launch_grouped_gemm<Tile::kPrefill, kFp8, false>(args, stream);
  }
}

}  // namespace narwhal::ops::cuda::moe
