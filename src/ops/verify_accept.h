// A speculative verify's acceptance and the draft model's inputs after it, computed where the verify ran so that
// verify, acceptance and every draft round replay as one CUDA graph (ops/cuda/verify_accept.h is the GPU's).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace narwhal::ops {

// B sequences, each padded to L = 1 + N rows (row b * L + j: its j-th new token; N draft steps): the pending token,
// then drafts[b] drafts, then fillers. Per sequence, seq_info [B, 3] I32 holds (prefix, drafts, limit): its cached
// tokens before the pending one, its drafts (0 .. N), and the first position it may not store
// (its pages' end or the context's; 0 for batch padding). fed [B * L] I32 is what the verify fed, draws [B * L] I32
// the target's greedy token after each row, verify_slots [B * L] I64 the verify's cache slots, page_table [B, P] I32.
// A sequence keeps its pending token and its leading drafts that equal the draw before them: kept = 1 + that count.
//   The MTP layer's extend over the verify's rows (its positions, seq_lens and hidden states): ext_ids[b*L + j] =
//   draws[b*L + j] (the token after position prefix + j), ext_slots[b*L + j] = verify_slots[b*L + j] for j < kept
//   and -1 past them (nothing stored), ext_last[b] = b*L + kept - 1 (the row it drafts after).
//   Chain round r = 1 .. N - 1 (row r - 1 of the chain tensors [N - 1, B]): the position p = prefix + kept - 1 + r;
//   chain_positions = p; where p < limit chain_lens = p + 1 and chain_slots = its cache slot through page_table
//   (page_size), else 0 keys and slot -1 (the round's draft is dropped by the host, chain_draft_count).
// Writes every element of the outputs.
void verify_accept(const Tensor& fed, const Tensor& draws, const Tensor& verify_slots, const Tensor& seq_info,
                   const Tensor& page_table, int64_t page_size, Tensor& ext_ids, Tensor& ext_slots, Tensor& ext_last,
                   Tensor& chain_positions, Tensor& chain_slots, Tensor& chain_lens);

}  // namespace narwhal::ops
