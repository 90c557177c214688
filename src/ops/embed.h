// Token embedding lookup.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace narwhal::ops {

// out[i, :] = table[ids[i], :]. ids must be < table rows (checked by the caller's validation).
void embedding(const std::vector<int32_t>& ids, const Tensor& table, Tensor& out);

}  // namespace narwhal::ops
