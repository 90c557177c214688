// DraftTree (tree drafting's candidates and the verify's tree) on a hand-worked case, and top_draft_choices.
#include "runtime/draft_tree.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"

namespace narwhal {
namespace {

TEST(DraftTree, TopChoicesAreTheLogSoftmaxsBestTiesToTheLowerId) {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, 0.0f};
  const std::vector<DraftChoice> top = top_draft_choices(logits.data(), 4, 2);
  ASSERT_EQ(top.size(), 2u);
  const double log_sum = std::log(std::exp(1.0) + 2 * std::exp(3.0) + 1.0);
  EXPECT_EQ(top[0].first, 1);
  EXPECT_EQ(top[1].first, 2);
  EXPECT_NEAR(top[0].second, 3.0 - log_sum, 1e-6);
  EXPECT_THROW(top_draft_choices(logits.data(), 4, 5), Error);
}

// topk 2, 3 steps, 6 draft tokens. Scores (cumulative log-probabilities): round 1 gives a = 5 (-0.1) and b = 7
// (-0.5); round 2 a's children 9 (-0.3), 4 (-1.1) and b's 6 (-0.55), 2 (-2.5), the frontier the best two: 9 and 6;
// round 3 9's children 1 (-0.4), 3 (-0.6) and 6's 8 (-0.56), 0 (-3.55). The best five: 5, 9, 1, 7, 6.
TEST(DraftTree, KeepsTheBestCandidatesWithTheirParents) {
  DraftTree tree(2, 3, 6);
  EXPECT_TRUE(tree.frontier().empty());
  tree.expand(std::vector<std::vector<DraftChoice>>{{{5, -0.1f}, {7, -0.5f}}});
  EXPECT_EQ(tree.frontier(), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(tree.expanded(), (std::vector<int64_t>{0, 1}));
  tree.expand(std::vector<std::vector<DraftChoice>>{{{9, -0.2f}, {4, -1.0f}}, {{6, -0.05f}, {2, -2.0f}}});
  EXPECT_EQ(tree.frontier(), (std::vector<int64_t>{2, 4}));  // 9 (-0.3) and 6 (-0.55)
  EXPECT_EQ(tree.expanded(), (std::vector<int64_t>{0, 1, 2, 4}));
  EXPECT_EQ(tree.parent(4), 1);
  EXPECT_EQ(tree.depth(4), 2);
  EXPECT_FALSE(tree.done());
  tree.expand(std::vector<std::vector<DraftChoice>>{{{1, -0.1f}, {3, -0.3f}}, {{8, -0.01f}, {0, -3.0f}}});
  EXPECT_TRUE(tree.done());
  std::vector<int32_t> tokens, parents;
  tree.select(42, tokens, parents);
  EXPECT_EQ(tokens, (std::vector<int32_t>{42, 5, 7, 9, 6, 1}));
  EXPECT_EQ(parents, (std::vector<int32_t>{-1, 0, 0, 1, 2, 3}));
  EXPECT_THROW(tree.expand(std::vector<std::vector<DraftChoice>>{}), Error);  // no fourth round
}

TEST(DraftTree, RefusesMoreDraftTokensThanCandidates) {
  EXPECT_THROW(DraftTree(2, 1, 4), Error);  // one round makes 2 candidates: at most 3 draft tokens
  EXPECT_NO_THROW(DraftTree(2, 1, 3));
}

}  // namespace
}  // namespace narwhal
