// TcpMesh: the host backend's TCP connections between ranks on different nodes (one per pair of ranks), and the
// exchange of framed messages with several of them at once.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "parallel/exchange_types.h"
#include "parallel/parallel_config.h"
#include "parallel/socket.h"
#include "parallel/tcp_store.h"
#include "parallel/world_status.h"

namespace narwhal {

// What precedes each message: which call of which group it belongs to, so that a rank that called something else
// is named instead of its bytes being taken for ours.
struct MessageHeader {
  static constexpr uint32_t kMagic = 0x6e77686cu;  // "nwhl"
  uint32_t magic = kMagic;
  uint32_t reserved = 0;
  uint64_t comm_id = 0;
  uint64_t seq = 0;
  uint64_t bytes = 0;
  CallSignature signature;
  char comm_name[24] = {};

  std::string str() const;  // "tp all_reduce F32 [4, 8] #3"
};

class TcpMesh {
 public:
  // Connects this node's ranks to every rank on the other nodes: each node listens on a free port and posts
  // HOST:PORT at the store; the higher rank of each pair connects to the lower one. Bounded by the timeout.
  TcpMesh(TcpStore& store, const ParallelConfig& config);
  // The connection between local rank `rank` and remote rank `peer` (world ranks).
  int fd(int rank, int peer) const;

 private:
  std::map<std::pair<int, int>, Socket> links_;
};

// One remote peer's part of an exchange: the link, what goes out (after `header`), and what should come in.
struct RemoteTransfer {
  int fd = -1;
  int peer = 0;  // world rank, for messages
  MessageHeader header;  // ours, with bytes = what we send
  const void* send = nullptr;
  void* recv = nullptr;
  size_t recv_bytes = 0;
};

// Sends and receives every transfer at once (one poll() loop, so no pair waits on another). Each received header
// must match ours but for its byte count, which must equal recv_bytes. Throws an Error prefixed with `where` when a
// peer closes its connection (its process died), sends a different call, or is silent past the deadline, and
// when `status` fails meanwhile; `describe` names world ranks and `why_closed` says why a rank's connection closed.
void exchange_remote(std::vector<RemoteTransfer>& transfers, const Deadline& deadline, const WorldStatus& status,
                     const std::string& where, const std::function<std::string(int)>& describe,
                     const std::function<std::string(int)>& why_closed);

}  // namespace narwhal
