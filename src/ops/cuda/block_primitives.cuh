// Block-wide primitives for kernels that give a row one CTA of kThreads threads (a multiple of 32): a reduction,
// an exclusive prefix sum of count / mass pairs, a bitonic sort of 64-bit keys in shared memory. Each has
// barriers, so every thread of the block calls it.
#pragma once

#include <cstdint>

#include "ops/cuda/common.cuh"

namespace narwhal::ops::cuda {

// A count and a mass, summed together by the scans.
struct Pair {
  uint64_t count, mass;
  __device__ Pair& operator+=(const Pair& o) {
    count += o.count;
    mass += o.mass;
    return *this;
  }
};

__device__ __forceinline__ void atomic_add_u64(uint64_t* p, uint64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

// The reduction of v over the block by `op` (commutative), in every thread; scratch holds kThreads / 32.
template <int kThreads, typename T, typename Op>
__device__ T block_reduce(T v, T* scratch, Op op) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < kThreads / 32; ++w) r = op(r, scratch[w]);
  __syncthreads();
  return r;
}

// Exclusive prefix sum over the threads in index order; `total` gets the sum of all.
template <int kThreads>
__device__ Pair block_exclusive_scan(Pair v, Pair* scratch, Pair& total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  Pair inclusive = v;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const Pair o{__shfl_up_sync(0xffffffffu, inclusive.count, offset),
                 __shfl_up_sync(0xffffffffu, inclusive.mass, offset)};
    if (lane >= offset) inclusive += o;
  }
  if (lane == 31) scratch[warp] = inclusive;
  __syncthreads();
  Pair before{inclusive.count - v.count, inclusive.mass - v.mass};
  total = {0, 0};
  for (int w = 0; w < kThreads / 32; ++w) {
    if (w < warp) before += scratch[w];
    total += scratch[w];
  }
  __syncthreads();
  return before;
}

// Sorts keys[0, n) descending by a bitonic network, padding to a power of two with zeros (the caller's keys must
// rank above 0, and the array hold the padded size).
template <int kThreads>
__device__ void sort_descending(uint64_t* keys, int n) {
  int size = 1;
  while (size < n) size <<= 1;
  for (int i = n + threadIdx.x; i < size; i += kThreads) keys[i] = 0;
  __syncthreads();
  for (int k = 2; k <= size; k <<= 1)
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = threadIdx.x; i < size; i += kThreads) {
        const int l = i ^ j;
        if (l <= i) continue;
        const uint64_t a = keys[i], b = keys[l];
        if ((i & k) == 0 ? a < b : a > b) {
          keys[i] = b;
          keys[l] = a;
        }
      }
      __syncthreads();
    }
}

}  // namespace narwhal::ops::cuda
