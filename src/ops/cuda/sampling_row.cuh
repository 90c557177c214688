// One row of the GPU sampler (sampling.cu): its adjusted logits and weights, the radix select of the rank keys
// that finds where top-k / top-p / min-p cut, and the id-order draw. A CTA of kThreads threads per row; tiles of
// kTile ids, four consecutive ones per thread; state in the CTA's shared memory (Shared).
#pragma once

#include <climits>
#include <cstdint>

#include "ops/cuda/block_primitives.cuh"
#include "ops/cuda/common.cuh"
#include "ops/sampling.h"

namespace narwhal::ops::cuda::sampling {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 4 * kThreads;  // ids per tile: four consecutive ones per thread
constexpr int kUnroll = 4;           // tiles a thread loads before using them (64 KB in flight per SM)
constexpr int kMaxTiles = static_cast<int>(kMaxSamplingVocab / kTile);
constexpr int kLevel0Bins = 64 + 35 * 32;  // weights 0..63 one each, then 32 bins per octave up to 2^40
constexpr int kBins = 2048;                // later levels: 11-bit digits of the rank key
constexpr int kBuffer = 4096;              // candidate keys sorted in shared memory
constexpr uint64_t kNoLimit = ~uint64_t{0};
static_assert(kMaxTiles == kThreads && kBins == 4 * kThreads && kBuffer == 8 * kThreads,
              "the scans give each thread one tile, four bins and eight buffered keys");

// Rank keys lo..hi (inclusive), `count` of them present, below `above` keys of mass `above_mass`.
struct Interval {
  uint64_t lo, hi, above, above_mass, count;
};

// The filters as one rule on the rank order: rank r, with `before` mass ranked ahead of it, is kept iff
// r == 0 or (r < max_rank (top-k, min-p) and before < mass_limit (top-p)). Kept ranks form a prefix.
struct Keep {
  uint64_t max_rank, mass_limit;
};

__device__ __forceinline__ bool kept(const Keep& k, uint64_t rank, uint64_t before) {
  return rank == 0 || (rank < k.max_rank && before < k.mass_limit);
}

struct Shared {
  uint32_t count0[kLevel0Bins];  // level-0 histogram, kept for a second selection
  uint64_t mass0[kLevel0Bins];
  uint32_t count[kBins];
  uint64_t mass[kBins];
  uint64_t keys[kBuffer];  // collected rank keys, sorted descending (first: the threads' best raw keys)
  uint64_t tile_mass[kMaxTiles];
  Pair scan[kWarps];
  uint64_t red_u[kWarps];
  double red_d[kWarps];
  float red_f[kWarps];
  Interval iv;        // the selection's current interval
  Interval buffered;  // the keys held in `keys` (count: how many); valid when has_buffer
  int has_buffer;
  int pick;            // a block-wide choice: bin, buffer index or tile
  unsigned int fill;   // keys collected
  unsigned int found;  // top-logprob candidates written to the workspace
  uint64_t cut, kept_mass, target;
  int32_t token;
};

// Level 0 bins a weight by its octave and the next five bits, so that bins are about as full in a peaked row
// as in a flat one; weights below 64 get a bin each.
__device__ __forceinline__ int level0_bin(uint64_t w) {
  if (w < 64) return static_cast<int>(w);
  const int bits = 64 - __clzll(static_cast<long long>(w));  // 7 .. 41
  return 64 + (bits - 7) * 32 + static_cast<int>((w >> (bits - 6)) & 31);
}

// The rank keys of level-0 bin `bin`: every id of weights lo..hi.
__device__ __forceinline__ void level0_keys(int bin, uint64_t& lo, uint64_t& hi) {
  uint64_t w_lo = static_cast<uint64_t>(bin), w_hi = w_lo;
  if (bin >= 64) {
    const int bits = 7 + (bin - 64) / 32;
    w_lo = static_cast<uint64_t>(32 + (bin - 64) % 32) << (bits - 6);
    w_hi = w_lo + (uint64_t{1} << (bits - 6)) - 1;
  }
  lo = w_lo << kIdBits;
  hi = (w_hi << kIdBits) | static_cast<uint64_t>(kMaxSamplingVocab - 1);
}

struct Row {
  const float* logits;  // this row's raw logits
  const SamplingRow* params;
  const TokenAdjustment* adjust;  // this row's, ascending by token
  int num_adjust;
  const uint32_t* marked;  // bit per id in shared memory: listed in `adjust`; null when nothing is
  int vocab;
  bool vectorized;
  float max_x;  // the largest adjusted logit, for weights
  double inv_t;
};

__device__ inline float logit_at(const Row& row, int id, float raw) {
  if (!row.marked || !((row.marked[id >> 5] >> (id & 31)) & 1u)) return raw;
  int lo = 0, hi = row.num_adjust - 1;
  while (lo <= hi) {
    const int mid = (lo + hi) / 2, token = row.adjust[mid].token;
    if (token == id) return adjusted_logit(raw, row.adjust[mid], *row.params);
    if (token < id) lo = mid + 1;
    else hi = mid - 1;
  }
  return raw;
}

__device__ __forceinline__ uint64_t weight_at(const Row& row, int id, float raw) {
  return fixed_weight(logit_at(row, id, raw), row.max_x, row.inv_t);
}

__device__ __forceinline__ void load4(const Row& row, int id0, float (&v)[4]) {
  if (row.vectorized && id0 < row.vocab) {
    const float4 f = *reinterpret_cast<const float4*>(row.logits + id0);
    v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = id0 + k < row.vocab ? row.logits[id0 + k] : 0.0f;
  }
}

// One pass over the row: f(tile, first id, its four raw logits) on every thread for every tile (ids past the
// vocabulary are the caller's to skip), so f may use warp collectives.
template <typename F>
__device__ __forceinline__ void for_each_tile(const Row& row, F&& f) {
  const int tiles = static_cast<int>(ceil_div(row.vocab, kTile));
  for (int t0 = 0; t0 < tiles; t0 += kUnroll) {
    float v[kUnroll][4];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) load4(row, (t0 + u) * kTile + 4 * static_cast<int>(threadIdx.x), v[u]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (t0 + u < tiles) f(t0 + u, (t0 + u) * kTile + 4 * static_cast<int>(threadIdx.x), v[u]);
  }
}

__device__ __forceinline__ void add_tile_mass(Shared& s, int tile, uint64_t v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0 && v) atomic_add_u64(&s.tile_mass[tile], v);
}

// Picks the bin holding the last kept key into s.iv. Bins are ranked from the top, each starting at the rank and
// mass before it (iv.above / iv.above_mass plus the bins over it); thread t holds bins 2047 - 4t .. 2044 - 4t.
// shift < 0: the level-0 bins of weights; otherwise bins of 2^shift keys from iv.lo.
__device__ inline void choose_bin(Shared& s, const uint32_t* count, const uint64_t* mass, int bins,
                                  const Interval& iv, const Keep& keep, int shift) {
  uint64_t c[4], m[4];
  Pair own{0, 0};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int bin = kBins - 1 - (4 * static_cast<int>(threadIdx.x) + j);
    c[j] = bin < bins ? count[bin] : 0;
    m[j] = bin < bins ? mass[bin] : 0;
    own += Pair{c[j], m[j]};
  }
  if (threadIdx.x == 0) s.pick = INT_MAX;
  Pair total;
  Pair before = block_exclusive_scan<kThreads>(own, s.scan, total);
  before += Pair{iv.above, iv.above_mass};
  int mine = INT_MAX;
  Pair at{0, 0};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (c[j] && kept(keep, before.count, before.mass)) {
      mine = kBins - 1 - (4 * static_cast<int>(threadIdx.x) + j);
      at = before;
    }
    before += Pair{c[j], m[j]};
  }
  if (mine != INT_MAX) atomicMin(&s.pick, mine);
  __syncthreads();
  if (mine != INT_MAX && mine == s.pick) {
    Interval out{0, 0, at.count, at.mass, count[mine]};
    if (shift < 0) {
      level0_keys(mine, out.lo, out.hi);
    } else {
      out.lo = iv.lo + (static_cast<uint64_t>(mine) << shift);
      out.hi = min(iv.hi, out.lo + (uint64_t{1} << shift) - 1);
    }
    s.iv = out;
  }
  __syncthreads();
}

// One pass over the rank keys of weight >= min_weight (> 0): f(key, weight) for each, and after each tile
// tile_done(tile) on every thread (so it may use warp collectives).
template <typename F, typename G>
__device__ __forceinline__ void for_each_key(const Row& row, uint64_t min_weight, F&& f, G&& tile_done) {
  for_each_tile(row, [&](int tile, int id0, const float (&v)[4]) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (id0 + k >= row.vocab) break;
      const uint64_t w = weight_at(row, id0 + k, v[k]);
      if (w >= min_weight) f(rank_key(w, id0 + k), w);
    }
    tile_done(tile);
  });
}

// One pass: the histogram of the keys in `iv` by 2^shift-wide bins.
__device__ inline void refine(Shared& s, const Row& row, const Interval& iv, int shift) {
  for (int i = threadIdx.x; i < kBins; i += kThreads) s.count[i] = 0, s.mass[i] = 0;
  __syncthreads();
  for_each_key(
      row, key_weight(iv.lo),
      [&](uint64_t key, uint64_t w) {
        if (key < iv.lo || key > iv.hi) return;
        const int bin = static_cast<int>((key - iv.lo) >> shift);
        atomicAdd(&s.count[bin], 1u);
        atomic_add_u64(&s.mass[bin], w);
      },
      [](int) {});
  __syncthreads();
}

// One pass: the keys of `iv` (at most kBuffer) into s.keys, sorted; the tiles' masses of the keys above it.
__device__ inline void collect(Shared& s, const Row& row, const Interval& iv) {
  s.tile_mass[threadIdx.x] = 0;
  if (threadIdx.x == 0) s.fill = 0;
  __syncthreads();
  uint64_t above = 0;
  for_each_key(
      row, key_weight(iv.lo),
      [&](uint64_t key, uint64_t w) {
        if (key > iv.hi) {
          above += w;
        } else if (key >= iv.lo) {
          const unsigned slot = atomicAdd(&s.fill, 1u);
          if (slot < kBuffer) s.keys[slot] = key;
        }
      },
      [&](int tile) {
        add_tile_mass(s, tile, above);
        above = 0;
      });
  __syncthreads();
  const int n = static_cast<int>(min(s.fill, static_cast<unsigned>(kBuffer)));
  sort_descending<kThreads>(s.keys, n);
  if (threadIdx.x == 0) {
    s.buffered = iv;
    s.buffered.count = static_cast<uint64_t>(n);
    s.has_buffer = 1;
  }
  __syncthreads();
}

// The last kept one of the buffered keys: s.cut, s.kept_mass (the mass of keys >= it), s.pick (its index).
__device__ inline void scan_buffer(Shared& s, const Keep& keep) {
  const Interval buf = s.buffered;
  uint64_t w[8];
  Pair own{0, 0};
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const uint64_t i = 8 * threadIdx.x + j;
    w[j] = i < buf.count ? key_weight(s.keys[i]) : 0;
    own.mass += w[j];
  }
  if (threadIdx.x == 0) s.pick = -1;
  Pair total;
  uint64_t before = buf.above_mass + block_exclusive_scan<kThreads>(own, s.scan, total).mass;
  int mine = -1;
  uint64_t at = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const uint64_t i = 8 * threadIdx.x + j;
    if (i < buf.count && kept(keep, buf.above + i, before)) mine = static_cast<int>(i), at = before;
    before += w[j];
  }
  if (mine >= 0) atomicMax(&s.pick, mine);
  __syncthreads();
  if (mine >= 0 && mine == s.pick) {
    s.cut = s.keys[mine];
    s.kept_mass = at + key_weight(s.cut);
  }
  __syncthreads();
}

// The last kept key under `keep` (s.cut) and the mass of keys >= it (s.kept_mass): from pass 2's level-0
// histogram, one pass per 11-bit level until the chosen bin holds at most kBuffer keys, then one pass to collect
// them, unless the keys buffered by an earlier selection already cover it.
__device__ inline void select_cut(Shared& s, const Row& row, const Keep& keep) {
  choose_bin(s, s.count0, s.mass0, kLevel0Bins, Interval{0, kNoLimit, 0, 0, 0}, keep, -1);
  for (;;) {
    const Interval iv = s.iv;
    if (s.has_buffer && iv.lo >= s.buffered.lo && iv.hi <= s.buffered.hi) break;
    if (iv.count <= kBuffer) {
      // When the keys above fit too (top-k with a small k), take them all: a second selection among them (top-p
      // after top-k) then needs no pass.
      const uint64_t with_above = iv.above + iv.count;
      collect(s, row, with_above <= kBuffer ? Interval{iv.lo, kNoLimit, 0, 0, with_above} : iv);
      break;
    }
    const int shift = max(0, 64 - __clzll(static_cast<long long>(iv.hi - iv.lo)) - 11);
    refine(s, row, iv, shift);
    choose_bin(s, s.count, s.mass, kBins, iv, keep, shift);
  }
  scan_buffer(s, keep);
}

// The first id, in id order, whose inclusive prefix of kept weight (keys >= cut) exceeds target: the tile from
// the tile masses, then a scan of that tile. `fallback` only if the masses disagree (they cannot).
__device__ inline int32_t draw(Shared& s, const Row& row, uint64_t cut, uint64_t target, int32_t fallback) {
  const int tiles = static_cast<int>(ceil_div(row.vocab, kTile));
  const uint64_t own = static_cast<int>(threadIdx.x) < tiles ? s.tile_mass[threadIdx.x] : 0;
  if (threadIdx.x == 0) s.pick = -1, s.token = fallback;
  Pair total;
  const uint64_t before = block_exclusive_scan<kThreads>(Pair{0, own}, s.scan, total).mass;
  if (own && before <= target && target < before + own) {
    s.pick = static_cast<int>(threadIdx.x);
    s.target = target - before;
  }
  __syncthreads();
  const int tile = s.pick;
  if (tile < 0) return fallback;
  const uint64_t in_tile = s.target;
  const int id0 = tile * kTile + 4 * static_cast<int>(threadIdx.x);
  float v[4];
  load4(row, id0, v);
  uint64_t w[4], mine = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    w[k] = id0 + k < row.vocab ? weight_at(row, id0 + k, v[k]) : 0;
    if (w[k] && rank_key(w[k], id0 + k) < cut) w[k] = 0;
    mine += w[k];
  }
  uint64_t running = block_exclusive_scan<kThreads>(Pair{0, mine}, s.scan, total).mass;
  if (mine && running <= in_tile && in_tile < running + mine) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      running += w[k];
      if (running > in_tile) {
        s.token = id0 + k;
        break;
      }
    }
  }
  __syncthreads();
  return s.token;
}

}  // namespace narwhal::ops::cuda::sampling
