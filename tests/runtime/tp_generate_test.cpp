// `narwhal generate` with tensor parallelism on the CPU: --tp 2 and 4 print TP 1's greedy ids and logits (within
// 1e-5 relative), also with EP, DP attention and DeepEP's dispatch (--moe-a2a-backend deepep), in one process and as
// 2 and 4 local processes over TCP (--nnodes N --node-rank r
// --dist-init-addr 127.0.0.1:PORT, the same command on each); a node that never joins, flags that differ between
// nodes, a model that does not split and a worker killed mid-run fail every other node within seconds, naming the
// ranks, the flag or the field.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <thread>

#include "core/error.h"
#include "core/json.h"
#include "parallel/parallel_test_util.h"
#include "test_util.h"

namespace narwhal {
namespace {

using testing::Child;

constexpr double kTolerance = 1e-5;

std::vector<std::string> generate_args(const std::string& fixture, int tp) {
  return {testing::narwhal_bin(), "generate", "--model-path", testing::fixture_dir(fixture), "--input-ids",
          "5,17,42,7,9,11,3", "--input-ids", "99,1,2", "--max-new-tokens", "6", "--temperature", "0", "--ignore-eos",
          "--json", "--return-logits", "--log-level", "error", "--tp", std::to_string(tp), "--page-size", "4"};
}

// The nodes of one world, each running `args` plus its node flags; waits at most limit_s.
std::vector<Child> run_nodes(std::vector<std::string> args, int nnodes, const testing::TempDir& dir, double limit_s,
                             const std::vector<int>& nodes, const std::vector<std::string>& last_node_extra = {}) {
  const std::string addr = cat("127.0.0.1:", testing::free_port());
  args.insert(args.end(), {"--nnodes", std::to_string(nnodes), "--dist-init-addr", addr});
  std::vector<Child> children;
  for (int node : nodes) {
    std::vector<std::string> mine = args;
    mine.push_back("--node-rank");
    mine.push_back(std::to_string(node));
    if (node == nnodes - 1) mine.insert(mine.end(), last_node_extra.begin(), last_node_extra.end());
    children.push_back(testing::spawn_process(mine, {"OMP_WAIT_POLICY=passive"}, dir.file(cat("node", node, ".log"))));
  }
  testing::wait_children(children, limit_s);
  return children;
}

// Every line of the output: one JSON object per prompt.
std::vector<json> outputs(const Child& c) {
  std::vector<json> lines;
  std::istringstream in(c.output());
  for (std::string line; std::getline(in, line);) {
    try {
      lines.push_back(json::parse(line));
    } catch (const json::exception&) {
      ADD_FAILURE() << "not a JSON line: " << line;
    }
  }
  return lines;
}

void expect_same(const std::vector<json>& got, const std::vector<json>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t p = 0; p < want.size(); ++p) {
    EXPECT_EQ(got[p]["output_ids"], want[p]["output_ids"]) << what << " prompt " << p;
    const auto a = got[p]["logits"].get<std::vector<std::vector<float>>>();
    const auto b = want[p]["logits"].get<std::vector<std::vector<float>>>();
    ASSERT_EQ(a.size(), b.size()) << what;
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_LE(testing::compare(a[i].data(), b[i].data(), static_cast<int64_t>(b[i].size())).rel, kTolerance)
          << what << " prompt " << p << " row " << i;
  }
}

std::vector<json> run_alone(const std::vector<std::string>& args, const testing::TempDir& dir,
                            const std::string& name) {
  std::vector<Child> one = {testing::spawn_process(args, {"OMP_WAIT_POLICY=passive"}, dir.file(name))};
  testing::wait_children(one, 60);
  EXPECT_EQ(one[0].exit_code, 0) << one[0].output();
  return outputs(one[0]);
}

class TpGenerate : public ::testing::TestWithParam<const char*> {};

TEST_P(TpGenerate, Tp2And4InOneProcessEqualTp1) {
  testing::TempDir dir;
  const std::vector<json> tp1 = run_alone(generate_args(GetParam(), 1), dir, "tp1.log");
  for (int tp : {2, 4})
    expect_same(run_alone(generate_args(GetParam(), tp), dir, cat("tp", tp, ".log")), tp1, cat("tp ", tp));
  // Expert parallelism: --ep-size 2 at TP 2, and SGLang's --enable-ep-moe (EP over all four ranks) at TP 4.
  std::vector<std::string> ep2 = generate_args(GetParam(), 2), ep4 = generate_args(GetParam(), 4);
  ep2.insert(ep2.end(), {"--ep-size", "2"});
  ep4.push_back("--enable-ep-moe");
  expect_same(run_alone(ep2, dir, "ep2.log"), tp1, "tp 2 ep 2");
  expect_same(run_alone(ep4, dir, "ep4.log"), tp1, "tp 4 --enable-ep-moe");
  // DP attention: the two prompts go to two DP ranks (round robin), each its own scheduler and cache; with one
  // prompt per rank of four, two ranks run idle; and with EP over all ranks.
  const std::vector<std::pair<int, std::vector<std::string>>> dp_cases = {
      {2, {"--enable-dp-attention", "--dp-size", "2"}},
      {4, {"--enable-dp-attention", "--dp", "2", "--load-balance-method", "shortest_queue"}},
      {4, {"--enable-dp-attention", "--dp-size", "4", "--enable-ep-moe"}}};
  for (const auto& [tp, flags] : dp_cases) {
    std::vector<std::string> args = generate_args(GetParam(), tp);
    args.insert(args.end(), flags.begin(), flags.end());
    expect_same(run_alone(args, dir, cat("dp", tp, ".log")), tp1, cat("tp ", tp, " ", flags[2], " ", flags.back()));
  }
  // DeepEP's dispatch (--ep-size then defaults to --tp-size): auto (low latency for the decodes, normal for the
  // prefill), low latency throughout, and normal with DP attention.
  const std::vector<std::pair<int, std::vector<std::string>>> deepep_cases = {
      {2, {"--moe-a2a-backend", "deepep"}},
      {4, {"--moe-a2a-backend", "deepep", "--deepep-mode", "low_latency"}},
      {4, {"--moe-a2a-backend", "deepep", "--deepep-mode", "normal", "--enable-dp-attention", "--dp-size", "2"}}};
  for (const auto& [tp, flags] : deepep_cases) {
    std::vector<std::string> args = generate_args(GetParam(), tp);
    args.insert(args.end(), flags.begin(), flags.end());
    std::string what = cat("tp ", tp);
    for (const std::string& f : flags) what += " " + f;
    expect_same(run_alone(args, dir, cat("deepep", tp, ".log")), tp1, what);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TpGenerate, ::testing::Values("v3", "v2_lite", "v3_fp8"));

// Speculative decoding on the trained tiny model (its MTP drafts are mostly kept): every rank draws the same tokens
// and runs the same draft-model batches, so TP, DP attention (groups' draft batches meeting around the MoE) and EP
// give the greedy ids of TP 1 without speculation.
TEST(TpGenerateSpeculative, TpDpAttentionAndEpGiveThePlainGreedyIds) {
  testing::TempDir dir;
  const auto args = [](int tp, std::vector<std::string> extra) {
    std::vector<std::string> a = {testing::narwhal_bin(), "generate", "--model-path",
                                  testing::source_path("models/arith-tiny"), "--temperature", "0", "--json",
                                  "--max-new-tokens", "24", "--page-size", "4", "--log-level", "error", "--tp",
                                  std::to_string(tp)};
    for (const char* q : {"Question: Maya has 21 balloons and shares them equally among 3 friends. How many "
                          "balloons does each friend get?\nAnswer:",
                          "Question: Noah buys 3 coins for $7 each and pays with a $50 bill. How much change does "
                          "Noah get?\nAnswer:",
                          "Question: Isla reads 10 pages every day for 7 days. How many pages does she read?\nAnswer:"})
      a.insert(a.end(), {"--text", q});
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  const std::vector<json> plain = run_alone(args(1, {}), dir, "plain.log");
  ASSERT_EQ(plain.size(), 3u);
  const std::vector<std::string> nextn = {"--speculative-algorithm", "NEXTN", "--speculative-num-steps", "3"};
  const std::vector<std::pair<int, std::vector<std::string>>> cases = {
      {2, {}}, {2, {"--ep-size", "2"}}, {2, {"--enable-dp-attention", "--dp-size", "2"}},
      {4, {"--enable-dp-attention", "--dp-size", "2", "--enable-ep-moe"}},
      // Tree drafting: every rank walks the same tree; DP groups run every draft round, empty where idle.
      {2, {"--ep-size", "2", "--speculative-eagle-topk", "2"}},
      {4, {"--enable-dp-attention", "--dp-size", "2", "--enable-ep-moe", "--speculative-eagle-topk", "2"}}};
  for (const auto& [tp, flags] : cases) {
    std::vector<std::string> extra = nextn;
    extra.insert(extra.end(), flags.begin(), flags.end());
    const std::vector<json> got = run_alone(args(tp, extra), dir, cat("spec", tp, flags.size(), ".log"));
    ASSERT_EQ(got.size(), plain.size()) << "tp " << tp;
    for (size_t p = 0; p < plain.size(); ++p)
      EXPECT_EQ(got[p]["output_ids"], plain[p]["output_ids"]) << "tp " << tp << " " << flags.size() << " prompt " << p;
  }
}

// 2 processes of 1 rank, 2 of 2 ranks, 4 of 1 rank: node 0 prints TP 1's output, every node exits 0.
TEST(TpGenerateNodes, TwoAndFourProcessesEqualTp1) {
  testing::TempDir dir;
  const std::vector<json> tp1 = run_alone(generate_args("v3", 1), dir, "tp1.log");
  for (const auto& [tp, nnodes] : {std::pair{2, 2}, std::pair{4, 2}, std::pair{4, 4}}) {
    std::vector<int> nodes;
    for (int n = 0; n < nnodes; ++n) nodes.push_back(n);
    const std::vector<Child> children = run_nodes(generate_args("v3", tp), nnodes, dir, 60, nodes);
    for (const Child& c : children) EXPECT_EQ(c.exit_code, 0) << c.output();
    expect_same(outputs(children[0]), tp1, cat("tp ", tp, " over ", nnodes, " processes"));
    for (size_t n = 1; n < children.size(); ++n) EXPECT_EQ(children[n].output(), "") << "a worker printed output";
  }
}

TEST(TpGenerateNodes, ANodeThatNeverJoinsFailsTheOthersWithinTheTimeout) {
  testing::TempDir dir;
  std::vector<std::string> args = generate_args("v3", 4);
  args.insert(args.end(), {"--dist-timeout", "1"});
  for (const Child& c : run_nodes(args, 4, dir, 20, {0, 1, 2})) {
    EXPECT_EQ(c.exit_code, 1) << c.output();
    EXPECT_NE(c.output().find("rank 3 (node 3) did not join 127.0.0.1:"), std::string::npos) << c.output();
    EXPECT_LT(c.seconds, 6.0);
  }
}

TEST(TpGenerateNodes, FlagsThatDifferBetweenNodesAreNamed) {
  testing::TempDir dir;
  for (const Child& c : run_nodes(generate_args("v3", 2), 2, dir, 30, {0, 1}, {"--page-size", "8"})) {
    EXPECT_EQ(c.exit_code, 1) << c.output();
    EXPECT_NE(c.output().find("flags differ between nodes: "), std::string::npos) << c.output();
    EXPECT_NE(c.output().find("--page-size: 4 on rank 0 (node 0), 8 on rank 1 (node 1)"), std::string::npos)
        << c.output();
  }
  for (const Child& c : run_nodes(generate_args("v3", 2), 2, dir, 30, {0, 1},
                                  {"--model-path", testing::fixture_dir("v3_fp8")})) {
    EXPECT_EQ(c.exit_code, 1) << c.output();
    EXPECT_NE(c.output().find("--model-path: "), std::string::npos) << c.output();
  }
  for (const Child& c : run_nodes(generate_args("v3", 2), 2, dir, 30, {0, 1}, {"--tp", "4"})) {
    EXPECT_EQ(c.exit_code, 1) << c.output();
    EXPECT_NE(c.output().find("flags differ between nodes: --tp-size: 2 on "), std::string::npos) << c.output();
  }
  for (const Child& c : run_nodes(generate_args("v3", 2), 2, dir, 30, {0, 1}, {"--ep-size", "2"})) {
    EXPECT_EQ(c.exit_code, 1) << c.output();
    EXPECT_NE(c.output().find("--ep-size: 1 on rank 0 (node 0), 2 on rank 1 (node 1)"), std::string::npos)
        << c.output();
  }
}

// A worker killed while node 0 generates (a small model with a 16k context, so it is still at it): node 0 exits
// non-zero within seconds, naming the lost rank.
TEST(TpGenerateNodes, AWorkerKilledMidRunFailsNodeZero) {
  testing::TempDir dir;
  json config = testing::small_v3_config();
  config["num_attention_heads"] = 4;
  config["max_position_embeddings"] = 16384;
  testing::write_random_checkpoint(dir.path(), config, 3);
  std::vector<std::string> args = {testing::narwhal_bin(), "generate", "--model-path", dir.path(), "--input-ids",
                                   "5,17,42", "--max-new-tokens", "100000", "--temperature", "0", "--ignore-eos",
                                   "--tp", "2", "--nnodes", "2", "--dist-init-addr",
                                   cat("127.0.0.1:", testing::free_port())};
  std::vector<std::string> node0 = args, node1 = args;
  node0.insert(node0.end(), {"--node-rank", "0"});
  node1.insert(node1.end(), {"--node-rank", "1"});
  std::vector<Child> children = {testing::spawn_process(node0, {}, dir.file("node0.log")),
                                 testing::spawn_process(node1, {}, dir.file("node1.log"))};
  std::this_thread::sleep_for(std::chrono::seconds(2));  // loaded and generating by now
  ::kill(children[1].pid, SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  testing::wait_children(children, 30);
  EXPECT_EQ(children[0].exit_code, 1) << children[0].output();
  EXPECT_NE(children[0].output().find("rank 1 (node 1)"), std::string::npos) << children[0].output();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count(), 10.0);
}

// v2_odd's 5 heads do not split over 2 ranks: every node says so at once, before waiting for the others.
TEST(TpGenerateNodes, AModelThatDoesNotSplitIsRefusedAtOnce) {
  testing::TempDir dir;
  for (const Child& c : run_nodes(generate_args("v2_odd", 2), 2, dir, 30, {0, 1})) {
    EXPECT_EQ(c.exit_code, 1) << c.output();
    EXPECT_NE(c.output().find("config.json's num_attention_heads = 5 does not split evenly over 2 ranks"),
              std::string::npos)
        << c.output();
    EXPECT_LT(c.seconds, 5.0);
  }
}

// DP replicas (--dp-size without DP attention), DP groups that --tp-size cannot hold or that span nodes, an EP size
// that does not divide the TP size, deepep with experts split inside EP groups and a --deepep-mode without deepep are
// refused by name.
TEST(TpGenerateNodes, DataParallelReplicasAndUnevenGroupsAreRefused) {
  testing::TempDir dir;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--dp-size", "2"}, "--dp-size 2 without --enable-dp-attention asks for data-parallel replicas"},
      {{"--dp-size", "3", "--enable-dp-attention"}, "which needs --tp-size divisible by --dp-size"},
      {{"--enable-dp-attention", "--dp-size", "2", "--nnodes", "2", "--dist-init-addr", "127.0.0.1:1"},
       "DP group 1 would start at rank 1 on node 1, but the engine on node 0 draws every group's tokens"},
      {{"--ep-size", "3"}, "--ep-size 3 does not divide --tp-size 2"},
      {{"--tp", "4", "--ep-size", "2", "--moe-a2a-backend", "deepep"},
       "--moe-a2a-backend deepep sends each token to the ranks holding its experts whole: it needs --ep-size equal to "
       "--tp-size, got --ep-size 2 with --tp-size 4"},
      {{"--deepep-mode", "normal"}, "--deepep-mode normal applies to --moe-a2a-backend deepep, not none"},
      {{"--moe-a2a-backend", "mooncake"}, "--moe-a2a-backend mooncake: expected none or deepep"}};
  for (size_t i = 0; i < cases.size(); ++i) {
    std::vector<std::string> args = generate_args("v3", 2);
    args.insert(args.end(), cases[i].first.begin(), cases[i].first.end());
    std::vector<Child> one = {testing::spawn_process(args, {}, dir.file(cat("refused", i, ".log")))};
    testing::wait_children(one, 30);
    EXPECT_EQ(one[0].exit_code, 1);
    EXPECT_NE(one[0].output().find(cases[i].second), std::string::npos) << one[0].output();
  }
}

}  // namespace
}  // namespace narwhal
