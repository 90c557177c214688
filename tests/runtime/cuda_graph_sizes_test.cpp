// The CUDA runner's decode-graph sizes (SGLang's capture list) and DP attention's graph rule: host functions, so
// they are tested without a GPU.
#include <gtest/gtest.h>

#include <algorithm>

#include "runtime/cuda_graph_sizes.h"

namespace narwhal {
namespace {

TEST(CudaGraphSizes, FollowSglangsCaptureList) {
  EXPECT_EQ(cuda_graph_batch_sizes(0), std::vector<int>{});
  EXPECT_EQ(cuda_graph_batch_sizes(3), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(cuda_graph_batch_sizes(20), (std::vector<int>{1, 2, 4, 8, 12, 16, 20}));
  const std::vector<int> big = cuda_graph_batch_sizes(600);
  EXPECT_EQ(big[5], 16);
  EXPECT_EQ(big[6], 24);
  EXPECT_EQ(big.back(), 600);
  EXPECT_TRUE(std::is_sorted(big.begin(), big.end()));
}

ForwardBatch dp_batch(std::vector<int64_t> dp_tokens, bool dp_decode) {
  ForwardBatch b;
  b.dp_tokens = std::move(dp_tokens);
  b.dp_decode = dp_decode;
  return b;
}

// Every rank of the TP group must come to the same answer: the rule reads dp_tokens, dp_decode and the sizes only.
TEST(CudaGraphSizes, DpRuleTakesTheLargestGroupsBucketOnlyWhenEveryGroupDecodes) {
  const std::vector<int> sizes = {1, 2, 4, 8};
  EXPECT_EQ(dp_graph_size(dp_batch({3, 1}, true), sizes), 4) << "both groups pad to the bucket of the larger";
  EXPECT_EQ(dp_graph_size(dp_batch({0, 2}, true), sizes), 2) << "an idle group replays padding alone";
  EXPECT_EQ(dp_graph_size(dp_batch({8, 8, 8, 8}, true), sizes), 8);
  EXPECT_EQ(dp_graph_size(dp_batch({3, 1}, false), sizes), 0) << "some group may be prefilling: all eager";
  EXPECT_EQ(dp_graph_size(dp_batch({9, 1}, true), sizes), 0) << "no graph that large: all eager";
  EXPECT_EQ(dp_graph_size(dp_batch({0, 0}, true), sizes), 0) << "every group idle: nothing to replay";
  EXPECT_EQ(dp_graph_size(dp_batch({3, 1}, true), {}), 0) << "no graphs captured";
  EXPECT_EQ(dp_graph_size(dp_batch({}, true), sizes), 0) << "no DP attention";
  // The rank's own batch does not enter: group 0's rank and group 1's rank see different sequences, same answer.
  ForwardBatch group0 = dp_batch({3, 1}, true), group1 = group0;
  for (int i = 0; i < 3; ++i) group0.add_sequence({i}, 4, {0});
  group1.add_sequence({7}, 9, {1});
  EXPECT_EQ(dp_graph_size(group0, sizes), dp_graph_size(group1, sizes));
}

}  // namespace
}  // namespace narwhal
