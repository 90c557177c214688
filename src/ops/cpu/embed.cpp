// CPU embedding lookup.
#include "ops/embed.h"

#include <cstring>

namespace narwhal::ops {

void embedding(const std::vector<int32_t>& ids, const Tensor& table, Tensor& out) {
  const int64_t width = table.size(1);
  for (size_t i = 0; i < ids.size(); ++i)
    std::memcpy(out.f32() + i * width, table.f32() + static_cast<int64_t>(ids[i]) * width, width * sizeof(float));
}

}  // namespace narwhal::ops
