// ExpertPlacement: the contiguous default and the per-rank lookup the kernels take.
#include "model/expert_placement.h"

#include "core/error.h"

namespace narwhal {

ExpertPlacement ExpertPlacement::contiguous(int64_t experts, int ep_size, const char* field) {
  NW_CHECK(ep_size >= 1 && experts >= 0, "ExpertPlacement: ", experts, " experts over ", ep_size, " ranks");
  NW_CHECK(experts % ep_size == 0, field, " = ", experts, " does not split evenly over ", ep_size, " ranks");
  ExpertPlacement p;
  p.experts_of_.resize(static_cast<size_t>(ep_size));
  const int64_t per_rank = experts / ep_size;
  for (int64_t e = 0; e < experts; ++e) {
    const int rank = static_cast<int>(e / per_rank);
    p.rank_of_.push_back(rank);
    p.experts_of_[static_cast<size_t>(rank)].push_back(static_cast<int32_t>(e));
  }
  return p;
}

std::vector<int32_t> ExpertPlacement::local_index(int ep_rank) const {
  std::vector<int32_t> index(rank_of_.size(), -1);
  const std::vector<int32_t>& mine = experts_of(ep_rank);
  for (size_t i = 0; i < mine.size(); ++i) index[static_cast<size_t>(mine[i])] = static_cast<int32_t>(i);
  return index;
}

}  // namespace narwhal
