// RadixCache against a naive model (a map from page-aligned prefixes to pages) under random match/insert/evict.
#include "runtime/radix_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

namespace narwhal {
namespace {

using Tokens = std::vector<int32_t>;

// The naive cache: every cached page-aligned prefix names the page holding its last page of tokens, and
// when it was last on the path of a match or insert.
struct NaiveCache {
  struct Entry {
    int32_t page;
    uint64_t used;
  };
  std::map<Tokens, Entry> entries;
  uint64_t clock = 0;
  int64_t page_size;

  Tokens prefix(const Tokens& t, int64_t pages) const { return Tokens(t.begin(), t.begin() + pages * page_size); }
  std::vector<int32_t> match(const Tokens& t) {
    ++clock;
    std::vector<int32_t> pages;
    for (int64_t k = 1; k <= static_cast<int64_t>(t.size()) / page_size; ++k) {
      auto it = entries.find(prefix(t, k));
      if (it == entries.end()) break;
      it->second.used = clock;
      pages.push_back(it->second.page);
    }
    return pages;
  }
  int64_t match_length(const Tokens& t) const {
    int64_t k = 0;
    while ((k + 1) * page_size <= static_cast<int64_t>(t.size()) && entries.count(prefix(t, k + 1))) ++k;
    return k * page_size;
  }
  bool is_leaf(const Tokens& key) const {
    auto it = entries.upper_bound(key);
    return it == entries.end() || it->first.size() <= key.size() || !std::equal(key.begin(), key.end(), it->first.begin());
  }
};

class RadixCacheProperty : public ::testing::TestWithParam<int> {};

TEST_P(RadixCacheProperty, MatchesNaiveModelUnderRandomOperations) {
  const int64_t kPageSize = 2, kPages = 48;
  std::mt19937 rng(static_cast<uint32_t>(GetParam()));
  KvPool pool(kPages, kPageSize);
  NaiveCache naive{{}, 0, kPageSize};
  std::vector<std::pair<Tokens, std::vector<int32_t>>> holders;  // live "sequences": tokens and the pages they hold
  {
    RadixCache cache(pool, true);
    const auto random_tokens = [&] {
      Tokens t;
      // Start from a cached or held prefix half of the time, so paths share and split.
      if (!holders.empty() && rng() % 2) {
        const Tokens& base = holders[rng() % holders.size()].first;
        t.assign(base.begin(), base.begin() + rng() % (base.size() + 1));
      }
      const int64_t extra = rng() % 9;
      for (int64_t i = 0; i < extra; ++i) t.push_back(static_cast<int32_t>(rng() % 3));
      return t;
    };
    const auto check_invariants = [&] {
      std::map<int32_t, int> held;
      for (const auto& [tokens, pages] : holders)
        for (int32_t p : pages) ++held[p];
      std::set<int32_t> cached;
      for (const auto& [key, e] : naive.entries) cached.insert(e.page);
      ASSERT_EQ(cached.size(), naive.entries.size()) << "a page cached twice";
      int64_t free = 0, evictable = 0;
      for (int32_t p = 0; p < kPages; ++p) {
        const int expected = held[p] + static_cast<int>(cached.count(p));
        ASSERT_EQ(pool.refcount(p), expected) << "page " << p;
        ASSERT_EQ(pool.is_cached(p), cached.count(p) == 1) << "page " << p;
        free += expected == 0;
        evictable += cached.count(p) && expected == 1;
      }
      ASSERT_EQ(pool.num_free(), free);
      ASSERT_EQ(pool.num_evictable(), evictable);
      ASSERT_EQ(cache.cached_pages(), static_cast<int64_t>(naive.entries.size()));
    };

    // Evicts through the cache and checks the result against the naive model, which then forgets those pages.
    const auto evict = [&](int64_t want) {
      const std::map<Tokens, NaiveCache::Entry> before = naive.entries;
      const int64_t freed = cache.evict(want);
      ASSERT_LE(freed, want);
      std::map<Tokens, NaiveCache::Entry> after;
      uint64_t newest_evicted = 0;
      for (const auto& [key, e] : before) {
        if (pool.is_cached(e.page)) {
          after.emplace(key, e);
        } else {
          ASSERT_EQ(pool.refcount(e.page), 0) << "an evicted page must be free: only the cache held it";
          newest_evicted = std::max(newest_evicted, e.used);
        }
      }
      ASSERT_EQ(static_cast<int64_t>(before.size() - after.size()), freed);
      naive.entries = after;
      for (const auto& [key, e] : naive.entries) {
        ASSERT_TRUE(key.size() == static_cast<size_t>(kPageSize) ||
                    naive.entries.count(Tokens(key.begin(), key.end() - kPageSize)))
            << "the tree must stay closed under prefixes";
        // LRU: what remains evictable was used no earlier than anything evicted; if less than asked was
        // freed, nothing evictable remains.
        if (naive.is_leaf(key) && pool.refcount(e.page) == 1) {
          ASSERT_EQ(freed, want) << "an evictable leaf survived an eviction that fell short";
          ASSERT_GE(e.used, newest_evicted) << "a more recently used page was evicted first";
        }
      }
    };

    for (int op = 0; op < 3000; ++op) {
      const int kind = static_cast<int>(rng() % 10);
      SCOPED_TRACE("operation " + std::to_string(op) + " of kind " + std::to_string(kind));
      if (kind < 4) {  // a request arrives: match, then take pages for the rest of its tokens
        Tokens t = random_tokens();
        ASSERT_EQ(cache.match_length(t), naive.match_length(t));
        std::vector<int32_t> expected = naive.match(t);
        std::vector<int32_t> pages = cache.match(t);
        ASSERT_EQ(pages, expected);
        const int64_t need = pool.pages_for(static_cast<int64_t>(t.size())) - static_cast<int64_t>(pages.size());
        if (need > pool.num_free()) evict(need - pool.num_free());
        if (HasFatalFailure()) return;
        if (!pool.allocate(need, pages)) {
          pool.release_all(pages);
        } else {
          holders.emplace_back(std::move(t), std::move(pages));
        }
      } else if (kind < 7 && !holders.empty()) {  // a sequence finishes (or a chunk completes): insert its full pages
        const size_t i = rng() % holders.size();
        auto& [t, pages] = holders[i];
        const int64_t full = static_cast<int64_t>(t.size()) / kPageSize;
        ++naive.clock;
        std::vector<int32_t> expected = pages;
        for (int64_t k = 1; k <= full; ++k) {
          auto [it, added] = naive.entries.try_emplace(naive.prefix(t, k), NaiveCache::Entry{pages[k - 1], 0});
          it->second.used = naive.clock;
          expected[k - 1] = it->second.page;
        }
        cache.insert(t, pages);
        ASSERT_EQ(pages, expected) << "insert must hand back the cache's page wherever it already held the tokens";
        if (kind < 6) {
          pool.release_all(pages);
          holders.erase(holders.begin() + static_cast<std::ptrdiff_t>(i));
        }
      } else if (kind < 8 && !holders.empty()) {  // aborted without caching
        const size_t i = rng() % holders.size();
        pool.release_all(holders[i].second);
        holders.erase(holders.begin() + static_cast<std::ptrdiff_t>(i));
      } else {  // eviction
        evict(1 + static_cast<int64_t>(rng() % 6));
        if (HasFatalFailure()) return;
      }
      check_invariants();
      if (HasFatalFailure()) return;
    }
    for (auto& [t, pages] : holders) pool.release_all(pages);
    holders.clear();
    const int64_t cached = static_cast<int64_t>(naive.entries.size());
    EXPECT_EQ(cache.evict(kPages), cached);
    EXPECT_EQ(cache.cached_pages(), 0);
  }
  EXPECT_EQ(pool.num_free(), kPages);
}

INSTANTIATE_TEST_SUITE_P(Seeds, RadixCacheProperty, ::testing::Range(1, 9));

TEST(RadixCache, DisabledMatchesAndCachesNothing) {
  KvPool pool(8, 2);
  RadixCache cache(pool, false);
  std::vector<int32_t> pages;
  ASSERT_TRUE(pool.allocate(2, pages));
  const Tokens t = {1, 2, 3, 4};
  cache.insert(t, pages);
  EXPECT_TRUE(cache.match(t).empty());
  EXPECT_EQ(cache.cached_pages(), 0);
  pool.release_all(pages);
  EXPECT_EQ(pool.num_free(), 8);
}

TEST(RadixCache, PartialLastPageIsNotCached) {
  KvPool pool(8, 4);
  RadixCache cache(pool, true);
  std::vector<int32_t> pages;
  ASSERT_TRUE(pool.allocate(2, pages));
  cache.insert(Tokens{1, 2, 3, 4, 5, 6}, pages);
  EXPECT_EQ(cache.cached_pages(), 1);
  EXPECT_EQ(cache.match_length(Tokens{1, 2, 3, 4, 5, 6, 7, 8}), 4);
  pool.release_all(pages);
  EXPECT_EQ(pool.num_free(), 7);
  EXPECT_EQ(pool.num_evictable(), 1);
}

}  // namespace
}  // namespace narwhal
