// Growable pinned host and device buffers for the CUDA runner's per-step copies (its draws, speculative rows).
#pragma once

#include <cuda_runtime.h>

#include <memory>

#include "core/cuda_check.h"
#include "core/tensor.h"

namespace narwhal {

// Pinned host memory of `bytes`, grown (never shrunk) as steps need more.
struct PinnedBuffer {
  std::shared_ptr<void> data;
  size_t bytes = 0;
  void* reserve(size_t need) {
    if (need > bytes) {
      void* p = nullptr;
      NW_CUDA_CHECK(cudaMallocHost(&p, need));
      data = std::shared_ptr<void>(p, [](void* q) { cudaFreeHost(q); });
      bytes = need;
    }
    return data.get();
  }
};

// A device buffer of `bytes`, grown as steps need more (only between steps: nothing captured reads it).
inline void* reserve_device(Tensor& t, size_t need) {
  if (!t.defined() || t.nbytes() < need)
    t = Tensor::empty(DType::kI32, {static_cast<int64_t>((need + 3) / 4)}, Device::kCUDA);
  return t.data;
}

}  // namespace narwhal
