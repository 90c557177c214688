// DraftTree: the candidates of tree drafting's rounds, and the tree the target verifies.
#include "runtime/draft_tree.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace narwhal {

std::vector<DraftChoice> top_draft_choices(const float* logits, int64_t vocab, int k) {
  NW_CHECK(k >= 1 && k <= vocab, "top_draft_choices: k ", k, " for a vocabulary of ", vocab);
  const float mx = *std::max_element(logits, logits + vocab);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
  const double log_sum = std::log(sum) + mx;
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  std::vector<DraftChoice> out;
  for (int i = 0; i < k; ++i)
    out.emplace_back(ids[static_cast<size_t>(i)], static_cast<float>(logits[ids[static_cast<size_t>(i)]] - log_sum));
  return out;
}

DraftTree::DraftTree(int topk, int num_steps, int num_draft_tokens)
    : topk_(topk), num_steps_(num_steps), num_draft_tokens_(num_draft_tokens) {
  NW_CHECK(topk >= 1 && num_steps >= 1 && num_draft_tokens >= 2 &&
               num_draft_tokens - 1 <= topk + (num_steps - 1) * topk * topk,
           "DraftTree: topk ", topk, ", ", num_steps, " steps and ", num_draft_tokens, " draft tokens (at most 1 + "
           "topk + (steps - 1) x topk^2 candidates exist)");
}

void DraftTree::expand(std::span<const std::vector<DraftChoice>> children) {
  NW_CHECK(!done(), "DraftTree: all ", num_steps_, " rounds ran");
  const size_t lists = rounds_ == 0 ? 1 : frontier_.size();
  NW_CHECK(children.size() == lists, "DraftTree: ", children.size(), " lists of choices for ", lists, " nodes");
  std::vector<int64_t> born;
  for (size_t f = 0; f < lists; ++f) {
    const int64_t parent = rounds_ == 0 ? -1 : frontier_[f];
    const double base = parent < 0 ? 0.0 : nodes_[static_cast<size_t>(parent)].score;
    const int depth = parent < 0 ? 1 : nodes_[static_cast<size_t>(parent)].depth + 1;
    NW_CHECK(static_cast<int>(children[f].size()) == topk_, "DraftTree: ", children[f].size(), " choices, topk is ",
             topk_);
    for (const auto& [token, logprob] : children[f]) {
      born.push_back(static_cast<int64_t>(nodes_.size()));
      nodes_.push_back({token, parent, base + logprob, depth});
    }
  }
  ++rounds_;
  // The next frontier: the K best newborns (ties to the earlier), kept in candidate order.
  std::stable_sort(born.begin(), born.end(), [&](int64_t a, int64_t b) {
    return nodes_[static_cast<size_t>(a)].score > nodes_[static_cast<size_t>(b)].score;
  });
  born.resize(std::min(born.size(), static_cast<size_t>(topk_)));
  std::sort(born.begin(), born.end());
  frontier_ = std::move(born);
  if (!done()) expanded_.insert(expanded_.end(), frontier_.begin(), frontier_.end());
}

void DraftTree::select(int32_t pending, std::vector<int32_t>& tokens, std::vector<int32_t>& parents) const {
  std::vector<int64_t> chosen(nodes_.size());
  std::iota(chosen.begin(), chosen.end(), 0);
  std::stable_sort(chosen.begin(), chosen.end(), [&](int64_t a, int64_t b) {
    return nodes_[static_cast<size_t>(a)].score > nodes_[static_cast<size_t>(b)].score;
  });
  chosen.resize(std::min(chosen.size(), static_cast<size_t>(num_draft_tokens_ - 1)));
  std::sort(chosen.begin(), chosen.end(), [&](int64_t a, int64_t b) {
    const int da = nodes_[static_cast<size_t>(a)].depth, db = nodes_[static_cast<size_t>(b)].depth;
    return da < db || (da == db && a < b);
  });
  std::vector<int32_t> index(nodes_.size(), -1);  // candidate -> its place in the verify tree
  tokens = {pending};
  parents = {-1};
  for (int64_t c : chosen) {
    const Node& n = nodes_[static_cast<size_t>(c)];
    const int32_t parent = n.parent < 0 ? 0 : index[static_cast<size_t>(n.parent)];
    NW_CHECK(parent >= 0, "DraftTree: candidate ", c, " was chosen without its parent ", n.parent);
    index[static_cast<size_t>(c)] = static_cast<int32_t>(tokens.size());
    tokens.push_back(n.token);
    parents.push_back(parent);
  }
}

}  // namespace narwhal
