// The CPU reference of ops::verify_accept (what ops::cuda::verify_accept computes on the device).
#include "ops/verify_accept.h"

#include "core/error.h"

namespace narwhal::ops {

void verify_accept(const Tensor& fed, const Tensor& draws, const Tensor& verify_slots, const Tensor& seq_info,
                   const Tensor& page_table, int64_t page_size, Tensor& ext_ids, Tensor& ext_slots, Tensor& ext_last,
                   Tensor& chain_positions, Tensor& chain_slots, Tensor& chain_lens) {
  const int64_t b = seq_info.size(0), rounds = chain_positions.size(0), l = rounds + 2;
  NW_CHECK(seq_info.ndim() == 2 && seq_info.size(1) == 3 && fed.numel() == b * l && draws.numel() == b * l &&
               verify_slots.numel() == b * l && ext_ids.numel() == b * l && ext_slots.numel() == b * l &&
               ext_last.numel() == b && page_table.size(0) == b && chain_positions.numel() == rounds * b &&
               chain_slots.numel() == rounds * b && chain_lens.numel() == rounds * b,
           "verify_accept: shapes of ", b, " sequences of ", l, " rows do not agree");
  const int64_t pages = page_table.size(1);
  for (int64_t s = 0; s < b; ++s) {
    const int32_t* info = seq_info.ptr<int32_t>() + s * 3;
    const int64_t prefix = info[0], drafts = info[1], limit = info[2], row = s * l;
    NW_CHECK(drafts >= 0 && drafts < l, "verify_accept: sequence ", s, " has ", drafts, " drafts in ", l, " rows");
    int64_t kept = 1;
    while (kept <= drafts && fed.ptr<int32_t>()[row + kept] == draws.ptr<int32_t>()[row + kept - 1]) ++kept;
    for (int64_t j = 0; j < l; ++j) {
      ext_ids.ptr<int32_t>()[row + j] = draws.ptr<int32_t>()[row + j];
      ext_slots.ptr<int64_t>()[row + j] = j < kept ? verify_slots.ptr<int64_t>()[row + j] : -1;
    }
    ext_last.ptr<int32_t>()[s] = static_cast<int32_t>(row + kept - 1);
    for (int64_t r = 1; r <= rounds; ++r) {
      const int64_t p = prefix + kept - 1 + r, at = (r - 1) * b + s;
      const bool stored = p < limit && p / page_size < pages;
      chain_positions.ptr<int32_t>()[at] = static_cast<int32_t>(p);
      chain_lens.ptr<int32_t>()[at] = stored ? static_cast<int32_t>(p + 1) : 0;
      chain_slots.ptr<int64_t>()[at] =
          stored ? static_cast<int64_t>(page_table.ptr<int32_t>()[s * pages + p / page_size]) * page_size +
                       p % page_size
                 : -1;
    }
  }
}

}  // namespace narwhal::ops
