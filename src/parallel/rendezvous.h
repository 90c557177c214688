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

// A thread that asks the store, every `interval_s`, whether a node's connection closed without a goodbye (its
// process exited or crashed) and notices when the store itself is gone (node 0 died). On the first loss it calls
// on_loss(message naming the lost ranks) once, from its own thread, and stops watching.
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
