// DeepEP's pattern for the MoE layers (--moe-a2a-backend deepep): the per-step arithmetic every rank derives alike
// from what all of them hold, the row slice a rank dispatches and the all_to_all's capacity.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/forward_batch.h"
#include "model/tensor_parallel.h"
#include "parallel/parallel_config.h"

namespace narwhal {

// At a MoE layer with deepep (ep_size == tp_size: every rank holds E / N whole experts and the whole shared experts),
// the rows an attention group holds alike on its A ranks (the TP group's without DP attention, a DP group's with it)
// are cut into A slices of `chunk` rows (the last ones shorter or empty). Each rank
//   1. routes its slice; ops::moe_dispatch_layout gives each token's destinations (the ranks of its experts, and
//      always its own rank, whose block is then the whole slice in order);
//   2. sends every (token, destination) pair once: the hidden row, its top-k ids with other ranks' experts as -1 and
//      their weights (three all_to_alls over the TP group: rows, ids, weights);
//   3. runs its experts over the rows it received (ops::moe_experts with the placement's masking), the shared
//      experts over its own block, and sends each row's weighted partial sum back (one all_to_all);
//   4. sums each token's partials in rank order (ops::moe_dispatch_combine), and all_gathers the slices over the
//      attention group (padded to chunk), so every rank again holds its group's rows. No all_reduce follows.
// Normal mode first exchanges the per-destination counts (an all_to_all of N I32), then moves exactly
// sum(counts) rows each way: a GPU must read the counts on the host (one D2H copy and sync per layer), so only eager
// steps can run it. Low-latency mode sends every destination a fixed block of `capacity` rows (the largest slice of
// any rank, which every rank knows from the batch's token counts): no counts to exchange, no host sync, so decode
// graphs capture it with NCCL. Per rank and layer it moves N * capacity * (2H + 8k) bytes out and N * capacity * 2H
// back in BF16, padding included, where normal mode moves sum(counts) * (2H + 8k) out and sum(counts) * 2H back
// (sum(counts) <= slice * (1 + min(k, N - 1)): each token once per destination). DeepEP's RDMA low-latency kernels
// size their buffers by a capacity too, but write only real rows, one per (token, chosen expert), and signal the
// counts: k * (H + H / 32) bytes per token out (FP8 with its scales) and k * 2H back. An NCCL all_to_all cannot
// skip the padding, so ours moves N * capacity rows where normal mode moves sum(counts); at decode sizes (a few rows
// of capacity) that is little next to the launches and the host sync, which the capture saves.
struct MoeA2aStep {
  bool low_latency = false;
  Shard rows;            // this rank's slice of its attention group's rows
  int64_t chunk = 0;     // rows per slice of this group (the all_gather pads every slice to it)
  int64_t capacity = 0;  // low latency: rows per destination block (the largest slice of any rank); 0 in normal mode
  int64_t first_row = 0;  // the slice's first row among every group's rows stacked in group order
};

// group_rows: every attention group's rows this step, in group order (ForwardBatch::dp_tokens with DP attention, the
// step's token count alone without); `group` is this rank's, of `attn_size` ranks, `attn_rank` its place there.
// `decode_only` (every rank's step is a decode, every_rank_decodes) resolves kAuto: low latency when set.
MoeA2aStep moe_a2a_step(DeepEpMode mode, bool decode_only, const std::vector<int64_t>& group_rows, int group,
                        int attn_size, int attn_rank);

// TpDims::expert_rank as the dispatch ops take it: a host I32 tensor [E].
Tensor expert_rank_tensor(const TpDims& dims);

// Whether every rank of the TP group runs a decode step (one new token per sequence): without DP attention every
// rank runs this batch; with it, ForwardBatch::dp_decode says so for every group.
bool every_rank_decodes(const ForwardBatch& batch, bool dp_attention);

}  // namespace narwhal
