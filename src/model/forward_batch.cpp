// ForwardBatch assembly (chains and draft trees) and KvCache allocation, with a tree's kept-path compaction.
#include "model/forward_batch.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace narwhal {

void ForwardBatch::add_sequence(const std::vector<int32_t>& new_tokens, int64_t prefix_len,
                                std::vector<int32_t> page_table, int64_t draft_len, int32_t next_token) {
  for (size_t i = 0; i < new_tokens.size(); ++i) {
    token_ids.push_back(new_tokens[i]);
    positions.push_back(static_cast<int32_t>(prefix_len + static_cast<int64_t>(i)));
  }
  seqs.push_back({prefix_len, static_cast<int64_t>(new_tokens.size()), std::move(page_table), draft_len, next_token, {}});
}

void ForwardBatch::add_tree(const std::vector<int32_t>& tokens, const std::vector<int32_t>& parents,
                            int64_t prefix_len, std::vector<int32_t> page_table) {
  NW_CHECK(!tokens.empty() && parents.size() == tokens.size() && parents[0] == -1,
           "add_tree: one parent per token, -1 for the first (the pending token)");
  std::vector<int64_t> depth(tokens.size(), 0);
  for (size_t j = 0; j < tokens.size(); ++j) {
    NW_CHECK(parents[j] >= -1 && (parents[j] < 0 || static_cast<size_t>(parents[j]) < j), "add_tree: token ", j,
             "'s parent ", parents[j], " must be an earlier token (or -1, a root)");
    if (parents[j] >= 0) depth[j] = depth[static_cast<size_t>(parents[j])] + 1;
    token_ids.push_back(tokens[j]);
    positions.push_back(static_cast<int32_t>(prefix_len + depth[j]));
  }
  const int64_t n = static_cast<int64_t>(tokens.size());
  seqs.push_back({prefix_len, n, std::move(page_table), n - 1, -1, parents});
}

void KvCache::keep_tree_path(const std::vector<int32_t>& page_table, int64_t prefix_len,
                             const std::vector<int64_t>& path) {
  for (size_t i = 0; i < path.size(); ++i)
    NW_CHECK(path[i] >= static_cast<int64_t>(i) && (i == 0 || path[i] > path[i - 1]) &&
                 (prefix_len + path[i]) / page_size_ < static_cast<int64_t>(page_table.size()),
             "keep_tree_path: node ", path[i], " at ", i, " (nodes ascend, within the pages)");
  for (int l = 0; l < num_layers(); ++l) {
    const ops::LatentCache cache = layer(l);
    const size_t row_bytes = static_cast<size_t>(cache.pages.size(2)) * sizeof(float);
    // Ascending: a row moves down to slot i, which no later node of the path sits in (path[k] >= k > i).
    for (size_t i = 0; i < path.size(); ++i)
      if (path[i] != static_cast<int64_t>(i))
        std::memmove(cache.token(page_table.data(), prefix_len + static_cast<int64_t>(i)),
                     cache.token(page_table.data(), prefix_len + path[i]), row_bytes);
  }
}

bool ForwardBatch::all_decode() const {
  return std::all_of(seqs.begin(), seqs.end(), [](const SequenceInfo& s) { return s.decodes(); });
}

std::vector<int64_t> ForwardBatch::padded_rows(int64_t len) const {
  std::vector<int64_t> rows;
  int64_t at = 0;
  for (const SequenceInfo& s : seqs) {
    for (int64_t i = 0; i < s.new_len; ++i) rows.push_back(at + i);
    at += s.step_rows(len);
  }
  return rows;
}

KvCache::KvCache(const ModelConfig& config, int num_layers, int64_t num_pages, int64_t page_size)
    : page_size_(page_size), num_pages_(num_pages) {
  NW_CHECK(page_size > 0 && num_pages > 0, "KvCache: page_size and num_pages must be positive");
  for (int i = 0; i < num_layers; ++i)
    layers_.push_back(Tensor::zeros(DType::kF32, {num_pages, page_size, config.kv_cache_dim()}));
}

}  // namespace narwhal
