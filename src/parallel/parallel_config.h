// ParallelConfig: every rank's place in the world (node, TP / DP-attention / EP groups), computed in one place.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace narwhal {

// --moe-a2a-backend (SGLang's): how MoE layers meet. kNone: every rank runs its experts over every token of the TP
// group, and one all_reduce sums them; kDeepEp: DeepEP's pattern, each rank's slice of the tokens goes by all_to_all
// to the ranks holding its experts and comes back combined (model/moe_a2a.h).
enum class MoeA2aBackend : uint8_t { kNone, kDeepEp };
// --deepep-mode: kNormal (per-destination counts exchanged first, variable sizes; a GPU reads them on the host),
// kLowLatency (fixed capacity per destination, no host sync: CUDA-graph capturable), kAuto (low latency for steps
// where every rank decodes, normal otherwise), as SGLang's.
enum class DeepEpMode : uint8_t { kAuto, kNormal, kLowLatency };
MoeA2aBackend parse_moe_a2a_backend(const std::string& name);  // none, deepep; else an Error naming the flag
DeepEpMode parse_deepep_mode(const std::string& name);         // auto, normal, low_latency
const char* moe_a2a_backend_name(MoeA2aBackend backend);
const char* deepep_mode_name(DeepEpMode mode);

// The parallelism flags, with SGLang's names and meanings (`--tp-size` counts the ranks over all nodes). The CLI
// fills this; tests build it directly.
struct ParallelFlags {
  int tp_size = 1;                   // --tp-size: ranks that share one copy of the weights, over all nodes
  int dp_size = 1;                   // --dp-size: DP-attention groups inside the TP ranks, or else whole replicas
  bool enable_dp_attention = false;  // --enable-dp-attention
  int ep_size = 1;                   // --ep-size: ranks of a TP group that the routed experts are split over
  MoeA2aBackend moe_a2a_backend = MoeA2aBackend::kNone;  // --moe-a2a-backend; kDeepEp needs ep_size == tp_size
  DeepEpMode deepep_mode = DeepEpMode::kAuto;             // --deepep-mode (with kDeepEp only)
  int nnodes = 1;                    // --nnodes: one process per node, world_size / nnodes ranks each
  int node_rank = 0;                 // --node-rank: this process's node
  std::string dist_init_addr;        // --dist-init-addr HOST:PORT, where node 0 serves the TcpStore
  // --dist-timeout: the bound of every wait for another rank (joining, NCCL set-up, each collective). SGLang
  // leaves it to torch (10 minutes for NCCL); 300 s lets nodes start minutes apart yet still names a lost one.
  double dist_timeout_s = 300;
  int devices_per_node = 0;  // GPUs this node has, checked against its ranks; 0: not checked (CPU, device-local)

  // The DP-attention groups the TP ranks form (each a DP rank of the engine): --dp-size with DP attention, else 1.
  int dp_attention_groups() const { return enable_dp_attention ? dp_size : 1; }
};

// Ranks of one group (world ranks, ascending) and this rank's index among them.
struct RankGroup {
  std::vector<int> ranks;
  int index = 0;

  int size() const { return static_cast<int>(ranks.size()); }
  // Equal for the members of one group and different between groups of one kind: Communicator::split's color.
  int color() const { return ranks.front(); }
};

// The part of a dimension that one of `parts` equal parts owns.
struct Shard {
  int64_t begin = 0;
  int64_t size = 0;
  int64_t end() const { return begin + size; }
};
// Part `part` of `total` split `parts` ways; refuses uneven splits with an Error naming `what`, e.g.
// shard(128, 3, 8, "num_attention_heads") is heads [48, 64), and shard(128, 0, 3, ...) throws.
Shard shard(int64_t total, int64_t part, int64_t parts, const std::string& what);

// "rank 3", "ranks 0-7 (node 0)", "ranks 2, 3 (node 1) and 9 (node 2)": ranks named for errors, with their nodes
// when there are several (ranks_per_node consecutive ranks per node).
std::string describe_ranks(std::vector<int> ranks, int ranks_per_node, int nnodes);

// One rank's view of the world. Layout, as in SGLang: rank = replica * tp_size + tp_rank (replicas only without DP
// attention); node = rank / ranks_per_node; inside a TP group, DP attention cuts dp_size consecutive attention-TP
// groups, and expert parallelism cuts ep_size consecutive MoE-TP groups whose same-index members form an EP group.
class ParallelConfig {
 public:
  // Validates the flags and that `rank` is on --node-rank's node.
  ParallelConfig(const ParallelFlags& flags, int rank);
  // Throws an Error naming the flags at fault (divisibility, ranges, a missing --dist-init-addr).
  static void validate(const ParallelFlags& flags);
  static int world_size_of(const ParallelFlags& flags);

  const ParallelFlags& flags() const { return flags_; }
  double timeout_s() const { return flags_.dist_timeout_s; }
  int world_size() const { return world_size_; }
  int rank() const { return rank_; }

  int nnodes() const { return flags_.nnodes; }
  int ranks_per_node() const { return world_size_ / flags_.nnodes; }
  int node_of(int rank) const { return rank / ranks_per_node(); }
  int node_rank() const { return node_of(rank_); }
  int local_rank() const { return rank_ % ranks_per_node(); }  // the GPU index on its node
  std::vector<int> node_ranks(int node) const;
  std::vector<int> local_ranks() const { return node_ranks(node_rank()); }

  int tp_size() const { return flags_.tp_size; }
  int tp_rank() const { return rank_ % flags_.tp_size; }
  RankGroup tp_group() const;

  // DP attention (SGLang's dp_attention.py): attention runs TP over attn_tp_size ranks, each such group a DP rank
  // with its own scheduler; without it the attention-TP group is the TP group and dp_rank the replica.
  int attn_tp_size() const { return flags_.enable_dp_attention ? flags_.tp_size / flags_.dp_size : flags_.tp_size; }
  int attn_tp_rank() const { return tp_rank() % attn_tp_size(); }
  RankGroup attn_tp_group() const;
  int dp_size() const { return flags_.dp_size; }
  int dp_rank() const { return flags_.enable_dp_attention ? tp_rank() / attn_tp_size() : rank_ / flags_.tp_size; }

  // Expert parallelism (SGLang's moe_ep / moe_tp groups): a rank holds the experts of its EP rank, each sliced
  // moe_tp_size ways among its MoE-TP group.
  int ep_size() const { return flags_.ep_size; }
  int ep_rank() const { return tp_rank() / moe_tp_size(); }
  RankGroup ep_group() const;
  int moe_tp_size() const { return flags_.tp_size / flags_.ep_size; }
  int moe_tp_rank() const { return tp_rank() % moe_tp_size(); }
  RankGroup moe_tp_group() const;

  std::string describe_ranks(std::vector<int> ranks) const;

 private:
  RankGroup strided_group(int first, int count, int stride) const;

  ParallelFlags flags_;
  int world_size_ = 1;
  int rank_ = 0;
};

}  // namespace narwhal
