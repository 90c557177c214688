// FP8 block-scaled GEMM for few rows (decode): mma.sync m16n8k32 e4m3, the weight streamed from global memory
// straight into registers (each byte is used by one warp only), the activations staged in shared memory and
// shared by the CTA's 4 warps, split-K over CTAs with a deterministic last-CTA reduction when tiles are few.
#include <algorithm>

#include "ops/cuda/common.cuh"
#include "ops/cuda/gemm_kernels.h"

namespace narwhal::ops::cuda {

namespace {

constexpr int kThreads = 128;     // 4 warps, 16 weight rows each
constexpr int kTileN = 64;        // weight rows per CTA; inside one 128-row scale block, so one weight scale per step
constexpr int kBlockK = 128;      // K per pipeline step = one scale block
constexpr int kActStages = 4;     // shared-memory ring of activation K blocks
constexpr int kWeightDepth = 2;   // K blocks of weight in flight in each thread's registers
constexpr int kMaxSplits = 16;

// Weight bytes are read once: keep them out of L1.
__device__ __forceinline__ uint4 load_streaming(const uint8_t* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// cp.async with zero fill: `valid` false writes zeros (rows past M, columns past K) and reads nothing.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0) : "memory");
}

__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(gmem), "r"(valid ? 4 : 0) : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}

// d += a * b over k = 32: a is 16 weight rows (row-major fragment), b is 8 tokens.
__device__ __forceinline__ void mma_e4m3(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Shared-memory position of 16-byte chunk `chunk` of a token's 128-byte K block. Odd tokens swap the two
// 64-byte halves, so the 8 lanes of a 16-byte load phase (two tokens x four chunks) hit 8 distinct bank groups.
__device__ __forceinline__ int swizzled_chunk(int token, int chunk) { return chunk ^ ((token & 1) << 2); }

// The dot product over a 32-wide k step does not care which physical bytes stand for which logical k, as long
// as the weight (A) and token (B) fragments agree. So thread (g = lane / 4, t = lane % 4) takes the 16 bytes at
// [t*16, t*16+16) of each 64-byte half of a K block for its weight rows g, g+8 and its tokens g: bytes 0-7 feed
// one mma (as logical k t*4.. and 16+t*4..), bytes 8-15 the next. One 16-byte load instead of four 4-byte ones.
template <int kTokens>
__global__ void __launch_bounds__(kThreads) fp8_gemm_small_m_kernel(Fp8SmallMArgs p, SplitKWorkspace ws,
                                                                    int token_tiles, int kb_per_split) {
  grid_dependency_wait();
  constexpr int kTokenTiles8 = kTokens / 8;
  constexpr int kAccPerThread = kTokenTiles8 * 4;
  __shared__ __align__(16) uint8_t act[kActStages][kTokens][kBlockK];
  __shared__ __align__(16) float act_scale[kActStages][kTokens];
  __shared__ float weight_scale[kActStages];
  __shared__ unsigned arrivals_before;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int batch_index = blockIdx.z / token_tiles;
  const int tok0 = (blockIdx.z % token_tiles) * kTokens;
  const int tokens = min(static_cast<int64_t>(kTokens), p.m - tok0);
  const int kblocks = static_cast<int>(ceil_div(p.k, kBlockK));
  const int kb_begin = blockIdx.y * kb_per_split, kb_end = min(kblocks, kb_begin + kb_per_split);
  const int n0 = blockIdx.x * kTileN;
  const int row0 = n0 + warp * 16 + g, row1 = row0 + 8;

  const uint8_t* x = p.x + batch_index * p.x_batch + tok0 * p.x_row;
  const float* sx = p.sx + batch_index * p.sx_batch + tok0 * p.sx_row;
  const uint8_t* w = p.w + batch_index * p.w_batch;
  const float* sw = p.sw + batch_index * p.sw_batch + (n0 / kBlockK) * p.sw_ld;

  // Always commits a group (empty past the end) so the wait count stays uniform.
  auto load_activations = [&](int kb, int stage) {
    if (kb < kb_end) {
      for (int i = tid; i < kTokens * 8; i += kThreads) {
        const int token = i / 8, chunk = i % 8;
        const int64_t col = static_cast<int64_t>(kb) * kBlockK + chunk * 16;
        const bool valid = token < tokens && col < p.k;
        cp_async_16(&act[stage][token][swizzled_chunk(token, chunk) * 16], valid ? x + token * p.x_row + col : p.x,
                    valid);
      }
      if (tid < kTokens) {
        const bool valid = tid < tokens;
        cp_async_4(&act_scale[stage][tid], valid ? sx + tid * p.sx_row + kb * p.sx_kb : p.sx, valid);
      }
      if (tid == kThreads - 1) cp_async_4(&weight_scale[stage], sw + kb, true);
    }
    cp_async_commit();
  };

  // regs: [0] row0 low half, [1] row0 high half, [2] row1 low, [3] row1 high.
  auto load_weights = [&](int kb, uint4 (&regs)[4]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int row = i < 2 ? row0 : row1;
      const int64_t col = static_cast<int64_t>(kb) * kBlockK + (i % 2) * 64 + t * 16;
      regs[i] = kb < kb_end && row < p.n && col < p.k ? load_streaming(w + row * p.k + col) : make_uint4(0, 0, 0, 0);
    }
  };

  float acc[kTokenTiles8][4] = {};
  // One K block: raw FP8 products in FP32, then scaled once by weight scale x token scale (DeepGEMM's promotion).
  auto multiply_block = [&](int stage, const uint4 (&regs)[4]) {
    float part[kTokenTiles8][4] = {};
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const uint4 lo = regs[half], hi = regs[2 + half];
#pragma unroll
      for (int j = 0; j < kTokenTiles8; ++j) {
        const int token = j * 8 + g;
        const uint4 b = *reinterpret_cast<const uint4*>(&act[stage][token][swizzled_chunk(token, half * 4 + t) * 16]);
        mma_e4m3(part[j], lo.x, hi.x, lo.y, hi.y, b.x, b.y);
        mma_e4m3(part[j], lo.z, hi.z, lo.w, hi.w, b.z, b.w);
      }
    }
    const float s_w = weight_scale[stage];
#pragma unroll
    for (int j = 0; j < kTokenTiles8; ++j) {
      const float2 s_x = *reinterpret_cast<const float2*>(&act_scale[stage][j * 8 + t * 2]);
      acc[j][0] += part[j][0] * (s_w * s_x.x);
      acc[j][1] += part[j][1] * (s_w * s_x.y);
      acc[j][2] += part[j][2] * (s_w * s_x.x);
      acc[j][3] += part[j][3] * (s_w * s_x.y);
    }
  };

  const int num_kb = kb_end - kb_begin;
  uint4 wregs[kWeightDepth][4];
#pragma unroll
  for (int d = 0; d < kWeightDepth; ++d) load_weights(kb_begin + d, wregs[d]);
#pragma unroll
  for (int s = 0; s < kActStages - 1; ++s) load_activations(kb_begin + s, s);
  for (int i = 0; i < num_kb; i += kWeightDepth) {
#pragma unroll
    for (int d = 0; d < kWeightDepth; ++d) {
      if (i + d < num_kb) {  // uniform over the CTA
        const int step = i + d, kb = kb_begin + step;
        cp_async_wait<kActStages - 2>();
        __syncthreads();  // stage `step` landed for all; everyone is done with the stage refilled next
        load_activations(kb + kActStages - 1, (step + kActStages - 1) % kActStages);
        multiply_block(step % kActStages, wregs[d]);
        load_weights(kb + kWeightDepth, wregs[d]);
      }
    }
  }

  if (gridDim.y > 1) {
    // Split-K: publish this CTA's partial tile; the last CTA of the tile to arrive sums all partials in split
    // order (deterministic whatever the arrival order) and writes the output.
    const int64_t tile = static_cast<int64_t>(blockIdx.z) * gridDim.x + blockIdx.x;
    const int64_t slot_floats = static_cast<int64_t>(kThreads) * kAccPerThread;
    float* tile_partials = ws.partials + tile * gridDim.y * slot_floats;
    float* mine = tile_partials + blockIdx.y * slot_floats;
#pragma unroll
    for (int j = 0; j < kTokenTiles8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) mine[(j * 4 + e) * kThreads + tid] = acc[j][e];
    __threadfence();
    __syncthreads();
    if (tid == 0) arrivals_before = atomicAdd(&ws.counters[tile], 1u);
    __syncthreads();
    if (arrivals_before != gridDim.y - 1) return;
    __threadfence();
#pragma unroll
    for (int j = 0; j < kTokenTiles8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float sum = 0.0f;
        for (unsigned s = 0; s < gridDim.y; ++s) sum += __ldcg(tile_partials + s * slot_floats + (j * 4 + e) * kThreads + tid);
        acc[j][e] = sum;
      }
    if (tid == 0) ws.counters[tile] = 0;
  }

  bf16* y = static_cast<bf16*>(p.y) + batch_index * p.y_batch;
#pragma unroll
  for (int j = 0; j < kTokenTiles8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int token = j * 8 + t * 2 + (e & 1), row = e < 2 ? row0 : row1;
      if (token < tokens && row < p.n) y[(tok0 + token) * p.y_row + row] = __float2bfloat16(acc[j][e]);
    }
}

template <int kTokens>
void launch_with_tokens(const Fp8SmallMArgs& args, const SplitKWorkspace& ws, cudaStream_t stream) {
  const int64_t token_tiles = ceil_div(args.m, kTokens);
  const int64_t n_tiles = ceil_div(args.n, kTileN);
  const int64_t kblocks = ceil_div(args.k, kBlockK);
  const int64_t tiles = n_tiles * args.batch * token_tiles;
  const int64_t slot_floats = static_cast<int64_t>(kThreads) * (kTokens / 8) * 4;
  // Split K until about two CTAs per SM stream weights: one CTA per SM keeps too few bytes in flight. While the
  // rows fit one token tile (m <= 64) the tiles are the weight's alone, so a row's sum runs in the same order
  // whatever M is (batch invariance: a verify's rows get a decode's bits).
  int64_t splits = 1;
  if (tiles < 2 * ws.num_sms && tiles <= ws.counter_count)
    splits = std::max<int64_t>(1, std::min<int64_t>({ceil_div(2 * ws.num_sms, tiles), kblocks, kMaxSplits,
                                                      ws.partial_floats / (tiles * slot_floats)}));
  const int64_t kb_per_split = ceil_div(kblocks, splits);
  splits = ceil_div(kblocks, kb_per_split);
  NW_CHECK(args.batch * token_tiles <= 65535, "fp8 small-M GEMM: batch x token tiles ", args.batch * token_tiles,
           " exceeds the grid");
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(splits),
                  static_cast<unsigned>(args.batch * token_tiles));
  launch(fp8_gemm_small_m_kernel<kTokens>, grid, kThreads, 0, stream, args, ws, static_cast<int>(token_tiles),
         static_cast<int>(kb_per_split));
}

}  // namespace

void launch_fp8_gemm_small_m(const Fp8SmallMArgs& args, const SplitKWorkspace& ws, cudaStream_t stream) {
  NW_CHECK(args.k % 16 == 0, "fp8 GEMM: K = ", args.k, " must be a multiple of 16");
  if (args.m == 0 || args.n == 0 || args.batch == 0) return;
  if (args.m <= 16)
    launch_with_tokens<16>(args, ws, stream);
  else
    launch_with_tokens<64>(args, ws, stream);
}

}  // namespace narwhal::ops::cuda
