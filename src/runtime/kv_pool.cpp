// KvPool: free list and reference counts of the latent cache pages.
#include "runtime/kv_pool.h"

#include <algorithm>

#include "core/error.h"

namespace narwhal {

KvPool::KvPool(int64_t num_pages, int64_t page_size)
    : page_size_(page_size), refs_(static_cast<size_t>(num_pages), 0), cached_(static_cast<size_t>(num_pages), false) {
  NW_CHECK(num_pages > 0 && num_pages <= INT32_MAX && page_size > 0, "KvPool: ", num_pages, " pages of ", page_size,
           " tokens is not a usable cache");
  free_.resize(static_cast<size_t>(num_pages));
  // Reversed so that the first allocations take pages 0, 1, 2, ... (easier to read in logs and tests).
  for (int64_t i = 0; i < num_pages; ++i) free_[i] = static_cast<int32_t>(num_pages - 1 - i);
}

void KvPool::check_page(int32_t page) const {
  NW_CHECK(page >= 0 && page < num_pages(), "KvPool: page ", page, " is outside the pool of ", num_pages());
}

bool KvPool::allocate(int64_t count, std::vector<int32_t>& out) {
  if (count > num_free()) return false;
  for (int64_t i = 0; i < count; ++i) {
    const int32_t page = free_.back();
    free_.pop_back();
    refs_[page] = 1;
    out.push_back(page);
  }
  return true;
}

// A cached page is evictable exactly while its refcount is 1 (the cache's own reference).
void KvPool::count_evictable(int32_t page, int delta) {
  if (cached_[page] && refs_[page] == 1) num_evictable_ += delta;
}

void KvPool::retain(int32_t page) {
  check_page(page);
  NW_CHECK(refs_[page] > 0, "KvPool: page ", page, " is free and cannot gain a holder");
  count_evictable(page, -1);
  ++refs_[page];
  count_evictable(page, +1);
}

void KvPool::release(int32_t page) {
  check_page(page);
  NW_CHECK(refs_[page] > 0, "KvPool: page ", page, " released more often than it was held");
  count_evictable(page, -1);
  if (--refs_[page] == 0) {
    NW_CHECK(!cached_[page], "KvPool: page ", page, " was freed while the cache still names it");
    free_.push_back(page);
  }
  count_evictable(page, +1);
}

void KvPool::release_all(const std::vector<int32_t>& pages) {
  for (int32_t page : pages) release(page);
}

void KvPool::set_cached(int32_t page, bool cached) {
  check_page(page);
  count_evictable(page, -1);
  cached_[page] = cached;
  count_evictable(page, +1);
}

int64_t kv_pool_pages(int64_t budget_bytes, int64_t bytes_per_token, int64_t page_size, int64_t max_total_tokens) {
  NW_CHECK(bytes_per_token > 0 && page_size > 0, "kv_pool_pages: bytes per token and page size must be positive");
  int64_t pages = budget_bytes / (bytes_per_token * page_size);
  if (max_total_tokens > 0) pages = std::min(pages, max_total_tokens / page_size);
  NW_CHECK(pages >= 1, "the KV cache budget (", budget_bytes, " bytes",
           max_total_tokens > 0 ? cat(", --max-total-tokens ", max_total_tokens) : std::string(),
           ") holds no page of ", page_size, " tokens at ", bytes_per_token, " bytes per token");
  return std::min<int64_t>(pages, INT32_MAX);
}

int64_t kv_budget_from_mem_fraction(int64_t total_bytes, int64_t free_bytes, double fraction) {
  NW_CHECK(fraction > 0.0 && fraction < 1.0, "--mem-fraction-static must be in (0, 1), got ", fraction);
  const int64_t reserved = static_cast<int64_t>(static_cast<double>(total_bytes) * (1.0 - fraction));
  const int64_t budget = free_bytes - reserved;
  NW_CHECK(budget > 0, "--mem-fraction-static ", fraction, " leaves no memory for the KV cache: ", free_bytes,
           " bytes free after the weights, ", reserved, " of ", total_bytes, " kept in reserve");
  return budget;
}

}  // namespace narwhal
