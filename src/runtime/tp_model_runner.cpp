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

uint64_t TpModelRunner::issue(std::shared_ptr<TpCommand> command, std::span<const SampleRequest> samples) {
  send(*command);
  return ranks_->post(std::move(command), samples);
}

void TpModelRunner::launch(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits) {
  auto command = std::make_shared<TpCommand>();
  command->kind = TpCommand::Kind::kStep;
  command->batch = batch;
  command->return_logits = return_logits;
  launched_ = issue(std::move(command), samples);
}

StepOutput TpModelRunner::finish() {
  ranks_->wait(launched_);
  return ranks_->take_step_output();
}

Tensor TpModelRunner::run(const ForwardBatch& batch) {
  auto command = std::make_shared<TpCommand>();
  command->kind = TpCommand::Kind::kRun;
  command->batch = batch;
  ranks_->wait(issue(std::move(command)));
  return ranks_->take_run_logits();
}

void TpModelRunner::copy_page(int32_t src, int32_t dst) {
  auto command = std::make_shared<TpCommand>();
  command->kind = TpCommand::Kind::kCopyPage;
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
