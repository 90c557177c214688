// Engine: request intake, the loop thread, and each step's batch -> forward -> sample -> stop -> output.
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

}  // namespace

Engine::Engine(std::unique_ptr<ModelRunner> runner, const EngineConfig& config, const TokenText* text)
    : runner_(std::move(runner)),
      config_(validated(config)),
      text_(text),
      pool_(runner_->num_pages(), runner_->page_size()),
      cache_(pool_, !config.disable_radix_cache),
      max_running_(config.max_running_requests > 0 ? config.max_running_requests : default_max_running(*runner_)),
      scheduler_(config_, max_running_, pool_, cache_),
      max_sequence_len_(std::min(runner_->config().max_position_embeddings, pool_.num_pages() * pool_.page_size())) {
  NW_LOG(Info) << "Engine: " << pool_.num_pages() << " cache pages of " << pool_.page_size() << " tokens, "
               << max_running_ << " running requests at most, radix cache "
               << (cache_.enabled() ? "on" : "off");
}

Engine::~Engine() { stop(); }

uint64_t Engine::submit(RequestInput input) {
  SamplingParams& p = input.params;
  p.validate();
  const int64_t vocab = runner_->config().vocab_size;
  const int64_t prompt_len = static_cast<int64_t>(input.input_ids.size());
  NW_CHECK(prompt_len > 0, "the prompt is empty");
  for (int32_t id : input.input_ids)
    NW_CHECK(id >= 0 && id < vocab, "token id ", id, " is outside the vocabulary (size ", vocab, ")");
  NW_CHECK(prompt_len < max_sequence_len_, "the prompt has ", prompt_len, " tokens; at most ", max_sequence_len_ - 1,
           " fit (context length ", runner_->config().max_position_embeddings, ", KV cache ",
           pool_.num_pages() * pool_.page_size(), " tokens)");
  NW_CHECK(p.stop.empty() || text_, "stop strings need a tokenizer");
  NW_CHECK(p.n <= max_running_, "n = ", p.n, " exceeds --max-running-requests ", max_running_);
  const int64_t max_top = std::min<int64_t>(vocab, ops::kMaxTopLogprobs);
  NW_CHECK(input.top_logprobs_num >= 0 && input.top_logprobs_num <= max_top, "top_logprobs_num must be in [0, ",
           max_top, "], got ", input.top_logprobs_num);
  for (const auto& [id, bias] : p.logit_bias)
    NW_CHECK(id < vocab, "logit_bias token id ", id, " is outside the vocabulary (size ", vocab, ")");
  p.max_new_tokens = std::min(p.max_new_tokens, max_sequence_len_ - prompt_len);
  p.min_new_tokens = std::min(p.min_new_tokens, p.max_new_tokens);

  auto request = std::make_unique<RequestState>();
  request->id = next_id_++;
  request->stop_ids = p.stop_token_ids;
  if (!p.ignore_eos)
    for (int eos : runner_->config().eos_token_ids) request->stop_ids.push_back(eos);
  const uint64_t seed = p.seed.value_or(ops::mix_bits(config_.random_seed ^ ops::mix_bits(request->id)));
  const uint64_t group = input.fairness_group != 0 ? input.fairness_group : request->id;
  for (int i = 0; i < p.n; ++i) {
    auto seq = std::make_unique<Sequence>();
    seq->request = request.get();
    seq->index = i;
    seq->group = group;
    seq->tokens = input.input_ids;
    seq->prompt_len = prompt_len;
    seq->max_new_tokens = p.max_new_tokens;
    // Choice 0 of n equals the n = 1 request.
    seq->seed = i == 0 ? seed : ops::mix_bits(seed + static_cast<uint64_t>(i));
    seq->text = OutputText(p.stop);
    request->seqs.push_back(std::move(seq));
  }
  request->seqs[0]->forks = p.n;
  request->unfinished = p.n;
  request->input = std::move(input);
  const uint64_t id = request->id;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    submitted_.push_back(std::move(request));
  }
  wake_.notify_one();
  return id;
}

void Engine::abort(uint64_t request_id) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    aborted_.push_back(request_id);
  }
  wake_.notify_one();
}

void Engine::flush_cache() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    flush_requested_ = true;
  }
  wake_.notify_one();
}

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
      if (const std::string lost = runner_->failure(); !lost.empty()) return stop_on_failure(lost);
      continue;
    }
    try {
      busy = step();
    } catch (const std::exception& e) {
      if (const std::string lost = runner_->failure(); !lost.empty()) return stop_on_failure(lost);
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

bool Engine::has_submissions() {
  std::lock_guard<std::mutex> lock(mutex_);
  return !submitted_.empty() || !aborted_.empty();
}

void Engine::run_until_idle() {
  while (step() || has_submissions()) {
  }
}

void Engine::drain_submissions() {
  std::vector<std::unique_ptr<RequestState>> submitted;
  std::vector<uint64_t> aborted;
  bool flush = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    submitted.swap(submitted_);
    aborted.swap(aborted_);
    std::swap(flush, flush_requested_);
  }
  if (flush) cache_.evict(cache_.cached_pages());
  for (auto& request : submitted) admit(std::move(request));
  for (uint64_t id : aborted) finish_aborted(id, "aborted by the client");
}

void Engine::admit(std::unique_ptr<RequestState> request) {
  RequestState& r = *request;
  requests_[r.id] = std::move(request);
  if (r.input.params.max_new_tokens == 0) {  // nothing to generate: done without touching the model
    for (auto& seq : r.seqs) {
      RequestOutput out;
      out.finish = FinishReason::length();
      emit(*seq, std::move(out));
    }
    return;
  }
  scheduler_.enqueue(r.seqs[0].get());
}

void Engine::finish_aborted(uint64_t request_id, const std::string& message) {
  auto it = requests_.find(request_id);
  if (it == requests_.end() || it->second->unfinished == 0) return;
  ++stats_.aborted_requests;
  for (auto& seq : it->second->seqs) {
    if (seq->finished) continue;
    scheduler_.remove(seq.get());
    RequestOutput out;
    out.text = seq->text.take(true);
    out.finish = FinishReason::abort(message);
    emit(*seq, std::move(out));
  }
}

void Engine::abort_everything(const std::string& message) {
  step_in_flight_ = false;  // a failed step is abandoned: what it stopped leaves the scheduler, its outputs go
  remove_stopped();
  pending_outputs_.clear();
  std::vector<uint64_t> ids;
  for (const auto& [id, request] : requests_) ids.push_back(id);
  for (uint64_t id : ids) finish_aborted(id, message);
  drop_done();
}

void Engine::publish_state() {
  stats_.heartbeat_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now().time_since_epoch()).count();
  stats_.running_requests = scheduler_.num_running();
  stats_.waiting_requests = scheduler_.num_waiting();
  stats_.kv_total_pages = pool_.num_pages();
  stats_.kv_used_pages = pool_.num_pages() - pool_.num_free();
  stats_.kv_evictable_pages = pool_.num_evictable();
}

void Engine::drop_done() {
  for (uint64_t id : done_) requests_.erase(id);
  done_.clear();
}

// One step, overlapped: the batch is launched, then the previous step's tokens become text and are streamed while
// the device runs, then this step's tokens are accepted (stop tokens and length end sequences at once; a stop
// string is found one step later, and the token its sequence drew meanwhile is dropped).
bool Engine::step() {
  drain_submissions();
  StepPlan plan = scheduler_.plan();
  step_in_flight_ = !plan.empty();
  if (step_in_flight_) {
    batch_.token_ids.clear();
    batch_.positions.clear();
    batch_.seqs.clear();
    bool return_logits = false;
    for (const ScheduledSequence& item : plan.items) {
      const Sequence& s = *item.seq;
      batch_.add_sequence({s.tokens.begin() + s.kv_len, s.tokens.begin() + s.kv_len + item.new_tokens}, s.kv_len,
                          s.pages);
      return_logits = return_logits || s.request->input.return_logits;
    }
    plan_samples(plan);
    runner_->launch(batch_, samples_, return_logits);
  }
  if (!config_.disable_overlap_schedule) flush_outputs();
  if (step_in_flight_) {
    StepOutput out = runner_->finish();
    scheduler_.complete(plan);
    step_in_flight_ = false;
    remove_stopped();
    process_step(out);
    log_step(plan);
    ++stats_.steps;
    stats_.forward_tokens += batch_.num_tokens();
    stats_.retractions = scheduler_.num_retractions();
  }
  if (config_.disable_overlap_schedule) flush_outputs();
  drop_done();
  return !scheduler_.idle() || !pending_outputs_.empty();
}

// SGLang's server log: a line per prefill batch, and every --decode-log-interval decode steps a line with the load
// and the generation throughput since the last one.
void Engine::log_step(const StepPlan& plan) {
  int64_t new_seqs = 0, new_tokens = 0, cached = 0, decodes = 0;
  for (const ScheduledSequence& item : plan.items) {
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
  const int64_t used_pages = pool_.num_pages() - pool_.num_free() - pool_.num_evictable();
  const double usage = pool_.num_pages() == 0 ? 0.0 : static_cast<double>(used_pages) / pool_.num_pages();
  if (new_tokens > 0) {
    NW_LOG(Info) << "Prefill batch. #new-seq: " << new_seqs << ", #new-token: " << new_tokens << ", #cached-token: "
                 << cached << ", token usage: " << fixed2(usage) << ", #running-req: " << scheduler_.num_running()
                 << ", #queue-req: " << scheduler_.num_waiting();
  }
  if (decodes == 0 || ++decode_steps_since_log_ < config_.decode_log_interval) return;
  const auto now = std::chrono::steady_clock::now();
  const double seconds = std::chrono::duration<double>(now - last_decode_log_).count();
  const int64_t generated = stats_.generated_tokens.load();
  const int64_t prompt = stats_.prompt_tokens.load();
  NW_LOG(Info) << "Decode batch. #running-req: " << scheduler_.num_running() << ", #token: "
               << used_pages * pool_.page_size() << ", token usage: " << fixed2(usage)
               << ", cache hit rate: " << fixed2(prompt > 0 ? static_cast<double>(stats_.cached_tokens) / prompt : 0.0)
               << ", gen throughput (token/s): " << fixed2((generated - generated_at_last_log_) / seconds)
               << ", #queue-req: " << scheduler_.num_waiting();
  decode_steps_since_log_ = 0;
  last_decode_log_ = now;
  generated_at_last_log_ = generated;
}

void Engine::plan_samples(const StepPlan& plan) {
  samples_.clear();
  sample_seqs_.clear();
  const auto add = [&](Sequence* s, int64_t row) {
    const RequestState& r = *s->request;
    const bool masked = s->output_len() < r.input.params.min_new_tokens && !r.stop_ids.empty();
    sample_seqs_.push_back(s);
    samples_.push_back({row, &r.input.params, &s->output_counts, masked ? &r.stop_ids : nullptr, s->seed,
                        s->output_len(), r.input.return_logprob, r.input.top_logprobs_num});
  };
  for (size_t row = 0; row < plan.items.size(); ++row) {
    Sequence* s = plan.items[row].seq;
    if (s->pending() != plan.items[row].new_tokens) continue;  // a prompt chunk: nothing to draw yet
    add(s, static_cast<int64_t>(row));
    // Choices that fork off this prompt when it is done draw from the same logits.
    if (s->forks > 1)
      for (size_t i = 1; i < s->request->seqs.size(); ++i) add(s->request->seqs[i].get(), static_cast<int64_t>(row));
  }
}

void Engine::process_step(StepOutput& out) {
  for (size_t i = 0; i < sample_seqs_.size();) {
    Sequence* s = sample_seqs_[i];
    const int64_t row = samples_[i].row;
    // The other choices take the prompt's pages before its own token may end it; those that got their own copy
    // of its partial last page take their draw, the others recompute that page in a later step (and draw then).
    const std::vector<Sequence*> ready = s->forks > 1 ? fork(*s) : std::vector<Sequence*>();
    accept_token(*s, out.sampled[i], out.logits, row);
    for (++i; i < sample_seqs_.size() && samples_[i].row == row && sample_seqs_[i]->request == s->request; ++i)
      if (std::find(ready.begin(), ready.end(), sample_seqs_[i]) != ready.end())
        accept_token(*sample_seqs_[i], out.sampled[i], out.logits, row);
  }
}

// Choice 0 has just finished the prompt: the other choices take its full pages (shared, counted) and
// their own copy of its partial last page, so the prompt is computed once for all n. Returns the
// choices that can sample now.
std::vector<Sequence*> Engine::fork(Sequence& parent) {
  std::vector<Sequence*> ready;
  const int64_t ps = pool_.page_size();
  const int64_t full = parent.kv_len / ps;
  for (size_t i = 1; i < parent.request->seqs.size(); ++i) {
    Sequence& child = *parent.request->seqs[i];
    child.kv_len = parent.kv_len;
    child.admitted = true;
    child.cached_tokens = parent.cached_tokens;
    child.pages.assign(parent.pages.begin(), parent.pages.begin() + full);
    for (int32_t page : child.pages) pool_.retain(page);
    if (parent.kv_len % ps != 0) {
      std::vector<int32_t> own;
      if (scheduler_.allocate(1, own)) {
        runner_->copy_page(parent.pages[full], own[0]);
        child.pages.push_back(own[0]);
      } else {
        child.kv_len = full * ps;  // no free page: it recomputes the partial page in a later step
      }
    }
    scheduler_.add_running(&child);
    if (child.pending() == 0) ready.push_back(&child);
  }
  parent.forks = 1;
  return ready;
}

// Appends the token; a stop token or the length limit ends the sequence here (its last output follows in
// flush_outputs), so the next plan no longer schedules it.
void Engine::accept_token(Sequence& seq, const SampledToken& sampled, const Tensor& logits, int64_t row) {
  if (seq.finished) return;  // ended by a stop string found after this step was launched: the draw is past its end
  const RequestInput& input = seq.request->input;
  seq.tokens.push_back(sampled.token);
  ++seq.output_counts[sampled.token];
  ++stats_.generated_tokens;
  if (seq.output_len() == 1 && seq.index == 0) {
    stats_.prompt_tokens += seq.prompt_len;
    stats_.cached_tokens += seq.cached_tokens;
  }
  PendingOutput out{seq.request->id, seq.index, sampled, {}, std::nullopt};
  if (input.return_logits) {
    const float* r = logits.f32() + row * logits.size(1);
    out.logits.assign(r, r + logits.size(1));
  }
  const std::vector<int32_t>& stop_ids = seq.request->stop_ids;
  if (seq.output_len() >= seq.max_new_tokens) out.finish = FinishReason::length();
  else if (std::find(stop_ids.begin(), stop_ids.end(), sampled.token) != stop_ids.end())
    out.finish = FinishReason::stop_token(sampled.token);
  if (out.finish) scheduler_.remove(&seq);
  pending_outputs_.push_back(std::move(out));
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
  for (Sequence* seq : stopped_) scheduler_.remove(seq);
  stopped_.clear();
}

void Engine::emit(Sequence& seq, RequestOutput&& out) {
  RequestState& r = *seq.request;
  out.request_id = r.id;
  out.index = seq.index;
  out.prompt_tokens = seq.prompt_len;
  out.cached_tokens = seq.cached_tokens;
  out.completion_tokens = seq.output_len();
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
