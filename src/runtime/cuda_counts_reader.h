// CudaCountsReader: reads a device tensor of running counts to the host while steps keep running, never waiting for
// one (the /metrics refresh of the GPU runner's expert counts).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace narwhal {

// Copies `counts` (device I64 [N], a fixed address that kernels on `stream` add to) on a side stream ordered after
// the work queued on `stream` before each read(), into pinned memory. One reading thread at a time; it may be another
// than the one that queues the steps.
class CudaCountsReader {
 public:
  CudaCountsReader(Tensor counts, cudaStream_t stream);
  ~CudaCountsReader();
  CudaCountsReader(const CudaCountsReader&) = delete;
  CudaCountsReader& operator=(const CudaCountsReader&) = delete;

  // The counts as of the work queued before the previous read() (zeros at first), or, when `stream` has nothing
  // left to run, as of now; starts the next copy.
  std::vector<int64_t> read();

 private:
  bool stream_idle() const;
  void take();  // the finished copy's values into last_

  Tensor counts_;
  cudaStream_t stream_, side_ = nullptr;
  cudaEvent_t queued_ = nullptr, copied_ = nullptr;
  std::shared_ptr<void> host_;  // pinned
  bool copying_ = false;
  std::vector<int64_t> last_;
};

}  // namespace narwhal
