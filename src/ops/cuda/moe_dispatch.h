// MoE token dispatch on the GPU (DeepEP's pattern over a Communicator's all_to_all): the per-destination send order,
// the packed rows with their top-k, and the per-token sum of the rows sent back. ops/moe_dispatch.h is the CPU
// reference and says what each op computes; these take the same arguments as device tensors.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace narwhal::ops::cuda {

// What the kernels take (anything else is refused naming the tensor): N = counts.size(0) ranks, 1 <= N <= 256;
// T < 2^31 tokens (T = 0 still writes the counts, all zero); top-k 1 to 32;
// rows of H BF16 values with H % 8 == 0 (16-byte copies); every index tensor I32 and contiguous. Grids depend on
// T, N, capacity and H only, and nothing syncs the host: CUDA-graph capturable at fixed shapes.

// topk_ids [T, k], expert_rank [E] -> counts [N], send_slot [T, N], send_token [N, T]. One CTA per destination
// scans the tokens in order, so the lists are in token order and the result is deterministic.
void moe_dispatch_layout(const Tensor& topk_ids, const Tensor& expert_rank, int self, Tensor& counts,
                         Tensor& send_slot, Tensor& send_token, cudaStream_t stream);

// x [T, H] BF16 -> send_x [rows, H] BF16, send_ids [rows, k] I32, send_weights [rows, k] F32 (rows = N * capacity
// when capacity > 0). A warp per (destination, row) pair; block starts from the device counts.
void moe_dispatch_pack(const Tensor& x, const Tensor& topk_ids, const Tensor& topk_weights, const Tensor& expert_rank,
                       const Tensor& counts, const Tensor& send_token, int64_t capacity, Tensor& send_x,
                       Tensor& send_ids, Tensor& send_weights, cudaStream_t stream);

// returned [rows, H] BF16 -> out [T, H] BF16: each token's rows in rank order, F32 accumulation, rounded once (the
// same order as the CPU reference, so the same bits). A CTA per (token, 1024 columns).
void moe_dispatch_combine(const Tensor& returned, const Tensor& send_slot, const Tensor& counts, int64_t capacity,
                          Tensor& out, cudaStream_t stream);

// Normal mode's one host sync: the device I32 counts (any shape) copied to the host once the stream has them.
std::vector<int64_t> dispatch_counts_to_host(const Tensor& counts, cudaStream_t stream);

}  // namespace narwhal::ops::cuda
