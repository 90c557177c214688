// The host backend: ranks that are threads of one process exchange through shared memory (LocalGroup), ranks on
// other nodes over TCP (TcpMesh), so the CPU runner runs every parallel mode and CI tests them. Host tensors;
// each collective is finished when it returns; the stream argument is ignored.
#pragma once

#include <memory>
#include <vector>

#include "parallel/exchange_communicator.h"

namespace narwhal {

class HostCommunicator final : public ExchangeCommunicator {
 public:
  HostCommunicator(std::shared_ptr<const WorldContext> world, Group group);

 private:
  void copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) override;
  void settle(cudaStream_t stream) override {}
  void sum_rows(const void* rows, int count, int64_t n, DType dtype, void* out, cudaStream_t stream) override;
  void* scratch(size_t bytes) override;
  std::unique_ptr<Communicator> make_child(Group group) override;

  std::vector<char> scratch_;
};

}  // namespace narwhal
