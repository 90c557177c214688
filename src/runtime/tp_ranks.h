// TpRanks: the ranks of a tensor-parallel group that this process holds, each a thread (ProcessWorld::run) with its
// own sharded runner, running the same commands in the same order so that their collectives meet.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "parallel/process_world.h"
#include "runtime/model_runner.h"
#include "runtime/tp_command.h"

namespace narwhal {

// Makes one rank's runner on the rank's own thread (its GPU current): `rank` is its place in the world, `tp` its TP
// group's communicator and `dp_group`, with DP attention, its DP group's (null without it); both outlive the runner.
using RankRunnerFactory =
    std::function<std::unique_ptr<ModelRunner>(const ParallelConfig& rank, Communicator& tp, Communicator* dp_group)>;

class TpRanks {
 public:
  // Runs `world`'s local ranks on their threads, each making its runner with `make`; returns once every one has,
  // or throws the first failure once the threads have ended.
  TpRanks(ProcessWorld& world, RankRunnerFactory make);
  // Stops the ranks (as a kStop would) and waits for their threads.
  ~TpRanks();
  TpRanks(const TpRanks&) = delete;
  TpRanks& operator=(const TpRanks&) = delete;

  // The first local rank's runner: its config and cache are every rank's (read-only here; its thread drives it).
  const ModelRunner& first() const { return *first_; }
  // Queues `command` for every local rank and returns its number. The first rank of each DP group (world rank 0
  // without DP attention; all on node 0) draws the tokens of its group's batch of a kStep with samples[group], which
  // must stay valid until wait() returns for it; the other ranks only run the forward.
  uint64_t post(std::shared_ptr<const TpCommand> command, std::vector<std::span<const SampleRequest>> samples = {});
  // Waits until every local rank has run command `seq`; throws the failure when a rank or the world failed.
  void wait(uint64_t seq);
  // A DP group's result of the last kStep (its drawn tokens) or kRun (its logits), once wait() returned.
  StepOutput take_step_output(int group = 0);
  Tensor take_run_logits(int group = 0);
  // "" while every rank can go on; else the first failure (a rank that threw, a lost node, ...).
  std::string failure() const;
  // Queues kStop (once) and waits until the rank threads have ended; returns failure().
  std::string stop();

 private:
  struct Entry {
    uint64_t seq = 0;
    std::shared_ptr<const TpCommand> command;
    std::vector<std::span<const SampleRequest>> samples;  // by DP group
  };
  void rank_main(const ParallelConfig& config, Communicator& world);
  // Blocks until command `seq` is queued; throws once something failed.
  Entry next_command(uint64_t seq);
  void execute(ModelRunner& runner, const Entry& entry, int group, bool draws);
  void record_failure(const std::string& message);
  bool all_done(uint64_t seq) const;  // under mutex_

  ProcessWorld& world_;
  RankRunnerFactory make_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Entry> queue_;     // posted and not yet run by every local rank
  std::vector<uint64_t> done_;  // by local rank: the last command it ran
  uint64_t posted_ = 0;
  int ready_ = 0;               // ranks whose runner is made
  bool stop_posted_ = false;
  bool ended_ = false;          // the rank threads have ended
  std::string failure_;
  const ModelRunner* first_ = nullptr;
  std::vector<StepOutput> step_outputs_;  // by DP group
  std::vector<Tensor> run_logits_;
  std::thread thread_;  // runs world_.run, which runs the rank threads
};

}  // namespace narwhal
