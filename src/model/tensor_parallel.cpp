// tp_dims: the per-rank split of heads, intermediate sizes and vocabulary; local_config: the config they imply.
#include "model/tensor_parallel.h"

#include "core/error.h"
#include "model/expert_placement.h"

namespace narwhal {

TpDims tp_dims(const ModelConfig& c, TpSlice slice) {
  NW_CHECK(slice.size >= 1 && slice.rank >= 0 && slice.rank < slice.size, "TP rank ", slice.rank, " of ", slice.size,
           " is out of range");
  NW_CHECK(slice.ep_size >= 1 && slice.size % slice.ep_size == 0, "--ep-size ", slice.ep_size,
           " does not divide --tp-size ", slice.size);
  NW_CHECK(slice.dp_size >= 1 && slice.size % slice.dp_size == 0, "--dp-size ", slice.dp_size,
           " does not divide --tp-size ", slice.size);
  NW_CHECK(slice.moe_a2a == MoeA2aBackend::kNone || slice.ep_size == slice.size, "--moe-a2a-backend deepep needs ",
           "--ep-size equal to --tp-size (whole experts per rank), got --ep-size ", slice.ep_size, " with --tp-size ",
           slice.size);
  const int moe_tp = slice.size / slice.ep_size;  // the ranks that share each expert (SGLang's moe_tp_size)
  const int attn = slice.attn_size(), attn_rank = slice.attn_rank();
  const auto split = [&](int64_t total, const char* field) {
    return shard(total, slice.rank, slice.size, cat("config.json's ", field));
  };
  bool dense_layer = false;
  for (int layer = 0; layer < c.num_hidden_layers + c.num_nextn_predict_layers; ++layer)
    dense_layer = dense_layer || !c.is_moe_layer(layer);
  const bool moe = c.n_routed_experts > 0;
  TpDims d;
  d.slice = slice;
  d.heads = shard(c.num_attention_heads, attn_rank, attn, "config.json's num_attention_heads");
  // A dimension no layer uses is not split (and may be anything).
  d.intermediate = dense_layer ? split(c.intermediate_size, "intermediate_size") : Shard{0, c.intermediate_size};
  d.moe_intermediate = moe ? shard(c.moe_intermediate_size, slice.rank % moe_tp, moe_tp,
                                   "config.json's moe_intermediate_size")
                            : Shard{0, c.moe_intermediate_size};
  if (moe) {
    const ExpertPlacement placement =
        ExpertPlacement::contiguous(c.n_routed_experts, slice.ep_size, "config.json's n_routed_experts at this --ep-size");
    d.routed_experts = placement.experts_of(slice.rank / moe_tp);
    d.expert_index = placement.local_index(slice.rank / moe_tp);
    for (int64_t e = 0; e < c.n_routed_experts; ++e) d.expert_rank.push_back(placement.ep_rank_of(e));
  }
  const int64_t shared = c.n_shared_experts * c.moe_intermediate_size;
  d.shared_intermediate = moe && shared > 0 ? shard(shared, slice.rank % moe_tp, moe_tp,
                                                    "config.json's n_shared_experts x moe_intermediate_size")
                                              : Shard{0, shared};
  // deepep: every rank runs the shared experts for its own slice of the tokens (the dispatch's self block).
  d.shared_token_stride = slice.deepep() ? 1 : slice.ep_size;
  d.shared_token_offset = slice.deepep() ? 0 : slice.rank / moe_tp;
  // Split, a shard is a whole number of 8-row groups: its rows of logits stay 16-byte aligned for the GPU's GEMMs.
  const int64_t per_rank = attn == 1 ? c.vocab_size : ((c.vocab_size + attn - 1) / attn + 7) / 8 * 8;
  d.vocab = {attn_rank * per_rank, per_rank};
  return d;
}

ModelConfig local_config(const ModelConfig& c, const TpDims& d) {
  ModelConfig local = c;
  local.num_attention_heads = static_cast<int>(d.heads.size);
  local.intermediate_size = d.intermediate.size;
  local.moe_intermediate_size = d.moe_intermediate.size;
  return local;
}

}  // namespace narwhal
