// The MTP layer's input on the GPU in one kernel: each token's embedding and the hidden state before it, each
// RMS-normed by its own weight, side by side (eh_proj's input columns). The CPU reference is ops::embedding then
// ops::rms_norm on each half (DeepSeekModel::forward_mtp).
#pragma once

#include <cuda_runtime.h>

#include "core/tensor.h"

namespace narwhal::ops::cuda {

// joined[t] = [enorm(table[ids[t]]) | hnorm(hidden[t])]: ids [T] I32 (each in [0, rows of table): the whole
// vocabulary, not a TP rank's shard), table [V, H] BF16, hidden [T, H] BF16, enorm and hnorm [H] BF16, joined [T, 2H]
// BF16; H a multiple of 8, at most 8192. Each half is normed in F32 (sum of squares over H, rsqrt(mean + eps), times
// the weight) and rounded once, as add_rms_norm and rms_norm_rows round. A CTA per token; no host sync.
void mtp_input(const Tensor& ids, const Tensor& table, const Tensor& hidden, const Tensor& enorm, const Tensor& hnorm,
               float eps, Tensor& joined, cudaStream_t stream);

}  // namespace narwhal::ops::cuda
