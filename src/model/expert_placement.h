// ExpertPlacement: which EP rank holds each routed expert, the one table that a load balancer (EPLB) rewrites.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace narwhal {

// Expert parallelism splits the routed experts over ep_size ranks. The loader reads, and the MoE code runs, only
// what this table gives a rank: its experts in the order its stacked weights keep them, and for every expert its
// index there (-1 where another rank holds it). Redundant experts and rebalancing (EPLB) change the table only.
class ExpertPlacement {
 public:
  // Expert e on EP rank e / (experts / ep_size), SGLang's default; `field` names the expert count in the error
  // thrown when it does not split evenly.
  static ExpertPlacement contiguous(int64_t experts, int ep_size, const char* field);

  int64_t num_experts() const { return static_cast<int64_t>(rank_of_.size()); }
  int ep_size() const { return static_cast<int>(experts_of_.size()); }
  int ep_rank_of(int64_t expert) const { return rank_of_[static_cast<size_t>(expert)]; }
  const std::vector<int32_t>& experts_of(int ep_rank) const { return experts_of_[static_cast<size_t>(ep_rank)]; }
  // For EP rank r: each expert's index in r's stacked weights, -1 where another rank holds it.
  std::vector<int32_t> local_index(int ep_rank) const;

 private:
  std::vector<int> rank_of_;                    // per expert
  std::vector<std::vector<int32_t>> experts_of_;  // per EP rank
};

}  // namespace narwhal
