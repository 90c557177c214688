// KvPool: which pages of the paged MLA latent cache are free, and how many holders each used page has.
#pragma once

#include <cstdint>
#include <vector>

namespace narwhal {

// Pages are reference counted: a sequence holds one reference to every page in its page table, and the
// RadixCache holds one to every page it caches. A page returns to the free list when its last holder
// releases it, so sharing (prefix hits, n > 1 forks) needs no copies and nothing can leak silently.
// Single-threaded: only the engine loop touches it.
class KvPool {
 public:
  KvPool(int64_t num_pages, int64_t page_size);

  int64_t num_pages() const { return static_cast<int64_t>(refs_.size()); }
  int64_t page_size() const { return page_size_; }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  // Pages whose only holder is the cache: what eviction can give back right now.
  int64_t num_evictable() const { return num_evictable_; }
  // Pages needed to hold `tokens` positions.
  int64_t pages_for(int64_t tokens) const { return (tokens + page_size_ - 1) / page_size_; }

  // Appends `count` free pages (one reference each) to `out`; takes nothing and returns false if fewer are free.
  bool allocate(int64_t count, std::vector<int32_t>& out);
  void retain(int32_t page);
  void release(int32_t page);
  void release_all(const std::vector<int32_t>& pages);
  int refcount(int32_t page) const { return refs_[page]; }

  // The RadixCache marks the pages it holds a reference to, so the pool can count the evictable ones.
  void set_cached(int32_t page, bool cached);
  bool is_cached(int32_t page) const { return cached_[page]; }

 private:
  void check_page(int32_t page) const;
  void count_evictable(int32_t page, int delta);

  int64_t page_size_;
  std::vector<int32_t> refs_;
  std::vector<bool> cached_;
  std::vector<int32_t> free_;  // a stack: the most recently freed page is reused first (warm in caches)
  int64_t num_evictable_ = 0;
};

// Pages of `page_size` tokens that fit `budget_bytes` at `bytes_per_token`, capped at `max_total_tokens`
// (when > 0). Throws Error naming the flags when not even one page fits.
int64_t kv_pool_pages(int64_t budget_bytes, int64_t bytes_per_token, int64_t page_size, int64_t max_total_tokens);

// SGLang's --mem-fraction-static rule: weights and the KV cache together may use `fraction` of the
// device's `total_bytes`, so the cache gets what is free after loading the weights (`free_bytes`) minus
// the (1 - fraction) share kept for activations, graphs and the allocator. Throws Error when nothing is left.
int64_t kv_budget_from_mem_fraction(int64_t total_bytes, int64_t free_bytes, double fraction);

}  // namespace narwhal
