// RadixCache: a prefix tree over token ids, at page granularity, naming the KvPool pages that hold them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "runtime/kv_pool.h"

namespace narwhal {

// Every node holds whole pages: its `tokens` are `pages.size() * page_size` ids and pages[i] holds the
// latents of tokens [i * page_size, (i + 1) * page_size) of the node. A partial last page is never
// cached, since the sequence that owns it keeps writing into it (SGLang does the same for page_size > 1).
// The cache holds one KvPool reference per page; whoever receives pages from match() holds one more.
// Eviction frees least recently used pages that only the cache holds, from the leaves up.
// Disabled (--disable-radix-cache), it matches nothing and caches nothing.
class RadixCache {
 public:
  RadixCache(KvPool& pool, bool enabled);
  ~RadixCache();
  RadixCache(const RadixCache&) = delete;
  RadixCache& operator=(const RadixCache&) = delete;

  bool enabled() const { return enabled_; }
  // Pages of the longest cached page-aligned prefix of `tokens`, each retained for the caller.
  // Marks the matched path as used now.
  std::vector<int32_t> match(std::span<const int32_t> tokens);
  // Length in tokens of that prefix, changing nothing (for ordering the waiting queue).
  int64_t match_length(std::span<const int32_t> tokens) const;
  // Caches the full pages of `tokens`, whose latents are in `pages` (page i holds page i's tokens), and
  // marks the path as used now. Afterwards `pages` names the cache's page wherever the cache already
  // held those tokens: the caller's duplicates are released and the cache's pages retained instead.
  void insert(std::span<const int32_t> tokens, std::vector<int32_t>& pages);
  // Frees up to `num_pages` pages that only the cache holds, least recently used leaves first, each
  // leaf from its end. Returns how many it freed.
  int64_t evict(int64_t num_pages);
  int64_t cached_pages() const { return cached_pages_; }

 private:
  struct Node;
  using Key = std::vector<int32_t>;  // a child's first page of tokens
  Key page_key(std::span<const int32_t> tokens, int64_t page) const;
  // How many leading pages of `node` equal the pages of `tokens` starting at page `first`.
  int64_t common_pages(const Node& node, std::span<const int32_t> tokens, int64_t first, int64_t limit) const;
  // Cuts `node` after `pages` pages; returns the new upper part, which takes the node's place.
  Node* split(Node* node, int64_t pages);
  void evict_tail(Node* leaf, int64_t want, int64_t& freed);

  KvPool& pool_;
  bool enabled_;
  int64_t page_size_;
  std::unique_ptr<Node> root_;
  uint64_t clock_ = 0;  // logical time of the last match or insert, for LRU
  int64_t cached_pages_ = 0;
};

}  // namespace narwhal
