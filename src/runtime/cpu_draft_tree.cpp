// CpuModelRunner's tree drafting (--speculative-eagle-topk > 1): the verify's acceptance along each draft tree, and
// DraftTree's rounds of the MTP layer over tree candidates (each attends to its ancestors among them), every drafting
// sequence's tree in one forward a round.
#include <cstring>

#include "core/error.h"
#include "runtime/cpu_model_runner.h"
#include "runtime/draft_tree.h"

namespace narwhal {

namespace {

// Row `row` of `src` ([rows, h] F32) into row `at` of `dst`.
void copy_row(const Tensor& src, int64_t row, Tensor& dst, int64_t at) {
  const int64_t h = src.size(1);
  std::memcpy(dst.f32() + at * h, src.f32() + row * h, static_cast<size_t>(h) * sizeof(float));
}

// One drafting sequence's tree and what its rounds need: where its candidates sit, how many fit, and the MTP layer's
// head-normed output at its root and at each candidate that was a frontier node (its children's input).
struct TreeDraft {
  DraftTree tree;
  int64_t first = 0, room = 0;  // the depth-1 candidates' position and slot; slots left from there
  const std::vector<int32_t>* pages = nullptr;
  Tensor root_state;
  std::vector<Tensor> state;
  bool stopped = false;  // its next round would pass its pages or the context
};

}  // namespace

void CpuModelRunner::verify_trees(const ForwardBatch& batch, const Tensor& hidden,
                                  std::span<const SampleRequest> samples, std::span<const SampledToken> drawn,
                                  StepOutput& result) {
  VerifyOutcome outcome = accept_drafts(batch, samples, drawn);
  // The kept paths as chains: their latents moved to the chain's slots, their tokens and target states in order.
  ForwardBatch kept;
  std::vector<int64_t> rows;
  int64_t start = 0;
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    const SequenceInfo& s = batch.seqs[i];
    const std::vector<int64_t>& path = outcome.paths[i];
    if (!s.draft_parents.empty()) cache_.keep_tree_path(s.page_table, s.prefix_len, path);
    std::vector<int32_t> tokens;
    for (int64_t node : path) {
      tokens.push_back(batch.token_ids[static_cast<size_t>(start + node)]);
      rows.push_back(start + node);
    }
    kept.add_sequence(tokens, s.prefix_len, s.page_table, 0, s.next_token);
    start += s.new_len;
  }
  Tensor kept_hidden = Tensor::zeros(DType::kF32, {static_cast<int64_t>(rows.size()), hidden.size(1)});
  for (size_t r = 0; r < rows.size(); ++r) copy_row(hidden, rows[r], kept_hidden, static_cast<int64_t>(r));

  MtpBatch mtp = mtp_extend_batch(kept, outcome.kept, outcome.after);
  std::vector<int> drafter(mtp.batch.seqs.size(), -1);  // the request each MTP sequence drafts for
  for (size_t m = 0; m < mtp.batch.seqs.size(); ++m)
    for (size_t r = 0; r < samples.size() && drafter[m] < 0; ++r)
      if (samples[r].row == mtp.source[m] && samples[r].max_draft > 0) drafter[m] = static_cast<int>(r);
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
    draft_trees(mtp, model_->forward_mtp(0, mtp.batch, inputs, cache_, options), drafter, result);
  }
  result.sampled = std::move(outcome.sampled);
  result.accepted = std::move(outcome.accepted);
}

void CpuModelRunner::draft_trees(const MtpBatch& mtp, const ForwardOutput& out, std::span<const int> drafter,
                                 StepOutput& result) {
  const int64_t h = config().hidden_size, vocab = config().vocab_size;
  const int64_t max_position = config().max_position_embeddings;
  const int topk = speculative_.topk;
  // Round 1: each extend's last row predicts the token after its pending one.
  std::vector<TreeDraft> drafts;
  std::vector<size_t> owner;  // drafts[d] drafts for request drafter[owner[d]]
  for (size_t m = 0, end = 0; m < mtp.batch.seqs.size(); ++m) {
    const SequenceInfo& s = mtp.batch.seqs[m];
    end += static_cast<size_t>(s.new_len);
    if (drafter[m] < 0) continue;
    TreeDraft d{DraftTree(topk, speculative_.num_steps, speculative_.num_draft_tokens)};
    d.tree.expand(std::vector<std::vector<DraftChoice>>{top_draft_choices(out.logits.f32() + m * vocab, vocab, topk)});
    d.first = s.prefix_len + s.new_len;
    d.room = std::min(static_cast<int64_t>(s.page_table.size()) * page_size(), max_position) - d.first;
    d.pages = &s.page_table;
    d.root_state = Tensor::zeros(DType::kF32, {1, h});
    copy_row(out.hidden, static_cast<int64_t>(end) - 1, d.root_state, 0);
    drafts.push_back(std::move(d));
    owner.push_back(m);
  }
  // Rounds 2 .. num_steps: every tree's candidates so far in one forward (with DP attention every round runs, empty
  // where a group has nothing, so that the groups' forwards meet).
  const bool dp = model_->dp_size() > 1;
  for (int round = 2; round <= speculative_.num_steps; ++round) {
    ForwardBatch step;
    std::vector<size_t> in_step;
    std::vector<std::vector<int32_t>> place(drafts.size());  // per tree: candidate -> its row in `step`
    std::vector<std::pair<size_t, int64_t>> inputs_from;       // per row: (tree, parent candidate or -1)
    ForwardOptions options;
    options.return_hidden = true;
    for (size_t t = 0; t < drafts.size(); ++t) {
      TreeDraft& d = drafts[t];
      const std::vector<int64_t>& nodes = d.tree.expanded();
      d.stopped = d.stopped || static_cast<int64_t>(nodes.size()) > d.room ||
                  d.first + d.tree.depth(nodes.back()) > max_position;
      if (d.stopped) continue;
      std::vector<int32_t> tokens, parents;
      place[t].assign(static_cast<size_t>(nodes.back()) + 1, -1);
      for (size_t j = 0; j < nodes.size(); ++j) {
        const int64_t node = nodes[j], parent = d.tree.parent(node);
        place[t][static_cast<size_t>(node)] = static_cast<int32_t>(step.num_tokens() + static_cast<int64_t>(j));
        tokens.push_back(d.tree.token(node));
        parents.push_back(parent < 0 ? -1 : place[t][static_cast<size_t>(parent)] - static_cast<int32_t>(step.num_tokens()));
        inputs_from.emplace_back(t, parent);
      }
      for (int64_t node : d.tree.frontier()) options.logit_rows.push_back(place[t][static_cast<size_t>(node)]);
      step.add_tree(tokens, parents, d.first, *d.pages);
      in_step.push_back(t);
    }
    if (in_step.empty() && !dp) break;
    if (dp) step.dp_tokens = model_->dp_token_counts(step.num_tokens());
    Tensor inputs = Tensor::zeros(DType::kF32, {step.num_tokens(), h});
    for (size_t r = 0; r < inputs_from.size(); ++r) {
      const TreeDraft& d = drafts[inputs_from[r].first];
      const int64_t parent = inputs_from[r].second;
      copy_row(parent < 0 ? d.root_state : d.state[static_cast<size_t>(parent)], 0, inputs, static_cast<int64_t>(r));
    }
    const ForwardOutput next = model_->forward_mtp(0, step, inputs, cache_, options);
    int64_t logit_row = 0;
    for (size_t t : in_step) {
      TreeDraft& d = drafts[t];
      std::vector<std::vector<DraftChoice>> children;
      for (int64_t node : d.tree.frontier()) {
        if (d.state.size() <= static_cast<size_t>(node)) d.state.resize(static_cast<size_t>(node) + 1);
        d.state[static_cast<size_t>(node)] = Tensor::zeros(DType::kF32, {1, h});
        copy_row(next.hidden, place[t][static_cast<size_t>(node)], d.state[static_cast<size_t>(node)], 0);
        children.push_back(top_draft_choices(next.logits.f32() + logit_row++ * vocab, vocab, topk));
      }
      d.tree.expand(children);
    }
  }
  for (size_t t = 0; t < drafts.size(); ++t) {
    std::vector<int32_t> tokens, parents;
    drafts[t].tree.select(-1, tokens, parents);  // node 0 is the pending token, which the engine feeds
    const size_t k = static_cast<size_t>(drafter[owner[t]]);
    result.drafts[k].assign(tokens.begin() + 1, tokens.end());
    result.draft_parents[k].assign(parents.begin() + 1, parents.end());
  }
}

}  // namespace narwhal
