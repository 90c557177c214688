// Sampling on the GPU: a batch's tokens and asked-for logprobs, the very tokens the CPU op ops::sample_tokens picks
// from the same logits (ops/sampling.h states the algorithm; ops/sampling_math.h the arithmetic both share).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/tensor.h"
#include "ops/sampling.h"

namespace narwhal::ops::cuda {

constexpr int64_t kMaxSamplingRows = 65535;

// Device bytes sample_tokens needs for `rows` rows of `vocab` logits: the candidates for the top logprobs
// (20 * 4 * ceil(vocab / 2048) keys of 8 bytes a row: 40 KB a row at V = 129,280).
size_t sampling_workspace_bytes(int64_t rows, int64_t vocab);

// logits [R, V] F32 on the device, 1 <= V <= kMaxSamplingVocab (2^20: an id is 20 bits of a rank key); `batch`
// in device memory (build it on the host, e.g. runtime/sampler.h, and copy both arrays), num_rows <=
// kMaxSamplingRows; `out` device tensors sized for num_rows (SampledRows::allocate). A row that breaks the
// SamplingRow contract (logits_row outside [0, R), adjustments outside the list, temperature < 0, top_p outside
// (0, 1], min_p outside [0, 1], top_logprobs outside 0 .. 20) gets token -1 and nothing else; the device cannot
// throw, and it never reads out of bounds (unsorted adjustments are the caller's bug: some may be missed).
// No host sync; the grid and shared memory depend only on num_rows, V and whether any adjustments exist: safe
// to capture in a CUDA graph.
//
// Penalties, logit_bias and masks arrive as each row's sparse list of adjusted tokens, built on the host from the
// sequence's output counts, so no device-side count table is kept: only rows with penalties (or biases, masks)
// upload anything, 16 bytes per distinct token, and the kernel marks them in a V-bit shared-memory bitmap (a
// binary search of the row's list for marked ids only).
//
// One CTA of 512 threads per row (two per SM: 75 KB of shared memory plus V / 8 bytes of bitmap); tiles of 2048
// ids, four consecutive ones per thread. Passes over the row, each reading its V * 4 bytes (517 KB at V =
// 129,280) and recomputing the weights' exp (FP64, ~25 operations a weight) rather than storing them:
//   1. every row: the greedy key of the adjusted logits, the raw log-sum-exp, each thread's best raw key. Greedy
//      rows end here, or after one more pass that collects the top-logprob candidates;
//   2. sampled rows: every weight, their mass (per tile too) under min-p, the top-logprob candidates, and for
//      top-k / top-p a level-0 histogram (1184 bins: 32 per octave of weight). Temperature / min-p rows end here;
//   3. top-k / top-p: a radix select over the 64-bit rank keys (histograms of counts and exact masses in shared
//      memory). When the level-0 bin holding the cut has <= 4096 keys, one pass collects them (with all keys above
//      when those fit too) for a sort and scan in shared memory; else one pass per 11-bit level first (all-equal
//      or near-equal logits: one or two). Top-k then top-p selects twice, the second time from the keys already
//      collected when k is small;
//   then the draw: a scan of the per-tile kept masses, and one tile (8 KB).
// So, typically: greedy 1 pass, temperature / min-p 2, top-k / top-p / both 3. At B = 256, V = 129,280 three
// passes read 397 MB (~85 us of HBM at 4.8 TB/s) and compute 2 x 33 M weights (~130 us of FP64); the test
// CudaSampling.TimeOfOneCall prints the measured time.
void sample_tokens(const Tensor& logits, const SamplingBatch& batch, SampledRows& out, void* workspace,
                   size_t workspace_bytes, cudaStream_t stream);

}  // namespace narwhal::ops::cuda
