// The vocabulary of the exchange backends (host, device-local): what one call is, and what a rank sends to and
// receives from each peer in it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "parallel/communicator.h"

namespace narwhal {

// What one call is, compared between ranks before any byte moves, so that ranks calling different collectives,
// or one with different dtypes, shapes or roots, fail naming both calls instead of exchanging garbage.
struct CallSignature {
  static constexpr int kDims = 6;  // dims beyond these are covered by the byte counts
  int32_t op = 0;
  int32_t dtype = -1;
  int32_t root = -1;
  int32_t ndim = 0;
  int64_t dims[kDims] = {};

  // `tensor` may be null (barrier, split); `rows_differ` leaves dim 0 out (all_to_all).
  static CallSignature of(Collective op, const Tensor* tensor = nullptr, int root = -1, bool rows_differ = false);
  bool operator==(const CallSignature& other) const = default;
  std::string str() const;  // "all_reduce BF16 [4, 7168]", "broadcast F32 [3] from rank 0"
};

// One rank's part of an exchange with one peer: the bytes it sends there, and where the peer's bytes land.
struct PeerBlock {
  const void* send = nullptr;
  size_t send_bytes = 0;
  void* recv = nullptr;
  size_t recv_bytes = 0;
};

// The errors of a pair of ranks that disagree, worded the same by every exchange path. `who` names the peer.
std::string call_mismatch(const std::string& where, const std::string& who, const std::string& their_call,
                          const std::string& our_call);
std::string size_mismatch(const std::string& where, const std::string& who, size_t sent, size_t expected);

}  // namespace narwhal
