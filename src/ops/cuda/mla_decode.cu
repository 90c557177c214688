// MLA decode attention, absorbed form: all query rows of a sequence attend, as one MQA, over its paged latent
// cache (keys = the 576-wide latent rows, values = their first 512), split over the SMs, then combined.
//
// Work split (after FlashMLA): a sequence's q_len * heads query rows are contiguous in q and form row blocks
// of 16, 32 or 64 (grid.x). The batch's keys, in tiles of 64, are laid end to end sequence after sequence and
// cut into equal ranges ("parts"), so every CTA gets the same number of tiles whatever the lengths. The cut is
// made inside the kernel from seq_lens; the grid depends only on batch, heads and the SM count, so the launch
// can be captured in a CUDA graph and replayed with other lengths. grid.y is the most parts there can be; when
// the batch has fewer tiles than that, one part per tile works and the rest exit, so that a short batch
// (decode at batch 1) leaves the combine no parts that hold nothing. A part holding a whole sequence writes
// `out` directly; otherwise it writes FP32 partial rows with their log-sum-exp and mla_combine_kernel merges
// them: one warp per (row, 128 output columns), the partial rows of several parts in flight per lane.
//
// Inside a CTA (8 warps), each 64-key tile is copied once (cp.async, two stages) and shared by all its rows.
// S = Q K^T: warps split the rows in 16-row slices and the keys in kGroups groups. Softmax: online, FP32, the
// row max reduced across the key groups through shared memory; P goes to shared memory as BF16. O += P V:
// each warp owns 64 of the 512 output columns for all rows (m16n8k16 BF16 MMAs throughout).
#include <algorithm>

#include "core/error.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/mla.h"
#include "ops/cuda/mma.cuh"

namespace narwhal::ops::cuda {

namespace {

constexpr int kLatent = 512;          // kv_lora: value and output width
constexpr int kWidth = 576;           // kv_lora + rope: query and key width
constexpr int kChunks = kWidth / 8;   // 16-byte chunks per query/key row
constexpr int kBlockN = 64;           // keys per tile
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kWarpDims = kLatent / kWarps;    // output columns per warp
constexpr int kCopyRows = kBlockN / kWarps;    // keys per warp per tile copy: 8, always inside one page
static_assert(kCopyRows * kChunks % 32 == 0);

struct DecodeArgs {
  const bf16* q;               // [batch * q_len, heads, 576]
  const bf16* cache;           // [num_pages, page_size, 576]
  const int32_t* page_table;   // [batch, max_pages]
  const int32_t* seq_lens;     // [batch]
  const int32_t* parents;      // [batch * q_len]: a speculative tree's parents (visible_new_tokens); null: causal
  bf16* out;                   // [batch * q_len, heads, 512]
  float* partial_out;          // [slots, m_blocks, block_rows, 512], slot = sequence + part
  float* partial_lse;          // [slots, m_blocks, block_rows], log2 domain
  int batch, q_len, heads;
  int rows;                    // q_len * heads: the query rows of one sequence
  int block_rows, m_blocks, parts;
  int page_shift, max_pages;
  float scale_log2;            // softmax scale * log2(e): the softmax runs on exp2
};

// How a launch is cut, from host-known sizes only.
struct Plan {
  int block_rows, m_blocks, parts;
};

int block_rows_for(int64_t rows) { return rows <= 16 ? 16 : rows <= 32 ? 32 : 64; }

Plan make_plan(const MlaDecodeParams& p, int num_sms) {
  const int64_t rows = p.q_len * p.heads;
  const int block_rows = block_rows_for(rows);
  const int m_blocks = static_cast<int>(ceil_div(rows, block_rows));
  // One CTA per SM (shared memory allows no more): the row blocks of a part run side by side, and read the
  // same tiles at about the same time, so all but the first read hit L2. The parts are those of a decode
  // (q_len 1) whatever q_len is, so a verify cuts the keys where a decode does (batch invariance); a verify
  // with more row blocks than a decode runs in more waves instead.
  const int decode_m_blocks = static_cast<int>(ceil_div(p.heads, block_rows_for(p.heads)));
  return {block_rows, m_blocks, std::max(1, num_sms / decode_m_blocks)};
}

__device__ __forceinline__ int tiles_of(int seq_len) { return seq_len > 0 ? (seq_len + kBlockN - 1) / kBlockN : 0; }

// Parts that get tiles: at most one per tile, so that none is empty.
__device__ __forceinline__ int working_parts(int parts, int64_t total_tiles) {
  return static_cast<int>(min(static_cast<int64_t>(parts), total_tiles));
}

// Tiles of the whole batch and of the sequences ahead of `seq`, summed by one warp (every lane gets both).
__device__ void warp_tile_counts(const int32_t* seq_lens, int batch, int seq, int64_t& total, int64_t& before) {
  const int lane = threadIdx.x % 32;
  total = before = 0;
  for (int base = 0; base < batch; base += 32) {
    const int b = base + lane;
    const int tiles = b < batch ? tiles_of(seq_lens[b]) : 0;
    total += __reduce_add_sync(0xffffffffu, tiles);
    before += __reduce_add_sync(0xffffffffu, b < seq ? tiles : 0);
  }
}

// Walks the sequences in batch order, tracking the one that holds a given tile of the concatenated key tiles.
struct SeqCursor {
  int seq;
  int seq_len;
  int num_tiles;
  int64_t first_tile;  // global index of the sequence's tile 0

  __device__ void seek(int64_t tile, const int32_t* seq_lens) {
    while (tile >= first_tile + num_tiles) {
      first_tile += num_tiles;
      seq_len = seq_lens[++seq];
      num_tiles = tiles_of(seq_len);
    }
  }
};

// One warp: the tile range [begin, end) of `part` and a cursor on the sequence holding tile `begin` (left
// unset when the range is empty).
__device__ void schedule_part(const DecodeArgs& a, int part, int64_t& begin, int64_t& end, SeqCursor& cursor) {
  const int lane = threadIdx.x % 32;
  int64_t total, unused;
  warp_tile_counts(a.seq_lens, a.batch, 0, total, unused);
  const int parts = working_parts(a.parts, total);
  begin = end = 0;
  if (part >= parts) return;
  begin = part * total / parts;
  end = (part + 1) * total / parts;
  int64_t before = 0;  // tiles of the sequences ahead of this group of 32
  for (int base = 0; base < a.batch; base += 32) {
    const int b = base + lane;
    const int len = b < a.batch ? a.seq_lens[b] : 0, tiles = tiles_of(len);
    int upto = tiles;  // inclusive prefix sum of the group's tiles
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, upto, offset);
      if (lane >= offset) upto += v;
    }
    // The first lane whose sequence ends past `begin` holds it (empty sequences never end past anything
    // their predecessor did not).
    const unsigned holds = __ballot_sync(0xffffffffu, before + upto > begin);
    if (holds) {
      const int l = __ffs(holds) - 1;
      cursor = {base + l, __shfl_sync(0xffffffffu, len, l), __shfl_sync(0xffffffffu, tiles, l),
                before + __shfl_sync(0xffffffffu, upto - tiles, l)};
      return;
    }
    before += __shfl_sync(0xffffffffu, upto, 31);
  }
}

// Shared memory of a CTA with kMTiles 16-row slices: Q, two key tiles, P, and the softmax exchange.
template <int kMTiles>
constexpr size_t smem_bytes() {
  constexpr int rows = 16 * kMTiles, groups = kWarps / kMTiles;
  return (rows * kWidth + 2 * kBlockN * kWidth + rows * kBlockN) * sizeof(bf16) + (groups + 2) * rows * sizeof(float);
}

template <int kMTiles>
__global__ void __launch_bounds__(kThreads, 1) mla_decode_kernel(const DecodeArgs a) {
  grid_dependency_wait();
  constexpr int kBlockM = 16 * kMTiles;          // query rows per CTA
  constexpr int kGroups = kWarps / kMTiles;      // key groups of S: warps sharing one 16-row slice
  constexpr int kWarpKeys = kBlockN / kGroups;   // keys of S per warp (8 per MMA n-tile, kMTiles n-tiles)

  extern __shared__ uint4 smem_raw[];
  bf16* q_smem = reinterpret_cast<bf16*>(smem_raw);        // [kBlockM, 576]
  bf16* kv_smem = q_smem + kBlockM * kWidth;                // 2 stages of [kBlockN, 576]
  bf16* p_smem = kv_smem + 2 * kBlockN * kWidth;            // [kBlockM, kBlockN] softmax weights
  float* red_smem = reinterpret_cast<float*>(p_smem + kBlockM * kBlockN);  // [kGroups, kBlockM] partial max/sum
  float* alpha_smem = red_smem + kGroups * kBlockM;         // [kBlockM] rescale of O for the current tile
  float* max_smem = alpha_smem + kBlockM;                   // [kBlockM] row max at the end of a chunk
  __shared__ int64_t range_smem[2];
  __shared__ SeqCursor cursor_smem;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int m_block = blockIdx.x, part = blockIdx.y;
  if (warp == 0) {
    int64_t begin, end;
    SeqCursor cursor{};
    schedule_part(a, part, begin, end, cursor);
    if (lane == 0) {
      range_smem[0] = begin;
      range_smem[1] = end;
      cursor_smem = cursor;
    }
  }
  __syncthreads();
  const int64_t begin = range_smem[0], end = range_smem[1];
  if (begin >= end) return;
  SeqCursor load_cursor = cursor_smem, cursor = cursor_smem;

  // Tile copies: warp w takes keys 8w..8w+7, consecutive positions of one page, hence 8 contiguous rows.
  auto load_tile = [&](int64_t tile, bf16* dst) {
    load_cursor.seek(tile, a.seq_lens);
    const int pos = static_cast<int>(tile - load_cursor.first_tile) * kBlockN + warp * kCopyRows;
    const bf16* src = a.cache;
    if (pos < load_cursor.seq_len) {
      const int64_t page = a.page_table[static_cast<int64_t>(load_cursor.seq) * a.max_pages + (pos >> a.page_shift)];
      src += ((page << a.page_shift) + (pos & ((1 << a.page_shift) - 1))) * kWidth;
    }
#pragma unroll
    for (int it = 0; it < kCopyRows * kChunks / 32; ++it) {
      const int i = lane + it * 32, r = i / kChunks, c = i % kChunks;
      const bool valid = pos + r < load_cursor.seq_len;
      cp_async_16(dst + swizzle(warp * kCopyRows + r, c, kChunks), valid ? src + r * kWidth + c * 8 : a.cache, valid);
    }
  };
  auto load_q = [&](int seq) {
    const int row0 = m_block * kBlockM;
    const bf16* src = a.q + (static_cast<int64_t>(seq) * a.rows + row0) * kWidth;
    for (int i = threadIdx.x; i < kBlockM * kChunks; i += kThreads) {
      const int r = i / kChunks, c = i % kChunks;
      const bool valid = row0 + r < a.rows;
      cp_async_16(q_smem + swizzle(r, c, kChunks), valid ? src + r * kWidth + c * 8 : a.q, valid);
    }
  };

  // S role: 16-row slice s_slice, keys s_keys .. s_keys + kWarpKeys - 1 of each tile. This thread holds S rows
  // s_row and s_row + 8 (columns 2t, 2t+1 of each n-tile); in O it holds rows slice*16 + lane/4 (+8).
  const int s_slice = warp / kGroups, s_group = warp % kGroups, s_keys = s_group * kWarpKeys;
  const int s_row = s_slice * 16 + lane / 4, t = lane % 4;
  float o[kMTiles][kWarpDims / 8][4];
  float row_max[2];              // running max of raw scores
  // The row sum, kept by the 4 threads of row tid / 4 (tid < kBlockM * 4) and added in a fixed order per tile
  // (16 keys each, then a butterfly), so that its bits do not depend on kMTiles: a verify's rows (q_len > 1, more
  // rows a CTA) get a decode's bits (batch invariance, docs/speculative.md).
  const bool sums_row = threadIdx.x < kBlockM * 4;
  const int sum_row = threadIdx.x / 4, sum_quarter = threadIdx.x % 4;
  float row_sum = 0.0f;
  uint32_t visible[2];           // the new tokens the S rows see (visible_new_tokens); every prefix key is seen
  int chunk_first = 0;           // first tile (within its sequence) of the chunk in progress

  load_tile(begin, kv_smem);
  cp_async_commit();
  for (int64_t tile = begin; tile < end; ++tile) {
    const int stage = static_cast<int>(tile - begin) & 1;
    cursor.seek(tile, a.seq_lens);
    const int kv_tile = static_cast<int>(tile - cursor.first_tile);
    const bool chunk_start = tile == begin || kv_tile == 0;
    const bool chunk_end = tile == end - 1 || kv_tile == cursor.num_tiles - 1;
    // Every warp is done with tile - 1 (whose stage is refilled below) and, at a chunk start, with Q.
    __syncthreads();
    if (chunk_start) {
      load_q(cursor.seq);
      cp_async_commit();
      chunk_first = kv_tile;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int token = (m_block * kBlockM + s_row + 8 * i) / a.heads;  // past q_len on padding rows
        visible[i] = visible_new_tokens(a.parents ? a.parents + cursor.seq * a.q_len : nullptr, token, a.q_len);
        row_max[i] = -INFINITY;
      }
      row_sum = 0.0f;
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
        for (int n = 0; n < kWarpDims / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) o[mi][n][e] = 0.0f;
    }
    if (tile + 1 < end) load_tile(tile + 1, kv_smem + (stage ^ 1) * kBlockN * kWidth);
    cp_async_commit();
    cp_async_wait<1>();  // this tile (and Q) landed; the prefetch stays in flight
    __syncthreads();
    const bf16* kv = kv_smem + stage * kBlockN * kWidth;

    // S = Q K^T over 576 dims, 32 per step: two A fragments, and per n-tile one ldmatrix of 8 keys x 32 dims.
    float s[kMTiles][4] = {};
#pragma unroll
    for (int c0 = 0; c0 < kChunks; c0 += 4) {
      uint32_t qa[2][4];
      ldmatrix_x4(qa[0], q_smem + swizzle(s_slice * 16 + lane % 16, c0 + lane / 16, kChunks));
      ldmatrix_x4(qa[1], q_smem + swizzle(s_slice * 16 + lane % 16, c0 + 2 + lane / 16, kChunks));
#pragma unroll
      for (int j = 0; j < kMTiles; ++j) {
        uint32_t kb[4];
        ldmatrix_x4(kb, kv + swizzle(s_keys + j * 8 + lane % 8, c0 + lane / 8, kChunks));
        mma_bf16(s[j], qa[0], kb[0], kb[1]);
        mma_bf16(s[j], qa[1], kb[2], kb[3]);
      }
    }

    // Mask keys past the sequence end and new tokens a row does not see; exchange the row max across key groups.
    const int key0 = kv_tile * kBlockN + s_keys + 2 * t, new0 = cursor.seq_len - a.q_len;
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kMTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + j * 8 + (e & 1);
        if (key >= cursor.seq_len || (key >= new0 && !((visible[e / 2] >> (key - new0)) & 1u))) s[j][e] = -INFINITY;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], s[j][e]);
      }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      tile_max[i] = quad_max(tile_max[i]);
      if (t == 0) red_smem[s_group * kBlockM + s_row + 8 * i] = tile_max[i];
    }
    __syncthreads();

    float neg_ref[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float new_max = row_max[i];
#pragma unroll
      for (int g = 0; g < kGroups; ++g) new_max = fmaxf(new_max, red_smem[g * kBlockM + s_row + 8 * i]);
      // A row that has seen no visible key yet keeps max -inf: exponentiate against 0 then, never inf - inf.
      const float ref = new_max == -INFINITY ? 0.0f : new_max;
      const float alpha = fast_exp2((row_max[i] - ref) * a.scale_log2);
      neg_ref[i] = -ref * a.scale_log2;
      row_max[i] = new_max;
      if (s_group == 0 && t == 0) alpha_smem[s_row + 8 * i] = alpha;
    }
    // P in BF16; the row sums add the rounded weights, so that O is normalised by what it accumulated.
#pragma unroll
    for (int j = 0; j < kMTiles; ++j)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const __nv_bfloat162 p = __floats2bfloat162_rn(fast_exp2(fmaf(s[j][2 * i], a.scale_log2, neg_ref[i])),
                                                       fast_exp2(fmaf(s[j][2 * i + 1], a.scale_log2, neg_ref[i])));
        *reinterpret_cast<__nv_bfloat162*>(p_smem + swizzle(s_row + 8 * i, s_keys / 8 + j, kBlockN / 8) + 2 * t) = p;
      }
    __syncthreads();

    if (sums_row) {  // whole warps: kBlockM * 4 is a multiple of 32
      float tile_sum = 0.0f;
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const uint4 chunk = *reinterpret_cast<const uint4*>(p_smem + swizzle(sum_row, sum_quarter * 2 + c, kBlockN / 8));
        const __nv_bfloat162* p2 = reinterpret_cast<const __nv_bfloat162*>(&chunk);
#pragma unroll
        for (int e = 0; e < 4; ++e) tile_sum += __low2float(p2[e]) + __high2float(p2[e]);
      }
      tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 1);
      tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 2);
      row_sum = row_sum * alpha_smem[sum_row] + tile_sum;
    }

    // O = alpha O + P V on this warp's 64 columns: per 16 keys, one A fragment per row slice and per pair of
    // n-tiles one transposed ldmatrix of V.
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi) {
      const float alpha_lo = alpha_smem[mi * 16 + lane / 4], alpha_hi = alpha_smem[mi * 16 + lane / 4 + 8];
#pragma unroll
      for (int n = 0; n < kWarpDims / 8; ++n) {
        o[mi][n][0] *= alpha_lo;
        o[mi][n][1] *= alpha_lo;
        o[mi][n][2] *= alpha_hi;
        o[mi][n][3] *= alpha_hi;
      }
    }
#pragma unroll
    for (int k0 = 0; k0 < kBlockN; k0 += 16) {
      uint32_t pa[kMTiles][4];
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi)
        ldmatrix_x4(pa[mi], p_smem + swizzle(mi * 16 + lane % 16, k0 / 8 + lane / 16, kBlockN / 8));
#pragma unroll
      for (int n = 0; n < kWarpDims / 8; n += 2) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, kv + swizzle(k0 + lane % 8 + (lane / 8 % 2) * 8, (warp * kWarpDims) / 8 + n + lane / 16,
                                           kChunks));
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi) {
          mma_bf16(o[mi][n], pa[mi], vb[0], vb[1]);
          mma_bf16(o[mi][n + 1], pa[mi], vb[2], vb[3]);
        }
      }
    }
    if (!chunk_end) continue;

    // End of this part's share of the sequence: total the row sums across key groups, normalise, and write
    // either the final rows or FP32 partials with their log-sum-exp (rows with no visible key: 0 and -inf).
#pragma unroll
    for (int i = 0; i < 2; ++i)
      if (t == 0 && s_group == 0) max_smem[s_row + 8 * i] = row_max[i];
    if (sums_row && sum_quarter == 0) red_smem[sum_row] = row_sum;
    __syncthreads();
    const bool whole_sequence = chunk_first == 0 && kv_tile == cursor.num_tiles - 1;
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int row = mi * 16 + lane / 4 + 8 * i, q_row = m_block * kBlockM + row;
        if (q_row >= a.rows) continue;
        const float sum = red_smem[row];
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        const int col = warp * kWarpDims + 2 * t;
        if (whole_sequence) {
          bf16* dst = a.out + (static_cast<int64_t>(cursor.seq) * a.rows + q_row) * kLatent + col;
#pragma unroll
          for (int n = 0; n < kWarpDims / 8; ++n)
            *reinterpret_cast<__nv_bfloat162*>(dst + n * 8) =
                __floats2bfloat162_rn(o[mi][n][2 * i] * inv, o[mi][n][2 * i + 1] * inv);
        } else {
          const int64_t slot_row = (static_cast<int64_t>(cursor.seq + part) * a.m_blocks + m_block) * kBlockM + row;
          float* dst = a.partial_out + slot_row * kLatent + col;
#pragma unroll
          for (int n = 0; n < kWarpDims / 8; ++n)
            *reinterpret_cast<float2*>(dst + n * 8) = make_float2(o[mi][n][2 * i] * inv, o[mi][n][2 * i + 1] * inv);
          if (warp == 0 && t == 0)
            a.partial_lse[slot_row] = sum > 0.0f ? max_smem[row] * a.scale_log2 + log2f(sum) : -INFINITY;
        }
      }
  }
}

constexpr int kCombineWarps = kLatent / 128;  // one warp per 128 output columns of a row: a float4 per lane
constexpr int kCombineBatch = 8;               // parts whose partial rows one lane has in flight at once

// Block (row, sequence): merges the partial rows of the parts that shared the sequence's tiles, weighted by their
// log-sum-exp. A sequence one part held whole was written by that part; one with no key, or a row that saw no
// visible key, gets zeros.
__global__ void __launch_bounds__(kCombineWarps * 32) mla_combine_kernel(const DecodeArgs a) {
  grid_dependency_wait();
  const int row = blockIdx.x, seq = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int64_t total, before;
  warp_tile_counts(a.seq_lens, a.batch, seq, total, before);
  const int tiles = tiles_of(a.seq_lens[seq]);
  const int parts = working_parts(a.parts, total);
  // Parts c whose range [c * total / parts, (c + 1) * total / parts) meets [before, before + tiles).
  int first = 0, last = -1;
  if (tiles > 0) {
    first = static_cast<int>(ceil_div((before + 1) * parts, total)) - 1;
    last = static_cast<int>(ceil_div((before + tiles) * parts, total)) - 1;
    if (first == last) return;
  }
  const int m_block = row / a.block_rows;
  const int64_t slot_row0 = (static_cast<int64_t>(seq) * a.m_blocks + m_block) * a.block_rows + row % a.block_rows;
  const int64_t slot_stride = static_cast<int64_t>(a.m_blocks) * a.block_rows;  // next part, same row
  const float* lse = a.partial_lse + slot_row0;
  float max_lse = -INFINITY;
  for (int c = first + lane; c <= last; c += 32) max_lse = fmaxf(max_lse, lse[c * slot_stride]);
  max_lse = warp_max(max_lse);

  const int col = warp * 128 + 4 * lane;
  const float* src = a.partial_out + slot_row0 * kLatent + col;
  float4 acc = {0.0f, 0.0f, 0.0f, 0.0f};
  float weight_sum = 0.0f;
  if (max_lse != -INFINITY) {
    for (int c0 = first; c0 <= last; c0 += 32) {
      const int n = min(32, last - c0 + 1);
      const float w_lane = lane < n ? exp2f(lse[(c0 + lane) * slot_stride] - max_lse) : 0.0f;
      weight_sum += warp_sum(w_lane);
      for (int j = 0; j < n; j += kCombineBatch) {
        float4 x[kCombineBatch];
#pragma unroll
        for (int u = 0; u < kCombineBatch; ++u)
          x[u] = j + u < n ? *reinterpret_cast<const float4*>(src + (c0 + j + u) * slot_stride * kLatent)
                           : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int u = 0; u < kCombineBatch; ++u) {
          const float w = __shfl_sync(0xffffffffu, w_lane, j + u);
          acc.x += w * x[u].x, acc.y += w * x[u].y, acc.z += w * x[u].z, acc.w += w * x[u].w;
        }
      }
    }
  }
  const float inv = weight_sum > 0.0f ? 1.0f / weight_sum : 0.0f;
  const __nv_bfloat162 lo = __floats2bfloat162_rn(acc.x * inv, acc.y * inv);
  const __nv_bfloat162 hi = __floats2bfloat162_rn(acc.z * inv, acc.w * inv);
  uint2 packed;
  packed.x = *reinterpret_cast<const uint32_t*>(&lo);
  packed.y = *reinterpret_cast<const uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(a.out + (static_cast<int64_t>(seq) * a.rows + row) * kLatent + col) = packed;
}

template <int kMTiles>
void launch_decode(const DecodeArgs& a, cudaStream_t stream) {
  constexpr size_t smem = smem_bytes<kMTiles>();
  NW_CUDA_CHECK(cudaFuncSetAttribute(mla_decode_kernel<kMTiles>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem)));
  launch(mla_decode_kernel<kMTiles>, dim3(a.m_blocks, a.parts), kThreads, smem, stream, a);
}

int current_device_sms() {
  int device = 0, sms = 0;
  NW_CUDA_CHECK(cudaGetDevice(&device));
  NW_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

}  // namespace

size_t mla_decode_workspace_bytes(int64_t batch, const MlaDecodeParams& p, int num_sms) {
  const Plan plan = make_plan(p, num_sms);
  const int64_t slot_rows = (batch + plan.parts - 1) * plan.m_blocks * plan.block_rows;
  return static_cast<size_t>(slot_rows) * (kLatent + 1) * sizeof(float);
}

void mla_decode(const Tensor& q, const Tensor& cache, const Tensor& page_table, const Tensor& seq_lens,
                const Tensor& tree_parents, const MlaDecodeParams& p, Tensor& out, void* workspace,
                size_t workspace_bytes, cudaStream_t stream) {
  NW_CHECK(p.kv_lora == kLatent && p.rope_dim == kWidth - kLatent, "mla_decode: built for kv_lora 512 + rope 64, got ",
           p.kv_lora, " + ", p.rope_dim);
  NW_CHECK(p.page_size >= 16 && (p.page_size & (p.page_size - 1)) == 0,
           "mla_decode: page_size must be a power of two >= 16, got ", p.page_size);
  NW_CHECK(p.heads >= 1 && p.q_len >= 1 && p.q_len <= kMlaDecodeMaxQLen, "mla_decode: heads ", p.heads, " must be >= 1 "
           "and q_len ", p.q_len, " in 1..", kMlaDecodeMaxQLen);
  const int64_t batch = seq_lens.ndim() == 1 ? seq_lens.size(0) : -1;
  NW_CHECK(q.dtype == DType::kBF16 && cache.dtype == DType::kBF16 && out.dtype == DType::kBF16 &&
               page_table.dtype == DType::kI32 && seq_lens.dtype == DType::kI32 && batch >= 0 && q.ndim() == 3 &&
               q.size(0) == batch * p.q_len && q.size(1) == p.heads && q.size(2) == kWidth && cache.ndim() == 3 &&
               cache.size(1) == p.page_size && cache.size(2) == kWidth && page_table.ndim() == 2 &&
               page_table.size(0) == batch && out.ndim() == 3 && out.size(0) == q.size(0) &&
               out.size(1) == p.heads && out.size(2) == kLatent,
           "mla_decode: q", q.shape_string(), " cache", cache.shape_string(), " page_table",
           page_table.shape_string(), " seq_lens", seq_lens.shape_string(), " out", out.shape_string(),
           " do not agree with heads ", p.heads, ", q_len ", p.q_len, ", page_size ", p.page_size,
           " (BF16 q/cache/out, I32 page_table/seq_lens)");
  NW_CHECK(batch <= 65535, "mla_decode: batch ", batch, " over 65535 (the combine's grid.y)");
  NW_CHECK(!tree_parents.defined() || (tree_parents.dtype == DType::kI32 && tree_parents.numel() == batch * p.q_len),
           "mla_decode: tree_parents", tree_parents.shape_string(), " must be I32 with one entry per query token (",
           batch * p.q_len, ")");
  const int sms = current_device_sms();
  const size_t needed = mla_decode_workspace_bytes(batch, p, sms);
  NW_CHECK(workspace_bytes >= needed, "mla_decode: workspace of ", workspace_bytes, " bytes, needs ", needed);
  if (batch == 0) return;

  const Plan plan = make_plan(p, sms);
  float* partial_out = static_cast<float*>(workspace);
  const int64_t slot_rows = (batch + plan.parts - 1) * plan.m_blocks * plan.block_rows;
  int page_shift = 0;
  while ((int64_t{1} << page_shift) < p.page_size) ++page_shift;
  const DecodeArgs a{device_ptr<const bf16>(q),
                     device_ptr<const bf16>(cache),
                     device_ptr<const int32_t>(page_table),
                     device_ptr<const int32_t>(seq_lens),
                     tree_parents.defined() ? device_ptr<const int32_t>(tree_parents) : nullptr,
                     device_ptr<bf16>(out),
                     partial_out,
                     partial_out + slot_rows * kLatent,
                     static_cast<int>(batch),
                     static_cast<int>(p.q_len),
                     static_cast<int>(p.heads),
                     static_cast<int>(p.q_len * p.heads),
                     plan.block_rows,
                     plan.m_blocks,
                     plan.parts,
                     page_shift,
                     static_cast<int>(page_table.size(1)),
                     p.softmax_scale * 1.4426950408889634f};
  switch (plan.block_rows) {
    case 16: launch_decode<1>(a, stream); break;
    case 32: launch_decode<2>(a, stream); break;
    default: launch_decode<4>(a, stream); break;
  }
  launch(mla_combine_kernel, dim3(static_cast<unsigned>(a.rows), static_cast<unsigned>(batch)), kCombineWarps * 32,
         0, stream, a);
}

}  // namespace narwhal::ops::cuda
