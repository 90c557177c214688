// MoE token dispatch for expert parallelism (DeepEP's pattern): each rank's send order of its tokens to the ranks
// holding their experts, the rows packed for the all_to_all with their top-k, and the sum of the rows sent back.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace narwhal::ops {

// Over one rank's T routed tokens and N ranks (ops/cuda/moe_dispatch.h runs the same on the GPU):
//   topk_ids [T, k] I32 (ids outside [0, E) choose nothing), expert_rank [E] I32 (the rank holding each expert,
//   in [0, N): ExpertPlacement's table) -> for every destination d, the tokens going there in token order:
//   counts [N] I32; send_slot [T, N] I32, token t's position in d's list or -1; send_token [N, T] I32, d's i-th
//   token in row d for i < counts[d] (the rest of the row is left as it was).
// A token goes to d when one of its ids is an expert of d, and always to `self`, its own rank, which runs the
// shared experts over its own block: so the self block holds every token, in order.
void moe_dispatch_layout(const Tensor& topk_ids, const Tensor& expert_rank, int self, Tensor& counts,
                         Tensor& send_slot, Tensor& send_token);

// The destination blocks of pack's and combine's buffers: capacity 0 packs them back to back (block d starts at
// counts[0] + ... + counts[d - 1]: normal mode, sized by the exchanged counts); capacity > 0 puts block d at row
// d * capacity (low latency: one fixed-size all_to_all).
//
// Packs block d: its tokens' rows of x [T, H] (F32 or BF16) into send_x [rows, H] (x's dtype), their ids into
// send_ids [rows, k] I32 with the experts of ranks other than d as -1, and their weights into send_weights [rows, k]
// F32 with 0 there. With capacity > 0, rows past counts[d] of a block get ids -1 and weights 0 (so the count travels
// in the buffer: such rows route nowhere) and their send_x rows are left as they were.
void moe_dispatch_pack(const Tensor& x, const Tensor& topk_ids, const Tensor& topk_weights, const Tensor& expert_rank,
                       const Tensor& counts, const Tensor& send_token, int64_t capacity, Tensor& send_x,
                       Tensor& send_ids, Tensor& send_weights);

// out [T, H] = for each token, the sum over destinations d in rank order with send_slot[t, d] >= 0 of
// returned[block d's start + send_slot[t, d]] (returned [rows, H] and out of one dtype, F32 or BF16; F32
// accumulation, rounded once; blocks as pack's). Overwrites out.
void moe_dispatch_combine(const Tensor& returned, const Tensor& send_slot, const Tensor& counts, int64_t capacity,
                          Tensor& out);

}  // namespace narwhal::ops
