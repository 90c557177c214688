// ParallelConfig: SGLang's rank arithmetic over a sweep of configurations, the worked V3 example, flag errors.
#include "parallel/parallel_config.h"

#include <gtest/gtest.h>

#include <set>

#include "core/error.h"

namespace narwhal {
namespace {

std::string error_of(const ParallelFlags& flags, int rank = 0) {
  try {
    ParallelConfig config(flags, rank);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ParallelConfig, DeepSeekV3OnTwoNodesWithDpAttention) {
  // docs/parallel.md's worked example: 2 nodes x 8 GPUs, --tp 16 --dp 2 --enable-dp-attention --ep 16.
  ParallelFlags flags;
  flags.tp_size = 16;
  flags.dp_size = 2;
  flags.enable_dp_attention = true;
  flags.ep_size = 16;
  flags.nnodes = 2;
  flags.node_rank = 1;
  flags.dist_init_addr = "10.0.0.1:5000";
  const ParallelConfig c(flags, 9);
  EXPECT_EQ(c.world_size(), 16);
  EXPECT_EQ(c.ranks_per_node(), 8);
  EXPECT_EQ(c.node_rank(), 1);
  EXPECT_EQ(c.local_rank(), 1);
  EXPECT_EQ(c.local_ranks(), (std::vector<int>{8, 9, 10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(c.tp_rank(), 9);
  EXPECT_EQ(c.tp_group().size(), 16);
  EXPECT_EQ(c.attn_tp_size(), 8);
  EXPECT_EQ(c.attn_tp_rank(), 1);
  EXPECT_EQ(c.dp_rank(), 1);
  EXPECT_EQ(c.attn_tp_group().ranks, (std::vector<int>{8, 9, 10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(c.moe_tp_size(), 1);
  EXPECT_EQ(c.ep_rank(), 9);
  EXPECT_EQ(c.ep_group().size(), 16);
  EXPECT_EQ(c.ep_group().index, 9);
  // 128 heads over 8 attention-TP ranks, 256 routed experts over 16 EP ranks.
  const Shard heads = shard(128, c.attn_tp_rank(), c.attn_tp_size(), "num_attention_heads");
  EXPECT_EQ(heads.begin, 16);
  EXPECT_EQ(heads.end(), 32);
  const Shard experts = shard(256, c.ep_rank(), c.ep_size(), "n_routed_experts");
  EXPECT_EQ(experts.begin, 144);
  EXPECT_EQ(experts.size, 16);
}

TEST(ParallelConfig, ReplicasWithoutDpAttentionAndExpertGroups) {
  ParallelFlags flags;
  flags.tp_size = 4;
  flags.dp_size = 2;  // two replicas of a TP-4 group
  const ParallelConfig c(flags, 5);
  EXPECT_EQ(c.world_size(), 8);
  EXPECT_EQ(c.tp_rank(), 1);
  EXPECT_EQ(c.tp_group().ranks, (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(c.dp_rank(), 1);
  EXPECT_EQ(c.attn_tp_group().ranks, c.tp_group().ranks);

  ParallelFlags ep;
  ep.tp_size = 8;
  ep.ep_size = 2;
  const ParallelConfig e(ep, 6);
  EXPECT_EQ(e.moe_tp_size(), 4);
  EXPECT_EQ(e.ep_rank(), 1);
  EXPECT_EQ(e.moe_tp_rank(), 2);
  EXPECT_EQ(e.ep_group().ranks, (std::vector<int>{2, 6}));
  EXPECT_EQ(e.ep_group().index, 1);
  EXPECT_EQ(e.moe_tp_group().ranks, (std::vector<int>{4, 5, 6, 7}));
}

// SGLang's group lists (parallel_state.py / dp_attention.py), built the way it builds them, for comparison.
std::vector<std::vector<int>> sglang_groups(const ParallelFlags& f, const std::string& kind) {
  const int world = ParallelConfig::world_size_of(f), tp = f.tp_size, moe_tp = tp / f.ep_size;
  const int attn_tp = f.enable_dp_attention ? tp / f.dp_size : tp;
  std::vector<std::vector<int>> groups;
  for (int base = 0; base < world; base += tp) {
    if (kind == "tp") groups.push_back({});
    for (int r = 0; r < tp; ++r) {
      if (kind == "tp") groups.back().push_back(base + r);
      if (kind == "attn_tp" && r % attn_tp == 0) groups.push_back({});
      if (kind == "attn_tp") groups.back().push_back(base + r);
      if (kind == "moe_tp" && r % moe_tp == 0) groups.push_back({});
      if (kind == "moe_tp") groups.back().push_back(base + r);
    }
    if (kind == "ep")
      for (int j = 0; j < moe_tp; ++j) {
        groups.push_back({});
        for (int r = base + j; r < base + tp; r += moe_tp) groups.back().push_back(r);
      }
  }
  return groups;
}

TEST(ParallelConfig, EveryConfigurationMatchesSglangsGroups) {
  int configs = 0;
  for (int tp : {1, 2, 3, 4, 6, 8, 12, 16})
    for (int dp : {1, 2, 3, 4})
      for (bool dp_attention : {false, true})
        for (int ep : {1, 2, 4, 8, 16})
          for (int nnodes : {1, 2, 4}) {
            ParallelFlags f;
            f.tp_size = tp;
            f.dp_size = dp;
            f.enable_dp_attention = dp_attention;
            f.ep_size = ep;
            f.nnodes = nnodes;
            f.dist_init_addr = "127.0.0.1:1";
            if ((dp_attention && tp % dp) || tp % ep || ParallelConfig::world_size_of(f) % nnodes) {
              EXPECT_THROW(ParallelConfig::validate(f), Error);
              continue;
            }
            ++configs;
            const int world = ParallelConfig::world_size_of(f);
            std::set<int> seen;
            for (int rank = 0; rank < world; ++rank) {
              f.node_rank = rank / (world / nnodes);
              const ParallelConfig c(f, rank);
              SCOPED_TRACE(cat("tp ", tp, " dp ", dp, " dp_attention ", dp_attention, " ep ", ep, " nnodes ", nnodes,
                               " rank ", rank));
              EXPECT_EQ(c.node_of(rank) * c.ranks_per_node() + c.local_rank(), rank);
              for (const auto& [kind, group] : {std::pair<std::string, RankGroup>{"tp", c.tp_group()},
                                                {"attn_tp", c.attn_tp_group()},
                                                {"ep", c.ep_group()},
                                                {"moe_tp", c.moe_tp_group()}}) {
                ASSERT_EQ(group.ranks.at(group.index), rank) << kind;
                bool found = false;
                for (const auto& g : sglang_groups(f, kind)) found |= g == group.ranks;
                EXPECT_TRUE(found) << kind << " group " << describe_ranks(group.ranks, world, 1);
              }
              // SGLang's per-rank formulas.
              EXPECT_EQ(c.attn_tp_rank(), c.tp_rank() % c.attn_tp_size());
              EXPECT_EQ(c.ep_rank(), c.tp_rank() / (tp / ep));
              if (dp_attention) {
                EXPECT_EQ(c.dp_rank(), c.tp_rank() / c.attn_tp_size());
              }
              seen.insert(c.rank());
            }
            EXPECT_EQ(static_cast<int>(seen.size()), world);
          }
  EXPECT_GT(configs, 200);
}

TEST(ParallelConfig, ErrorsNameTheFlags) {
  ParallelFlags f;
  f.tp_size = 16;
  f.dp_size = 3;
  f.enable_dp_attention = true;
  EXPECT_NE(error_of(f).find("--tp-size divisible by --dp-size"), std::string::npos) << error_of(f);
  f = {};
  f.tp_size = 8;
  f.ep_size = 3;
  EXPECT_NE(error_of(f).find("--ep-size 3 does not divide --tp-size 8"), std::string::npos) << error_of(f);
  f.ep_size = 4;
  f.moe_a2a_backend = MoeA2aBackend::kDeepEp;
  EXPECT_NE(error_of(f).find("--moe-a2a-backend deepep sends each token to the ranks holding its experts whole: it "
                             "needs --ep-size equal to --tp-size, got --ep-size 4 with --tp-size 8"),
            std::string::npos)
      << error_of(f);
  f.ep_size = 8;
  EXPECT_EQ(error_of(f), "");
  f.moe_a2a_backend = MoeA2aBackend::kNone;
  f.deepep_mode = DeepEpMode::kLowLatency;
  EXPECT_NE(error_of(f).find("--deepep-mode low_latency applies to --moe-a2a-backend deepep, not none"),
            std::string::npos)
      << error_of(f);
  EXPECT_EQ(parse_deepep_mode("low_latency"), DeepEpMode::kLowLatency);
  EXPECT_EQ(parse_moe_a2a_backend("deepep"), MoeA2aBackend::kDeepEp);
  EXPECT_THROW(parse_moe_a2a_backend("mooncake"), Error);
  EXPECT_THROW(parse_deepep_mode("fast"), Error);
  f = {};
  f.tp_size = 6;
  f.nnodes = 4;
  f.dist_init_addr = "h:1";
  EXPECT_NE(error_of(f).find("does not split evenly over --nnodes 4"), std::string::npos) << error_of(f);
  f = {};
  f.tp_size = 4;
  f.nnodes = 2;
  EXPECT_NE(error_of(f).find("needs --dist-init-addr"), std::string::npos) << error_of(f);
  f.dist_init_addr = "10.0.0.1";
  EXPECT_NE(error_of(f).find("--dist-init-addr '10.0.0.1' is not HOST:PORT"), std::string::npos) << error_of(f);
  f.dist_init_addr = "10.0.0.1:5000";
  f.node_rank = 2;
  EXPECT_NE(error_of(f).find("--node-rank 2 is out of range for --nnodes 2"), std::string::npos) << error_of(f);
  f.node_rank = 0;
  EXPECT_NE(error_of(f, 3).find("rank 3 is on node 1, but this process is --node-rank 0"), std::string::npos);
  f.devices_per_node = 1;
  EXPECT_NE(error_of(f).find("places 2 ranks on each node, but this node has 1 GPUs"), std::string::npos);
  f = {};
  f.dist_timeout_s = 0;
  EXPECT_NE(error_of(f).find("--dist-timeout must be positive"), std::string::npos);
  f = {};
  f.tp_size = 0;
  EXPECT_NE(error_of(f).find("--tp-size must be at least 1"), std::string::npos);
}

TEST(ParallelConfig, ShardRefusesUnevenSplitsNamingTheDimension) {
  EXPECT_EQ(shard(7168, 3, 8, "hidden_size").begin, 2688);
  EXPECT_EQ(shard(7168, 3, 8, "hidden_size").size, 896);
  try {
    shard(128, 0, 3, "num_attention_heads");
    FAIL() << "an uneven split was accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "num_attention_heads = 128 does not split evenly over 3 ranks");
  }
  EXPECT_THROW(shard(8, 2, 2, "x"), Error);
}

TEST(ParallelConfig, DescribesRanksWithTheirNodes) {
  EXPECT_EQ(describe_ranks({3}, 4, 1), "rank 3");
  EXPECT_EQ(describe_ranks({3, 2}, 2, 2), "ranks 2, 3 (node 1)");
  EXPECT_EQ(describe_ranks({8, 9, 10, 11, 12, 13, 14, 15}, 8, 2), "ranks 8-15 (node 1)");
  EXPECT_EQ(describe_ranks({0, 1, 2, 5, 9}, 4, 3), "ranks 0-2 (node 0), 5 (node 1) and 9 (node 2)");
}

}  // namespace
}  // namespace narwhal
