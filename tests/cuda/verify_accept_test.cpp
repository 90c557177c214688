// ops::cuda::verify_accept against the CPU reference, exactly (integer outputs): sequences that accept nothing, some
// and all of their drafts, fewer drafts than rows (fillers), batch padding (limit 0), chain positions past a
// sequence's pages or its limit, 1 to 3 chain rounds, page sizes 1 and 16, scattered page tables. Outputs start
// poisoned, so an element the kernel leaves unwritten fails; shapes it does not take are refused.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "cuda/gpu_test_util.h"
#include "ops/cuda/verify_accept.h"
#include "ops/verify_accept.h"

namespace narwhal {
namespace {

using testing::device_i32;
using testing::poisoned;

Tensor host_i64(const std::vector<int64_t>& v) {
  Tensor t = Tensor::zeros(DType::kI64, {static_cast<int64_t>(v.size())});
  std::copy(v.begin(), v.end(), t.ptr<int64_t>());
  return t;
}

Tensor host_i32(const std::vector<int32_t>& v, std::vector<int64_t> shape) {
  Tensor t = Tensor::zeros(DType::kI32, std::move(shape));
  std::copy(v.begin(), v.end(), t.ptr<int32_t>());
  return t;
}

void expect_same(const Tensor& device, const Tensor& host, const char* what) {
  const Tensor got = device.to(Device::kCPU);
  ASSERT_EQ(got.nbytes(), host.nbytes()) << what;
  EXPECT_EQ(std::memcmp(got.data, host.data, host.nbytes()), 0) << what << " differs from the CPU reference";
}

void check_case(int64_t seqs, int steps, int64_t page_size, uint64_t seed) {
  SCOPED_TRACE(cat("B ", seqs, " N ", steps, " page ", page_size));
  std::mt19937_64 rng(seed);
  const int64_t l = steps + 1, rounds = steps - 1, pages = 20;
  std::vector<int32_t> fed(seqs * l), draws(seqs * l), info, table(seqs * pages);
  std::vector<int64_t> slots(seqs * l);
  for (int64_t s = 0; s < seqs; ++s) {
    const bool padding = s == seqs - 1 && seqs > 1;
    const int32_t drafts = padding ? 0 : static_cast<int32_t>(rng() % l);
    const int32_t prefix = padding ? 0 : static_cast<int32_t>(rng() % (pages * page_size - 2 * l));
    // limit: the pages' end, or a little past the verify (a context's end), or padding's 0
    const int32_t limit = padding ? 0 : rng() % 3 == 0 ? prefix + l + static_cast<int32_t>(rng() % 2)
                                                       : static_cast<int32_t>(pages * page_size);
    info.insert(info.end(), {prefix, drafts, limit});
    const int64_t agree = rng() % (drafts + 1);  // leading drafts equal to the draw before them
    for (int64_t j = 0; j < l; ++j) {
      draws[s * l + j] = static_cast<int32_t>(rng() % 50);
      slots[s * l + j] = j <= drafts && !padding ? static_cast<int64_t>(rng() % 1000) : -1;
    }
    fed[s * l] = 7;
    for (int64_t j = 1; j < l; ++j)
      fed[s * l + j] = j <= agree ? draws[s * l + j - 1] : j <= drafts ? draws[s * l + j - 1] + 1 : 0;
    for (int64_t p = 0; p < pages; ++p) table[s * pages + p] = static_cast<int32_t>(rng() % 64);
  }
  const Tensor fed_h = host_i32(fed, {seqs * l}), draws_h = host_i32(draws, {seqs * l});
  const Tensor info_h = host_i32(info, {seqs, 3}), table_h = host_i32(table, {seqs, pages});
  const Tensor slots_h = host_i64(slots);
  Tensor ids = Tensor::zeros(DType::kI32, {seqs * l}), ext_slots = Tensor::zeros(DType::kI64, {seqs * l});
  Tensor last = Tensor::zeros(DType::kI32, {seqs}), pos = Tensor::zeros(DType::kI32, {rounds, seqs});
  Tensor chain_slots = Tensor::zeros(DType::kI64, {rounds, seqs}), lens = Tensor::zeros(DType::kI32, {rounds, seqs});
  ops::verify_accept(fed_h, draws_h, slots_h, info_h, table_h, page_size, ids, ext_slots, last, pos, chain_slots,
                     lens);
  Tensor d_ids = poisoned(DType::kI32, {seqs * l}), d_ext_slots = poisoned(DType::kI64, {seqs * l});
  Tensor d_last = poisoned(DType::kI32, {seqs}), d_pos = poisoned(DType::kI32, {rounds, seqs});
  Tensor d_chain_slots = poisoned(DType::kI64, {rounds, seqs}), d_lens = poisoned(DType::kI32, {rounds, seqs});
  ops::cuda::verify_accept(fed_h.to(Device::kCUDA), draws_h.to(Device::kCUDA), slots_h.to(Device::kCUDA),
                           info_h.to(Device::kCUDA), table_h.to(Device::kCUDA), page_size, d_ids, d_ext_slots, d_last,
                           d_pos, d_chain_slots, d_lens, nullptr);
  expect_same(d_ids, ids, "ext_ids");
  expect_same(d_ext_slots, ext_slots, "ext_slots");
  expect_same(d_last, last, "ext_last");
  expect_same(d_pos, pos, "chain_positions");
  expect_same(d_chain_slots, chain_slots, "chain_slots");
  expect_same(d_lens, lens, "chain_lens");
}

TEST(VerifyAccept, MatchesCpuReference) {
  NW_REQUIRE_GPU();
  uint64_t seed = 1;
  for (int64_t seqs : {1, 3, 130})
    for (int steps : {1, 2, 3})
      for (int64_t page : {1, 16}) check_case(seqs, steps, page, seed++);
}

TEST(VerifyAccept, KeepsTheLeadingDraftsThatMatch) {
  // One sequence, 3 drafts: fed [pending, 5, 6, 9], draws [5, 6, 8, 4]: drafts 5 and 6 match, 9 does not.
  const Tensor fed = host_i32({1, 5, 6, 9}, {4}), draws = host_i32({5, 6, 8, 4}, {4});
  const Tensor info = host_i32({10, 3, 64}, {1, 3}), table = host_i32({2}, {1, 1});
  Tensor ids = Tensor::zeros(DType::kI32, {4}), ext_slots = Tensor::zeros(DType::kI64, {4});
  Tensor last = Tensor::zeros(DType::kI32, {1}), pos = Tensor::zeros(DType::kI32, {2, 1});
  Tensor chain_slots = Tensor::zeros(DType::kI64, {2, 1}), lens = Tensor::zeros(DType::kI32, {2, 1});
  ops::verify_accept(fed, draws, host_i64({138, 139, 140, 141}), info, table, 64, ids, ext_slots, last, pos,
                     chain_slots, lens);
  EXPECT_EQ(last.ptr<int32_t>()[0], 2);  // kept 3: the pending token and two drafts
  EXPECT_EQ(ext_slots.ptr<int64_t>()[2], 140);
  EXPECT_EQ(ext_slots.ptr<int64_t>()[3], -1);
  EXPECT_EQ(pos.ptr<int32_t>()[0], 13);  // the chain continues after position 12 (prefix 10 + kept 3 - 1)
  EXPECT_EQ(chain_slots.ptr<int64_t>()[1], 2 * 64 + 14);
  EXPECT_EQ(lens.ptr<int32_t>()[1], 15);
}

TEST(VerifyAccept, RefusesOtherShapes) {
  NW_REQUIRE_GPU();
  Tensor i32 = Tensor::empty(DType::kI32, {4}, Device::kCUDA), i64 = Tensor::empty(DType::kI64, {4}, Device::kCUDA);
  Tensor info = Tensor::empty(DType::kI32, {1, 3}, Device::kCUDA), table = Tensor::empty(DType::kI32, {1, 2}, Device::kCUDA);
  Tensor last = Tensor::empty(DType::kI32, {1}, Device::kCUDA), chain = Tensor::empty(DType::kI32, {2, 1}, Device::kCUDA);
  Tensor chain64 = Tensor::empty(DType::kI64, {2, 1}, Device::kCUDA);
  EXPECT_THROW(ops::cuda::verify_accept(i32, i32, i32, info, table, 16, i32, i64, last, chain, chain64, chain, nullptr),
               Error);  // verify_slots must be I64
  Tensor short_ids = Tensor::empty(DType::kI32, {3}, Device::kCUDA);
  EXPECT_THROW(ops::cuda::verify_accept(short_ids, i32, i64, info, table, 16, i32, i64, last, chain, chain64, chain,
                                        nullptr),
               Error);  // 3 fed tokens for 1 sequence of 4 rows
}

}  // namespace
}  // namespace narwhal
