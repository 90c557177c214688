// Tensor parallelism's shapes: which rank of how many (TpSlice), and the part of every split dimension that rank
// holds (TpDims), computed once from the config; the loader cuts by them and the model code reads them.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"
#include "parallel/parallel_config.h"

namespace narwhal {

// This rank's place in its TP group (SGLang's tp_rank, tp_size), and how many expert-parallel groups the group's
// routed experts are split over (SGLang's ep_size; 1: none).
// With DP attention (dp_size > 1, SGLang's --enable-dp-attention) attention and the vocabulary split over the
// size / dp_size ranks of a DP group (rank % that), while the MLP and MoE stay split over all `size` ranks.
// With --moe-a2a-backend deepep (ep_size == size) the MoE layers move tokens by all_to_all (model/moe_a2a.h).
struct TpSlice {
  int rank = 0;
  int size = 1;
  int ep_size = 1;
  int dp_size = 1;
  MoeA2aBackend moe_a2a = MoeA2aBackend::kNone;
  DeepEpMode deepep_mode = DeepEpMode::kAuto;
  int attn_size() const { return size / dp_size; }
  int attn_rank() const { return rank % attn_size(); }
  // Whether the MoE layers dispatch tokens by all_to_all (DeepEP's pattern); never at one rank.
  bool deepep() const { return moe_a2a == MoeA2aBackend::kDeepEp && size > 1; }
};

// What one TP rank holds of the dimensions TP splits, as SGLang shards DeepSeek without expert parallelism:
//  - attention heads: q_proj / q_b_proj and kv_b_proj rows, o_proj columns (q_a, kv_a and the latent cache are
//    replicated: every rank needs the whole latent of every token);
//  - the dense MLP's intermediate dimension, and every routed expert's: gate / up rows, down columns; with expert
//    parallelism (ep_size > 1, SGLang's EP-MoE) rank r holds the experts ExpertPlacement gives EP rank
//    r / (size / ep_size), whole but for their intermediate dimension, split over the size / ep_size ranks of its
//    MoE-TP group (r % that);
//  - the shared experts' n_shared x moe_intermediate as one MLP, split as the routed experts' intermediate
//    dimension is (over the MoE-TP group: all ranks without EP). With EP every EP group holds them, and EP rank e
//    runs them for the tokens t with t % ep_size == e, so the groups share that work and each token gets it once;
//    with deepep each rank runs them (whole) for the tokens of its own slice;
//  - the vocabulary: embed_tokens and lm_head rows.
// Norms, the router and MTP's eh_proj are replicated.
struct TpDims {
  TpSlice slice;
  Shard heads;
  Shard intermediate;
  Shard moe_intermediate;
  // The routed experts whose weights this rank holds, in the order it stacks them (all of them without EP), and
  // for every routed expert its index there, -1 where another rank holds it: ExpertPlacement's rows for this
  // rank's EP rank.
  std::vector<int32_t> routed_experts;
  std::vector<int32_t> expert_index;
  // For every routed expert, the EP rank holding it (ExpertPlacement's table). With deepep the EP rank is the TP
  // rank: where the dispatch sends a token that chose it.
  std::vector<int32_t> expert_rank;
  Shard shared_intermediate;
  int shared_token_stride = 1, shared_token_offset = 0;  // the tokens whose shared experts this rank runs
  // ceil(vocab_size / size) rows per rank, rounded up to a multiple of 8 when split: the rows past vocab_size (the
  // last ranks') are zeros, so every vocabulary splits (SGLang pads its vocab-parallel tables to 64). Their logits
  // are dropped when the shards are joined.
  Shard vocab;
};

// Throws an Error naming the config.json field when the heads or an intermediate size that the model uses do not
// split evenly over slice.size ranks, or the routed experts over slice.ep_size groups; naming the flags for deepep
// with ep_size != size.
TpDims tp_dims(const ModelConfig& config, TpSlice slice);

// The config as one rank's model code sees it: num_attention_heads, intermediate_size and moe_intermediate_size
// divided by the TP size. vocab_size stays whole: the logits are joined whole before anyone reads them.
ModelConfig local_config(const ModelConfig& config, const TpDims& dims);

// s scaled by k: the rows of `s`'s heads in a tensor of k rows per head.
inline Shard scaled(const Shard& s, int64_t k) { return {s.begin * k, s.size * k}; }

}  // namespace narwhal
