// Growable pinned host and device buffers for the CUDA runner's per-step copies (its draws, speculative rows).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "core/cuda_check.h"
#include "core/error.h"
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

// Small lists (indices, moves) sent to the device between syncs, each through its own part of pinned and device
// memory, so that none is overwritten before its copy and the kernels reading it ran. A list that does not fit opens
// a bigger chunk; the filled ones stay alive until restart(), which the caller makes after a sync.
class StagedLists {
 public:
  // `src`, a list of `dtype` shaped `shape`, copied up on `stream`: the device tensor it lands in.
  Tensor send(const void* src, DType dtype, std::vector<int64_t> shape, cudaStream_t stream) {
    Tensor list = Tensor::view(nullptr, dtype, std::move(shape));
    list.device = Device::kCUDA;
    const size_t bytes = list.nbytes();
    if (chunks_.empty() || used_ + bytes > chunks_.back().host.bytes) {
      Chunk next;
      const size_t size = std::max({bytes, size_t{4096}, chunks_.empty() ? 0 : 2 * chunks_.back().host.bytes});
      next.host.reserve(size);
      reserve_device(next.device, size);
      chunks_.push_back(std::move(next));
      used_ = 0;
    }
    Chunk& c = chunks_.back();
    char* h = static_cast<char*>(c.host.data.get()) + used_;
    char* d = static_cast<char*>(c.device.data) + used_;
    std::memcpy(h, src, bytes);
    NW_CUDA_CHECK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, stream));
    used_ += (bytes + 15) / 16 * 16;
    list.data = d;
    return list;
  }
  // Nothing sent is in flight any more: the largest chunk is reused from its start, the others freed.
  void restart() {
    if (chunks_.size() > 1) chunks_.erase(chunks_.begin(), chunks_.end() - 1);
    used_ = 0;
  }

 private:
  struct Chunk {
    PinnedBuffer host;
    Tensor device;
  };
  std::vector<Chunk> chunks_;
  size_t used_ = 0;
};

}  // namespace narwhal
