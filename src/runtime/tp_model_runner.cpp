// TpModelRunner: commands to the local ranks and the other nodes, the heartbeat; follow_node_zero's loop.
#include "runtime/tp_model_runner.h"

#include <algorithm>

#include "core/error.h"
#include "core/logging.h"
#include "parallel/command_channel.h"

namespace narwhal {

namespace {

// The longest node 0 stays silent while idle: well inside the other nodes' --dist-timeout.
std::chrono::duration<double> heartbeat_interval(const ProcessWorld& world) {
  return std::chrono::duration<double>(std::min(1.0, world.config(0).timeout_s() / 4));
}

}  // namespace

TpModelRunner::TpModelRunner(std::unique_ptr<ProcessWorld> world, RankRunnerFactory make)
    : world_(std::move(world)) {
  NW_CHECK(world_->config(0).node_rank() == 0, "TpModelRunner runs on node 0; the others follow it");
  // Beating starts before the load: the other nodes wait for the first command meanwhile.
  if (world_->commands()) heartbeat_ = std::thread([this] { beat(); });
  const ParallelConfig& first = world_->config(0);
  dp_size_ = first.flags().dp_attention_groups();
  staged_groups_.assign(static_cast<size_t>(dp_size_), false);
  staged_samples_.resize(static_cast<size_t>(dp_size_));
  try {
    ranks_ = std::make_unique<TpRanks>(*world_, std::move(make));
  } catch (...) {
    stop_beating();
    throw;
  }
}

TpModelRunner::~TpModelRunner() {
  stop_beating();
  if (world_->commands()) {
    try {
      auto stop = std::make_shared<TpCommand>();
      stop->kind = TpCommand::Kind::kStop;
      send(*stop);
    } catch (const Error& e) {
      NW_LOG(Warning) << "could not tell the other nodes to stop: " << e.what();
    }
  }
  ranks_.reset();
}

void TpModelRunner::stop_beating() {
  {
    std::lock_guard<std::mutex> lock(send_mutex_);
    stop_beating_ = true;
  }
  beat_cv_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
}

void TpModelRunner::beat() {
  const auto interval = heartbeat_interval(*world_);
  std::unique_lock<std::mutex> lock(send_mutex_);
  while (!stop_beating_ && send_failure_.empty()) {
    beat_cv_.wait_for(lock, interval / 4);
    if (stop_beating_ || std::chrono::steady_clock::now() - last_send_ < interval) continue;
    try {
      world_->commands()->send(encode_command(TpCommand{}));  // a default command is a heartbeat
      last_send_ = std::chrono::steady_clock::now();
    } catch (const Error& e) {
      send_failure_ = e.what();
    }
  }
}

void TpModelRunner::send(const TpCommand& command) {
  if (!world_->commands()) return;
  const std::string bytes = encode_command(command);
  std::lock_guard<std::mutex> lock(send_mutex_);
  NW_CHECK(send_failure_.empty(), send_failure_);
  try {
    world_->commands()->send(bytes);
  } catch (const Error& e) {
    send_failure_ = e.what();
    throw;
  }
  last_send_ = std::chrono::steady_clock::now();
}

uint64_t TpModelRunner::issue(std::shared_ptr<TpCommand> command,
                              std::vector<std::span<const SampleRequest>> samples) {
  send(*command);
  return ranks_->post(std::move(command), std::move(samples));
}

void TpModelRunner::count_group_tokens(TpCommand& command) const {
  if (dp_size_ == 1) return;
  std::vector<int64_t> counts;
  bool decode = true;
  for (const ForwardBatch& b : command.batches) {
    counts.push_back(b.num_tokens());
    for (const SequenceInfo& s : b.seqs) decode = decode && s.new_len == 1;
  }
  for (ForwardBatch& b : command.batches) {
    b.dp_tokens = counts;
    b.dp_decode = decode;
  }
}

void TpModelRunner::launch(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits) {
  launch_group(0, batch, samples, return_logits);
}

StepOutput TpModelRunner::finish() { return finish_group(0); }

Tensor TpModelRunner::run(const ForwardBatch& batch) { return run_group(0, batch); }

void TpModelRunner::copy_page(int32_t src, int32_t dst) { copy_page_in_group(0, src, dst); }

void TpModelRunner::launch_group(int group, const ForwardBatch& batch, std::span<const SampleRequest> samples,
                                 bool return_logits) {
  NW_CHECK(group >= 0 && group < dp_size_, "DP group ", group, " of ", dp_size_);
  NW_CHECK(!staged_groups_[static_cast<size_t>(group)], "DP group ", group,
           " launched twice before every group launched its part of the step");
  if (!staged_) {
    staged_ = std::make_shared<TpCommand>();
    staged_->kind = TpCommand::Kind::kStep;
    staged_->batches.resize(static_cast<size_t>(dp_size_));
  }
  staged_->batches[static_cast<size_t>(group)] = batch;
  staged_->return_logits = staged_->return_logits || return_logits;
  staged_samples_[static_cast<size_t>(group)] = samples;
  staged_groups_[static_cast<size_t>(group)] = true;
  if (std::find(staged_groups_.begin(), staged_groups_.end(), false) != staged_groups_.end()) return;
  count_group_tokens(*staged_);
  launched_ = issue(std::move(staged_), staged_samples_);
  staged_.reset();
  staged_groups_.assign(staged_groups_.size(), false);
}

StepOutput TpModelRunner::finish_group(int group) {
  NW_CHECK(!staged_, "DP group ", group, " waits for a step that not every group has launched");
  ranks_->wait(launched_);
  return ranks_->take_step_output(group);
}

Tensor TpModelRunner::run_group(int group, const ForwardBatch& batch) {
  NW_CHECK(!staged_, "a run while a step is being launched");
  auto command = std::make_shared<TpCommand>();
  command->kind = TpCommand::Kind::kRun;
  command->batches.resize(static_cast<size_t>(dp_size_));
  command->batches.at(static_cast<size_t>(group)) = batch;
  count_group_tokens(*command);
  ranks_->wait(issue(std::move(command)));
  return ranks_->take_run_logits(group);
}

void TpModelRunner::copy_page_in_group(int group, int32_t src, int32_t dst) {
  NW_CHECK(!staged_, "a page copy while a step is being launched would run before it");
  auto command = std::make_shared<TpCommand>();
  command->kind = TpCommand::Kind::kCopyPage;
  command->group = group;
  command->src = src;
  command->dst = dst;
  issue(std::move(command));  // queued after the steps before it; a failure shows at the next wait
}

std::string TpModelRunner::failure() const {
  {
    std::lock_guard<std::mutex> lock(send_mutex_);
    if (!send_failure_.empty()) return send_failure_;
  }
  return ranks_->failure();
}

void follow_node_zero(ProcessWorld& world, const RankRunnerFactory& make) {
  const ParallelConfig& first = world.config(0);
  NW_CHECK(first.node_rank() != 0 && world.commands(), "follow_node_zero runs on the nodes other than 0");
  TpRanks ranks(world, make);
  for (;;) {
    const std::string failure = ranks.failure();
    NW_CHECK(failure.empty(), failure);
    TpCommand command = decode_command(world.commands()->receive(first.timeout_s()));
    if (command.kind == TpCommand::Kind::kHeartbeat) continue;
    const bool stop = command.kind == TpCommand::Kind::kStop;
    ranks.post(std::make_shared<const TpCommand>(std::move(command)));
    if (stop) break;
  }
  const std::string failure = ranks.stop();
  NW_CHECK(failure.empty(), failure);
}

}  // namespace narwhal
