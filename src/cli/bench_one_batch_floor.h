// bench-one-batch's decode floor: the bytes one GPU must read in one decode step, from the config and the parallel
// layout alone (host arithmetic, so that tests/cli checks it without a GPU).
#pragma once

#include <cstdint>

#include "model/model_config.h"
#include "model/tensor_parallel.h"

namespace narwhal {

// One GPU's reads in a decode step: the weights it holds but the embedding table (only its tokens' rows) and the
// routed experts (only those its tokens pick: E(1 - (1 - k/E)^T) of E under uniform routing, for T tokens), and its
// own DP group's latent cache.
struct DecodeStepBytes {
  double weights = 0, experts = 0, kv = 0;
  double total() const { return weights + experts + kv; }
};

// A decode step in which each of slice.dp_size DP groups runs `batch` sequences of `context` keys, read on TP rank
// `slice` (every rank holds an equal share; TpSlice{} is one GPU). The shares are tp_dims': attention's heads and the
// vocabulary split over the slice.attn_size() ranks of a DP group, q_a, kv_a, the router and the latent cache whole
// on each; the dense MLP split over all slice.size ranks, the routed experts' intermediate dimension too, or their
// ids over slice.ep_size EP groups (the shared experts then split within an EP group only). The MoE layers run every
// group's tokens (batch x dp_size). FP8 where the GPU keeps a checkpoint's FP8 (fp8_kernels_fit): a byte per weight
// and an F32 scale per 128 x 128 block; BF16 elsewhere.
DecodeStepBytes decode_step_bytes(const ModelConfig& config, const TpSlice& slice, int64_t batch, int64_t context);

}  // namespace narwhal
