// TcpStore and join_nodes in one process (each node a thread with its own client): keys, counters, bounded waits,
// the rendezvous error naming missing ranks, differing flags and a doubled --node-rank.
#include "parallel/tcp_store.h"

#include <gtest/gtest.h>

#include <thread>

#include "core/error.h"
#include "parallel/parallel_test_util.h"
#include "parallel/rendezvous.h"

namespace narwhal {
namespace {

using testing::free_port;

std::string local_addr(int port) { return cat("127.0.0.1:", port); }

TEST(TcpStore, SetGetAddAndWait) {
  const std::string addr = local_addr(free_port());
  TcpStore server(addr, 0, true, 5, "rank 0");
  TcpStore client(addr, 1, false, 5, "rank 0");
  client.set("a", "hello");
  EXPECT_EQ(server.get("a"), "hello");
  EXPECT_EQ(server.try_get("b"), std::nullopt);
  EXPECT_EQ(client.add("n", 2), 2);
  EXPECT_EQ(server.add("n", 5), 7);
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    client.set("b", std::string(100000, 'x'));  // larger than one read
  });
  EXPECT_TRUE(server.wait({"a", "b"}, 5).empty());
  late.join();
  EXPECT_EQ(server.get("b").size(), 100000u);
  EXPECT_EQ(server.wait({"a", "c", "d"}, 0.05), (std::vector<std::string>{"c", "d"}));
  EXPECT_TRUE(server.lost_clients().empty());
}

TEST(TcpStore, BoundedWaitsNameWhatIsMissing) {
  const std::string addr = local_addr(free_port());
  TcpStore server(addr, 0, true, 0.2, "rank 0");
  try {
    server.get("never");
    FAIL() << "get of a key nobody sets returned";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'never' did not appear at the rendezvous at " + addr + " within 0.2 s"),
              std::string::npos)
        << e.what();
  }
}

TEST(TcpStore, UnreachableStoreNamesWhoServesIt) {
  const std::string addr = local_addr(free_port());
  const auto start = std::chrono::steady_clock::now();
  try {
    TcpStore client(addr, 1, false, 0.3, "ranks 0-1 (node 0)");
    FAIL() << "connected to a store nobody serves";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("could not reach the rendezvous at " + addr + " within 0.3 s"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("ranks 0-1 (node 0) serves it"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 2.0);
}

// Runs join_nodes for each of `nodes` (node ranks of a world of --nnodes `nnodes`, one rank each) on its own thread;
// returns each node's error ("" when it joined).
std::vector<std::string> join(const std::vector<int>& nodes, int nnodes, const std::vector<Fingerprint>& prints,
                              double timeout_s) {
  const std::string addr = local_addr(free_port());
  std::vector<std::string> errors(nodes.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < nodes.size(); ++i) {
    threads.emplace_back([&, i] {
      ParallelFlags flags;
      flags.tp_size = nnodes;
      flags.nnodes = nnodes;
      flags.node_rank = nodes[i];
      flags.dist_init_addr = addr;
      flags.dist_timeout_s = timeout_s;
      try {
        const ParallelConfig config(flags, nodes[i]);
        TcpStore store(addr, nodes[i], nodes[i] == 0, timeout_s, "rank 0 (node 0)");
        join_nodes(store, config, prints[i]);
      } catch (const Error& e) {
        errors[i] = e.what();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return errors;
}

TEST(JoinNodes, EveryNodeJoins) {
  const Fingerprint same = {{"--model-path", "/m"}};
  EXPECT_EQ(join({0, 1, 2}, 3, {same, same, same}, 5), (std::vector<std::string>{"", "", ""}));
}

TEST(JoinNodes, MissingNodeIsNamedByEveryNodeWithinTheTimeout) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<std::string> errors = join({0, 1}, 3, {{}, {}}, 0.5);
  for (const std::string& e : errors)
    EXPECT_NE(e.find("rank 2 (node 2) did not join 127.0.0.1:"), std::string::npos) << e;
  EXPECT_NE(errors[0].find("within 0.5 s"), std::string::npos) << errors[0];
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 3.0);
}

TEST(JoinNodes, DifferingFlagsAreNamedWithTheirRanks) {
  const Fingerprint a = {{"--page-size", "64"}, {"--dtype", "bf16"}};
  const Fingerprint b = {{"--page-size", "32"}, {"--dtype", "bf16"}};
  const std::vector<std::string> errors = join({0, 1, 2}, 3, {a, a, b}, 5);
  for (const std::string& e : errors)
    EXPECT_EQ(e, "flags differ between nodes: --page-size: 64 on ranks 0 (node 0) and 1 (node 1), 32 on rank 2 "
                 "(node 2)");
}

TEST(JoinNodes, NodeRankGivenTwiceIsRefusedByBothClaimants) {
  // Node 2 never comes (its operator typed 1), which holds the join open until both claimants are there.
  const std::vector<std::string> errors = join({0, 1, 1}, 3, {{}, {}, {}}, 1.5);
  EXPECT_NE(errors[0].find("rank 2 (node 2) did not join"), std::string::npos) << errors[0];
  for (int i : {1, 2}) EXPECT_NE(errors[i].find("--node-rank 1 was given to"), std::string::npos) << errors[i];
}

}  // namespace
}  // namespace narwhal
