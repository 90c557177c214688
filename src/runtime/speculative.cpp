// Speculative decoding's host arithmetic: verify rows, acceptance, the MTP layer's extend and chain batches.
#include "runtime/speculative.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace narwhal {

VerifyRows verify_rows(const ForwardBatch& batch, std::span<const SampleRequest> samples) {
  VerifyRows rows;
  rows.first.assign(batch.seqs.size(), -1);
  std::vector<bool> draws(batch.seqs.size(), false);
  for (const SampleRequest& r : samples) {
    NW_CHECK(r.row >= 0 && r.row < static_cast<int64_t>(batch.seqs.size()), "speculative step: sample row ", r.row,
             " is outside the batch of ", batch.seqs.size(), " sequences");
    draws[static_cast<size_t>(r.row)] = true;
  }
  int64_t end = 0;
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    const SequenceInfo& s = batch.seqs[i];
    end += s.new_len;
    NW_CHECK(s.draft_len >= 0 && s.draft_len < s.new_len, "speculative step: sequence ", i, " has ", s.draft_len,
             " drafts among ", s.new_len, " new tokens");
    if (!draws[i]) continue;
    rows.first[i] = static_cast<int64_t>(rows.token_rows.size());
    for (int64_t t = end - s.draft_len - 1; t < end; ++t) rows.token_rows.push_back(t);
  }
  return rows;
}

Tensor pending_token_logits(const VerifyRows& rows, const Tensor& row_logits) {
  const int64_t vocab = row_logits.size(1);
  Tensor out = Tensor::zeros(DType::kF32, {static_cast<int64_t>(rows.first.size()), vocab});
  for (size_t i = 0; i < rows.first.size(); ++i)
    if (rows.first[i] >= 0)
      std::memcpy(out.f32() + static_cast<int64_t>(i) * vocab, row_logits.f32() + rows.first[i] * vocab,
                  static_cast<size_t>(vocab) * sizeof(float));
  return out;
}

std::vector<SampleRequest> verify_samples(const ForwardBatch& batch, std::span<const SampleRequest> samples,
                                          const VerifyRows& rows) {
  std::vector<SampleRequest> out;
  for (const SampleRequest& request : samples) {
    const SequenceInfo& s = batch.seqs[static_cast<size_t>(request.row)];
    const int64_t drafts = s.draft_len;
    std::vector<int64_t> depth(static_cast<size_t>(drafts + 1), 0);  // a tree's node draws for its depth's position
    for (int64_t j = 1; j <= drafts; ++j)
      depth[static_cast<size_t>(j)] =
          s.draft_parents.empty() ? j : depth[static_cast<size_t>(s.draft_parents[static_cast<size_t>(j)])] + 1;
    for (int64_t j = 0; j <= drafts; ++j) {
      SampleRequest at = request;
      at.row = rows.first[static_cast<size_t>(request.row)] + j;
      at.position = request.position + depth[static_cast<size_t>(j)];
      if (j > 0) at.masked = nullptr;  // the engine drafts only when rows after the first are past min_new_tokens
      out.push_back(at);
    }
  }
  return out;
}

VerifyOutcome accept_drafts(const ForwardBatch& batch, std::span<const SampleRequest> samples,
                            std::span<const SampledToken> drawn) {
  VerifyOutcome out;
  const size_t n = batch.seqs.size();
  std::vector<int64_t> starts(n);
  out.kept.resize(n);
  out.after.resize(n);
  out.paths.resize(n);
  for (size_t i = 0, start = 0; i < n; ++i) {
    const SequenceInfo& s = batch.seqs[i];
    starts[i] = static_cast<int64_t>(start);
    start += static_cast<size_t>(s.new_len);
    out.kept[i] = s.new_len - s.draft_len;  // a prompt chunk keeps every token; a decode, what its request accepts
    out.after[i] = s.next_token;
    for (int64_t j = 0; j < out.kept[i]; ++j) out.paths[i].push_back(j);
  }
  std::vector<bool> seen(n, false);
  size_t at = 0;
  for (const SampleRequest& request : samples) {
    const size_t seq = static_cast<size_t>(request.row);
    const SequenceInfo& s = batch.seqs[seq];
    const int64_t nodes = s.draft_len + 1, first = starts[seq] + s.new_len - nodes;
    NW_CHECK(at + static_cast<size_t>(nodes) <= drawn.size(), "accept_drafts: ", drawn.size(),
             " draws for the requests' rows");
    std::vector<int32_t> draws;
    for (int64_t j = 0; j < nodes; ++j) draws.push_back(drawn[at + static_cast<size_t>(j)].token);
    const std::span<const int32_t> tokens(batch.token_ids.data() + first, static_cast<size_t>(nodes));
    std::vector<int64_t> path;  // the request's kept nodes: 0 (its pending token), then the accepted drafts
    if (s.draft_parents.empty()) {
      for (int64_t j = 0; j < accepted_length(tokens.subspan(1), draws); ++j) path.push_back(j);
    } else {
      path = accepted_tree_path(tokens, s.draft_parents, draws);
    }
    for (int64_t node : path) out.sampled.push_back(drawn[at + static_cast<size_t>(node)]);
    out.accepted.push_back(static_cast<int32_t>(path.size()));
    if (!seen[seq]) {
      seen[seq] = true;
      const int64_t offset = s.new_len - nodes;  // the pending token's index among the sequence's new tokens
      out.paths[seq].resize(static_cast<size_t>(offset));
      for (int64_t node : path) out.paths[seq].push_back(offset + node);
      out.kept[seq] = static_cast<int64_t>(out.paths[seq].size());
      out.after[seq] = draws[static_cast<size_t>(path.back())];
    }
    at += static_cast<size_t>(nodes);
  }
  return out;
}

void trim_draft_tree(std::vector<int32_t>& draft, std::vector<int32_t>& parents, int64_t depth) {
  NW_CHECK(parents.size() == draft.size(), "trim_draft_tree: one parent per draft");
  std::vector<int64_t> node_depth = {0};
  std::vector<int32_t> index = {0};  // node -> its number after the cut (-1: cut)
  std::vector<int32_t> kept_tokens, kept_parents;
  for (size_t i = 0; i < draft.size(); ++i) {
    const size_t parent = static_cast<size_t>(parents[i]);
    NW_CHECK(parent <= i, "trim_draft_tree: draft ", i, "'s parent ", parents[i], " comes after it");
    node_depth.push_back(node_depth[parent] + 1);
    const bool keep = node_depth.back() <= depth && index[parent] >= 0;
    index.push_back(keep ? static_cast<int32_t>(kept_tokens.size() + 1) : -1);
    if (!keep) continue;
    kept_tokens.push_back(draft[i]);
    kept_parents.push_back(index[parent]);
  }
  draft = std::move(kept_tokens);
  parents = std::move(kept_parents);
}

int64_t accepted_length(std::span<const int32_t> drafts, std::span<const int32_t> draws) {
  NW_CHECK(draws.size() == drafts.size() + 1, "accepted_length: ", draws.size(), " draws for ", drafts.size(),
           " drafts");
  size_t n = 0;
  while (n < drafts.size() && drafts[n] == draws[n]) ++n;
  return static_cast<int64_t>(n) + 1;
}

std::vector<int64_t> accepted_tree_path(std::span<const int32_t> tokens, std::span<const int32_t> parents,
                                        std::span<const int32_t> draws) {
  NW_CHECK(!tokens.empty() && parents.size() == tokens.size() && draws.size() == tokens.size() && parents[0] == -1,
           "accepted_tree_path: a token, a parent and a draw per node, node 0 the root");
  std::vector<int64_t> path = {0};
  for (bool found = true; found;) {
    found = false;
    const int64_t node = path.back();
    for (size_t c = static_cast<size_t>(node) + 1; c < tokens.size() && !found; ++c)
      if (parents[c] == node && tokens[c] == draws[static_cast<size_t>(node)]) {
        path.push_back(static_cast<int64_t>(c));
        found = true;
      }
  }
  return path;
}

int64_t speculative_reserve(int num_steps, int topk, int num_draft_tokens) {
  if (topk <= 1) return 2 * static_cast<int64_t>(num_steps);
  return std::max<int64_t>(num_draft_tokens, 1 + num_steps + static_cast<int64_t>(num_steps - 1) * topk);
}

MtpBatch mtp_extend_batch(const ForwardBatch& verify, std::span<const int64_t> kept, std::span<const int32_t> after) {
  NW_CHECK(kept.size() == verify.seqs.size() && after.size() == verify.seqs.size(),
           "mtp_extend_batch: one kept count and one next token per sequence");
  MtpBatch out;
  int64_t offset = 0;
  for (size_t i = 0; i < verify.seqs.size(); ++i) {
    const SequenceInfo& s = verify.seqs[i];
    int64_t n = kept[i];
    NW_CHECK(n >= 0 && n <= s.new_len, "mtp_extend_batch: sequence ", i, " keeps ", n, " of ", s.new_len, " tokens");
    if (after[i] < 0) --n;  // the last kept position's next token is not known yet
    if (n > 0) {
      std::vector<int32_t> next(verify.token_ids.begin() + offset + 1, verify.token_ids.begin() + offset + n);
      next.push_back(after[i] < 0 ? verify.token_ids[static_cast<size_t>(offset + n)] : after[i]);
      for (int64_t t = 0; t < n; ++t) out.hidden_rows.push_back(offset + t);
      out.batch.add_sequence(next, s.prefix_len, s.page_table);
      out.source.push_back(static_cast<int>(i));
    }
    offset += s.new_len;
  }
  return out;
}

std::vector<int> mtp_drafters(const MtpBatch& mtp, std::span<const SampleRequest> samples) {
  std::vector<int> drafter(mtp.batch.seqs.size(), -1);
  for (size_t m = 0; m < drafter.size(); ++m)
    for (size_t r = 0; r < samples.size() && drafter[m] < 0; ++r)
      if (samples[r].row == mtp.source[m] && samples[r].max_draft > 0) drafter[m] = static_cast<int>(r);
  return drafter;
}

ForwardBatch mtp_chain_batch(const ForwardBatch& last, std::span<const int32_t> drafts, const std::vector<bool>& keep,
                             int64_t page_size, int64_t max_position) {
  NW_CHECK(drafts.size() == last.seqs.size() && keep.size() == last.seqs.size(),
           "mtp_chain_batch: one draft and one keep flag per sequence");
  ForwardBatch next;
  for (size_t i = 0; i < last.seqs.size(); ++i) {
    if (!keep[i]) continue;
    const SequenceInfo& s = last.seqs[i];
    const int64_t position = s.prefix_len + s.new_len;
    NW_CHECK(position < static_cast<int64_t>(s.page_table.size()) * page_size && position < max_position,
             "mtp_chain_batch: sequence ", i, " cannot take position ", position);
    next.add_sequence({drafts[i]}, position, s.page_table);
  }
  return next;
}

int64_t chain_draft_count(int64_t next, int64_t limit, int max_draft, int num_steps) {
  const int64_t most = std::min(num_steps, max_draft);
  if (most <= 0) return 0;
  return 1 + std::clamp<int64_t>(limit - next, 0, most - 1);
}

DraftChain::DraftChain(const ForwardBatch& verify, std::span<const SampleRequest> samples,
                       const VerifyOutcome& outcome, int num_steps, int64_t page_size, int64_t max_position,
                       bool every_round)
    : num_steps_(num_steps), page_size_(page_size), max_position_(max_position), every_round_(every_round),
      drafts_(samples.size()) {
  for (const SampleRequest& r : samples) max_draft_.push_back(r.max_draft);
  MtpBatch mtp = mtp_extend_batch(verify, outcome.kept, outcome.after);
  drafter_ = mtp_drafters(mtp, samples);
  batch_ = std::move(mtp.batch);
  hidden_rows_ = std::move(mtp.hidden_rows);
  done_ = batch_.seqs.empty() && !every_round_;
}

void DraftChain::advance(std::span<const int32_t> draws) {
  NW_CHECK(!done_ && draws.size() == batch_.seqs.size(), "DraftChain: ", draws.size(), " draws for ",
           batch_.seqs.size(), " sequences");
  ++round_;
  std::vector<bool> more(batch_.seqs.size(), false);
  std::vector<int64_t> last_rows;
  std::vector<int> drafter;
  bool any = false;
  for (size_t m = 0, end = 0; m < batch_.seqs.size(); ++m) {
    const SequenceInfo& s = batch_.seqs[m];
    end += static_cast<size_t>(s.new_len);
    if (drafter_[m] < 0) continue;
    std::vector<int32_t>& d = drafts_[static_cast<size_t>(drafter_[m])];
    d.push_back(draws[m]);
    const int64_t position = s.prefix_len + s.new_len;
    more[m] = static_cast<int>(d.size()) < std::min(num_steps_, max_draft_[static_cast<size_t>(drafter_[m])]) &&
              position < static_cast<int64_t>(s.page_table.size()) * page_size_ && position < max_position_;
    if (!more[m]) continue;
    any = true;
    last_rows.push_back(static_cast<int64_t>(end) - 1);  // its last row's output feeds the next round
    drafter.push_back(drafter_[m]);
  }
  if (every_round_ ? round_ >= num_steps_ : !any) {
    done_ = true;
    return;
  }
  batch_ = mtp_chain_batch(batch_, draws, more, page_size_, max_position_);
  hidden_rows_ = std::move(last_rows);
  drafter_ = std::move(drafter);
}

}  // namespace narwhal
