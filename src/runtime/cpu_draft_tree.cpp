// CpuModelRunner's tree drafting (--speculative-eagle-topk > 1): the verify's acceptance along each draft tree, and
// DraftTree's rounds of the MTP layer over tree candidates (each attends to its ancestors among them).
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

}  // namespace

void CpuModelRunner::verify_trees(const ForwardBatch& batch, const Tensor& hidden,
                                  std::span<const SampleRequest> samples, std::span<const SampledToken> drawn,
                                  StepOutput& result) {
  TreeVerifyOutcome verified = accept_tree_drafts(batch, samples, drawn);
  // The kept paths as chains: their latents moved to the chain's slots, their tokens and target states in order.
  ForwardBatch kept;
  std::vector<int64_t> rows;
  int64_t start = 0;
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    const SequenceInfo& s = batch.seqs[i];
    const std::vector<int64_t>& path = verified.paths[i];
    if (!s.draft_parents.empty()) cache_.keep_tree_path(s.page_table, s.prefix_len, path);
    std::vector<int32_t> tokens;
    for (int64_t node : path) {
      tokens.push_back(batch.token_ids[static_cast<size_t>(start + node)]);
      rows.push_back(start + node);
    }
    // Rows past the path (filler: rejected nodes' slots) keep the sequence's length, unread: kept counts the path.
    for (int64_t j = static_cast<int64_t>(path.size()); j < s.new_len; ++j) {
      tokens.push_back(batch.token_ids[static_cast<size_t>(start + j)]);
      rows.push_back(start + j);
    }
    kept.add_sequence(tokens, s.prefix_len, s.page_table, 0, s.next_token);
    start += s.new_len;
  }
  Tensor kept_hidden = Tensor::zeros(DType::kF32, {static_cast<int64_t>(rows.size()), hidden.size(1)});
  for (size_t r = 0; r < rows.size(); ++r) copy_row(hidden, rows[r], kept_hidden, static_cast<int64_t>(r));

  const VerifyOutcome& outcome = verified.outcome;
  const MtpBatch mtp = mtp_extend_batch(kept, outcome.kept, outcome.after);
  std::vector<int> drafter(mtp.batch.seqs.size(), -1);  // the request each MTP sequence drafts for
  for (size_t m = 0; m < mtp.batch.seqs.size(); ++m)
    for (size_t r = 0; r < samples.size() && drafter[m] < 0; ++r)
      if (samples[r].row == mtp.source[m] && samples[r].max_draft > 0) drafter[m] = static_cast<int>(r);
  result.drafts.assign(samples.size(), {});
  result.draft_parents.assign(samples.size(), {});
  if (!mtp.batch.seqs.empty()) {
    Tensor inputs = Tensor::zeros(DType::kF32, {static_cast<int64_t>(mtp.hidden_rows.size()), hidden.size(1)});
    for (size_t r = 0; r < mtp.hidden_rows.size(); ++r)
      copy_row(kept_hidden, mtp.hidden_rows[r], inputs, static_cast<int64_t>(r));
    ForwardOptions options;
    options.return_hidden = true;
    draft_trees(mtp, model_->forward_mtp(0, mtp.batch, inputs, cache_, options), drafter, result);
  }
  result.sampled = std::move(verified.outcome.sampled);
  result.accepted = std::move(verified.outcome.accepted);
}

void CpuModelRunner::draft_trees(const MtpBatch& mtp, const ForwardOutput& out, std::span<const int> drafter,
                                 StepOutput& result) {
  const int64_t h = config().hidden_size, vocab = config().vocab_size;
  const int64_t max_position = config().max_position_embeddings;
  for (size_t m = 0, end = 0; m < mtp.batch.seqs.size(); ++m) {
    const SequenceInfo& s = mtp.batch.seqs[m];
    end += static_cast<size_t>(s.new_len);
    if (drafter[m] < 0) continue;
    // Round 1: the extend's last row predicts the token after the pending one.
    DraftTree tree(speculative_.topk, speculative_.num_steps, speculative_.num_draft_tokens);
    tree.expand(std::vector<std::vector<DraftChoice>>{top_draft_choices(out.logits.f32() + m * vocab, vocab,
                                                                         speculative_.topk)});
    const int64_t first = s.prefix_len + s.new_len;  // the depth-1 candidates' position and slot
    const int64_t room = std::min(static_cast<int64_t>(s.page_table.size()) * page_size(), max_position) - first;
    Tensor root_state = Tensor::zeros(DType::kF32, {1, h});
    copy_row(out.hidden, static_cast<int64_t>(end) - 1, root_state, 0);
    std::vector<Tensor> state;  // per candidate: the MTP layer's head-normed output there (its children's input)
    while (!tree.done()) {
      const std::vector<int64_t>& nodes = tree.expanded();
      if (static_cast<int64_t>(nodes.size()) > room || first + tree.depth(nodes.back()) > max_position) break;
      std::vector<int32_t> tokens, parents, place(static_cast<size_t>(nodes.back()) + 1, -1);
      Tensor inputs = Tensor::zeros(DType::kF32, {static_cast<int64_t>(nodes.size()), h});
      for (size_t j = 0; j < nodes.size(); ++j) {
        const int64_t node = nodes[j], parent = tree.parent(node);
        place[static_cast<size_t>(node)] = static_cast<int32_t>(j);
        tokens.push_back(tree.token(node));
        parents.push_back(parent < 0 ? -1 : place[static_cast<size_t>(parent)]);
        copy_row(parent < 0 ? root_state : state[static_cast<size_t>(parent)], 0, inputs, static_cast<int64_t>(j));
      }
      ForwardBatch round;
      round.add_tree(tokens, parents, first, s.page_table);
      ForwardOptions options;
      options.return_hidden = true;
      for (int64_t node : tree.frontier()) options.logit_rows.push_back(place[static_cast<size_t>(node)]);
      const ForwardOutput step = model_->forward_mtp(0, round, inputs, cache_, options);
      std::vector<std::vector<DraftChoice>> children;
      for (size_t f = 0; f < tree.frontier().size(); ++f) {
        const int64_t node = tree.frontier()[f];
        if (state.size() <= static_cast<size_t>(node)) state.resize(static_cast<size_t>(node) + 1);
        state[static_cast<size_t>(node)] = Tensor::zeros(DType::kF32, {1, h});
        copy_row(step.hidden, place[static_cast<size_t>(node)], state[static_cast<size_t>(node)], 0);
        children.push_back(top_draft_choices(step.logits.f32() + static_cast<int64_t>(f) * vocab, vocab,
                                             speculative_.topk));
      }
      tree.expand(children);
    }
    std::vector<int32_t> tokens, parents;
    tree.select(-1, tokens, parents);  // node 0 is the pending token, which the engine feeds
    const size_t k = static_cast<size_t>(drafter[m]);
    result.drafts[k].assign(tokens.begin() + 1, tokens.end());
    result.draft_parents[k].assign(parents.begin() + 1, parents.end());
  }
}

}  // namespace narwhal
