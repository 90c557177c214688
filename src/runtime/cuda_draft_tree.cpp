// CudaModelRunner's tree drafting (--speculative-eagle-topk > 1), eager: a tree verify's kept paths moved into their
// chains' slots in every layer's latent cache, the MTP layer's extend over them, then TreeRounds: a forward of every
// tree's candidates a round (mla_decode masks each to its ancestors), the MTP states kept in a device store, and each
// frontier row's top-k choices drawn by the GPU sampler (its top logprobs).
#include <algorithm>

#include "core/cuda_check.h"
#include "core/error.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/mla.h"
#include "runtime/cuda_model_runner.h"
#include "runtime/draft_tree_rounds.h"

namespace narwhal {

namespace {

const SamplingParams& greedy_params() {
  static const SamplingParams greedy = [] {
    SamplingParams p;
    p.temperature = 0.0;
    return p;
  }();
  return greedy;
}

}  // namespace

void CudaModelRunner::keep_tree_paths(const ForwardBatch& verify, const VerifyOutcome& outcome) {
  std::vector<int64_t> moves;  // (from, to) rows of a layer's cache, in KvCache::keep_tree_path's order
  for (size_t i = 0; i < verify.seqs.size(); ++i) {
    const SequenceInfo& s = verify.seqs[i];
    if (s.draft_parents.empty()) continue;
    const auto row = [&](int64_t pos) {
      return static_cast<int64_t>(s.page_table[static_cast<size_t>(pos / page_size_)]) * page_size_ + pos % page_size_;
    };
    const std::vector<int64_t>& path = outcome.paths[i];
    for (size_t j = 0; j < path.size(); ++j)
      if (path[j] != static_cast<int64_t>(j)) {
        moves.push_back(row(s.prefix_len + path[j]));
        moves.push_back(row(s.prefix_len + static_cast<int64_t>(j)));
      }
  }
  if (moves.empty()) return;
  const Tensor list =
      step_lists_.send(moves.data(), DType::kI64, {static_cast<int64_t>(moves.size() / 2), 2}, stream_);
  ops::cuda::move_rows(cache_storage_, model_->config().kv_cache_dim(), list, stream_);
}

std::vector<std::vector<DraftChoice>> CudaModelRunner::top_choices(const Tensor& logits, int64_t rows) {
  std::vector<SampleRequest> requests(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    SampleRequest& r = requests[static_cast<size_t>(i)];
    r.row = i;
    r.params = &greedy_params();
    r.top_logprobs = speculative_.topk;
  }
  queue_draws(logits.rows(0, rows), requests, false);
  const StepOutput drawn = read_draws();  // waits: the host builds the next round from the choices
  step_lists_.restart();
  std::vector<std::vector<DraftChoice>> choices;
  for (const SampledToken& t : drawn.sampled) {
    choices.emplace_back();
    for (const TokenLogprob& c : t.top) choices.back().emplace_back(c.token, c.logprob);
  }
  return choices;
}

void CudaModelRunner::draft_trees(const ForwardBatch& verify, std::span<const int64_t> verify_rows,
                                  std::span<const SampleRequest> samples, const VerifyOutcome& outcome,
                                  StepOutput& out) {
  const KeptPaths kept = kept_paths(verify, outcome);
  MtpBatch mtp = mtp_extend_batch(kept.batch, outcome.kept, outcome.after);
  const bool dp = model_->dp_size() > 1;
  TreeRounds rounds(mtp.batch, mtp_drafters(mtp, samples), speculative_, page_size_,
                    model_->config().max_position_embeddings, dp);
  const int64_t trees = static_cast<int64_t>(rounds.root_rows().size()), h = model_->config().hidden_size;
  keep_tree_paths(verify, outcome);
  if (mtp.batch.seqs.empty() && !dp) return rounds.take(samples.size(), out.drafts, out.draft_parents);
  const int64_t slots = std::max<int64_t>(rounds.max_slots(), 1);
  if (!tree_states_.defined() || tree_states_.size(0) < slots)
    tree_states_ = Tensor::empty(DType::kBF16, {slots, h}, Device::kCUDA);

  // The extend: the target's states of the kept rows (the verify's padded rows); its trees' roots into the store.
  std::vector<int64_t> from;
  for (int64_t r : mtp.hidden_rows) from.push_back(verify_rows[static_cast<size_t>(kept.rows[static_cast<size_t>(r)])]);
  Tensor inputs = mtp_inputs(static_cast<int64_t>(from.size()));
  gather_step_rows(model_->hidden(), from, inputs);
  const bool decode = mtp.batch.all_decode();
  CudaStep step = upload(mtp.batch, decode, 0, !decode);
  step.keep_hidden = true;
  if (dp) step.dp_rows = dp_counts(step.num_tokens);
  const Tensor logits = model_->forward_mtp(step, inputs, cache_, stream_);
  gather_step_rows(model_->hidden(), rounds.root_rows(), tree_states_.rows(0, trees));
  std::vector<std::vector<DraftChoice>> per_seq = top_choices(logits, static_cast<int64_t>(mtp.batch.seqs.size()));
  std::vector<std::vector<DraftChoice>> choices;
  for (int64_t m : rounds.root_seqs()) choices.push_back(std::move(per_seq[static_cast<size_t>(m)]));
  rounds.start(choices);

  // Rounds 2 .. num_steps, every tree padded to the round's most candidates (the decode kernel's q_len); fillers take
  // slot 0's state (their outputs are never read).
  while (!rounds.done()) {
    ForwardBatch& batch = rounds.batch();
    int64_t len = 1;
    for (const SequenceInfo& s : batch.seqs) len = std::max(len, s.new_len);
    const std::vector<int64_t> padded = batch.padded_rows(len);  // per token of the batch: its step row
    std::vector<int64_t> state_of(batch.seqs.size() * static_cast<size_t>(len), 0), logit_rows;
    for (size_t r = 0; r < padded.size(); ++r) state_of[static_cast<size_t>(padded[r])] = rounds.input_slots()[r];
    for (int64_t r : rounds.frontier_rows()) logit_rows.push_back(padded[static_cast<size_t>(r)]);
    Tensor round_inputs = mtp_inputs(static_cast<int64_t>(state_of.size()));
    gather_step_rows(tree_states_, state_of, round_inputs);
    CudaStep round = upload(batch, true, 0, false, len, logit_rows);
    round.keep_hidden = true;
    if (dp) round.dp_rows = dp_counts(round.num_tokens);
    const Tensor round_logits = model_->forward_mtp(round, round_inputs, cache_, stream_);
    const int64_t f = static_cast<int64_t>(logit_rows.size()), slot0 = rounds.frontier_slot0();
    gather_step_rows(model_->hidden(), logit_rows, tree_states_.rows(slot0, slot0 + f));
    rounds.advance(top_choices(round_logits, f));
  }
  rounds.take(samples.size(), out.drafts, out.draft_parents);
}

}  // namespace narwhal
