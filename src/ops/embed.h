// Token embedding lookup, and the vocab-parallel pieces around it: a table shard's lookup, lm_head shards joined.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace narwhal::ops {

// out[i, :] = table[ids[i] - first_id, :], or zeros where ids[i] is outside [first_id, first_id + table rows): a
// vocab-parallel rank's rows of the table (first_id 0 and the whole table without TP).
void embedding(const std::vector<int32_t>& ids, const Tensor& table, Tensor& out, int64_t first_id = 0);

// out [B, V] = the vocabulary shards of `parts` ranks, all_gather'ed as shards [parts * B, per_rank] F32 (rank r's
// rows r * B ..), columns r * per_rank .. of out; columns past V (the last rank's padding) are dropped.
void join_vocab_shards(const Tensor& shards, int64_t parts, Tensor& out);

}  // namespace narwhal::ops
