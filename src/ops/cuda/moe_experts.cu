// The fused MoE's driver: sort/align of (token, slot) pairs by expert, the two grouped GEMMs (moe_gemm.cuh), and
// the per-token sum of the weighted expert outputs in a fixed order. At decode sizes the router's top-k runs in
// the align kernel too (moe_route_experts).
//
// A pair p = token * pair_width + slot (pair_width = top_k + S) selects routed expert topk_ids[token, slot] for
// slot < top_k and shared expert E + (slot - top_k) after. The align kernel lays every expert's pairs out in
// M-tiles of its own (padded with num_pairs, which the GEMMs skip), so each tile multiplies one expert's weights.
// The order of pairs inside an expert's tiles is whatever the atomics give, but every row of a tile is computed
// on its own and written to its pair's row, so the result does not depend on it.
#include <algorithm>

#include "core/error.h"
#include "ops/cuda/moe.h"
#include "ops/cuda/moe_gemm.cuh"
#include "ops/cuda/moe_route.cuh"

namespace narwhal::ops::cuda {

namespace {

using moe::Tile;

constexpr int kAlignThreads = 1024;
constexpr int kAlignWarps = kAlignThreads / 32;  // also the most tokens the align kernel routes itself
constexpr int kSumThreads = 128;
constexpr int kSumCols = 8;  // one 16-byte load of BF16 per thread and slot

// Expected rows per expert decide the tile: a few rows (decode) want small M-tiles and many N-tiles; prefill
// wants 128-row tiles that reuse each weight tile across many rows.
Tile pick_tile(int64_t pairs, int64_t experts) {
  const int64_t rows_per_expert = pairs / std::max<int64_t>(experts, 1);
  return rows_per_expert <= 24 ? Tile::kDecode : rows_per_expert <= 96 ? Tile::kMedium : Tile::kPrefill;
}

// Tiles the align step can produce: every expert's partial last tile on top of the full ones.
int64_t max_tiles_for(int64_t pairs, int64_t experts, int tile_rows) {
  return ceil_div(pairs, tile_rows) + std::min(experts, pairs);
}

// Workspace carving for `pairs` pairs; sized by the worst tile shape, so a workspace for T serves any tile choice
// at any T' <= T.
struct Layout {
  int64_t max_rows = 0, max_tiles = 0;
  size_t sorted = 0, tile_expert = 0, num_tiles = 0, act = 0, y = 0, bytes = 0;
};

size_t align_up(size_t v) { return (v + 255) / 256 * 256; }

Layout make_layout(int64_t pairs, int64_t experts, int64_t hidden, int64_t inter) {
  Layout l;
  for (Tile t : {Tile::kDecode, Tile::kMedium, Tile::kPrefill}) {
    const int64_t tiles = max_tiles_for(pairs, experts, moe::tile_rows(t));
    l.max_tiles = std::max(l.max_tiles, tiles);
    l.max_rows = std::max(l.max_rows, tiles * moe::tile_rows(t));
  }
  l.sorted = 0;
  l.tile_expert = align_up(l.sorted + l.max_rows * sizeof(int32_t));
  l.num_tiles = align_up(l.tile_expert + l.max_tiles * sizeof(int32_t));
  l.act = align_up(l.num_tiles + sizeof(int32_t));
  l.y = align_up(l.act + static_cast<size_t>(l.max_rows * inter) * sizeof(bf16));
  l.bytes = align_up(l.y + static_cast<size_t>(pairs * hidden) * sizeof(bf16));
  return l;
}

// Which of a call's (token, slot) pairs are this rank's (MoeExpertWeights' expert-parallel fields).
struct ExpertSlice {
  int first_expert = 0;
  int shared_token_stride = 1, shared_token_offset = 0;
  int shared_token_begin = 0, shared_token_end = 0;
};

// The pair's expert in the stacked weights: a routed choice as its local index, a shared slot after the routed
// experts, or -1 for a pair that runs nowhere here (another rank's expert or shared tokens, an invalid id).
__device__ __forceinline__ int pair_expert(const int32_t* topk_ids, int pair, int top_k, int pair_width,
                                           int num_routed, const ExpertSlice& slice) {
  const int token = pair / pair_width, slot = pair % pair_width;
  if (slot >= top_k)
    return token % slice.shared_token_stride == slice.shared_token_offset && token >= slice.shared_token_begin &&
                   token < slice.shared_token_end
               ? num_routed + slot - top_k
               : -1;
  const int e = topk_ids[token * top_k + slot] - slice.first_expert;
  return e >= 0 && e < num_routed ? e : -1;  // an invalid id routes nowhere rather than out of bounds
}

struct AlignArgs {
  const int32_t* topk_ids;
  int pairs, top_k, pair_width, num_routed, experts, tile_m, max_rows;
  int32_t* sorted;
  int32_t* tile_expert;
  int32_t* num_tiles;
  ExpertSlice slice;
};

// One block: with `route_first`, the top-k routing of every token (a warp each; decode sizes) writes topk_ids;
// then counts per expert, tile offsets (a warp's prefix sum), padding, and every pair into its expert's rows.
__global__ void __launch_bounds__(kAlignThreads) align_kernel(const AlignArgs a, const route::RouteArgs r,
                                                              bool route_first) {
  grid_dependency_wait();
  extern __shared__ int shared[];
  int* counts = shared;                    // [experts]
  int* tile_start = counts + a.experts;    // [experts + 1]
  int* cursor = tile_start + a.experts + 1;  // [experts]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (route_first) {
    // route_token takes r.experts floats a warp: every routed expert's score, not only this rank's (a.experts).
    float* choice = reinterpret_cast<float*>(cursor + a.experts) + warp * r.experts;
    for (int t = warp; t < r.tokens; t += kAlignWarps) route::route_token(r, t, lane, choice);
  }
  for (int e = threadIdx.x; e < a.experts; e += blockDim.x) counts[e] = 0;
  __syncthreads();  // the routed ids (global) and the zeroed counts are visible block-wide
  for (int p = threadIdx.x; p < a.pairs; p += blockDim.x) {
    const int e = pair_expert(a.topk_ids, p, a.top_k, a.pair_width, a.num_routed, a.slice);
    if (e >= 0) atomicAdd(&counts[e], 1);
  }
  __syncthreads();
  if (warp == 0) {
    // Lane l owns experts [l * per_lane, (l + 1) * per_lane): its tile count, then an exclusive scan over lanes.
    const int per_lane = (a.experts + 31) / 32;
    int mine = 0;
    for (int i = 0; i < per_lane; ++i) {
      const int e = lane * per_lane + i;
      if (e < a.experts) mine += (counts[e] + a.tile_m - 1) / a.tile_m;
    }
    int inclusive = mine;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, inclusive, offset);
      if (lane >= offset) inclusive += v;
    }
    int start = inclusive - mine;
    for (int i = 0; i < per_lane; ++i) {
      const int e = lane * per_lane + i;
      if (e >= a.experts) break;
      tile_start[e] = start;
      cursor[e] = start * a.tile_m;
      start += (counts[e] + a.tile_m - 1) / a.tile_m;
    }
    if (lane == 31) {
      tile_start[a.experts] = inclusive;
      *a.num_tiles = inclusive;
    }
  }
  __syncthreads();
  for (int row = threadIdx.x; row < a.max_rows; row += blockDim.x) a.sorted[row] = a.pairs;
  for (int e = threadIdx.x; e < a.experts; e += blockDim.x)
    for (int i = tile_start[e]; i < tile_start[e + 1]; ++i) a.tile_expert[i] = e;
  __syncthreads();  // padding stores land before the pairs overwrite their rows
  for (int p = threadIdx.x; p < a.pairs; p += blockDim.x) {
    const int e = pair_expert(a.topk_ids, p, a.top_k, a.pair_width, a.num_routed, a.slice);
    if (e >= 0) a.sorted[atomicAdd(&cursor[e], 1)] = p;
  }
}

// out[t] = sum over the token's valid slots, in slot order, of its weighted expert rows y[t * pair_width + slot].
// Grid (token, column block): a decode token spreads over several SMs; every slot's load is independent.
__global__ void __launch_bounds__(kSumThreads) sum_kernel(const bf16* y, const int32_t* topk_ids, int top_k,
                                                          int pair_width, int num_routed, ExpertSlice slice,
                                                          int hidden, bf16* out) {
  grid_dependency_wait();
  const int token = blockIdx.x, c = (blockIdx.y * kSumThreads + threadIdx.x) * kSumCols;
  if (c >= hidden) return;
  uint32_t valid = 0;  // pair_width <= 32
  for (int slot = 0; slot < pair_width; ++slot)
    if (pair_expert(topk_ids, token * pair_width + slot, top_k, pair_width, num_routed, slice) >= 0)
      valid |= 1u << slot;
  const bf16* rows = y + static_cast<int64_t>(token) * pair_width * hidden + c;
  float acc[kSumCols] = {};
#pragma unroll 4
  for (int slot = 0; slot < pair_width; ++slot) {
    if (!((valid >> slot) & 1u)) continue;
    const uint4 raw = *reinterpret_cast<const uint4*>(rows + static_cast<int64_t>(slot) * hidden);
    const bf16* v = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
    for (int i = 0; i < kSumCols; ++i) acc[i] += __bfloat162float(v[i]);
  }
  uint4 packed;
  bf16* dst = reinterpret_cast<bf16*>(&packed);
#pragma unroll
  for (int i = 0; i < kSumCols; ++i) dst[i] = __float2bfloat16(acc[i]);
  *reinterpret_cast<uint4*>(out + static_cast<int64_t>(token) * hidden + c) = packed;
}

}  // namespace

size_t moe_experts_workspace_bytes(int64_t tokens, int top_k, const MoeExpertWeights& w) {
  const int64_t experts = w.gate_up.size(0), hidden = w.gate_up.size(2), inter = w.gate_up.size(1) / 2;
  return make_layout(tokens * (top_k + w.num_shared), experts, hidden, inter).bytes;
}

namespace {

// moe_experts, with the routing (when given) done by the align kernel first.
void run_experts(const Tensor& x, const Tensor& topk_ids, const Tensor& topk_weights, const MoeExpertWeights& w,
                 Tensor& out, void* workspace, size_t workspace_bytes, const route::RouteArgs* routing,
                 cudaStream_t stream) {
  const bool fp8 = w.gate_up.dtype == DType::kF8E4M3;
  NW_CHECK(w.gate_up.ndim() == 3 && w.down.ndim() == 3 && w.gate_up.dtype == w.down.dtype &&
               (fp8 || w.gate_up.dtype == DType::kBF16) && w.num_shared >= 0 && w.num_shared < w.gate_up.size(0),
           "cuda::moe_experts: gate_up", w.gate_up.shape_string(), " ", dtype_name(w.gate_up.dtype), " down",
           w.down.shape_string(), " ", dtype_name(w.down.dtype), " with ", w.num_shared,
           " shared experts (stacked BF16 or F8_E4M3 expected)");
  NW_CHECK(w.first_expert >= 0 && w.shared_token_stride >= 1 && w.shared_token_offset >= 0 &&
               w.shared_token_offset < w.shared_token_stride && w.shared_token_begin >= 0 &&
               w.shared_token_begin <= w.shared_token_end,
           "cuda::moe_experts: first expert ", w.first_expert, ", shared tokens every ", w.shared_token_stride,
           " from ", w.shared_token_offset, " in [", w.shared_token_begin, ", ", w.shared_token_end, ")");
  const int64_t experts = w.gate_up.size(0), inter = w.gate_up.size(1) / 2, hidden = w.gate_up.size(2);
  const int64_t tokens = x.ndim() == 2 ? x.size(0) : -1, top_k = topk_ids.ndim() == 2 ? topk_ids.size(1) : -1;
  NW_CHECK(x.dtype == DType::kBF16 && out.dtype == DType::kBF16 && x.shape == out.shape && tokens >= 0 &&
               x.size(1) == hidden && w.down.shape == std::vector<int64_t>({experts, hidden, inter}) &&
               topk_ids.dtype == DType::kI32 && topk_weights.dtype == DType::kF32 && top_k >= 1 &&
               topk_ids.size(0) == tokens && topk_weights.shape == topk_ids.shape,
           "cuda::moe_experts: x", x.shape_string(), " out", out.shape_string(), " topk_ids",
           topk_ids.shape_string(), " topk_weights", topk_weights.shape_string(), " do not agree with gate_up",
           w.gate_up.shape_string(), " down", w.down.shape_string());
  NW_CHECK(hidden % 128 == 0 && inter % (fp8 ? 128 : 64) == 0, "cuda::moe_experts: hidden ", hidden,
           " must be a multiple of 128 and intermediate ", inter, " of ", fp8 ? 128 : 64);
  if (fp8) {
    NW_CHECK(w.gate_up_scale_inv.dtype == DType::kF32 && w.down_scale_inv.dtype == DType::kF32 &&
                 w.gate_up_scale_inv.shape == std::vector<int64_t>({experts, 2 * inter / 128, hidden / 128}) &&
                 w.down_scale_inv.shape == std::vector<int64_t>({experts, hidden / 128, inter / 128}),
             "cuda::moe_experts: FP8 scales gate_up", w.gate_up_scale_inv.shape_string(), " down",
             w.down_scale_inv.shape_string(), " do not cover 128x128 blocks");
  }
  const int64_t pair_width = top_k + w.num_shared, pairs = tokens * pair_width;
  const Layout l = make_layout(pairs, experts, hidden, inter);
  NW_CHECK(workspace_bytes >= l.bytes, "cuda::moe_experts: workspace of ", workspace_bytes, " bytes, needs ",
           l.bytes);
  NW_CHECK(l.max_rows < (int64_t{1} << 31), "cuda::moe_experts: ", tokens, " tokens are too many for one call");
  NW_CHECK(pair_width <= 32, "cuda::moe_experts: top ", top_k, " + ", w.num_shared, " shared experts exceed 32");
  if (tokens == 0) return;

  const Tile tile = pick_tile(pairs, experts);
  const int tile_m = moe::tile_rows(tile);
  const int64_t max_tiles = max_tiles_for(pairs, experts, tile_m);
  char* base = static_cast<char*>(workspace);
  auto* sorted = reinterpret_cast<int32_t*>(base + l.sorted);
  auto* tile_expert = reinterpret_cast<int32_t*>(base + l.tile_expert);
  auto* num_tiles = reinterpret_cast<int32_t*>(base + l.num_tiles);
  auto* act = reinterpret_cast<bf16*>(base + l.act);
  auto* y = reinterpret_cast<bf16*>(base + l.y);

  const AlignArgs align{device_ptr<const int32_t>(topk_ids),
                        static_cast<int>(pairs),
                        static_cast<int>(top_k),
                        static_cast<int>(pair_width),
                        static_cast<int>(experts - w.num_shared),
                        static_cast<int>(experts),
                        tile_m,
                        static_cast<int>(max_tiles * tile_m),
                        sorted,
                        tile_expert,
                        num_tiles,
                        {w.first_expert, w.shared_token_stride, w.shared_token_offset, w.shared_token_begin,
                         w.shared_token_end}};
  // The routing scratch holds every routed expert's score per warp: under expert parallelism that is more than this
  // rank's stacked `experts` (8 + 1 of 16 at --ep-size 2; sized by those, warps overwrote each other's groups).
  const size_t align_smem = (3 * experts + 1) * sizeof(int) +
                            (routing ? kAlignWarps * static_cast<size_t>(routing->experts) * sizeof(float) : 0);
  // Past 48 KB (384 experts routed in the kernel) a kernel must ask for its dynamic shared memory, on each device:
  // for all the device allows, since the attribute belongs to the function and expert-parallel ranks on one GPU
  // (threads) with different expert counts would otherwise set it under each other's launches.
  if (align_smem > 48 * 1024) {
    int device = 0, optin = 0;
    cudaFuncAttributes attributes{};
    NW_CUDA_CHECK(cudaGetDevice(&device));
    NW_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    NW_CUDA_CHECK(cudaFuncGetAttributes(&attributes, align_kernel));
    NW_CUDA_CHECK(cudaFuncSetAttribute(align_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       optin - static_cast<int>(attributes.sharedSizeBytes)));
  }
  launch(align_kernel, 1, kAlignThreads, align_smem, stream, align, routing ? *routing : route::RouteArgs{},
         routing != nullptr);

  moe::GemmArgs g{};
  g.sorted_pairs = sorted;
  g.tile_expert = tile_expert;
  g.num_tiles = num_tiles;
  g.topk_weights = device_ptr<const float>(topk_weights);
  g.top_k = static_cast<int>(top_k);
  g.pair_width = static_cast<int>(pair_width);
  g.num_pairs = static_cast<int>(pairs);
  g.max_tiles = static_cast<int>(max_tiles);
  auto grouped_gemm = fp8 ? moe::grouped_gemm_fp8 : moe::grouped_gemm_bf16;

  moe::GemmArgs gate_up = g;
  gate_up.a = device_ptr<const bf16>(x);
  gate_up.b = w.gate_up.data;
  gate_up.b_scale_inv = fp8 ? device_ptr<const float>(w.gate_up_scale_inv) : nullptr;
  gate_up.c = act;
  gate_up.n = static_cast<int>(inter);
  gate_up.k = static_cast<int>(hidden);
  gate_up.b_rows = static_cast<int>(2 * inter);
  grouped_gemm(gate_up, tile, /*gate_up=*/true, stream);

  moe::GemmArgs down = g;
  down.a = act;
  down.b = w.down.data;
  down.b_scale_inv = fp8 ? device_ptr<const float>(w.down_scale_inv) : nullptr;
  down.c = y;
  down.n = static_cast<int>(hidden);
  down.k = static_cast<int>(inter);
  down.b_rows = static_cast<int>(hidden);
  grouped_gemm(down, tile, /*gate_up=*/false, stream);

  const dim3 sum_grid(static_cast<unsigned>(tokens),
                      static_cast<unsigned>(ceil_div(hidden, kSumThreads * kSumCols)));
  launch(sum_kernel, sum_grid, kSumThreads, 0, stream, y, device_ptr<const int32_t>(topk_ids),
         static_cast<int>(top_k), static_cast<int>(pair_width), align.num_routed, align.slice,
         static_cast<int>(hidden), device_ptr<bf16>(out));
}

}  // namespace

void moe_experts(const Tensor& x, const Tensor& topk_ids, const Tensor& topk_weights, const MoeExpertWeights& w,
                 Tensor& out, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  run_experts(x, topk_ids, topk_weights, w, out, workspace, workspace_bytes, nullptr, stream);
}

void moe_route_experts(const Tensor& x, const Tensor& router_logits, const Tensor& correction_bias,
                       const RouterParams& params, Tensor& topk_ids, Tensor& topk_weights, const MoeExpertWeights& w,
                       Tensor& out, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (router_logits.size(0) > kAlignWarps) {
    moe_route(router_logits, correction_bias, params, topk_ids, topk_weights, stream);
    moe_experts(x, topk_ids, topk_weights, w, out, workspace, workspace_bytes, stream);
    return;
  }
  const route::RouteArgs routing = route::route_args(router_logits, correction_bias, params, topk_ids, topk_weights);
  run_experts(x, topk_ids, topk_weights, w, out, workspace, workspace_bytes, &routing, stream);
}

}  // namespace narwhal::ops::cuda
