// ForwardBatch assembly and KvCache allocation.
#include "model/forward_batch.h"

#include "core/error.h"

namespace narwhal {

void ForwardBatch::add_sequence(const std::vector<int32_t>& new_tokens, int64_t prefix_len,
                                std::vector<int32_t> page_table, int64_t draft_len, int32_t next_token) {
  for (size_t i = 0; i < new_tokens.size(); ++i) {
    token_ids.push_back(new_tokens[i]);
    positions.push_back(static_cast<int32_t>(prefix_len + static_cast<int64_t>(i)));
  }
  seqs.push_back({prefix_len, static_cast<int64_t>(new_tokens.size()), std::move(page_table), draft_len, next_token});
}

KvCache::KvCache(const ModelConfig& config, int num_layers, int64_t num_pages, int64_t page_size)
    : page_size_(page_size), num_pages_(num_pages) {
  NW_CHECK(page_size > 0 && num_pages > 0, "KvCache: page_size and num_pages must be positive");
  for (int i = 0; i < num_layers; ++i)
    layers_.push_back(Tensor::zeros(DType::kF32, {num_pages, page_size, config.kv_cache_dim()}));
}

}  // namespace narwhal
