// DraftTree: tree drafting's rounds as host arithmetic (SGLang's EAGLE tree, --speculative-eagle-topk K > 1): which
// candidates the draft layer expands each round, and which of them the target verifies.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace narwhal {

// A draft token and its log-probability under the draft layer, as one of a node's children.
using DraftChoice = std::pair<int32_t, float>;

// The K most likely tokens of a row of draft logits with their log-probabilities (log_softmax), most likely first,
// ties to the lower id.
std::vector<DraftChoice> top_draft_choices(const float* logits, int64_t vocab, int k);

// Round 1 takes the K best tokens after the pending one; each later round expands the K frontier nodes into K
// children each and keeps the K best of those K x K by cumulative log-probability as the next frontier. Every
// child becomes a candidate. After num_steps rounds the num_draft_tokens - 1 best candidates (a node's score is
// never above its parent's, so the choice keeps every chosen node's parent; ties go to the earlier node) and the
// pending token make the verify's tree.
class DraftTree {
 public:
  DraftTree(int topk, int num_steps, int num_draft_tokens);

  // The candidates the next round's draft forward runs (its input rows, in candidate order); round 1's is the
  // extend, so empty before it.
  const std::vector<int64_t>& frontier() const { return frontier_; }
  // The candidates every forward so far has run, frontier included, in candidate order: a round's new tokens (each
  // attends to its ancestors among them; the others are its siblings' branches).
  const std::vector<int64_t>& expanded() const { return expanded_; }
  int64_t parent(int64_t node) const { return nodes_[static_cast<size_t>(node)].parent; }  // -1: the pending token
  int32_t token(int64_t node) const { return nodes_[static_cast<size_t>(node)].token; }
  int depth(int64_t node) const { return nodes_[static_cast<size_t>(node)].depth; }
  bool done() const { return rounds_ == num_steps_; }

  // One round's choices: round 1 one list (after the pending token), later rounds one per frontier node.
  void expand(std::span<const std::vector<DraftChoice>> children);

  // The verify's tree: node 0 the pending token, then the chosen candidates, parents before children (by depth);
  // parents as ForwardBatch::add_tree's.
  void select(int32_t pending, std::vector<int32_t>& tokens, std::vector<int32_t>& parents) const;

 private:
  struct Node {
    int32_t token;
    int64_t parent;
    double score;  // cumulative log-probability from the pending token
    int depth;
  };
  int topk_, num_steps_, num_draft_tokens_;
  int rounds_ = 0;
  std::vector<Node> nodes_;
  std::vector<int64_t> frontier_, expanded_;
};

}  // namespace narwhal
