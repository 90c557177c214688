// Engine's request side: intake and aborts from any thread, then on the loop thread admission to a DP rank and
// the end of aborted requests.
#include <algorithm>

#include "core/error.h"
#include "runtime/engine.h"

namespace narwhal {

uint64_t Engine::submit(RequestInput input) {
  SamplingParams& p = input.params;
  p.validate();
  const int64_t vocab = model_config().vocab_size;
  const KvPool& pool = ranks_[0]->pool;  // every DP rank's has this size
  const int64_t prompt_len = static_cast<int64_t>(input.input_ids.size());
  NW_CHECK(prompt_len > 0, "the prompt is empty");
  for (int32_t id : input.input_ids)
    NW_CHECK(id >= 0 && id < vocab, "token id ", id, " is outside the vocabulary (size ", vocab, ")");
  NW_CHECK(prompt_len < max_sequence_len_, "the prompt has ", prompt_len, " tokens; at most ", max_sequence_len_ - 1,
           " fit (context length ", context_length_, ", KV cache ",
           pool.num_pages() * pool.page_size(), " tokens)");
  NW_CHECK(p.stop.empty() || text_, "stop strings need a tokenizer");
  NW_CHECK(!p.grammar || text_, "structured output needs a tokenizer");
  if (p.grammar)
    std::call_once(grammar_vocab_once_, [&] { grammar_vocab_ = std::make_unique<GrammarVocab>(*text_, vocab); });
  NW_CHECK(p.n <= max_running_, "n = ", p.n, " exceeds the ", max_running_, " running requests of a ",
           ranks_.size() > 1 ? "DP rank (--max-running-requests over --dp-size)" : "step (--max-running-requests)");
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
    for (int eos : model_config().eos_token_ids) request->stop_ids.push_back(eos);
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
    if (p.grammar) seq->grammar.emplace(p.grammar);
    seq->grammar_waits = p.grammar && p.grammar_after_token >= 0;
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
  if (flush)
    for (auto& rank : ranks_) rank->cache.evict(rank->cache.cached_pages());
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
  r.dp_rank = pick_dp_rank();
  ranks_[static_cast<size_t>(r.dp_rank)]->scheduler.enqueue(r.seqs[0].get());
}

int Engine::pick_dp_rank() {
  if (ranks_.size() == 1) return 0;
  if (config_.load_balance_method == LoadBalanceMethod::kRoundRobin) return static_cast<int>(next_rank_++ % ranks_.size());
  size_t best = 0;
  for (size_t i = 1; i < ranks_.size(); ++i) {
    const Scheduler& s = ranks_[i]->scheduler;
    const Scheduler& b = ranks_[best]->scheduler;
    if (s.num_running() + s.num_waiting() < b.num_running() + b.num_waiting()) best = i;
  }
  return static_cast<int>(best);
}

void Engine::finish_aborted(uint64_t request_id, const std::string& message) {
  auto it = requests_.find(request_id);
  if (it == requests_.end() || it->second->unfinished == 0) return;
  ++stats_.aborted_requests;
  for (auto& seq : it->second->seqs) {
    if (seq->finished) continue;
    rank_of(*seq).scheduler.remove(seq.get());
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

}  // namespace narwhal
