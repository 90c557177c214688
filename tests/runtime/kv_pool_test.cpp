// KvPool reference counting and the cache budget rules (byte budget, --max-total-tokens, --mem-fraction-static).
#include "runtime/kv_pool.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace narwhal {
namespace {

TEST(KvPool, CountsHoldersAndEvictablePages) {
  KvPool pool(4, 16);
  EXPECT_EQ(pool.pages_for(0), 0);
  EXPECT_EQ(pool.pages_for(16), 1);
  EXPECT_EQ(pool.pages_for(17), 2);
  std::vector<int32_t> pages;
  ASSERT_TRUE(pool.allocate(3, pages));
  EXPECT_EQ(pages, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_FALSE(pool.allocate(2, pages));
  EXPECT_EQ(pages.size(), 3u) << "a failed allocation takes nothing";
  pool.retain(pages[0]);
  pool.set_cached(pages[0], true);
  EXPECT_EQ(pool.num_evictable(), 0) << "held by a sequence as well as the cache";
  pool.release(pages[0]);
  EXPECT_EQ(pool.num_evictable(), 1);
  pool.release(pages[1]);
  EXPECT_EQ(pool.num_free(), 2);
  EXPECT_THROW(pool.release(pages[1]), Error);
  EXPECT_THROW(pool.retain(pages[1]), Error);
  EXPECT_THROW(pool.release(7), Error);
  EXPECT_THROW(pool.release(pages[0]), Error) << "the cache still names it";
}

TEST(KvPool, PagesFromByteBudgetAndTokenCap) {
  EXPECT_EQ(kv_pool_pages(1000 * 64 * 10, 1000, 64, 0), 10);
  EXPECT_EQ(kv_pool_pages(1000 * 64 * 10 + 999, 1000, 64, 0), 10);
  EXPECT_EQ(kv_pool_pages(1000 * 64 * 10, 1000, 64, 200), 3);
  EXPECT_THROW(kv_pool_pages(1000 * 63, 1000, 64, 0), Error);
  EXPECT_THROW(kv_pool_pages(1 << 30, 1000, 64, 10), Error);
}

TEST(KvPool, MemFractionStaticFollowsSglang) {
  // 80 GB device, 30 GB free after 50 GB of weights: 0.9 keeps 8 GB back, 22 GB go to the cache.
  const int64_t gb = 1LL << 30;
  EXPECT_NEAR(static_cast<double>(kv_budget_from_mem_fraction(80 * gb, 30 * gb, 0.9)), 22.0 * gb, 1024.0);
  EXPECT_THROW(kv_budget_from_mem_fraction(80 * gb, 5 * gb, 0.9), Error);
  EXPECT_THROW(kv_budget_from_mem_fraction(80 * gb, 30 * gb, 1.5), Error);
}

}  // namespace
}  // namespace narwhal
