// ForwardBatch (one step's tokens for every sequence) and KvCache (the paged MLA latent cache storage).
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"
#include "ops/attention.h"

namespace narwhal {

struct SequenceInfo {
  int64_t prefix_len = 0;             // tokens already in the cache
  int64_t new_len = 0;                // tokens of this step
  std::vector<int32_t> page_table;    // cache pages holding positions 0 .. prefix_len + new_len - 1
  // Speculative verify: the last draft_len new tokens are drafts after the one pending token, checked by this step
  // (attention treats the row as a decode of new_len - draft_len + draft_len causal tokens, in the absorbed form).
  int64_t draft_len = 0;
  // Speculative decoding: the token after this step's last one when it is already known (a prompt chunk before
  // the last), so the MTP layer can take the chunk's every position now; -1 otherwise.
  int32_t next_token = -1;
  // A speculative tree's verify (tree drafting): new token j's parent among the new tokens (-1 for the pending
  // token, parents before children). Token j stores its latents at slot prefix_len + j as any new token, but sits at
  // position prefix_len + its depth and attends to the prefix, its ancestors and itself. Empty: a causal run.
  std::vector<int32_t> draft_parents;

  // One pending token (and its drafts): a decode, run in the absorbed form, as plain decoding runs it.
  bool decodes() const { return new_len - draft_len == 1; }
  // A GPU verify step of `verify_len` rows a decode (0: not a verify) pads every decoding sequence with fillers to
  // that length; other sequences keep their new_len rows. step_rows: the sequence's rows in such a step.
  bool pads_to(int64_t verify_len) const { return verify_len > 0 && decodes(); }
  int64_t step_rows(int64_t verify_len) const { return pads_to(verify_len) ? verify_len : new_len; }
};

// One batch format for prefill, decode, mixed and verify steps: the new tokens of every sequence,
// flattened in sequence order, with their absolute positions.
struct ForwardBatch {
  std::vector<int32_t> token_ids;
  std::vector<int32_t> positions;
  std::vector<SequenceInfo> seqs;
  // DP attention: the token count of every DP group's batch this step (this one's included), in group order, so
  // that every rank sizes the gathered MLP / MoE rows (and a GPU its padded graph) without asking the others.
  // Empty without DP attention.
  std::vector<int64_t> dp_tokens;
  // DP attention: whether every DP group's batch this step is a decode (one new token per sequence; an idle group's
  // empty batch counts), the same on every rank like dp_tokens. Only then may a GPU replay decode graphs under DP,
  // and then every rank does (a graph's collectives must meet the same graph's); false runs every rank eager.
  bool dp_decode = false;

  void add_sequence(const std::vector<int32_t>& new_tokens, int64_t prefix_len, std::vector<int32_t> page_table,
                    int64_t draft_len = 0, int32_t next_token = -1);
  // A pending token and its draft tree: tokens[0] is the pending one (parents[0] = -1), the rest drafts whose
  // parents come before them, or -1 for more roots (the draft layer's rounds over a tree's candidates); positions
  // are prefix_len + depth, a root's depth 0 (SequenceInfo::draft_parents).
  void add_tree(const std::vector<int32_t>& tokens, const std::vector<int32_t>& parents, int64_t prefix_len,
                std::vector<int32_t> page_table);
  int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
  // Every sequence decodes (SequenceInfo::decodes): the step runs in the absorbed form alone.
  bool all_decode() const;
  // Each token's row once every decoding sequence is padded to `len` rows (SequenceInfo::step_rows), as a GPU verify
  // step pads them (a drafting round's trees too).
  std::vector<int64_t> padded_rows(int64_t len) const;
};

// Latent cache pages for every layer (main layers first, then MTP layers): per layer
// [num_pages, page_size, kv_lora_rank + qk_rope_head_dim]. Which page belongs to whom is the caller's
// business (runtime's KvPool); this is only the storage.
class KvCache {
 public:
  KvCache(const ModelConfig& config, int num_layers, int64_t num_pages, int64_t page_size);
  ops::LatentCache layer(int index) const { return {layers_[index], page_size_}; }
  int64_t page_size() const { return page_size_; }
  int64_t num_pages() const { return num_pages_; }
  int num_layers() const { return static_cast<int>(layers_.size()); }
  // After a tree verify: the kept path's latents (new tokens path[i], stored at prefix_len + path[i]) move to
  // prefix_len + i in every layer, so the sequence's cache is the chain it accepted. path ascends from node 0.
  void keep_tree_path(const std::vector<int32_t>& page_table, int64_t prefix_len, const std::vector<int64_t>& path);

 private:
  std::vector<Tensor> layers_;
  int64_t page_size_;
  int64_t num_pages_;
};

}  // namespace narwhal
