// CommandChannel in one process (each node a thread with its own store client): messages arrive in order and whole
// (large ones too), a silent node 0 is named at the timeout, a closed one at once, a failed world ends the wait, and
// node 0 names a node whose connection closed.
#include "parallel/command_channel.h"

#include <gtest/gtest.h>

#include <thread>

#include "core/error.h"
#include "parallel/parallel_test_util.h"

namespace narwhal {
namespace {

struct TwoNodes {
  ParallelFlags flags;
  std::shared_ptr<WorldStatus> status0 = std::make_shared<WorldStatus>();
  std::shared_ptr<WorldStatus> status1 = std::make_shared<WorldStatus>();
  std::unique_ptr<TcpStore> store0, store1;
  std::unique_ptr<CommandChannel> node0, node1;

  TwoNodes() {
    flags.tp_size = 2;
    flags.nnodes = 2;
    flags.dist_timeout_s = 5;
    flags.dist_init_addr = cat("127.0.0.1:", testing::free_port());
    store0 = std::make_unique<TcpStore>(flags.dist_init_addr, 0, true, 5, "rank 0");
    store1 = std::make_unique<TcpStore>(flags.dist_init_addr, 1, false, 5, "rank 0");
    std::thread other([&] { node1 = std::make_unique<CommandChannel>(*store1, node_config(1), status1); });
    node0 = std::make_unique<CommandChannel>(*store0, node_config(0), status0);
    other.join();
  }
  ParallelConfig node_config(int node) const {
    ParallelFlags f = flags;
    f.node_rank = node;
    return ParallelConfig(f, node);
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CommandChannel, MessagesArriveInOrderAndWhole) {
  TwoNodes w;
  const std::string big(3 << 20, 'x');
  std::thread sender([&] {
    for (const std::string& m : {std::string("first"), big, std::string()}) w.node0->send(m);
  });
  EXPECT_EQ(w.node1->receive(5), "first");
  EXPECT_EQ(w.node1->receive(5), big);
  EXPECT_EQ(w.node1->receive(5), "");
  sender.join();
}

TEST(CommandChannel, SilentClosedOrFailedNodeZeroEndsTheWait) {
  TwoNodes w;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_NE(error_of([&] { w.node1->receive(0.3); }).find("no command from rank 0 (node 0) within 0.3 s"),
            std::string::npos);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 2.0);
  w.status1->fail("rank 0 (node 0) left the world without a goodbye");
  EXPECT_NE(error_of([&] { w.node1->receive(5); }).find("gave up because rank 0 (node 0) left the world"),
            std::string::npos);
  TwoNodes v;
  v.node0.reset();
  EXPECT_NE(error_of([&] { v.node1->receive(5); }).find("the command connection to rank 0 (node 0) closed"),
            std::string::npos);
}

TEST(CommandChannel, SendingToAClosedNodeNamesIt) {
  TwoNodes w;
  w.node1.reset();
  std::string error;
  for (int i = 0; i < 100 && error.empty(); ++i) {  // the first sends may still fit in the kernel's buffers
    error = error_of([&] { w.node0->send(std::string(1 << 16, 'y')); });
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_NE(error.find("the command connection to rank 1 (node 1) closed"), std::string::npos) << error;
}

}  // namespace
}  // namespace narwhal
