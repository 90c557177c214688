// The start-up meeting of a world's nodes at the TcpStore (everyone there, with the same flags), and the watchdog
// that notices a node whose process died mid-run.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "parallel/parallel_config.h"
#include "parallel/tcp_store.h"

namespace narwhal {

// Flags every node must agree on, by flag name: {"--model-path", "/data/v3"}, {"--page-size", "64"}, ...
using Fingerprint = std::map<std::string, std::string>;

// Posts this node's fingerprint (the parallel flags added), waits for every node within --dist-timeout and checks
// that they agree. Throws an Error naming each flag that differs with the ranks on each side, the ranks that did
// not join in time, or a --node-rank given to two processes.
void join_nodes(TcpStore& store, const ParallelConfig& config, const Fingerprint& fingerprint);

// Records at the store that this node's world failed and why, before its connections close, so that the other
// nodes name the cause rather than a closed connection.
void announce_failure(TcpStore& store, int node, const std::string& message);
// What node `node` announced, or "" when it has not failed.
std::string announced_failure(TcpStore& store, int node);

// A thread that asks the store, every `interval_s`, whether another node announced a failure or its connection
// closed without a goodbye (its process exited or crashed), and notices when the store itself is gone (node 0
// died). On the first loss it calls on_loss(message naming the node's ranks) once, from its own thread, and stops.
class NodeWatchdog {
 public:
  NodeWatchdog(TcpStore& store, const ParallelConfig& config, std::function<void(const std::string&)> on_loss,
               double interval_s = 0.1);
  ~NodeWatchdog();
  NodeWatchdog(const NodeWatchdog&) = delete;
  NodeWatchdog& operator=(const NodeWatchdog&) = delete;

 private:
  void watch(TcpStore& store, const ParallelConfig& config, const std::function<void(const std::string&)>& on_loss,
             double interval_s);

  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace narwhal
