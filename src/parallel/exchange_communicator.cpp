// ExchangeCommunicator: each collective as one exchange of blocks, and the exchange itself (this rank, the
// ranks of other nodes over TCP, the ranks of this process in shared memory).
#include "parallel/exchange_communicator.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace narwhal {

namespace {

// splitmix64's finaliser: ids of split groups that differ whenever their parent, split call or color does.
uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ull + (a << 6) + (a >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

size_t row_bytes(const Tensor& t) {
  size_t n = dtype_size(t.dtype);
  for (int d = 1; d < t.ndim(); ++d) n *= static_cast<size_t>(t.shape[d]);
  return n;
}

char* at(void* base, size_t offset) { return static_cast<char*>(base) + offset; }

}  // namespace

std::string WorldContext::why_closed(int world_rank) const {
  std::string failure;
  try {
    if (failure_of) failure = failure_of(world_rank);
  } catch (const Error&) {
    // The store is gone too: node 0 died, which its own message says.
  }
  return failure.empty() ? "its process exited or crashed" : "it failed first: " + failure;
}

ExchangeCommunicator::Group ExchangeCommunicator::world_group(const WorldContext& world, int rank,
                                                              std::shared_ptr<LocalGroup> local) {
  Group g;
  for (int r = 0; r < world.nnodes * world.ranks_per_node; ++r) g.members.push_back(r);
  g.rank = rank;
  g.name = "world";
  g.id = 1;
  g.local = std::move(local);
  return g;
}

std::shared_ptr<LocalGroup> ExchangeCommunicator::world_local_group(const WorldContext& world, int world_size) {
  std::vector<int> local;
  for (int r = 0; r < world_size; ++r)
    if (world.is_local(r)) local.push_back(r);
  return std::make_shared<LocalGroup>(world_size, std::move(local), world.status);
}

ExchangeCommunicator::ExchangeCommunicator(std::shared_ptr<const WorldContext> world, Group group, Device device)
    : Communicator(group.rank, static_cast<int>(group.members.size()), group.name, device),
      world_(std::move(world)),
      group_(std::move(group)) {
  for (int r : group_.members) has_remote_ |= !world_->is_local(r);
  NW_CHECK(!has_remote_ || (device == Device::kCPU && world_->mesh), "group ", group_.name,
           " spans nodes, which only the host backend (with its TCP mesh) can exchange across");
}

std::string ExchangeCommunicator::describe_members(const std::vector<int>& group_ranks) const {
  std::vector<int> world_ranks;
  for (int g : group_ranks) world_ranks.push_back(group_.members[g]);
  return world_->describe(world_ranks);
}

void ExchangeCommunicator::exchange(const CallSignature& signature, const std::vector<PeerBlock>& blocks,
                                    cudaStream_t stream, bool host_memory) {
  const uint64_t seq = ++seq_;
  const std::string where = cat(this->where(static_cast<Collective>(signature.op)), " #", seq);
  world_->status->check(where);
  const Deadline deadline(world_->timeout_s);
  try {
    if (!host_memory) settle(stream);  // what this rank sends is complete before anyone reads it
    const PeerBlock& self = blocks[rank()];
    NW_CHECK(self.send_bytes == self.recv_bytes, where, ": sends itself ", self.send_bytes, " bytes, expects ",
             self.recv_bytes);
    if (self.recv_bytes && self.recv != self.send) {
      if (host_memory) std::memcpy(self.recv, self.send, self.recv_bytes);
      else copy(self.recv, self.send, self.recv_bytes, stream);
    }
    if (has_remote_) {
      std::vector<RemoteTransfer> transfers = remote_transfers(signature, seq, blocks);
      exchange_remote(
          transfers, deadline, *world_->status, where, [&](int r) { return world_->describe({r}); },
          [&](int r) { return world_->why_closed(r); });
    }
    if (group_.local->local_size() > 1) exchange_local(signature, seq, blocks, deadline, where, stream, host_memory);
  } catch (const Error& e) {
    world_->status->fail(e.what());
    throw;
  }
}

void ExchangeCommunicator::exchange_local(const CallSignature& signature, uint64_t seq,
                                          const std::vector<PeerBlock>& blocks, const Deadline& deadline,
                                          const std::string& where, cudaStream_t stream, bool host_memory) {
  const LocalGroup::Post post{signature, seq, blocks.data()};
  auto take = [&](const std::vector<const LocalGroup::Post*>& posts) {
    for (int q = 0; q < size(); ++q) {
      if (q == rank() || !posts[q]) continue;
      const LocalGroup::Post& theirs = *posts[q];
      NW_CHECK(theirs.seq == seq && theirs.signature == signature,
               call_mismatch(where, describe_members({q}), cat(name(), " ", theirs.signature.str(), " #", theirs.seq),
                             cat(name(), " ", signature.str(), " #", seq)));
      const PeerBlock& from = theirs.blocks[rank()];
      NW_CHECK(from.send_bytes == blocks[q].recv_bytes,
               size_mismatch(where, describe_members({q}), from.send_bytes, blocks[q].recv_bytes));
      if (from.send_bytes == 0) continue;
      if (host_memory) std::memcpy(blocks[q].recv, from.send, from.send_bytes);
      else copy(blocks[q].recv, from.send, from.send_bytes, stream);
    }
    if (!host_memory) settle(stream);  // done reading the others' memory before they go on and reuse it
  };
  group_.local->exchange(rank(), post, take, deadline, where,
                         [&](const std::vector<int>& ranks) { return describe_members(ranks); });
}

std::vector<RemoteTransfer> ExchangeCommunicator::remote_transfers(const CallSignature& signature, uint64_t seq,
                                                                   const std::vector<PeerBlock>& blocks) const {
  std::vector<RemoteTransfer> transfers;
  const int me = group_.members[rank()];
  for (int j = 0; j < size(); ++j) {
    const int peer = group_.members[j];
    if (world_->is_local(peer)) continue;
    RemoteTransfer t;
    t.fd = world_->mesh->fd(me, peer);
    t.peer = peer;
    t.header.comm_id = group_.id;
    t.header.seq = seq;
    t.header.bytes = blocks[j].send_bytes;
    t.header.signature = signature;
    std::strncpy(t.header.comm_name, group_.name.c_str(), sizeof t.header.comm_name - 1);
    t.send = blocks[j].send;
    t.recv = blocks[j].recv;
    t.recv_bytes = blocks[j].recv_bytes;
    transfers.push_back(t);
  }
  return transfers;
}

void ExchangeCommunicator::do_all_reduce(const Tensor& in, const Tensor& out, cudaStream_t stream) {
  // Gather every rank's input, then every rank sums the same rows in the same order: identical bits everywhere.
  const size_t bytes = in.nbytes();
  void* rows = scratch(bytes * size());
  std::vector<PeerBlock> blocks(size());
  for (int j = 0; j < size(); ++j) blocks[j] = {in.data, bytes, at(rows, j * bytes), bytes};
  exchange(CallSignature::of(Collective::kAllReduce, &in), blocks, stream);
  sum_rows(rows, size(), in.numel(), in.dtype, out.data, stream);
}

void ExchangeCommunicator::do_all_gather(const Tensor& in, const Tensor& out, cudaStream_t stream) {
  const size_t bytes = in.nbytes();
  std::vector<PeerBlock> blocks(size());
  for (int j = 0; j < size(); ++j) blocks[j] = {in.data, bytes, at(out.data, j * bytes), bytes};
  exchange(CallSignature::of(Collective::kAllGather, &in), blocks, stream);
}

void ExchangeCommunicator::do_reduce_scatter(const Tensor& in, const Tensor& out, cudaStream_t stream) {
  const size_t chunk = out.nbytes();
  void* rows = scratch(chunk * size());
  std::vector<PeerBlock> blocks(size());
  for (int j = 0; j < size(); ++j) blocks[j] = {at(in.data, j * chunk), chunk, at(rows, j * chunk), chunk};
  exchange(CallSignature::of(Collective::kReduceScatter, &in), blocks, stream);
  sum_rows(rows, size(), out.numel(), out.dtype, out.data, stream);
}

void ExchangeCommunicator::do_all_to_all(const Tensor& in, const std::vector<int64_t>& send_rows, const Tensor& out,
                                         const std::vector<int64_t>& recv_rows, cudaStream_t stream) {
  const size_t row = row_bytes(in);
  std::vector<PeerBlock> blocks(size());
  size_t sent = 0, received = 0;
  for (int j = 0; j < size(); ++j) {
    blocks[j] = {at(in.data, sent), send_rows[j] * row, at(out.data, received), recv_rows[j] * row};
    sent += blocks[j].send_bytes;
    received += blocks[j].recv_bytes;
  }
  exchange(CallSignature::of(Collective::kAllToAll, &in, -1, true), blocks, stream);
}

void ExchangeCommunicator::do_broadcast(const Tensor& tensor, int root, cudaStream_t stream) {
  std::vector<PeerBlock> blocks(size());
  if (rank() == root) {
    for (int j = 0; j < size(); ++j)
      if (j != root) blocks[j] = {tensor.data, tensor.nbytes(), nullptr, 0};
  } else {
    blocks[root] = {nullptr, 0, tensor.data, tensor.nbytes()};
  }
  exchange(CallSignature::of(Collective::kBroadcast, &tensor, root), blocks, stream);
}

void ExchangeCommunicator::do_barrier() {
  exchange(CallSignature::of(Collective::kBarrier), std::vector<PeerBlock>(size()), nullptr, true);
}

std::unique_ptr<Communicator> ExchangeCommunicator::do_split(int color, int key, const std::string& name) {
  const int32_t mine[2] = {color, key};
  std::vector<int32_t> all(2 * size());
  std::vector<PeerBlock> blocks(size());
  for (int j = 0; j < size(); ++j) blocks[j] = {mine, sizeof mine, &all[2 * j], sizeof mine};
  exchange(CallSignature::of(Collective::kSplit), blocks, nullptr, true);
  const uint64_t index = ++splits_;
  if (color < 0) return nullptr;
  std::vector<int> order;  // parent ranks of the new group, by (key, parent rank)
  for (int j = 0; j < size(); ++j)
    if (all[2 * j] == color) order.push_back(j);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return all[2 * a + 1] < all[2 * b + 1]; });
  Group child;
  child.name = name;
  child.id = mix(mix(group_.id, index), static_cast<uint64_t>(color));
  std::vector<int> local;
  for (int i = 0; i < static_cast<int>(order.size()); ++i) {
    const int world_rank = group_.members[order[i]];
    child.members.push_back(world_rank);
    if (order[i] == rank()) child.rank = i;
    if (world_->is_local(world_rank)) local.push_back(i);
  }
  child.local = group_.local->child(child.id, static_cast<int>(order.size()), local);
  return make_child(std::move(child));
}

}  // namespace narwhal
