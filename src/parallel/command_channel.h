// CommandChannel: node 0's ordered messages to every other node of a world, one TCP connection per node. It carries
// what the others must do next (each step's batch, copies, heartbeats, stop), whatever backend carries the tensors:
// NCCL moves only device memory, and the host backend's collectives need shapes both sides already know.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "parallel/parallel_config.h"
#include "parallel/socket.h"
#include "parallel/tcp_store.h"
#include "parallel/world_status.h"

namespace narwhal {

class CommandChannel {
 public:
  // Node 0 listens on a free port, posts its address at the store and accepts a connection from every other node;
  // the others connect to it. Bounded by --dist-timeout.
  CommandChannel(TcpStore& store, const ParallelConfig& config, std::shared_ptr<const WorldStatus> status);

  // Node 0: sends `message` to every other node, in order. Throws naming the node whose connection closed.
  void send(const std::string& message);
  // The other nodes: the next message. Throws naming node 0 when its connection closed (its process ended), when
  // nothing came within `timeout_s`, or once the world has failed meanwhile (the failure's message).
  std::string receive(double timeout_s);

 private:
  ParallelConfig config_;
  std::shared_ptr<const WorldStatus> status_;
  std::vector<Socket> links_;  // node 0: to nodes 1.. in order; the others: the one to node 0
};

}  // namespace narwhal
