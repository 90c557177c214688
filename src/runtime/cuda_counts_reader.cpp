// CudaCountsReader: a side stream, two events and a pinned buffer.
#include "runtime/cuda_counts_reader.h"

#include <cstring>

#include "core/cuda_check.h"
#include "core/error.h"

namespace narwhal {

CudaCountsReader::CudaCountsReader(Tensor counts, cudaStream_t stream)
    : counts_(std::move(counts)), stream_(stream), last_(static_cast<size_t>(counts_.numel()), 0) {
  NW_CHECK(counts_.dtype == DType::kI64 && counts_.device == Device::kCUDA, "CudaCountsReader: counts ",
           counts_.shape_string(), " must be device I64");
  void* p = nullptr;
  NW_CUDA_CHECK(cudaMallocHost(&p, counts_.nbytes()));
  host_ = std::shared_ptr<void>(p, [](void* q) { cudaFreeHost(q); });
  NW_CUDA_CHECK(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking));
  NW_CUDA_CHECK(cudaEventCreateWithFlags(&queued_, cudaEventDisableTiming));
  NW_CUDA_CHECK(cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming));
}

CudaCountsReader::~CudaCountsReader() {
  cudaStreamSynchronize(side_);  // a copy may still be landing in the pinned buffer
  cudaEventDestroy(queued_);
  cudaEventDestroy(copied_);
  cudaStreamDestroy(side_);
}

bool CudaCountsReader::stream_idle() const {
  const cudaError_t e = cudaStreamQuery(stream_);
  if (e != cudaErrorNotReady) NW_CUDA_CHECK(e);
  return e == cudaSuccess;
}

void CudaCountsReader::take() {
  NW_CUDA_CHECK(cudaEventSynchronize(copied_));
  std::memcpy(last_.data(), host_.get(), counts_.nbytes());
  copying_ = false;
}

std::vector<int64_t> CudaCountsReader::read() {
  if (copying_) {
    const cudaError_t e = cudaEventQuery(copied_);
    if (e != cudaErrorNotReady) NW_CUDA_CHECK(e);
    if (e == cudaErrorNotReady && !stream_idle()) return last_;  // the copy still waits for a running step
    take();
  }
  NW_CUDA_CHECK(cudaEventRecord(queued_, stream_));
  NW_CUDA_CHECK(cudaStreamWaitEvent(side_, queued_));
  NW_CUDA_CHECK(cudaMemcpyAsync(host_.get(), counts_.data, counts_.nbytes(), cudaMemcpyDeviceToHost, side_));
  NW_CUDA_CHECK(cudaEventRecord(copied_, side_));
  copying_ = true;
  if (stream_idle()) take();  // nothing runs before the copy: wait for it alone, so an idle runner's counts are exact
  return last_;
}

}  // namespace narwhal
