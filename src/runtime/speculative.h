// Speculative decoding with the checkpoint's MTP layer (SGLang's NEXTN, chain drafting): its settings and the host
// arithmetic of a verify step (which rows draw, what is accepted, what the MTP layer runs next) that runners share.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/forward_batch.h"
#include "runtime/sampler.h"

namespace narwhal {

// One step of a speculating engine, per sequence that draws: the target verifies the drafts the MTP layer proposed
// last step in one forward (the pending token and its drafts, causal, as a decode of several tokens), keeps the
// longest prefix of drafts equal to its own greedy tokens plus the token it draws after them, then the MTP layer
// takes every position whose latents the target kept (filling its own latent cache) and drafts num_steps tokens:
// the first from the target's hidden state of the last kept position, the rest by applying itself to its own
// output (SGLang's NEXTN with one MTP layer and --speculative-eagle-topk 1). Rejected drafts' latents are simply
// overwritten later: a sequence's cache is valid up to its kv_len, and attention never reads past a token's own
// position.
struct SpeculativeConfig {
  int num_steps = 0;  // tokens drafted per sequence and step (a tree's depth); 0: off
  // --speculative-draft-model-path: a NextN checkpoint whose MTP layer drafts instead of the served checkpoint's own
  // (open_checkpoint); empty: the served checkpoint's.
  std::string draft_model_path;
  // Tree drafting (--speculative-eagle-topk > 1, draft_tree.h; on the GPU eager): children per node and round, and the
  // tokens a verify checks (the pending one and num_draft_tokens - 1 drafts). Chains: 1 and num_steps + 1.
  int topk = 1;
  int num_draft_tokens = 0;
  bool enabled() const { return num_steps > 0; }
  bool tree() const { return topk > 1; }
};

// Positions from a decoding sequence's kv_len its step may write: the verify's (pending and drafts), then the draft
// model's after the tokens it keeps: 2 x num_steps for a chain; a tree's num_draft_tokens, or its kept path (at most
// 1 + num_steps) and the draft rounds' candidates after it ((num_steps - 1) x topk), the larger.
int64_t speculative_reserve(int num_steps, int topk, int num_draft_tokens);

// The logits rows a verify step needs: every drawing sequence's pending (or last prompt) token and its drafts.
struct VerifyRows {
  std::vector<int64_t> token_rows;  // the batch token of each logits row, in order
  std::vector<int64_t> first;       // per sequence: its first logits row, -1 where no request draws from it
};
VerifyRows verify_rows(const ForwardBatch& batch, std::span<const SampleRequest> samples);

// StepOutput::logits of a verify step ([sequences, vocab] host F32): each drawing sequence's row of `row_logits`
// (host F32, a row per rows.token_rows) at its pending token, zeros where nothing draws. Requests that ask for logits
// never draft, so that row is the one plain decoding returns.
Tensor pending_token_logits(const VerifyRows& rows, const Tensor& row_logits);

// Every request's draw rows of a verify step, request after request: its pending token's row, then one per draft of
// its sequence, each a copy of the request with that logits row (of `rows`) and the position it draws for, so that
// each row is drawn as plain decoding would draw that position (greedy or seeded sampling alike).
std::vector<SampleRequest> verify_samples(const ForwardBatch& batch, std::span<const SampleRequest> samples,
                                          const VerifyRows& rows);

// What a verify step gives: the engine's tokens, and per sequence of the batch what the draft model takes next.
struct VerifyOutcome {
  std::vector<SampledToken> sampled;  // StepOutput::sampled: each request's accepted drafts, then its next draw
  std::vector<int32_t> accepted;      // StepOutput::accepted
  std::vector<int64_t> kept;          // per sequence: its new positions whose latents the target kept
  std::vector<int32_t> after;         // per sequence: the token after its last kept position (-1: not known)
  // Per sequence: the new tokens it kept (indices among its new tokens, ascending; kept[i] of them). A chain's are
  // 0 .. kept[i] - 1; a tree's path, whose latents the runner moves into place (KvCache::keep_tree_path).
  std::vector<std::vector<int64_t>> paths;
};
// Acceptance: `drawn` holds the draws of verify_samples' rows, in its order; a request keeps its drafts while each
// equals the draw before it (accepted_length), or with a draft tree (SequenceInfo::draft_parents) the path
// accepted_tree_path walks, then the draw after them. The first request of a sequence decides what the draft model
// takes (forked choices draft later).
VerifyOutcome accept_drafts(const ForwardBatch& batch, std::span<const SampleRequest> samples,
                            std::span<const SampledToken> drawn);

// Tree drafting's acceptance (greedy): the kept path through a draft tree, node 0 (the pending token) first, then at
// each node the child whose token is the target's draw after that node (the first such child in order), until no
// child matches. tokens / parents as ForwardBatch::add_tree's; draws[j] is the target's token after node j. The
// sequence keeps the path's drafts, then the draw after its last node.
std::vector<int64_t> accepted_tree_path(std::span<const int32_t> tokens, std::span<const int32_t> parents,
                                        std::span<const int32_t> draws);

// A draft tree cut to the nodes no deeper than `depth` (whole subtrees go, depth growing down the tree), renumbered:
// draft[i] is node i + 1, parents[i] its parent (0: the pending token), as Sequence::draft_parents.
void trim_draft_tree(std::vector<int32_t>& draft, std::vector<int32_t>& parents, int64_t depth);

// How many of a row's draws the sequence takes: the drafts equal to the draw before them, then one more draw.
// draws[j] is the target's token after the row's j-th token (0: the pending one); drafts.size() + 1 == draws.size().
int64_t accepted_length(std::span<const int32_t> drafts, std::span<const int32_t> draws);

// The MTP layer's batch after a verify. Each sequence i of `verify` with kept[i] > 0 gives its first kept[i] new
// positions (whose latents the target kept), each paired with the token after it: the batch's next token, and for
// the last one after[i] (the token drawn after it, or SequenceInfo::next_token; -1: unknown, so the last position
// waits). Same pages: the MTP layers' caches are paged with the main ones.
struct MtpBatch {
  ForwardBatch batch;
  std::vector<int64_t> hidden_rows;  // per MTP token: the target token row whose hidden state it takes
  std::vector<int> source;           // per MTP sequence: its sequence in `verify`
};
MtpBatch mtp_extend_batch(const ForwardBatch& verify, std::span<const int64_t> kept, std::span<const int32_t> after);

// Per sequence of `mtp`: the request it drafts for (the first of its verify row's requests that wants drafts,
// SampleRequest::max_draft > 0), -1 none.
std::vector<int> mtp_drafters(const MtpBatch& mtp, std::span<const SampleRequest> samples);

// One chain step: each drafting sequence of `last` (a batch of the MTP layer) feeds its newest draft at the position
// after its last one, with the MTP layer's own hidden state of that position. Sequences whose pages end there, or
// whose next position reaches `max_position`, stop drafting: `keep[i]` says which of last's sequences go on.
ForwardBatch mtp_chain_batch(const ForwardBatch& last, std::span<const int32_t> drafts, const std::vector<bool>& keep,
                             int64_t page_size, int64_t max_position);

// How many drafts DraftChain gives a sequence whose extend ends at position next - 1 (next = prefix + kept): its first
// from the extend, then one a round while fewer than min(num_steps, max_draft) and the round's position (next, next
// + 1, ...) is below `limit` (its pages' end and the context's, the lesser). A runner that runs every round for
// every sequence (the speculative graphs) keeps this many of its drafts.
int64_t chain_draft_count(int64_t next, int64_t limit, int max_draft, int num_steps);

// The draft model's rounds after a verify, as runners share them: the MTP layer first takes every kept position of
// the verify (mtp_extend_batch) and draws after each sequence's last; then, round after round, each sequence whose
// request wants more drafts feeds its newest one with the layer's own hidden state of the position before it
// (mtp_chain_batch). The runner runs each batch() and passes its draws to advance(). Each sequence drafts for the
// first request of its row that wants drafts (SampleRequest::max_draft, at most num_steps), until its pages or
// max_position end. `every_round` (DP attention, whose groups meet in every forward): the extend and num_steps - 1
// chain rounds all run, empty where a group has nothing.
class DraftChain {
 public:
  DraftChain(const ForwardBatch& verify, std::span<const SampleRequest> samples, const VerifyOutcome& outcome,
             int num_steps, int64_t page_size, int64_t max_position, bool every_round = false);

  bool done() const { return done_; }
  // The batch the MTP layer runs now, and per token of it the row whose hidden state it takes: a token row of the
  // verify batch in the first round (the target's final-normed state), a row of the last round's batch afterwards
  // (the MTP layer's head-normed output).
  ForwardBatch& batch() { return batch_; }
  const std::vector<int64_t>& hidden_rows() const { return hidden_rows_; }
  // The MTP layer's draw after each sequence of batch() (from its last row's logits).
  void advance(std::span<const int32_t> draws);
  // Per sample request: its drafts (StepOutput::drafts).
  std::vector<std::vector<int32_t>> take_drafts() { return std::move(drafts_); }

 private:
  std::vector<int> max_draft_;
  int num_steps_;
  int64_t page_size_, max_position_;
  bool every_round_;
  int round_ = 0;
  bool done_ = false;
  ForwardBatch batch_;
  std::vector<int64_t> hidden_rows_;
  std::vector<int> drafter_;  // per sequence of batch_: the request it drafts for, -1 none
  std::vector<std::vector<int32_t>> drafts_;
};

}  // namespace narwhal
