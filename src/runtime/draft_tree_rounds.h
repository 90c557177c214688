// Tree drafting's batches as runners share them (DraftChain's counterpart for --speculative-eagle-topk > 1): a tree
// verify's kept paths as chains, then the MTP layer's rounds over every tree's candidates.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/forward_batch.h"
#include "runtime/draft_tree.h"
#include "runtime/speculative.h"

namespace narwhal {

// A verify's kept paths (VerifyOutcome::paths) as chains: per sequence its path's tokens at prefix .. prefix + length
// - 1, where the runner moves their latents (KvCache::keep_tree_path), and per token the verify batch row it was (the
// target's hidden state the MTP extend takes). A chain's path is its first kept tokens, already in place.
struct KeptPaths {
  ForwardBatch batch;
  std::vector<int64_t> rows;
};
KeptPaths kept_paths(const ForwardBatch& verify, const VerifyOutcome& outcome);

// The draft model's tree rounds after its extend over the kept paths (mtp_extend_batch). Each extend sequence whose
// request drafts (drafter[m] >= 0: that request) grows a DraftTree: round 1 from its extend's last row, then up to
// num_steps - 1 rounds, each one forward of every tree's candidates so far (each sees its ancestors among them:
// ForwardBatch::add_tree), a tree stopping where its pages or the context end. With `every_round` (DP attention, whose
// groups meet in every forward) all rounds run, empty where nothing is left.
//
// States, the MTP layer's head-normed output rows that the next rounds take as input, live in a store the runner
// keeps, by slot: slot t holds tree t's root (root_rows()[t] of the extend), then each round's frontier rows take the
// next slots in order (frontier_slot0() on).
class TreeRounds {
 public:
  TreeRounds(const ForwardBatch& extend, std::span<const int> drafter, const SpeculativeConfig& config,
             int64_t page_size, int64_t max_position, bool every_round);

  // Per tree: its extend sequence (whose logits row gives round 1's choices) and that sequence's last row.
  const std::vector<int64_t>& root_seqs() const { return root_seqs_; }
  const std::vector<int64_t>& root_rows() const { return root_rows_; }
  // The most slots the store needs.
  int64_t max_slots() const;
  // Round 1: each tree's choices (root_seqs order). Builds the next round, if any.
  void start(std::span<const std::vector<DraftChoice>> choices);

  bool done() const { return done_; }
  // The round to run: its batch, per token of it the slot of the state it takes, and the rows whose logits give the
  // next choices (the frontier's), whose output states go to slots frontier_slot0() on.
  ForwardBatch& batch() { return batch_; }
  const std::vector<int64_t>& input_slots() const { return input_slots_; }
  const std::vector<int64_t>& frontier_rows() const { return frontier_rows_; }
  int64_t frontier_slot0() const { return slots_used_; }
  // The round's choices, one list per frontier row. Builds the next round, if any.
  void advance(std::span<const std::vector<DraftChoice>> choices);

  // Per request of the step (`requests` of them): its drafts and their parents (StepOutput::drafts, draft_parents).
  void take(size_t requests, std::vector<std::vector<int32_t>>& drafts,
            std::vector<std::vector<int32_t>>& parents) const;

 private:
  struct Tree {
    DraftTree tree;
    int request;
    int64_t first, room;  // the depth-1 candidates' position; positions left from there
    const std::vector<int32_t>* pages;
    std::vector<int64_t> slot;  // per candidate: its state's slot (frontier nodes that ran), -1 none
    bool stopped = false;
  };
  void build_round();

  SpeculativeConfig config_;
  int64_t max_position_;
  bool every_round_, done_ = false;
  int round_ = 1;
  std::vector<Tree> trees_;
  std::vector<int64_t> root_seqs_, root_rows_;
  std::vector<size_t> in_round_;  // trees in the round's batch
  std::vector<std::vector<int32_t>> place_;  // per tree: candidate -> its row in batch_, -1 none
  ForwardBatch batch_;
  std::vector<int64_t> input_slots_, frontier_rows_;
  int64_t slots_used_ = 0;
};

}  // namespace narwhal
