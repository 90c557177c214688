// DeviceLocalCommunicator: the exchange backend's hooks as stream-ordered device copies, stream synchronization
// and the GPU rank-ordered sum.
#include "parallel/device_local_communicator.h"

#include "core/cuda_check.h"
#include "parallel/sum_rows.h"

namespace narwhal {

DeviceLocalCommunicator::DeviceLocalCommunicator(std::shared_ptr<const WorldContext> world, Group group, int device)
    : ExchangeCommunicator(std::move(world), std::move(group), Device::kCUDA), device_(device) {}

DeviceLocalCommunicator::~DeviceLocalCommunicator() {
  cudaSetDevice(device_);
  if (scratch_) cudaFree(scratch_);
}

void DeviceLocalCommunicator::copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  NW_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
}

void DeviceLocalCommunicator::settle(cudaStream_t stream) {
  NW_CUDA_CHECK(cudaSetDevice(device_));
  NW_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void DeviceLocalCommunicator::sum_rows(const void* rows, int count, int64_t n, DType dtype, void* out,
                                       cudaStream_t stream) {
  sum_rows_cuda(rows, count, n, dtype, out, stream);
}

void* DeviceLocalCommunicator::scratch(size_t bytes) {
  if (bytes > scratch_bytes_) {
    // cudaFree waits for the device, so no queued sum still reads the old buffer.
    if (scratch_) NW_CUDA_CHECK(cudaFree(scratch_));
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    NW_CUDA_CHECK(cudaMalloc(&scratch_, bytes));
    scratch_bytes_ = bytes;
  }
  return scratch_;
}

std::unique_ptr<Communicator> DeviceLocalCommunicator::make_child(Group group) {
  return std::make_unique<DeviceLocalCommunicator>(world(), std::move(group), device_);
}

}  // namespace narwhal
