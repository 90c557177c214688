// CpuModelRunner's tree drafting (--speculative-eagle-topk > 1): the verify's acceptance along each draft tree, and
// DraftTree's rounds of the MTP layer over tree candidates (each attends to its ancestors among them), every drafting
// sequence's tree in one forward a round.
#include <cstring>

#include "core/error.h"
#include "runtime/cpu_model_runner.h"
#include "runtime/draft_tree_rounds.h"

namespace narwhal {

namespace {

// Row `row` of `src` ([rows, h] F32) into row `at` of `dst`.
void copy_row(const Tensor& src, int64_t row, Tensor& dst, int64_t at) {
  const int64_t h = src.size(1);
  std::memcpy(dst.f32() + at * h, src.f32() + row * h, static_cast<size_t>(h) * sizeof(float));
}

}  // namespace

void CpuModelRunner::verify_trees(const ForwardBatch& batch, const Tensor& hidden,
                                  std::span<const SampleRequest> samples, std::span<const SampledToken> drawn,
                                  StepOutput& result) {
  VerifyOutcome outcome = accept_drafts(batch, samples, drawn);
  // The kept paths as chains: their latents moved to the chain's slots, their tokens and target states in order.
  for (size_t i = 0; i < batch.seqs.size(); ++i)
    if (!batch.seqs[i].draft_parents.empty())
      cache_.keep_tree_path(batch.seqs[i].page_table, batch.seqs[i].prefix_len, outcome.paths[i]);
  const KeptPaths kept = kept_paths(batch, outcome);
  Tensor kept_hidden = Tensor::zeros(DType::kF32, {static_cast<int64_t>(kept.rows.size()), hidden.size(1)});
  for (size_t r = 0; r < kept.rows.size(); ++r) copy_row(hidden, kept.rows[r], kept_hidden, static_cast<int64_t>(r));

  MtpBatch mtp = mtp_extend_batch(kept.batch, outcome.kept, outcome.after);
  const std::vector<int> drafter = mtp_drafters(mtp, samples);
  result.drafts.assign(samples.size(), {});
  result.draft_parents.assign(samples.size(), {});
  // With DP attention every group's MTP forwards meet in the MoE: each runs the extend, empty or not.
  const bool dp = model_->dp_size() > 1;
  if (!mtp.batch.seqs.empty() || dp) {
    if (dp) mtp.batch.dp_tokens = model_->dp_token_counts(mtp.batch.num_tokens());
    Tensor inputs = Tensor::zeros(DType::kF32, {static_cast<int64_t>(mtp.hidden_rows.size()), hidden.size(1)});
    for (size_t r = 0; r < mtp.hidden_rows.size(); ++r)
      copy_row(kept_hidden, mtp.hidden_rows[r], inputs, static_cast<int64_t>(r));
    ForwardOptions options;
    options.return_hidden = true;
    draft_trees(mtp, model_->forward_mtp(0, mtp.batch, inputs, cache_, options), drafter, samples.size(), result);
  }
  result.sampled = std::move(outcome.sampled);
  result.accepted = std::move(outcome.accepted);
}

void CpuModelRunner::draft_trees(const MtpBatch& mtp, const ForwardOutput& out, std::span<const int> drafter,
                                 size_t requests, StepOutput& result) {
  const int64_t h = config().hidden_size, vocab = config().vocab_size;
  const int topk = speculative_.topk;
  const bool dp = model_->dp_size() > 1;
  TreeRounds rounds(mtp.batch, drafter, speculative_, page_size(), config().max_position_embeddings, dp);
  Tensor states = Tensor::zeros(DType::kF32, {rounds.max_slots(), h});
  std::vector<std::vector<DraftChoice>> choices;
  for (size_t t = 0; t < rounds.root_seqs().size(); ++t) {
    copy_row(out.hidden, rounds.root_rows()[t], states, static_cast<int64_t>(t));
    choices.push_back(top_draft_choices(out.logits.f32() + rounds.root_seqs()[t] * vocab, vocab, topk));
  }
  rounds.start(choices);
  // Rounds 2 .. num_steps: every tree's candidates so far in one forward (with DP attention every round runs, empty
  // where a group has nothing, so that the groups' forwards meet).
  while (!rounds.done()) {
    ForwardBatch& step = rounds.batch();
    if (dp) step.dp_tokens = model_->dp_token_counts(step.num_tokens());
    Tensor inputs = Tensor::zeros(DType::kF32, {step.num_tokens(), h});
    for (size_t r = 0; r < rounds.input_slots().size(); ++r)
      copy_row(states, rounds.input_slots()[r], inputs, static_cast<int64_t>(r));
    ForwardOptions options;
    options.return_hidden = true;
    options.logit_rows = rounds.frontier_rows();
    const ForwardOutput next = model_->forward_mtp(0, step, inputs, cache_, options);
    choices.clear();
    for (size_t r = 0; r < rounds.frontier_rows().size(); ++r) {
      copy_row(next.hidden, rounds.frontier_rows()[r], states, rounds.frontier_slot0() + static_cast<int64_t>(r));
      choices.push_back(top_draft_choices(next.logits.f32() + static_cast<int64_t>(r) * vocab, vocab, topk));
    }
    rounds.advance(choices);
  }
  rounds.take(requests, result.drafts, result.draft_parents);
}

}  // namespace narwhal
