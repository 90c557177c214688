// DeepEP's dispatch arithmetic on the host: moe_a2a_step's slices, capacity and mode, and the CPU dispatch ops
// (layout, pack in both block layouts, combine) on small hand-checked cases; a round trip through them gives each
// token the sum of its rows. The GPU kernels are held to these ops in tests/cuda/moe_dispatch_test.cpp.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "model/moe_a2a.h"
#include "ops/moe_dispatch.h"

namespace narwhal {
namespace {

Tensor i32(const std::vector<int32_t>& values, std::vector<int64_t> shape) {
  Tensor t = Tensor::zeros(DType::kI32, std::move(shape));
  std::copy(values.begin(), values.end(), t.ptr<int32_t>());
  return t;
}

std::vector<int32_t> values(const Tensor& t) { return {t.ptr<int32_t>(), t.ptr<int32_t>() + t.numel()}; }

TEST(MoeA2aStep, SlicesCoverTheGroupsRowsInOrder) {
  // 10 rows over 4 ranks: chunks of 3, the last rank's slice 1 row.
  const std::vector<Shard> want = {{0, 3}, {3, 3}, {6, 3}, {9, 1}};
  for (int r = 0; r < 4; ++r) {
    const MoeA2aStep s = moe_a2a_step(DeepEpMode::kNormal, true, {10}, 0, 4, r);
    EXPECT_EQ(s.rows.begin, want[r].begin);
    EXPECT_EQ(s.rows.size, want[r].size);
    EXPECT_EQ(s.chunk, 3);
    EXPECT_FALSE(s.low_latency);
    EXPECT_EQ(s.capacity, 0);
  }
  // One decode token over 4 ranks: rank 0 holds it, the others nothing.
  EXPECT_EQ(moe_a2a_step(DeepEpMode::kAuto, true, {1}, 0, 4, 0).rows.size, 1);
  EXPECT_EQ(moe_a2a_step(DeepEpMode::kAuto, true, {1}, 0, 4, 3).rows.size, 0);
}

TEST(MoeA2aStep, AutoPicksLowLatencyForDecodesAndCapacityIsTheLargestSlice) {
  EXPECT_TRUE(moe_a2a_step(DeepEpMode::kAuto, true, {5}, 0, 2, 0).low_latency);
  EXPECT_FALSE(moe_a2a_step(DeepEpMode::kAuto, false, {5}, 0, 2, 0).low_latency);
  EXPECT_TRUE(moe_a2a_step(DeepEpMode::kLowLatency, false, {5}, 0, 2, 0).low_latency);
  // DP attention, groups of 2 ranks with 3, 0 and 7 rows: the largest slice is ceil(7 / 2) = 4, for every rank.
  const MoeA2aStep s = moe_a2a_step(DeepEpMode::kLowLatency, false, {3, 0, 7}, 2, 2, 1);
  EXPECT_EQ(s.capacity, 4);
  EXPECT_EQ(s.rows.begin, 4);
  EXPECT_EQ(s.rows.size, 3);
  EXPECT_EQ(s.first_row, 3 + 0 + 4);
  EXPECT_EQ(moe_a2a_step(DeepEpMode::kLowLatency, false, {3, 0, 7}, 1, 2, 0).rows.size, 0) << "an idle group";
  EXPECT_EQ(moe_a2a_step(DeepEpMode::kLowLatency, false, {0, 0}, 0, 2, 0).capacity, 0) << "every group idle";
}

TEST(MoeA2aStep, EveryRankDecodes) {
  ForwardBatch b;
  b.add_sequence({1}, 4, {0});
  b.add_sequence({2}, 7, {1});
  EXPECT_TRUE(every_rank_decodes(b, false));
  EXPECT_FALSE(every_rank_decodes(b, true)) << "with DP attention dp_decode speaks for every group";
  b.dp_decode = true;
  EXPECT_TRUE(every_rank_decodes(b, true));
  b.add_sequence({3, 4}, 0, {2});
  EXPECT_FALSE(every_rank_decodes(b, false));
}

// 4 tokens, top-2 of 6 experts over 3 ranks (experts 2r and 2r + 1 on rank r), from rank 1; token 2 has an invalid
// id (-1), token 3 picks only rank 0's experts, token 0 one expert of rank 0 and one of rank 2.
struct Case {
  Tensor ids = i32({0, 5, 3, 2, 4, -1, 1, 0}, {4, 2});
  Tensor weights = Tensor::from_floats({0.5f, 0.25f, 1.0f, 2.0f, 3.0f, 9.0f, 0.125f, 4.0f}, {4, 2});
  Tensor expert_rank = i32({0, 0, 1, 1, 2, 2}, {6});
  Tensor x = Tensor::from_floats({1, 2, 3, 4, 5, 6, 7, 8}, {4, 2});
  Tensor counts = Tensor::zeros(DType::kI32, {3});
  Tensor send_slot = Tensor::zeros(DType::kI32, {4, 3});
  Tensor send_token = i32(std::vector<int32_t>(12, -7), {3, 4});
  Case() { ops::moe_dispatch_layout(ids, expert_rank, 1, counts, send_slot, send_token); }
};

TEST(MoeDispatch, LayoutListsEachDestinationsTokensInOrder) {
  const Case c;
  EXPECT_EQ(values(c.counts), (std::vector<int32_t>{2, 4, 2}));  // rank 1 is self: every token
  EXPECT_EQ(values(c.send_slot), (std::vector<int32_t>{0, 0, 0, -1, 1, -1, -1, 2, 1, 1, 3, -1}));
  EXPECT_EQ(values(c.send_token), (std::vector<int32_t>{0, 3, -7, -7, 0, 1, 2, 3, 0, 2, -7, -7}))
      << "rows past a count are left as they were";
}

TEST(MoeDispatch, PackMasksOtherRanksExpertsAndPadsFixedBlocks) {
  const Case c;
  // Normal: blocks back to back, 2 + 4 + 2 rows.
  Tensor x = Tensor::zeros(DType::kF32, {8, 2}), ids = Tensor::zeros(DType::kI32, {8, 2});
  Tensor w = Tensor::zeros(DType::kF32, {8, 2});
  ops::moe_dispatch_pack(c.x, c.ids, c.weights, c.expert_rank, c.counts, c.send_token, 0, x, ids, w);
  EXPECT_EQ(values(ids), (std::vector<int32_t>{0, -1, 1, 0, -1, -1, 3, 2, -1, -1, -1, -1, -1, 5, 4, -1}));
  EXPECT_EQ(std::vector<float>(x.f32(), x.f32() + 16),
            (std::vector<float>{1, 2, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 5, 6}));
  EXPECT_EQ(std::vector<float>(w.f32(), w.f32() + 16),
            (std::vector<float>{0.5f, 0, 0.125f, 4, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0.25f, 3, 0}));
  // Low latency: blocks of 4 rows at 0, 4, 8; rows past a block's count route nowhere and keep their x.
  Tensor lx = Tensor::from_floats(std::vector<float>(24, -1.0f), {12, 2}), lids = Tensor::zeros(DType::kI32, {12, 2});
  Tensor lw = Tensor::from_floats(std::vector<float>(24, 5.0f), {12, 2});
  ops::moe_dispatch_pack(c.x, c.ids, c.weights, c.expert_rank, c.counts, c.send_token, 4, lx, lids, lw);
  EXPECT_EQ(values(lids), (std::vector<int32_t>{0, -1, 1, 0, -1, -1, -1, -1, -1, -1, 3, 2, -1, -1, -1, -1, -1, 5,
                                                4, -1, -1, -1, -1, -1}));
  for (int64_t row : {2, 3, 10, 11}) {
    EXPECT_EQ(lw.f32()[row * 2], 0.0f) << row;
    EXPECT_EQ(lw.f32()[row * 2 + 1], 0.0f) << row;
    EXPECT_EQ(lx.f32()[row * 2], -1.0f) << row;
  }
  EXPECT_EQ(lx.f32()[9 * 2], 5.0f) << "rank 2's block starts at row 8: tokens 0 and 2";
}

TEST(MoeDispatch, CombineSumsEachTokensRowsInRankOrder) {
  const Case c;
  // Returned rows: row r holds (r + 1) * 10 and (r + 1) * 100, in both block layouts.
  Tensor packed = Tensor::zeros(DType::kF32, {8, 2}), fixed = Tensor::zeros(DType::kF32, {12, 2});
  for (int64_t r = 0; r < 8; ++r) packed.f32()[2 * r] = (r + 1) * 10.0f, packed.f32()[2 * r + 1] = (r + 1) * 100.0f;
  const int64_t starts[] = {0, 2, 6};
  for (int d = 0; d < 3; ++d)
    for (int i = 0; i < c.counts.ptr<int32_t>()[d]; ++i)
      for (int col = 0; col < 2; ++col) fixed.f32()[(d * 4 + i) * 2 + col] = packed.f32()[(starts[d] + i) * 2 + col];
  for (const auto& [returned, capacity] : {std::pair{packed, int64_t{0}}, std::pair{fixed, int64_t{4}}}) {
    Tensor out = Tensor::from_floats(std::vector<float>(8, 123.0f), {4, 2});
    ops::moe_dispatch_combine(returned, c.send_slot, c.counts, capacity, out);
    // token 0: rows 0, 2, 6; token 1: row 3; token 2: rows 4, 7; token 3: rows 1, 5.
    EXPECT_EQ(std::vector<float>(out.f32(), out.f32() + 8),
              (std::vector<float>{10 + 30 + 70, 100 + 300 + 700, 40, 400, 50 + 80, 500 + 800, 20 + 60, 200 + 600}))
        << "capacity " << capacity;
  }
}

TEST(MoeDispatch, MisshapenArgumentsAreRefusedByName) {
  const Case c;
  Tensor wrong_slot = Tensor::zeros(DType::kI32, {4, 2});
  Tensor counts = Tensor::zeros(DType::kI32, {3}), token = Tensor::zeros(DType::kI32, {3, 4});
  EXPECT_THROW(ops::moe_dispatch_layout(c.ids, c.expert_rank, 1, counts, wrong_slot, token), Error);
  Tensor slot = Tensor::zeros(DType::kI32, {4, 3});
  EXPECT_THROW(ops::moe_dispatch_layout(c.ids, c.expert_rank, 3, counts, slot, token), Error) << "self out of range";
  Tensor x = Tensor::zeros(DType::kF32, {11, 2}), ids = Tensor::zeros(DType::kI32, {11, 2});
  Tensor w = Tensor::zeros(DType::kF32, {11, 2});
  try {
    ops::moe_dispatch_pack(c.x, c.ids, c.weights, c.expert_rank, c.counts, c.send_token, 4, x, ids, w);
    ADD_FAILURE() << "11 rows at capacity 4 for 3 ranks were taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("moe_dispatch_pack"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace narwhal
