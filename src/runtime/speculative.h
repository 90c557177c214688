// Speculative decoding with the checkpoint's MTP layer (SGLang's NEXTN, chain drafting): its settings and the host
// arithmetic of a verify step (which rows draw, what is accepted, what the MTP layer runs next) that runners share.
#pragma once

#include <cstdint>
#include <span>
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
  int num_steps = 0;  // tokens drafted per sequence and step; 0: off
  bool enabled() const { return num_steps > 0; }
};

// The logits rows a verify step needs: every drawing sequence's pending (or last prompt) token and its drafts.
struct VerifyRows {
  std::vector<int64_t> token_rows;  // the batch token of each logits row, in order
  std::vector<int64_t> first;       // per sequence: its first logits row, -1 where no request draws from it
};
VerifyRows verify_rows(const ForwardBatch& batch, std::span<const SampleRequest> samples);

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

// One chain step: each drafting sequence of `last` (a batch of the MTP layer) feeds its newest draft at the position
// after its last one, with the MTP layer's own hidden state of that position. Sequences whose pages end there, or
// whose next position reaches `max_position`, stop drafting: `keep[i]` says which of last's sequences go on.
ForwardBatch mtp_chain_batch(const ForwardBatch& last, std::span<const int32_t> drafts, const std::vector<bool>& keep,
                             int64_t page_size, int64_t max_position);

}  // namespace narwhal
