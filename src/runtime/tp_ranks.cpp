// TpRanks: the shared command queue, the rank threads' loop, and failures that end every wait.
#include "runtime/tp_ranks.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"

namespace narwhal {

namespace {

// How often a rank waiting for its next command, or the engine waiting for the ranks, looks at the world's state:
// a lost node is recorded there without a notify.
constexpr auto kPollSlice = std::chrono::milliseconds(100);

}  // namespace

TpRanks::TpRanks(ProcessWorld& world, RankRunnerFactory make)
    : world_(world),
      make_(std::move(make)),
      done_(static_cast<size_t>(world.num_local_ranks()), 0),
      step_outputs_(static_cast<size_t>(world.config(0).flags().dp_attention_groups())),
      run_logits_(step_outputs_.size()) {
  thread_ = std::thread([this] {
    try {
      world_.run([this](const ParallelConfig& config, Communicator& comm) { rank_main(config, comm); });
    } catch (const std::exception& e) {
      record_failure(e.what());
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ended_ = true;
    cv_.notify_all();
  });
  std::unique_lock<std::mutex> lock(mutex_);
  while (ready_ < world_.num_local_ranks() && !ended_ && failure_.empty() && !world_.status().failed())
    cv_.wait_for(lock, kPollSlice);
  if (ready_ == world_.num_local_ranks() && failure_.empty() && !world_.status().failed()) return;
  lock.unlock();
  const std::string failure = stop();
  throw Error(failure.empty() ? "the TP ranks ended before their runners were made" : failure);
}

TpRanks::~TpRanks() { stop(); }

void TpRanks::record_failure(const std::string& message) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (failure_.empty()) failure_ = message;
  cv_.notify_all();
}

std::string TpRanks::failure() const {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!failure_.empty()) return failure_;
  }
  return world_.status().failed() ? world_.status().message() : std::string();
}

uint64_t TpRanks::post(std::shared_ptr<const TpCommand> command,
                       std::vector<std::span<const SampleRequest>> samples) {
  std::lock_guard<std::mutex> lock(mutex_);
  NW_CHECK(!ended_ && !stop_posted_, "the TP ranks have stopped", failure_.empty() ? "" : ": " + failure_);
  stop_posted_ = command->kind == TpCommand::Kind::kStop;
  queue_.push_back({++posted_, std::move(command), std::move(samples)});
  cv_.notify_all();
  return posted_;
}

bool TpRanks::all_done(uint64_t seq) const {
  return std::all_of(done_.begin(), done_.end(), [seq](uint64_t d) { return d >= seq; });
}

void TpRanks::wait(uint64_t seq) {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!all_done(seq) && failure_.empty() && !ended_ && !world_.status().failed()) cv_.wait_for(lock, kPollSlice);
  if (all_done(seq)) return;
  lock.unlock();
  const std::string why = failure();
  throw Error(why.empty() ? "the TP ranks ended before the step" : why);
}

StepOutput TpRanks::take_step_output(int group) {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::move(step_outputs_.at(static_cast<size_t>(group)));
}

Tensor TpRanks::take_run_logits(int group) {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::move(run_logits_.at(static_cast<size_t>(group)));
}

std::string TpRanks::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!ended_ && !stop_posted_) {
      auto command = std::make_shared<TpCommand>();
      command->kind = TpCommand::Kind::kStop;
      queue_.push_back({++posted_, std::move(command), {}});
      stop_posted_ = true;
      cv_.notify_all();
    }
  }
  if (thread_.joinable()) thread_.join();
  return failure();
}

TpRanks::Entry TpRanks::next_command(uint64_t seq) {
  std::unique_lock<std::mutex> lock(mutex_);
  while (posted_ < seq && failure_.empty() && !world_.status().failed()) cv_.wait_for(lock, kPollSlice);
  NW_CHECK(failure_.empty(), "gave up because ", failure_);
  NW_CHECK(!world_.status().failed(), world_.status().message());
  const auto it = std::find_if(queue_.begin(), queue_.end(), [seq](const Entry& e) { return e.seq == seq; });
  NW_CHECK(it != queue_.end(), "TP command ", seq, " is not queued");
  return *it;
}

void TpRanks::rank_main(const ParallelConfig& config, Communicator& world) {
  const size_t me = static_cast<size_t>(config.local_rank());
  try {
    // One TP group is the whole world: DP attention splits it (replicas without DP attention are refused by the CLI).
    NW_CHECK(config.tp_size() == config.world_size(), "TpRanks runs one TP group, not a world of ",
             config.world_size(), " ranks");
    const bool dp_attention = config.flags().dp_attention_groups() > 1;
    std::unique_ptr<Communicator> dp_group;
    if (dp_attention) {
      const RankGroup g = config.attn_tp_group();
      dp_group = world.split(g.color(), g.index, "attn_tp");
    }
    const int group = dp_attention ? config.dp_rank() : 0;
    // The first rank of each DP group draws its tokens (make_model_runner keeps them all on node 0, the engine's).
    const bool draws = (dp_attention ? config.attn_tp_rank() : config.rank()) == 0;
    std::unique_ptr<ModelRunner> runner = make_(config, world, dp_group.get());
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (me == 0) first_ = runner.get();
      ++ready_;
      cv_.notify_all();
    }
    for (uint64_t seq = 1;; ++seq) {
      const Entry entry = next_command(seq);
      if (entry.command->kind == TpCommand::Kind::kStop) return;
      execute(*runner, entry, group, draws);
      std::lock_guard<std::mutex> lock(mutex_);
      done_[me] = seq;
      while (!queue_.empty() && all_done(queue_.front().seq)) queue_.pop_front();
      cv_.notify_all();
    }
  } catch (const std::exception& e) {
    // A failure that came from elsewhere (a lost node, a peer's closed connection) is told as the world has it.
    record_failure(world_.status().failed() ? world_.status().message()
                                             : cat(config.describe_ranks({config.rank()}), " failed: ", e.what()));
    throw;
  }
}

void TpRanks::execute(ModelRunner& runner, const Entry& entry, int group, bool draws) {
  const TpCommand& c = *entry.command;
  switch (c.kind) {
    case TpCommand::Kind::kStep:
    case TpCommand::Kind::kRun: {
      const ForwardBatch& batch = c.batches.at(static_cast<size_t>(group));
      if (draws && c.kind == TpCommand::Kind::kRun) {
        Tensor logits = runner.run(batch);
        std::lock_guard<std::mutex> lock(mutex_);
        run_logits_[static_cast<size_t>(group)] = std::move(logits);
        return;
      }
      // A group's first rank draws its tokens; the others run the same forward (their collectives meet the first
      // rank's), and the kRun of a rank other than the first is such a step too, so no logits cross to its host.
      // Speculating, every rank draws the same tokens from the same logits, since they decide the draft model's
      // batch, whose collectives meet too.
      const bool sample = (draws || runner.speculative()) && c.kind == TpCommand::Kind::kStep;
      const std::span<const SampleRequest> samples =
          sample && static_cast<size_t>(group) < entry.samples.size() ? entry.samples[static_cast<size_t>(group)]
                                                                       : std::span<const SampleRequest>();
      runner.launch(batch, samples, draws && c.return_logits);
      StepOutput out = runner.finish();
      if (!draws) return;
      std::lock_guard<std::mutex> lock(mutex_);
      step_outputs_[static_cast<size_t>(group)] = std::move(out);
      return;
    }
    case TpCommand::Kind::kCopyPage:
      if (c.group == group) runner.copy_page(c.src, c.dst);
      return;
    case TpCommand::Kind::kHeartbeat:
    case TpCommand::Kind::kStop:
      return;
  }
}

}  // namespace narwhal
