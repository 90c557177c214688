// TpModelRunner: a tensor-parallel group behind the ModelRunner interface, so the engine on TP rank 0 drives it as
// it drives one GPU (with DP attention, one DpGroupRunner per DP group); and follow_node_zero, what the other nodes
// of a multi-node world run instead of an engine.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "parallel/process_world.h"
#include "runtime/model_runner.h"
#include "runtime/tp_ranks.h"

namespace narwhal {

// Node 0 of a world (or the whole of a one-node world). Every call becomes a command: sent first to the other nodes
// over the world's command channel, then queued for this process's rank threads; all ranks run it in the same
// order, their collectives meet, and TP rank 0 (here) draws the tokens, which finish() returns. While the engine
// is idle a heartbeat goes to the other nodes at least every second, so that their wait for the next command, bounded
// by --dist-timeout, tells a silent node 0 from an idle one.
class TpModelRunner : public ModelRunner {
 public:
  // Makes each local rank's runner with `make` (see TpRanks); returns once all are made, or throws the first failure.
  TpModelRunner(std::unique_ptr<ProcessWorld> world, RankRunnerFactory make);
  // Tells every rank, here and on the other nodes, to stop, and waits for this process's.
  ~TpModelRunner() override;

  const ModelConfig& config() const override { return ranks_->first().config(); }
  int64_t num_pages() const override { return ranks_->first().num_pages(); }
  int64_t page_size() const override { return ranks_->first().page_size(); }
  void launch(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits) override;
  StepOutput finish() override;
  Tensor run(const ForwardBatch& batch) override;
  void copy_page(int32_t src, int32_t dst) override;
  std::string failure() const override;
  // World rank 0's count: with DP attention it routes every group's tokens too.
  std::vector<int64_t> expert_tokens() const override { return ranks_->first().expert_tokens(); }

  // DP attention (SGLang's --enable-dp-attention): the world runs dp_size() groups, each with its own batch and
  // cache, driven per group; the calls above are group 0's, for a world of one group. A step is issued, as one
  // command holding every group's batch (and each batch every group's token count), once every group has launched
  // its part, so each launch must be followed by the other groups' before any finish (an idle group launches an
  // empty batch).
  int dp_size() const { return dp_size_; }
  void launch_group(int group, const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits);
  StepOutput finish_group(int group);
  // A step of this group's batch alone (the others run empty ones); its logits.
  Tensor run_group(int group, const ForwardBatch& batch);
  void copy_page_in_group(int group, int32_t src, int32_t dst);

 private:
  // Sends the command to the other nodes (if any) and queues it for the local ranks; returns its number.
  uint64_t issue(std::shared_ptr<TpCommand> command, std::vector<std::span<const SampleRequest>> samples = {});
  // Gives every batch of the command the groups' token counts and whether all of them decode (DP attention).
  void count_group_tokens(TpCommand& command) const;
  void send(const TpCommand& command);  // to the other nodes, under send_mutex_
  void beat();                          // the heartbeat thread
  void stop_beating();

  std::unique_ptr<ProcessWorld> world_;
  mutable std::mutex send_mutex_;
  std::condition_variable beat_cv_;
  bool stop_beating_ = false;
  std::chrono::steady_clock::time_point last_send_ = std::chrono::steady_clock::now();
  std::string send_failure_;  // why a send to another node failed
  std::thread heartbeat_;
  std::unique_ptr<TpRanks> ranks_;
  int dp_size_ = 1;
  uint64_t launched_ = 0;
  // The step whose groups are launching: their batches, draws, and which have launched.
  std::shared_ptr<TpCommand> staged_;
  std::vector<std::span<const SampleRequest>> staged_samples_;
  std::vector<bool> staged_groups_;
};

// One DP group of a TpModelRunner as a ModelRunner of its own, for the engine's DP rank of that group.
class DpGroupRunner : public ModelRunner {
 public:
  DpGroupRunner(std::shared_ptr<TpModelRunner> tp, int group) : tp_(std::move(tp)), group_(group) {}
  const ModelConfig& config() const override { return tp_->config(); }
  int64_t num_pages() const override { return tp_->num_pages(); }
  int64_t page_size() const override { return tp_->page_size(); }
  void launch(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits) override {
    tp_->launch_group(group_, batch, samples, return_logits);
  }
  StepOutput finish() override { return tp_->finish_group(group_); }
  Tensor run(const ForwardBatch& batch) override { return tp_->run_group(group_, batch); }
  void copy_page(int32_t src, int32_t dst) override { tp_->copy_page_in_group(group_, src, dst); }
  std::string failure() const override { return tp_->failure(); }
  // Group 0's view reports the world's count (the engine sums its ranks').
  std::vector<int64_t> expert_tokens() const override {
    return group_ == 0 ? tp_->expert_tokens() : std::vector<int64_t>();
  }

 private:
  std::shared_ptr<TpModelRunner> tp_;
  int group_;
};

// A node other than 0: makes its ranks' runners with `make`, then runs node 0's commands as they arrive until it
// says stop (returns) or is lost (throws: its connection closed, it was silent for --dist-timeout, or the world
// failed).
void follow_node_zero(ProcessWorld& world, const RankRunnerFactory& make);

}  // namespace narwhal
