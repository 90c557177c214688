// moe_a2a_step: the slices and capacity of DeepEP's dispatch, from the step's token counts alone; its expert table.
#include "model/moe_a2a.h"

#include <algorithm>

#include "core/error.h"

namespace narwhal {

MoeA2aStep moe_a2a_step(DeepEpMode mode, bool decode_only, const std::vector<int64_t>& group_rows, int group,
                        int attn_size, int attn_rank) {
  NW_CHECK(group >= 0 && group < static_cast<int>(group_rows.size()) && attn_size >= 1 && attn_rank >= 0 &&
               attn_rank < attn_size,
           "deepep: group ", group, " of ", group_rows.size(), ", rank ", attn_rank, " of ", attn_size);
  const auto chunk_of = [&](int64_t rows) { return (rows + attn_size - 1) / attn_size; };
  MoeA2aStep s;
  s.low_latency = mode == DeepEpMode::kLowLatency || (mode == DeepEpMode::kAuto && decode_only);
  const int64_t rows = group_rows[static_cast<size_t>(group)];
  s.chunk = chunk_of(rows);
  // Slices of `chunk` rows in rank order: the all_gather of the padded slices then lists the rows in order.
  const int64_t begin = std::min(rows, attn_rank * s.chunk);
  s.rows = {begin, std::min(rows, begin + s.chunk) - begin};
  for (int g = 0; g < group; ++g) s.first_row += group_rows[static_cast<size_t>(g)];
  s.first_row += begin;
  if (s.low_latency)
    for (int64_t r : group_rows) s.capacity = std::max(s.capacity, chunk_of(r));
  return s;
}

Tensor expert_rank_tensor(const TpDims& dims) {
  Tensor t = Tensor::zeros(DType::kI32, {static_cast<int64_t>(dims.expert_rank.size())});
  std::copy(dims.expert_rank.begin(), dims.expert_rank.end(), t.ptr<int32_t>());
  return t;
}

bool every_rank_decodes(const ForwardBatch& batch, bool dp_attention) {
  if (dp_attention) return batch.dp_decode;
  return std::all_of(batch.seqs.begin(), batch.seqs.end(), [](const SequenceInfo& s) { return s.new_len == 1; });
}

}  // namespace narwhal
