// ProcessWorld: this process's part of a parallel world (its ranks' communicators, the rendezvous and watchdog
// of a multi-node world), run_ranks for tests, and the TP / DP-attention / EP groups a model splits off it.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/parallel_config.h"
#include "parallel/rendezvous.h"
#include "parallel/world_status.h"

namespace narwhal {

class TcpStore;
class NodeWatchdog;
class CommandChannel;

enum class Backend {
  kHost,         // CPU tensors: threads through shared memory, nodes over TCP (the CPU runner, CI)
  kDeviceLocal,  // every rank a thread on this process's current GPU (tests at real per-rank shapes)
  kNccl,         // local rank i on GPU i, nodes over NCCL's transports (serving)
};
const char* backend_name(Backend backend);

using RankFn = std::function<void(const ParallelConfig& config, Communicator& world)>;

class ProcessWorld {
 public:
  // Joins the world `flags` describe as node --node-rank and makes the world communicators of this node's ranks.
  // With --nnodes > 1: connects to the TcpStore at --dist-init-addr (node 0 serves it), meets every node there
  // (join_nodes with `fingerprint`: missing nodes and differing flags are named), sets up the backend and node 0's
  // command channel through it, then watches for nodes that die. Every wait is bounded by --dist-timeout.
  ProcessWorld(const ParallelFlags& flags, Backend backend, const Fingerprint& fingerprint = {});
  ~ProcessWorld();
  ProcessWorld(const ProcessWorld&) = delete;
  ProcessWorld& operator=(const ProcessWorld&) = delete;

  int num_local_ranks() const { return static_cast<int>(configs_.size()); }
  const ParallelConfig& config(int local_rank) const { return configs_.at(local_rank); }
  Communicator& comm(int local_rank) { return *comms_.at(local_rank); }
  // This process's failure state: the first failure of a rank, a lost node (the watchdog), ...
  const WorldStatus& status() const { return *status_; }
  // Node 0's messages to the other nodes (null in a one-node world); set up after the communicators.
  CommandChannel* commands() { return commands_.get(); }

  // Runs fn(config, world communicator) for every local rank, each on its own thread (with its GPU current on
  // device backends). A rank that throws fails the world, so the other ranks' waits end instead of hanging; then
  // run announces the first failure at the store (multi-node: the other nodes' watchdogs and closed connections
  // name it) and throws it as an Error. On NCCL, ranks still blocked 5 s after a failure (on GPU work that the
  // failed rank will never match) end the process with exit status 1.
  void run(const RankFn& fn);

 private:
  void make_nccl_comms();      // the ncclUniqueId from node 0 (through the store), then one NCCL group
  void make_exchange_comms();  // host or device-local: the TCP mesh between nodes, a LocalGroup inside this one
  void exit_if_stuck(const std::atomic<int>& running) const;

  Backend backend_;
  std::vector<ParallelConfig> configs_;
  std::vector<int> devices_;  // the GPU of each local rank; -1 on the host backend
  std::shared_ptr<WorldStatus> status_ = std::make_shared<WorldStatus>();
  std::unique_ptr<TcpStore> store_;
  std::vector<std::unique_ptr<Communicator>> comms_;
  std::unique_ptr<CommandChannel> commands_;
  std::unique_ptr<NodeWatchdog> watchdog_;
};

// `flags`' world as threads of this process (nnodes 1), fn run on each rank as ProcessWorld::run does.
void run_ranks(const ParallelFlags& flags, const RankFn& fn, Backend backend = Backend::kHost);
// A world of `world_size` TP ranks.
void run_ranks(int world_size, const RankFn& fn, Backend backend = Backend::kHost, double timeout_s = 60);

// The groups a model runs with, split off the world communicator as `config` says. Collective: every rank of the
// world calls it.
struct ParallelGroups {
  std::unique_ptr<Communicator> tp, attn_tp, ep, moe_tp;
};
ParallelGroups split_groups(Communicator& world, const ParallelConfig& config);

}  // namespace narwhal
