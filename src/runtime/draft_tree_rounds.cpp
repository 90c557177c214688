// KeptPaths and TreeRounds: the host side of tree drafting that the CPU and GPU runners share.
#include "runtime/draft_tree_rounds.h"

#include <algorithm>

#include "core/error.h"

namespace narwhal {

KeptPaths kept_paths(const ForwardBatch& verify, const VerifyOutcome& outcome) {
  KeptPaths kept;
  int64_t start = 0;
  for (size_t i = 0; i < verify.seqs.size(); ++i) {
    const SequenceInfo& s = verify.seqs[i];
    std::vector<int32_t> tokens;
    for (int64_t node : outcome.paths[i]) {
      tokens.push_back(verify.token_ids[static_cast<size_t>(start + node)]);
      kept.rows.push_back(start + node);
    }
    kept.batch.add_sequence(tokens, s.prefix_len, s.page_table, 0, s.next_token);
    start += s.new_len;
  }
  return kept;
}

TreeRounds::TreeRounds(const ForwardBatch& extend, std::span<const int> drafter, const SpeculativeConfig& config,
                       int64_t page_size, int64_t max_position, bool every_round)
    : config_(config), max_position_(max_position), every_round_(every_round) {
  NW_CHECK(drafter.size() == extend.seqs.size(), "TreeRounds: ", drafter.size(), " drafters for ", extend.seqs.size(),
           " sequences");
  int64_t end = 0;
  for (size_t m = 0; m < extend.seqs.size(); ++m) {
    const SequenceInfo& s = extend.seqs[m];
    end += s.new_len;
    if (drafter[m] < 0) continue;
    const int64_t first = s.prefix_len + s.new_len;
    const int64_t room = std::min(static_cast<int64_t>(s.page_table.size()) * page_size, max_position) - first;
    trees_.push_back({DraftTree(config.topk, config.num_steps, config.num_draft_tokens), drafter[m], first, room,
                      &s.page_table, {}});
    root_seqs_.push_back(static_cast<int64_t>(m));
    root_rows_.push_back(end - 1);
  }
  slots_used_ = static_cast<int64_t>(trees_.size());
}

int64_t TreeRounds::max_slots() const {
  return static_cast<int64_t>(trees_.size()) * (1 + static_cast<int64_t>(config_.num_steps - 1) * config_.topk);
}

void TreeRounds::start(std::span<const std::vector<DraftChoice>> choices) {
  NW_CHECK(choices.size() == trees_.size(), "TreeRounds: ", choices.size(), " lists of choices for ", trees_.size(),
           " trees");
  for (size_t t = 0; t < trees_.size(); ++t) trees_[t].tree.expand(choices.subspan(t, 1));
  build_round();
}

// Round 2 on: every tree's candidates so far, its frontier's logits asked for.
void TreeRounds::build_round() {
  ++round_;
  batch_ = ForwardBatch();
  input_slots_.clear();
  frontier_rows_.clear();
  in_round_.clear();
  place_.assign(trees_.size(), {});
  if (round_ > config_.num_steps) {
    done_ = true;
    return;
  }
  for (size_t t = 0; t < trees_.size(); ++t) {
    Tree& d = trees_[t];
    const std::vector<int64_t>& nodes = d.tree.expanded();
    d.stopped = d.stopped || static_cast<int64_t>(nodes.size()) > d.room ||
                d.first + d.tree.depth(nodes.back()) > max_position_;
    if (d.stopped) continue;
    const int64_t base = batch_.num_tokens();
    std::vector<int32_t> tokens, parents;
    place_[t].assign(static_cast<size_t>(nodes.back()) + 1, -1);
    for (size_t j = 0; j < nodes.size(); ++j) {
      const int64_t node = nodes[j], parent = d.tree.parent(node);
      place_[t][static_cast<size_t>(node)] = static_cast<int32_t>(base + static_cast<int64_t>(j));
      tokens.push_back(d.tree.token(node));
      parents.push_back(parent < 0 ? -1 : place_[t][static_cast<size_t>(parent)] - static_cast<int32_t>(base));
      input_slots_.push_back(parent < 0 ? static_cast<int64_t>(t) : d.slot[static_cast<size_t>(parent)]);
    }
    for (int64_t node : d.tree.frontier()) frontier_rows_.push_back(place_[t][static_cast<size_t>(node)]);
    batch_.add_tree(tokens, parents, d.first, *d.pages);
    in_round_.push_back(t);
  }
  if (in_round_.empty() && !every_round_) done_ = true;
}

void TreeRounds::advance(std::span<const std::vector<DraftChoice>> choices) {
  NW_CHECK(!done_ && choices.size() == frontier_rows_.size(), "TreeRounds: ", choices.size(),
           " lists of choices for a round of ", frontier_rows_.size(), " frontier rows");
  size_t row = 0;
  for (size_t t : in_round_) {
    Tree& d = trees_[t];
    const std::vector<int64_t>& frontier = d.tree.frontier();
    for (int64_t node : frontier) {
      if (d.slot.size() <= static_cast<size_t>(node)) d.slot.resize(static_cast<size_t>(node) + 1, -1);
      d.slot[static_cast<size_t>(node)] = slots_used_++;
    }
    d.tree.expand(choices.subspan(row, frontier.size()));
    row += frontier.size();
  }
  build_round();
}

void TreeRounds::take(size_t requests, std::vector<std::vector<int32_t>>& drafts,
                      std::vector<std::vector<int32_t>>& parents) const {
  drafts.assign(requests, {});
  parents.assign(requests, {});
  for (const Tree& d : trees_) {
    std::vector<int32_t> tokens, tree_parents;
    d.tree.select(-1, tokens, tree_parents);  // node 0 is the pending token, which the engine feeds
    const size_t k = static_cast<size_t>(d.request);
    drafts[k].assign(tokens.begin() + 1, tokens.end());
    parents[k].assign(tree_parents.begin() + 1, tree_parents.end());
  }
}

}  // namespace narwhal
