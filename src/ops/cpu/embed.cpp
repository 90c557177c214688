// CPU embedding lookup and the join of lm_head shards.
#include "ops/embed.h"

#include <algorithm>
#include <cstring>

namespace narwhal::ops {

void embedding(const std::vector<int32_t>& ids, const Tensor& table, Tensor& out, int64_t first_id) {
  const int64_t width = table.size(1), rows = table.size(0);
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t row = ids[i] - first_id;
    float* dst = out.f32() + i * width;
    if (row >= 0 && row < rows) std::memcpy(dst, table.f32() + row * width, width * sizeof(float));
    else std::fill(dst, dst + width, 0.0f);
  }
}

void join_vocab_shards(const Tensor& shards, int64_t parts, Tensor& out) {
  const int64_t b = out.size(0), vocab = out.size(1), per_rank = shards.size(1);
  for (int64_t r = 0; r < parts; ++r) {
    const int64_t width = std::min(per_rank, vocab - r * per_rank);
    for (int64_t i = 0; i < b && width > 0; ++i)
      std::memcpy(out.f32() + i * vocab + r * per_rank, shards.f32() + (r * b + i) * per_rank, width * sizeof(float));
  }
}

}  // namespace narwhal::ops
