// ExpertPlacement: the contiguous default, each rank's lookup row, and the refusal of an uneven split.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "model/expert_placement.h"

namespace narwhal {
namespace {

TEST(ExpertPlacement, ContiguousRangesAndTheirLookupRows) {
  const ExpertPlacement p = ExpertPlacement::contiguous(16, 4, "n_routed_experts");
  EXPECT_EQ(p.num_experts(), 16);
  EXPECT_EQ(p.ep_size(), 4);
  EXPECT_EQ(p.experts_of(1), (std::vector<int32_t>{4, 5, 6, 7}));
  EXPECT_EQ(p.ep_rank_of(15), 3);
  const std::vector<int32_t> index = p.local_index(1);
  ASSERT_EQ(index.size(), 16u);
  for (int32_t e = 0; e < 16; ++e) EXPECT_EQ(index[e], e / 4 == 1 ? e - 4 : -1) << "expert " << e;
  // One EP rank: every expert, by id.
  const ExpertPlacement whole = ExpertPlacement::contiguous(6, 1, "n_routed_experts");
  EXPECT_EQ(whole.experts_of(0), (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
}

TEST(ExpertPlacement, AnUnevenSplitIsRefusedNamingTheField) {
  try {
    ExpertPlacement::contiguous(6, 4, "config.json's n_routed_experts");
    ADD_FAILURE() << "6 experts over 4 ranks were not refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json's n_routed_experts = 6 does not split evenly over 4 ranks"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace narwhal
