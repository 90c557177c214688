// HostCommunicator: the exchange backend's hooks as plain memory copies and the host's rank-ordered sum.
#include "parallel/host_communicator.h"

#include <cstring>

#include "parallel/sum_rows.h"

namespace narwhal {

HostCommunicator::HostCommunicator(std::shared_ptr<const WorldContext> world, Group group)
    : ExchangeCommunicator(std::move(world), std::move(group), Device::kCPU) {}

void HostCommunicator::copy(void* dst, const void* src, size_t bytes, cudaStream_t) { std::memcpy(dst, src, bytes); }

void HostCommunicator::sum_rows(const void* rows, int count, int64_t n, DType dtype, void* out, cudaStream_t) {
  sum_rows_host(rows, count, n, dtype, out);
}

void* HostCommunicator::scratch(size_t bytes) {
  if (scratch_.size() < bytes) scratch_.resize(bytes);
  return scratch_.data();
}

std::unique_ptr<Communicator> HostCommunicator::make_child(Group group) {
  return std::make_unique<HostCommunicator>(world(), std::move(group));
}

}  // namespace narwhal
