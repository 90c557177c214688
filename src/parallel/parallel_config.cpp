// ParallelConfig: flag validation, the node and group arithmetic, and rank lists named for errors.
#include "parallel/parallel_config.h"

#include <algorithm>
#include <map>

#include "core/error.h"
#include "parallel/socket.h"

namespace narwhal {

Shard shard(int64_t total, int64_t part, int64_t parts, const std::string& what) {
  NW_CHECK(parts >= 1 && part >= 0 && part < parts, "shard of ", what, ": part ", part, " of ", parts,
           " is out of range");
  NW_CHECK(total % parts == 0, what, " = ", total, " does not split evenly over ", parts, " ranks");
  const int64_t size = total / parts;
  return {part * size, size};
}

std::string describe_ranks(std::vector<int> ranks, int ranks_per_node, int nnodes) {
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  if (ranks.empty()) return "no rank";
  // Runs of consecutive ranks ("8-15"), grouped by node so that each node is named once.
  std::map<int, std::string> by_node;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    const int node = ranks[i] / ranks_per_node;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1 && ranks[j + 1] / ranks_per_node == node) ++j;
    std::string& text = by_node[node];
    text += (text.empty() ? "" : ", ") + std::to_string(ranks[i]);
    if (j > i) text += (j == i + 1 ? ", " : "-") + std::to_string(ranks[j]);
    i = j + 1;
  }
  std::vector<std::string> parts;
  for (const auto& [node, text] : by_node) parts.push_back(nnodes > 1 ? cat(text, " (node ", node, ")") : text);
  std::string out = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < parts.size(); ++i) out += (i == 0 ? "" : i + 1 == parts.size() ? " and " : ", ") + parts[i];
  return out;
}

MoeA2aBackend parse_moe_a2a_backend(const std::string& name) {
  if (name == "none") return MoeA2aBackend::kNone;
  if (name == "deepep") return MoeA2aBackend::kDeepEp;
  throw Error(cat("--moe-a2a-backend ", name, ": expected none or deepep"));
}

DeepEpMode parse_deepep_mode(const std::string& name) {
  if (name == "auto") return DeepEpMode::kAuto;
  if (name == "normal") return DeepEpMode::kNormal;
  if (name == "low_latency") return DeepEpMode::kLowLatency;
  throw Error(cat("--deepep-mode ", name, ": expected auto, normal or low_latency"));
}

const char* moe_a2a_backend_name(MoeA2aBackend backend) {
  return backend == MoeA2aBackend::kDeepEp ? "deepep" : "none";
}

const char* deepep_mode_name(DeepEpMode mode) {
  return mode == DeepEpMode::kNormal ? "normal" : mode == DeepEpMode::kLowLatency ? "low_latency" : "auto";
}

int ParallelConfig::world_size_of(const ParallelFlags& flags) {
  return flags.enable_dp_attention ? flags.tp_size : flags.tp_size * flags.dp_size;
}

void ParallelConfig::validate(const ParallelFlags& f) {
  NW_CHECK(f.tp_size >= 1, "--tp-size must be at least 1, got ", f.tp_size);
  NW_CHECK(f.dp_size >= 1, "--dp-size must be at least 1, got ", f.dp_size);
  NW_CHECK(f.ep_size >= 1, "--ep-size must be at least 1, got ", f.ep_size);
  NW_CHECK(f.nnodes >= 1, "--nnodes must be at least 1, got ", f.nnodes);
  NW_CHECK(f.node_rank >= 0 && f.node_rank < f.nnodes, "--node-rank ", f.node_rank, " is out of range for --nnodes ",
           f.nnodes, " (0 to ", f.nnodes - 1, ")");
  NW_CHECK(!f.enable_dp_attention || f.tp_size % f.dp_size == 0, "--enable-dp-attention splits the --tp-size ",
           f.tp_size, " ranks into --dp-size ", f.dp_size, " attention groups, which needs --tp-size divisible by --dp-size");
  NW_CHECK(f.tp_size % f.ep_size == 0, "--ep-size ", f.ep_size, " does not divide --tp-size ", f.tp_size,
           " (the experts are split over EP ranks inside each TP group)");
  // DeepEP's dispatch sends a token to the rank holding each chosen expert whole (as SGLang requires).
  NW_CHECK(f.moe_a2a_backend == MoeA2aBackend::kNone || f.ep_size == f.tp_size, "--moe-a2a-backend deepep sends ",
           "each token to the ranks holding its experts whole: it needs --ep-size equal to --tp-size, got --ep-size ",
           f.ep_size, " with --tp-size ", f.tp_size);
  NW_CHECK(f.moe_a2a_backend == MoeA2aBackend::kDeepEp || f.deepep_mode == DeepEpMode::kAuto, "--deepep-mode ",
           deepep_mode_name(f.deepep_mode), " applies to --moe-a2a-backend deepep, not ",
           moe_a2a_backend_name(f.moe_a2a_backend));
  const int world = world_size_of(f);
  const std::string world_text =
      f.enable_dp_attention || f.dp_size == 1 ? cat("--tp-size ", f.tp_size)
                                              : cat("--tp-size ", f.tp_size, " x --dp-size ", f.dp_size);
  NW_CHECK(world % f.nnodes == 0, "the world of ", world, " ranks (", world_text, ") does not split evenly over --nnodes ",
           f.nnodes);
  NW_CHECK(f.nnodes == 1 || !f.dist_init_addr.empty(), "--nnodes ", f.nnodes,
           " needs --dist-init-addr HOST:PORT, where node 0 serves the rendezvous");
  if (!f.dist_init_addr.empty()) parse_host_port(f.dist_init_addr, "--dist-init-addr");
  NW_CHECK(f.dist_timeout_s > 0, "--dist-timeout must be positive, got ", f.dist_timeout_s);
  const int per_node = world / f.nnodes;
  NW_CHECK(f.devices_per_node == 0 || per_node <= f.devices_per_node, world_text, " over --nnodes ", f.nnodes,
           " places ", per_node, " ranks on each node, but this node has ", f.devices_per_node, " GPUs");
}

ParallelConfig::ParallelConfig(const ParallelFlags& flags, int rank) : flags_(flags) {
  validate(flags);
  world_size_ = world_size_of(flags);
  NW_CHECK(rank >= 0 && rank < world_size_, "rank ", rank, " is outside the world of ", world_size_, " ranks");
  rank_ = rank;
  NW_CHECK(node_of(rank) == flags.node_rank, "rank ", rank, " is on node ", node_of(rank),
           ", but this process is --node-rank ", flags.node_rank);
}

std::vector<int> ParallelConfig::node_ranks(int node) const {
  std::vector<int> ranks(ranks_per_node());
  for (int i = 0; i < ranks_per_node(); ++i) ranks[i] = node * ranks_per_node() + i;
  return ranks;
}

RankGroup ParallelConfig::strided_group(int first, int count, int stride) const {
  RankGroup group;
  for (int i = 0; i < count; ++i) group.ranks.push_back(first + i * stride);
  group.index = (rank_ - first) / stride;
  return group;
}

RankGroup ParallelConfig::tp_group() const { return strided_group(rank_ - tp_rank(), tp_size(), 1); }

RankGroup ParallelConfig::attn_tp_group() const { return strided_group(rank_ - attn_tp_rank(), attn_tp_size(), 1); }

RankGroup ParallelConfig::moe_tp_group() const { return strided_group(rank_ - moe_tp_rank(), moe_tp_size(), 1); }

RankGroup ParallelConfig::ep_group() const {
  return strided_group(rank_ - tp_rank() + moe_tp_rank(), ep_size(), moe_tp_size());
}

std::string ParallelConfig::describe_ranks(std::vector<int> ranks) const {
  return narwhal::describe_ranks(std::move(ranks), ranks_per_node(), nnodes());
}

}  // namespace narwhal
