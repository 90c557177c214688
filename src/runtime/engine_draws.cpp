// Engine's draws: which planned sequences draw this step (with structured output's masks), then the drawn tokens
// taken in: stop conditions, the grammar moved on, speculative drafts kept, choices forked off a finished prompt.
#include <algorithm>
#include <exception>
#include <thread>

#include "core/error.h"
#include "runtime/engine.h"
#include "runtime/speculative.h"

namespace narwhal {

void Engine::plan_samples(DpRank& rank) {
  const StepPlan& plan = rank.plan;
  rank.samples.clear();
  rank.sample_seqs.clear();
  std::vector<Sequence*> constrained;  // their masks are made below, side by side
  const auto add = [&](Sequence* s, int64_t row) {
    const RequestState& r = *s->request;
    const bool before_min = s->output_len() < r.input.params.min_new_tokens;
    const std::vector<int32_t>* masked = before_min && !r.stop_ids.empty() ? &r.stop_ids : nullptr;
    if (s->grammar && !s->grammar_waits) {
      constrained.push_back(s);
      masked = &s->grammar_mask;
    }
    rank.sample_seqs.push_back(s);
    rank.samples.push_back({row, &r.input.params, &s->output_counts, masked, s->seed,
                            s->output_len(), r.input.return_logprob, r.input.top_logprobs_num,
                            speculating() && may_draft(*s) ? config_.speculative_num_steps : 0});
  };
  for (size_t row = 0; row < plan.items.size(); ++row) {
    Sequence* s = plan.items[row].seq;
    if (!plan.items[row].decode && s->pending() != plan.items[row].new_tokens) continue;  // a prompt chunk: no draw
    add(s, static_cast<int64_t>(row));
    // Choices that fork off this prompt when it is done draw from the same logits.
    if (s->forks > 1)
      for (size_t i = 1; i < s->request->seqs.size(); ++i) add(s->request->seqs[i].get(), static_cast<int64_t>(row));
  }
  make_grammar_masks(constrained);
}

// Each mask bans what the sequence's grammar does not allow next, its stop ids allowed where the value may end
// (past min_new_tokens). 0.1-0.4 ms each on a 129k vocabulary (docs/performance.md), so several are made on
// threads of their own.
void Engine::make_grammar_masks(const std::vector<Sequence*>& seqs) {
  const auto make = [this](Sequence& s) {
    const RequestState& r = *s.request;
    const bool before_min = s.output_len() < r.input.params.min_new_tokens;
    s.grammar_mask = grammar_vocab_->banned(s.grammar->grammar(), s.grammar->state(),
                                            before_min ? std::vector<int32_t>{} : r.stop_ids);
    // No token of the vocabulary goes on (one without every byte as a token): a stop id, or token 0, stays
    // drawable, and accept_token ends the choice as refused.
    if (static_cast<int64_t>(s.grammar_mask.size()) == grammar_vocab_->size()) {
      const int32_t left = r.stop_ids.empty() ? 0 : r.stop_ids[0];
      const auto it = std::find(s.grammar_mask.begin(), s.grammar_mask.end(), left);
      s.grammar_mask.erase(it != s.grammar_mask.end() ? it : s.grammar_mask.begin());
    }
  };
  const size_t threads = std::min<size_t>({seqs.size(), std::max(1u, std::thread::hardware_concurrency()), 8});
  if (threads <= 1) {
    for (Sequence* s : seqs) make(*s);
    return;
  }
  std::vector<std::thread> workers;
  std::vector<std::exception_ptr> failed(threads);  // rethrown here: a throw on a thread would end the process
  for (size_t t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      try {
        for (size_t i = t; i < seqs.size(); i += threads) make(*seqs[i]);
      } catch (...) {
        failed[t] = std::current_exception();
      }
    });
  for (std::thread& w : workers) w.join();
  for (const std::exception_ptr& e : failed)
    if (e) std::rethrow_exception(e);
}

void Engine::process_step(DpRank& rank, StepOutput& out) {
  const std::vector<Sequence*>& sample_seqs = rank.sample_seqs;
  // Request i's tokens in out.sampled: one each, or with speculation out.accepted[i] (verified drafts first).
  std::vector<size_t> first(sample_seqs.size() + 1, 0);
  for (size_t i = 0; i < sample_seqs.size(); ++i)
    first[i + 1] = first[i] + (out.accepted.empty() ? 1 : static_cast<size_t>(out.accepted[i]));
  NW_CHECK(out.sampled.size() == first.back(), "engine: the runner drew ", out.sampled.size(), " tokens for ",
           first.back());
  const auto take = [&](size_t i) {
    Sequence& seq = *sample_seqs[i];
    const int64_t row = rank.samples[i].row;
    if (rank.plan.items[static_cast<size_t>(row)].decode && rank.samples[i].max_draft > 0) {
      ++stats_.spec_verifies;  // a speculating sequence's decode: its tokens this step are its accept length
      ++seq.spec_verifies;
      stats_.spec_verified_tokens += static_cast<int64_t>(first[i + 1] - first[i]);
      ++rank.spec_verifies;
      rank.spec_verified_tokens += static_cast<int64_t>(first[i + 1] - first[i]);
    }
    seq.draft.clear();
    seq.draft_parents.clear();
    bool running = true;
    for (size_t j = first[i]; j < first[i + 1] && running; ++j)
      running = accept_token(seq, out.sampled[j], out.logits, row, j + 1 < first[i + 1]);
    if (running && !out.drafts.empty())
      keep_draft(seq, std::move(out.drafts[i]), out.draft_parents.empty() ? std::vector<int32_t>{}
                                                                          : std::move(out.draft_parents[i]));
  };
  for (size_t i = 0; i < sample_seqs.size();) {
    Sequence* s = sample_seqs[i];
    const int64_t row = rank.samples[i].row;
    // The other choices take the prompt's pages before its own token may end it; those that got their own copy
    // of its partial last page take their draw, the others recompute that page in a later step (and draw then).
    const std::vector<Sequence*> ready = s->forks > 1 ? fork(*s) : std::vector<Sequence*>();
    take(i);
    for (++i; i < sample_seqs.size() && rank.samples[i].row == row && sample_seqs[i]->request == s->request; ++i)
      if (std::find(ready.begin(), ready.end(), sample_seqs[i]) != ready.end()) take(i);
  }
}

bool Engine::may_draft(const Sequence& seq) const {
  const RequestInput& input = seq.request->input;
  const SamplingParams& p = input.params;
  // A verify draws each row with the request's state at the step's start: penalties (output counts) would change
  // between its rows, and so would the min_new_tokens mask before every row but the first is past it, and a
  // grammar's mask after every token; the logits a request asks for are one row's.
  return p.frequency_penalty == 0.0 && p.presence_penalty == 0.0 && p.repetition_penalty == 1.0 &&
         !input.return_logits && !seq.grammar && seq.output_len() + 1 >= p.min_new_tokens;
}

// The drafts the next step verifies: no more than the sequence may still generate after its pending token, nor than
// its context holds.
void Engine::keep_draft(Sequence& seq, std::vector<int32_t> draft, std::vector<int32_t> parents) {
  const int64_t room = std::min(seq.max_new_tokens - seq.output_len() - 1,
                                max_sequence_len_ - static_cast<int64_t>(seq.tokens.size()));
  if (room <= 0 || !may_draft(seq)) return;
  if (parents.empty()) {
    if (static_cast<int64_t>(draft.size()) > room) draft.resize(static_cast<size_t>(room));
  } else {
    trim_draft_tree(draft, parents, room);
    seq.draft_parents = std::move(parents);
  }
  seq.draft = std::move(draft);
}

// Choice 0 has just finished the prompt: the other choices take its full pages (shared, counted) and
// their own copy of its partial last page, so the prompt is computed once for all n. Returns the
// choices that can sample now.
std::vector<Sequence*> Engine::fork(Sequence& parent) {
  std::vector<Sequence*> ready;
  DpRank& rank = rank_of(parent);
  const int64_t ps = rank.pool.page_size();
  const int64_t full = parent.kv_len / ps;
  for (size_t i = 1; i < parent.request->seqs.size(); ++i) {
    Sequence& child = *parent.request->seqs[i];
    child.kv_len = parent.kv_len;
    child.admitted = true;
    child.cached_tokens = parent.cached_tokens;
    child.pages.assign(parent.pages.begin(), parent.pages.begin() + full);
    for (int32_t page : child.pages) rank.pool.retain(page);
    if (parent.kv_len % ps != 0) {
      std::vector<int32_t> own;
      if (rank.scheduler.allocate(1, own)) {
        rank.runner->copy_page(parent.pages[full], own[0]);
        child.pages.push_back(own[0]);
      } else {
        child.kv_len = full * ps;  // no free page: it recomputes the partial page in a later step
      }
    }
    rank.scheduler.add_running(&child);
    if (child.pending() == 0) ready.push_back(&child);
  }
  parent.forks = 1;
  return ready;
}

// Appends the token; a stop token or the length limit ends the sequence here (its last output follows in
// flush_outputs), so the next plan no longer schedules it.
bool Engine::accept_token(Sequence& seq, const SampledToken& sampled, const Tensor& logits, int64_t row,
                          bool cached) {
  if (seq.finished) return false;  // ended by a stop string found after this step was launched: past its end
  const RequestInput& input = seq.request->input;
  if (cached) ++seq.kv_len;  // a verified draft: the step wrote its latents
  seq.tokens.push_back(sampled.token);
  ++seq.output_counts[sampled.token];
  ++stats_.generated_tokens;
  ++rank_of(seq).generated;
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
  const bool stop_token = std::find(stop_ids.begin(), stop_ids.end(), sampled.token) != stop_ids.end();
  // Structured output: the token moves the grammar on (its mask allowed it); a complete value ends the choice.
  const bool constrained = seq.grammar && !seq.grammar_waits;
  const bool grammar_refused =
      constrained && (stop_token ? !seq.grammar->can_end() : !seq.grammar->advance(text_->bytes(sampled.token)));
  if (seq.grammar_waits && sampled.token == input.params.grammar_after_token) seq.grammar_waits = false;
  if (grammar_refused) out.finish = FinishReason::abort(cat("token ", sampled.token, " broke the output's grammar"));
  else if (seq.output_len() >= seq.max_new_tokens) out.finish = FinishReason::length();
  else if (stop_token) out.finish = FinishReason::stop_token(sampled.token);
  else if (constrained && seq.grammar->finished()) out.finish = FinishReason{};  // stop: the JSON value is complete
  const bool running = !out.finish;
  if (!running) rank_of(seq).scheduler.remove(&seq);
  pending_outputs_.push_back(std::move(out));
  return running;
}

}  // namespace narwhal
