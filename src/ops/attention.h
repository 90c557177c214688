// Multi-head Latent Attention over the paged latent cache, in DeepSeek's two equivalent forms.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace narwhal::ops {

struct MlaShape {
  int64_t heads = 0;
  int64_t nope_dim = 0;  // qk_nope_head_dim
  int64_t rope_dim = 0;  // qk_rope_head_dim
  int64_t v_dim = 0;     // v_head_dim
  int64_t kv_lora = 0;   // kv_lora_rank
  float softmax_scale = 1.0f;
};

// One sequence of the step: its new tokens are rows [token_offset, token_offset + new_len) of q and out,
// at positions prefix_len .. prefix_len + new_len - 1; its cache pages are page_table[0..].
struct MlaSequence {
  int64_t token_offset = 0;
  int64_t prefix_len = 0;
  int64_t new_len = 0;
  const int32_t* page_table = nullptr;
  // A speculative tree: new token j's parent among the new tokens (parents[j] < j; -1 a root), and j sees the
  // prefix, its ancestors and itself instead of every new token before it. Null: causal.
  const int32_t* parents = nullptr;
};

// The paged latent cache of one layer: [num_pages, page_size, kv_lora + rope_dim], each token's
// normalised compressed kv followed by its rotated rope key.
struct LatentCache {
  Tensor pages;
  int64_t page_size = 0;
  float* token(const int32_t* page_table, int64_t position) const {
    return pages.f32() + (static_cast<int64_t>(page_table[position / page_size]) * page_size + position % page_size) *
                             pages.size(2);
  }
};

// Writes rows [token_offset, +new_len) of latent ([T, kv_lora + rope_dim]) at the sequence's new positions.
void mla_store_latents(const Tensor& latent, const MlaSequence* seqs, int64_t num_seqs, const LatentCache& cache);

// Causal attention of each sequence's new tokens over its whole cache (prefix + new), q [T, H, nope + rope]
// (rope slice rotated), kv_b [H * (nope + v), kv_lora] (nn.Linear layout of kv_b_proj), out [T, H, v].
// Non-absorbed form (prefill): decompresses every cached latent into per-head K and V with kv_b.
void mla_attention_decompressed(const Tensor& q, const Tensor& kv_b, const LatentCache& cache,
                                const MlaSequence* seqs, int64_t num_seqs, const MlaShape& shape, Tensor& out);
// Absorbed form (decode): folds W_UK into q and applies W_UV after attending over the latents directly,
// an MQA with one kv_lora + rope wide head. Same inputs, same result up to rounding.
void mla_attention_absorbed(const Tensor& q, const Tensor& kv_b, const LatentCache& cache,
                            const MlaSequence* seqs, int64_t num_seqs, const MlaShape& shape, Tensor& out);

}  // namespace narwhal::ops
