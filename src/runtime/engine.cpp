// Engine: the loop thread, and each step's batch -> forward -> output (requests: engine_requests.cpp; draws and stops:
// engine_draws.cpp).
#include "runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "core/error.h"
#include "core/logging.h"

namespace narwhal {

namespace {

std::string fixed2(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

const EngineConfig& validated(const EngineConfig& config) {
  config.validate();
  return config;
}

// SGLang's default: half the cache's tokens, capped at 4096 (the request-to-token pool's usual size).
int default_max_running(const ModelRunner& runner) {
  return static_cast<int>(std::clamp<int64_t>(runner.num_pages() * runner.page_size() / 2, 1, 4096));
}

std::vector<std::unique_ptr<ModelRunner>> one_runner(std::unique_ptr<ModelRunner> runner) {
  std::vector<std::unique_ptr<ModelRunner>> runners;
  runners.push_back(std::move(runner));
  return runners;
}

}  // namespace

double EngineStats::spec_accept_length() const {
  const int64_t verifies = spec_verifies.load();
  return verifies > 0 ? static_cast<double>(spec_verified_tokens.load()) / static_cast<double>(verifies) : 0.0;
}

std::vector<DpRankLoad> EngineStats::dp_loads() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return dp_loads_;
}

void EngineStats::set_dp_loads(std::vector<DpRankLoad> loads) {
  std::lock_guard<std::mutex> lock(mutex_);
  dp_loads_ = std::move(loads);
}

std::vector<int64_t> EngineStats::expert_tokens() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return expert_tokens_;
}

void EngineStats::set_expert_tokens(std::vector<int64_t> tokens) {
  std::lock_guard<std::mutex> lock(mutex_);
  expert_tokens_ = std::move(tokens);
}

DpRank::DpRank(int i, std::unique_ptr<ModelRunner> r, const EngineConfig& config, int max_running)
    : index(i),
      runner(std::move(r)),
      pool(runner->num_pages(), runner->page_size()),
      cache(pool, !config.disable_radix_cache),
      scheduler(config, max_running, pool, cache) {}

Engine::Engine(std::unique_ptr<ModelRunner> runner, const EngineConfig& config, const TokenText* text)
    : Engine(one_runner(std::move(runner)), config, text) {}

Engine::Engine(std::vector<std::unique_ptr<ModelRunner>> runners, const EngineConfig& config, const TokenText* text)
    : config_(validated(config)), text_(text) {
  NW_CHECK(!runners.empty(), "Engine: no model runner");
  const int dp = static_cast<int>(runners.size());
  // --max-running-requests counts over all DP ranks; each takes its share.
  max_running_ = config_.max_running_requests > 0 ? std::max(1, (config_.max_running_requests + dp - 1) / dp)
                                                  : default_max_running(*runners[0]);
  for (auto& runner : runners)
    ranks_.push_back(std::make_unique<DpRank>(static_cast<int>(ranks_.size()), std::move(runner), config_, max_running_));
  const KvPool& pool = ranks_[0]->pool;
  const int64_t trained = model_config().max_position_embeddings;
  NW_CHECK(config_.context_length <= trained, "--context-length ", config_.context_length, " exceeds the model's ",
           "max_position_embeddings (", trained, ", config.json); narwhal does not run positions past it");
  context_length_ = config_.context_length > 0 ? config_.context_length : trained;
  max_sequence_len_ = std::min(context_length_, pool.num_pages() * pool.page_size());
  NW_LOG(Info) << "Engine: " << (dp > 1 ? cat(dp, " DP ranks, each with ") : "") << pool.num_pages()
               << " cache pages of " << pool.page_size() << " tokens, " << max_running_
               << " running requests at most, radix cache " << (ranks_[0]->cache.enabled() ? "on" : "off");
}

Engine::~Engine() { stop(); }

void Engine::start() {
  NW_CHECK(!thread_.joinable(), "Engine::start: the loop is already running");
  stopping_ = false;
  publish_state();  // alive from the moment start() returns
  stats_.loop_running = true;
  thread_ = std::thread([this] { loop(); });
}

void Engine::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Engine::loop() {
  struct Stopped {  // however the loop ends, health checks see it
    EngineStats& stats;
    ~Stopped() { stats.loop_running = false; }
  } stopped{stats_};
  bool busy = false;
  for (;;) {
    publish_state();
    bool idle_tick = false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      const auto has_work = [&] { return stopping_ || !submitted_.empty() || !aborted_.empty() || flush_requested_; };
      // Idle, it still wakes every second to refresh the heartbeat, so a stale one means a stuck step.
      if (!busy && !has_work()) idle_tick = !wake_.wait_for(lock, std::chrono::seconds(1), has_work);
      if (stopping_) return;
    }
    if (idle_tick) {
      // A runner can break while idle too (a tensor-parallel node lost): then the loop ends, and /health says so.
      if (const std::string lost = failure_of_runners(); !lost.empty()) return stop_on_failure(lost);
      continue;
    }
    try {
      busy = step();
    } catch (const std::exception& e) {
      if (const std::string lost = failure_of_runners(); !lost.empty()) return stop_on_failure(lost);
      // A failed step must not take the server down: its requests end with the error, the loop goes on.
      NW_LOG(Error) << "engine step failed: " << e.what();
      abort_everything(cat("internal error: ", e.what()));
      busy = false;
    }
  }
}

void Engine::stop_on_failure(const std::string& why) {
  NW_LOG(Error) << "engine stopped: " << why;
  abort_everything(cat("internal error: ", why));
  std::lock_guard<std::mutex> lock(mutex_);
  failure_ = why;
}

std::string Engine::failure() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failure_;
}

std::string Engine::failure_of_runners() const {
  for (const auto& rank : ranks_)
    if (std::string why = rank->runner->failure(); !why.empty()) return why;
  return "";
}

bool Engine::any_rank_busy() const {
  return std::any_of(ranks_.begin(), ranks_.end(), [](const auto& rank) { return !rank->scheduler.idle(); });
}

bool Engine::has_submissions() {
  std::lock_guard<std::mutex> lock(mutex_);
  return !submitted_.empty() || !aborted_.empty();
}

void Engine::run_until_idle() {
  while (step() || has_submissions()) {
  }
}

void Engine::publish_state() {
  stats_.heartbeat_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now().time_since_epoch()).count();
  std::vector<DpRankLoad> loads;
  int64_t running = 0, waiting = 0, total = 0, used = 0, evictable = 0;
  for (const auto& rank : ranks_) {
    const KvPool& pool = rank->pool;
    const Scheduler& s = rank->scheduler;
    loads.push_back({s.num_running(), s.num_waiting(), pool.num_pages() - pool.num_free() - pool.num_evictable(),
                     pool.num_pages()});
    running += s.num_running();
    waiting += s.num_waiting();
    total += pool.num_pages();
    used += pool.num_pages() - pool.num_free();
    evictable += pool.num_evictable();
  }
  stats_.running_requests = running;
  stats_.waiting_requests = waiting;
  stats_.kv_total_pages = total;
  stats_.kv_used_pages = used;
  stats_.kv_evictable_pages = evictable;
  stats_.set_dp_loads(std::move(loads));
  // The counts may take a device copy: not at every step.
  const auto now = std::chrono::steady_clock::now();
  if (now - expert_tokens_published_ < std::chrono::milliseconds(500)) return;
  expert_tokens_published_ = now;
  std::vector<int64_t> experts;
  for (const auto& rank : ranks_) {
    const std::vector<int64_t> mine = rank->runner->expert_tokens();
    experts.resize(std::max(experts.size(), mine.size()), 0);
    for (size_t e = 0; e < mine.size(); ++e) experts[e] += mine[e];
  }
  stats_.set_expert_tokens(std::move(experts));
}

void Engine::drop_done() {
  for (uint64_t id : done_) requests_.erase(id);
  done_.clear();
}

// One step, overlapped: the batch is launched, then the previous step's tokens become text and are streamed while
// the device runs, then this step's tokens are accepted (stop tokens and length end sequences at once; a stop
// string is found one step later, and the token its sequence drew meanwhile is dropped). With DP attention every
// rank launches its part (an idle one an empty batch, so the ranks' collectives meet) when any rank has work.
bool Engine::step() {
  drain_submissions();
  step_in_flight_ = false;
  for (auto& rank : ranks_) {
    rank->plan = rank->scheduler.plan();
    step_in_flight_ = step_in_flight_ || !rank->plan.empty();
  }
  if (step_in_flight_)
    for (auto& rank : ranks_) launch(*rank);
  if (!config_.disable_overlap_schedule) flush_outputs();
  if (step_in_flight_) {
    std::vector<StepOutput> outs;
    for (auto& rank : ranks_) {
      outs.push_back(rank->runner->finish());
      rank->scheduler.complete(rank->plan);
    }
    step_in_flight_ = false;
    remove_stopped();
    int64_t retractions = 0;
    for (size_t i = 0; i < ranks_.size(); ++i) {
      DpRank& rank = *ranks_[i];
      rank.cuda_graph = outs[i].cuda_graph;
      process_step(rank, outs[i]);
      log_step(rank);
      stats_.forward_tokens += rank.batch.num_tokens();
      retractions += rank.scheduler.num_retractions();
    }
    ++stats_.steps;
    stats_.retractions = retractions;
  }
  if (config_.disable_overlap_schedule) flush_outputs();
  drop_done();
  return any_rank_busy() || !pending_outputs_.empty();
}

void Engine::launch(DpRank& rank) {
  ForwardBatch& batch = rank.batch;
  batch.token_ids.clear();
  batch.positions.clear();
  batch.seqs.clear();
  bool return_logits = false;
  for (const ScheduledSequence& item : rank.plan.items) {
    const Sequence& s = *item.seq;
    const auto from = s.tokens.begin() + s.kv_len;
    if (item.decode && item.new_tokens > 1) {  // the pending token, then its drafts to verify
      std::vector<int32_t> fed{*from};
      fed.insert(fed.end(), s.draft.begin(), s.draft.begin() + (item.new_tokens - 1));
      if (s.draft_parents.empty()) {
        batch.add_sequence(fed, s.kv_len, s.pages, item.new_tokens - 1);
      } else {  // a draft tree: node 0 the pending token
        std::vector<int32_t> parents{-1};
        parents.insert(parents.end(), s.draft_parents.begin(), s.draft_parents.begin() + (item.new_tokens - 1));
        batch.add_tree(fed, parents, s.kv_len, s.pages);
      }
    } else {
      // A prompt chunk before the last knows the token after it: the draft model takes its every position now.
      const int64_t end = s.kv_len + item.new_tokens;
      const int32_t next = speculating() && end < static_cast<int64_t>(s.tokens.size()) ? s.tokens[end] : -1;
      batch.add_sequence({from, from + item.new_tokens}, s.kv_len, s.pages, 0, next);
    }
    return_logits = return_logits || s.request->input.return_logits;
  }
  plan_samples(rank);
  rank.runner->launch(batch, rank.samples, return_logits);
}

// SGLang's server log: a line per prefill batch, and every --decode-log-interval decode steps a line with the load
// and the generation throughput since the last one.
void Engine::log_step(DpRank& rank) {
  int64_t new_seqs = 0, new_tokens = 0, cached = 0, decodes = 0;
  for (const ScheduledSequence& item : rank.plan.items) {
    if (item.decode) {
      ++decodes;
      continue;
    }
    if (item.seq->kv_len == item.new_tokens + item.seq->cached_tokens) {  // its first chunk since admission
      ++new_seqs;
      cached += item.seq->cached_tokens;
    }
    new_tokens += item.new_tokens;
  }
  // As SGLang: tokens held by running requests (pages only the radix cache holds are free to take).
  const KvPool& pool = rank.pool;
  const Scheduler& scheduler = rank.scheduler;
  const int64_t used_pages = pool.num_pages() - pool.num_free() - pool.num_evictable();
  const double usage = pool.num_pages() == 0 ? 0.0 : static_cast<double>(used_pages) / pool.num_pages();
  // As SGLang's DP schedulers: each rank logs its own lines.
  const std::string who = ranks_.size() > 1 ? cat("[DP", rank.index, "] ") : "";
  if (new_tokens > 0) {
    NW_LOG(Info) << who << "Prefill batch. #new-seq: " << new_seqs << ", #new-token: " << new_tokens << ", #cached-token: "
                 << cached << ", token usage: " << fixed2(usage) << ", #running-req: " << scheduler.num_running()
                 << ", #queue-req: " << scheduler.num_waiting();
  }
  if (decodes == 0 || ++rank.decode_steps_since_log < config_.decode_log_interval) return;
  const auto now = std::chrono::steady_clock::now();
  const double seconds = std::chrono::duration<double>(now - rank.last_decode_log).count();
  const int64_t prompt = stats_.prompt_tokens.load();
  NW_LOG(Info) << who << "Decode batch. #running-req: " << scheduler.num_running() << ", #token: "
               << used_pages * pool.page_size() << ", token usage: " << fixed2(usage)
               << ", cache hit rate: " << fixed2(prompt > 0 ? static_cast<double>(stats_.cached_tokens) / prompt : 0.0)
               << accept_length_since_log(rank) << ", cuda graph: " << (rank.cuda_graph ? "True" : "False")
               << ", gen throughput (token/s): " << fixed2((rank.generated - rank.generated_at_last_log) / seconds)
               << ", #queue-req: " << scheduler.num_waiting();
  rank.decode_steps_since_log = 0;
  rank.last_decode_log = now;
  rank.generated_at_last_log = rank.generated;
  rank.spec_verifies_at_last_log = rank.spec_verifies;
  rank.spec_verified_tokens_at_last_log = rank.spec_verified_tokens;
}

// ", accept len: 2.41" (SGLang's field): the speculating decodes' mean tokens per step since the last line.
std::string Engine::accept_length_since_log(const DpRank& rank) const {
  const int64_t verifies = rank.spec_verifies - rank.spec_verifies_at_last_log;
  if (!speculating() || verifies == 0) return "";
  return ", accept len: " +
         fixed2(static_cast<double>(rank.spec_verified_tokens - rank.spec_verified_tokens_at_last_log) / verifies);
}

void Engine::flush_outputs() {
  for (PendingOutput& pending : pending_outputs_) {
    auto it = requests_.find(pending.request_id);
    if (it == requests_.end()) continue;
    Sequence& seq = *it->second->seqs[static_cast<size_t>(pending.index)];
    if (seq.finished) continue;  // aborted since
    const RequestInput& input = seq.request->input;
    RequestOutput out;
    out.token_ids = {pending.sampled.token};
    ++seq.emitted;
    if (input.return_logprob || input.top_logprobs_num > 0) out.logprobs = {std::move(pending.sampled)};
    if (!pending.logits.empty()) out.logits.push_back(std::move(pending.logits));
    std::optional<std::string> stop_text;
    if (text_) stop_text = seq.text.append(text_->bytes(out.token_ids[0]), input.params.no_stop_trim);
    out.finish = std::move(pending.finish);
    if (!out.finish && stop_text) {
      out.finish = FinishReason::stop_string(std::move(*stop_text));
      stopped_.push_back(&seq);  // still scheduled: it leaves once no step in flight holds it
    }
    out.text = seq.text.take(out.finish.has_value());
    emit(seq, std::move(out));
  }
  pending_outputs_.clear();
  if (!step_in_flight_) remove_stopped();
}

void Engine::remove_stopped() {
  for (Sequence* seq : stopped_) rank_of(*seq).scheduler.remove(seq);
  stopped_.clear();
}

void Engine::emit(Sequence& seq, RequestOutput&& out) {
  RequestState& r = *seq.request;
  out.request_id = r.id;
  out.index = seq.index;
  out.prompt_tokens = seq.prompt_len;
  out.cached_tokens = seq.cached_tokens;
  out.completion_tokens = seq.emitted;
  out.spec_verify_ct = seq.spec_verifies;
  if (out.finish) {
    seq.finished = true;
    if (--r.unfinished == 0) {
      done_.push_back(r.id);
      if (out.finish->kind != FinishReason::Kind::kAbort) ++stats_.finished_requests;
    }
  }
  if (r.input.on_output) r.input.on_output(std::move(out));
}

}  // namespace narwhal
