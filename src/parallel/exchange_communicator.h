// ExchangeCommunicator: the collectives of the host and device-local backends, written once as exchanges of byte
// blocks (each rank sends each peer a block, checked against what the peer expects) plus a rank-ordered sum.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/exchange_types.h"
#include "parallel/local_group.h"
#include "parallel/tcp_mesh.h"
#include "parallel/world_status.h"

namespace narwhal {

// What every communicator of this process's ranks shares.
struct WorldContext {
  std::shared_ptr<WorldStatus> status = std::make_shared<WorldStatus>();
  std::shared_ptr<TcpMesh> mesh;  // links to the other nodes' ranks; null when the whole world is this process
  int nnodes = 1;
  int ranks_per_node = 1;
  int node = 0;  // this process's
  double timeout_s = 300;
  // What the node of a world rank announced when its world failed ("" if nothing); null in a one-process world.
  std::function<std::string(int world_rank)> failure_of;

  bool is_local(int world_rank) const { return world_rank / ranks_per_node == node; }
  std::string describe(std::vector<int> world_ranks) const {
    return describe_ranks(std::move(world_ranks), ranks_per_node, nnodes);
  }
  // Why the connection to a world rank closed: its node's announced failure, else its process's end.
  std::string why_closed(int world_rank) const;
};

// The exchange backends' communicator. A member's group rank indexes `members` (world ranks); the members that
// are threads of this process meet in `local`, the others are reached through the world's mesh.
class ExchangeCommunicator : public Communicator {
 public:
  struct Group {
    std::vector<int> members;  // world ranks, by group rank
    int rank = 0;              // this member's group rank
    std::string name;
    uint64_t id = 0;  // equal on every member, different for every group made by split
    std::shared_ptr<LocalGroup> local;
  };

  // The world group of world rank `rank`, with the shared LocalGroup of the world's ranks in this process.
  static Group world_group(const WorldContext& world, int rank, std::shared_ptr<LocalGroup> local);
  // The LocalGroup of the world group's ranks in this process.
  static std::shared_ptr<LocalGroup> world_local_group(const WorldContext& world, int world_size);

 protected:
  ExchangeCommunicator(std::shared_ptr<const WorldContext> world, Group group, Device device);

  // Backend: copies bytes between this rank's and (in its process) other ranks' buffers, ordered on `stream`.
  virtual void copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) = 0;
  // Backend: returns once the work queued on `stream` is done, so that other ranks may read what it wrote and
  // reuse what it read (the host backend has nothing queued).
  virtual void settle(cudaStream_t stream) = 0;
  // Backend: out = rows[0] + rows[1] + ... + rows[count - 1] (n elements each), summed in that order.
  virtual void sum_rows(const void* rows, int count, int64_t n, DType dtype, void* out, cudaStream_t stream) = 0;
  // Backend: a buffer of at least `bytes` where the backend's tensors live, reused by later calls.
  virtual void* scratch(size_t bytes) = 0;
  // Backend: the communicator of a group that split() made.
  virtual std::unique_ptr<Communicator> make_child(Group group) = 0;

  const std::shared_ptr<const WorldContext>& world() const { return world_; }

 private:
  void do_all_reduce(const Tensor& in, const Tensor& out, cudaStream_t stream) final;
  void do_all_gather(const Tensor& in, const Tensor& out, cudaStream_t stream) final;
  void do_reduce_scatter(const Tensor& in, const Tensor& out, cudaStream_t stream) final;
  void do_all_to_all(const Tensor& in, const std::vector<int64_t>& send_rows, const Tensor& out,
                     const std::vector<int64_t>& recv_rows, cudaStream_t stream) final;
  void do_broadcast(const Tensor& tensor, int root, cudaStream_t stream) final;
  void do_barrier() final;
  std::unique_ptr<Communicator> do_split(int color, int key, const std::string& name) final;

  // Moves blocks[j].send to member j's blocks[rank].recv, for every j; `host_memory` moves host bytes whatever
  // the backend (split's bookkeeping). Any failure fails the world.
  void exchange(const CallSignature& signature, const std::vector<PeerBlock>& blocks, cudaStream_t stream,
                bool host_memory = false);
  void exchange_local(const CallSignature& signature, uint64_t seq, const std::vector<PeerBlock>& blocks,
                      const Deadline& deadline, const std::string& where, cudaStream_t stream, bool host_memory);
  std::vector<RemoteTransfer> remote_transfers(const CallSignature& signature, uint64_t seq,
                                               const std::vector<PeerBlock>& blocks) const;
  std::string describe_members(const std::vector<int>& group_ranks) const;

  std::shared_ptr<const WorldContext> world_;
  Group group_;
  bool has_remote_ = false;
  uint64_t seq_ = 0;     // calls so far, for matching messages
  uint64_t splits_ = 0;  // split() calls so far, for naming the groups they make
};

}  // namespace narwhal
