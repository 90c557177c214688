// The device-local backend: several ranks as threads of one process on ONE GPU, exchanging through device memory
// with the host backend's shared-memory meeting and rank-ordered sums. It exists so that the sharded GPU kernels
// and the whole TP forward can be tested at real per-rank shapes (V3 at TP 8: 16 heads per rank, 7168 hidden, 256
// experts) on a single H200. Every collective synchronizes its stream before and after the exchange, so it blocks
// the host and cannot be captured in a CUDA graph; serving uses NCCL.
#pragma once

#include <memory>

#include "parallel/exchange_communicator.h"

namespace narwhal {

class DeviceLocalCommunicator final : public ExchangeCommunicator {
 public:
  DeviceLocalCommunicator(std::shared_ptr<const WorldContext> world, Group group, int device);
  ~DeviceLocalCommunicator() override;

 private:
  void copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) override;
  void settle(cudaStream_t stream) override;
  void sum_rows(const void* rows, int count, int64_t n, DType dtype, void* out, cudaStream_t stream) override;
  void* scratch(size_t bytes) override;
  std::unique_ptr<Communicator> make_child(Group group) override;

  int device_;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
};

}  // namespace narwhal
