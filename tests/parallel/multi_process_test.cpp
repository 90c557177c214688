// Multi-node worlds as local processes over TCP on 127.0.0.1: each node is a child running this binary's
// ParallelChild.Run. Every collective and group, two and four processes, two processes of two threads; a node
// that never joins, a rank that dies mid-run, a node whose death or failure only the watchdog sees, flags that
// differ.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "parallel/collective_checks.h"
#include "parallel/parallel_test_util.h"
#include "parallel/process_world.h"
#include "test_util.h"

namespace narwhal {
namespace {

using testing::Child;

constexpr const char* kChildVar = "NARWHAL_PARALLEL_CHILD";
constexpr int kChildError = 3;  // a child whose world failed (any other non-zero is a crash or a test failure)

// What one child node does, passed in kChildVar as space-separated fields.
struct ChildSpec {
  std::string scenario;  // collectives | die | die_quiet | fail_quiet
  int nnodes = 2;
  int node = 0;
  int ranks_per_node = 1;
  double timeout_s = 30;
  std::string addr;
  std::string page_size = "64";  // a fingerprinted flag
  int die_node = -1;             // die, die_quiet, fail_quiet: the node that exits (or fails) mid-run

  static ChildSpec of(const std::string& scenario, int nnodes, int ranks_per_node, double timeout_s) {
    ChildSpec s;
    s.scenario = scenario;
    s.nnodes = nnodes;
    s.ranks_per_node = ranks_per_node;
    s.timeout_s = timeout_s;
    return s;
  }
  std::string encode() const {
    return cat(scenario, " ", nnodes, " ", node, " ", ranks_per_node, " ", timeout_s, " ", addr, " ", page_size, " ",
               die_node);
  }
  static ChildSpec decode(const std::string& text) {
    ChildSpec s;
    std::istringstream in(text);
    in >> s.scenario >> s.nnodes >> s.node >> s.ranks_per_node >> s.timeout_s >> s.addr >> s.page_size >> s.die_node;
    return s;
  }
};

double since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Calls `step` until 20 s pass: long enough that a survivor still running then has missed the death.
void keep_going(const std::function<void()>& step) {
  const auto start = std::chrono::steady_clock::now();
  while (since(start) < 20) step();
}

void run_child(const ChildSpec& s) {
  ParallelFlags flags;
  flags.tp_size = s.nnodes * s.ranks_per_node;
  flags.nnodes = s.nnodes;
  flags.node_rank = s.node;
  flags.dist_init_addr = s.addr;
  flags.dist_timeout_s = s.timeout_s;
  if (s.scenario == "collectives" && flags.tp_size % 2 == 0) {
    flags.dp_size = 2;  // groups that cut across nodes differently: attention TP, EP, MoE TP
    flags.enable_dp_attention = true;
    flags.ep_size = 2;
  }
  if (s.scenario == "die_quiet" || s.scenario == "fail_quiet") {  // a TP group per node: nothing crosses nodes
    flags.tp_size = s.ranks_per_node;
    flags.dp_size = s.nnodes;
  }
  ProcessWorld world(flags, Backend::kHost, {{"--page-size", s.page_size}});
  world.run([&](const ParallelConfig& config, Communicator& comm) {
    if (s.scenario == "collectives") {
      testing::check_all_collectives(testing::CollectiveHarness(comm, nullptr, true));
      testing::check_groups(comm, config, nullptr, true);
      // Messages far larger than a socket buffer.
      Tensor big = testing::test_input(DType::kF32, {1 << 18}, config.rank(), 7);
      Tensor all = Tensor::zeros(DType::kF32, {config.world_size() << 18});
      comm.all_gather(big, all);
      NW_CHECK(std::memcmp(all.f32() + (static_cast<size_t>(config.rank()) << 18), big.data, big.nbytes()) == 0,
               "big all_gather");
    } else if (s.scenario == "die") {
      Tensor t = Tensor::zeros(DType::kF32, {1024});
      for (int i = 0; i < 5; ++i) comm.all_reduce(t, t);
      if (config.node_rank() == s.die_node) std::_Exit(42);
      keep_going([&] { comm.all_reduce(t, t); });
    } else {
      ParallelGroups groups = split_groups(comm, config);
      comm.barrier();
      if (config.node_rank() == s.die_node && s.scenario == "die_quiet") std::_Exit(42);
      if (config.node_rank() == s.die_node && config.local_rank() == 0) throw Error("boom");
      Tensor t = Tensor::zeros(DType::kF32, {1024});
      keep_going([&] { groups.tp->all_reduce(t, t); });
    }
  });
}

TEST(ParallelChild, Run) {
  const char* spec = std::getenv(kChildVar);
  if (!spec) GTEST_SKIP() << "runs only as a node of the multi-process tests";
  try {
    run_child(ChildSpec::decode(spec));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child error: %s\n", e.what());
    std::fflush(stderr);
    std::exit(kChildError);
  }
}

// Spawns `nodes` of the world `base` describes (base.node is set per child) and waits, at most limit_s.
std::vector<Child> run_nodes(ChildSpec base, const std::vector<int>& nodes, const testing::TempDir& dir,
                             double limit_s, const std::string& odd_page_size = "") {
  base.addr = cat("127.0.0.1:", testing::free_port());
  std::vector<Child> children;
  for (int node : nodes) {
    ChildSpec s = base;
    s.node = node;
    if (!odd_page_size.empty() && node == base.nnodes - 1) s.page_size = odd_page_size;
    children.push_back(testing::spawn_child({cat(kChildVar, "=", s.encode())}, dir.file(cat("node", node, ".log"))));
  }
  testing::wait_children(children, limit_s);
  return children;
}

void expect_all_succeed(const ChildSpec& spec) {
  testing::TempDir dir;
  std::vector<int> nodes;
  for (int n = 0; n < spec.nnodes; ++n) nodes.push_back(n);
  for (const Child& c : run_nodes(spec, nodes, dir, 60)) EXPECT_EQ(c.exit_code, 0) << c.output();
}

TEST(MultiProcess, TwoProcessesRunEveryCollective) { expect_all_succeed(ChildSpec::of("collectives", 2, 1, 30)); }

TEST(MultiProcess, FourProcessesRunEveryCollective) { expect_all_succeed(ChildSpec::of("collectives", 4, 1, 30)); }

TEST(MultiProcess, TwoProcessesOfTwoThreadsRunEveryCollective) { expect_all_succeed(ChildSpec::of("collectives", 2, 2, 30)); }

TEST(MultiProcess, ANodeThatNeverJoinsIsNamedByEveryOtherWithinTheTimeout) {
  testing::TempDir dir;
  ChildSpec spec = ChildSpec::of("collectives", 3, 1, 1.0);
  for (const Child& c : run_nodes(spec, {0, 1}, dir, 20)) {
    EXPECT_EQ(c.exit_code, kChildError) << c.output();
    EXPECT_NE(c.output().find("rank 2 (node 2) did not join 127.0.0.1:"), std::string::npos) << c.output();
    EXPECT_LT(c.seconds, 6.0);
  }
}

TEST(MultiProcess, WithoutNodeZeroNobodyReachesTheRendezvous) {
  testing::TempDir dir;
  ChildSpec spec = ChildSpec::of("collectives", 2, 2, 1.0);
  const std::vector<Child> children = run_nodes(spec, {1}, dir, 20);
  EXPECT_EQ(children[0].exit_code, kChildError) << children[0].output();
  EXPECT_NE(children[0].output().find("could not reach the rendezvous at 127.0.0.1:"), std::string::npos);
  EXPECT_NE(children[0].output().find("ranks 0, 1 (node 0) serves it"), std::string::npos) << children[0].output();
  EXPECT_LT(children[0].seconds, 6.0);
}

// The dead node exited with `dead_exit`; every other node failed (kChildError) naming `lost`, well before the 60 s
// timeout.
void expect_death_noticed(const std::vector<Child>& children, int dead, const std::string& lost, int dead_exit = 42) {
  EXPECT_EQ(children[dead].exit_code, dead_exit) << children[dead].output();
  for (int node = 0; node < static_cast<int>(children.size()); ++node) {
    if (node == dead) continue;
    const Child& c = children[node];
    EXPECT_EQ(c.exit_code, kChildError) << c.output();
    EXPECT_NE(c.output().find(lost), std::string::npos) << c.output();
    EXPECT_LT(c.seconds, 10.0) << "waited for the timeout instead of noticing";
  }
}

TEST(MultiProcess, ARankThatDiesMidRunFailsTheOthersPromptly) {
  testing::TempDir dir;
  ChildSpec spec = ChildSpec::of("die", 4, 1, 60);
  spec.die_node = 2;
  expect_death_noticed(run_nodes(spec, {0, 1, 2, 3}, dir, 40), 2, "the connection to rank 2 (node 2) closed");
}

TEST(MultiProcess, NodeZeroDyingFailsTheOthersPromptly) {
  testing::TempDir dir;
  ChildSpec spec = ChildSpec::of("die", 2, 2, 60);
  spec.die_node = 0;
  expect_death_noticed(run_nodes(spec, {0, 1}, dir, 40), 0, "(node 0)");
}

TEST(MultiProcess, TheWatchdogNamesADeadNodeToRanksThatOnlyTalkLocally) {
  testing::TempDir dir;
  ChildSpec spec = ChildSpec::of("die_quiet", 2, 2, 60);
  spec.die_node = 1;
  expect_death_noticed(run_nodes(spec, {0, 1}, dir, 40), 1, "ranks 2, 3 (node 1) left the world without a goodbye");
}

TEST(MultiProcess, ANodeWhoseRankFailsTellsTheOthersWhy) {
  testing::TempDir dir;
  ChildSpec spec = ChildSpec::of("fail_quiet", 2, 2, 60);
  spec.die_node = 1;
  expect_death_noticed(run_nodes(spec, {0, 1}, dir, 40), 1, "node 1 stopped: rank 2 (node 1) failed: boom",
                       kChildError);
}

TEST(MultiProcess, FlagsThatDifferBetweenNodesAreNamedByEveryNode) {
  testing::TempDir dir;
  ChildSpec spec = ChildSpec::of("collectives", 2, 2, 10);
  for (const Child& c : run_nodes(spec, {0, 1}, dir, 30, "32")) {
    EXPECT_EQ(c.exit_code, kChildError) << c.output();
    EXPECT_NE(c.output().find("flags differ between nodes: --page-size: 64 on ranks 0, 1 (node 0), 32 on ranks 2, 3 "
                              "(node 1)"),
              std::string::npos)
        << c.output();
  }
}

}  // namespace
}  // namespace narwhal
