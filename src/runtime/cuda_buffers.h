// Growable pinned host and device buffers for the CUDA runner's per-step copies (its draws, speculative rows).
#pragma once

#include <cuda_runtime.h>

#include <cstring>
#include <memory>

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

// Small lists (indices, moves) sent to the device between syncs, each through its own part of one pinned buffer, so
// that none is overwritten before its copy ran: reserve() before the first, send() each, restart() after a sync.
struct StagedLists {
  PinnedBuffer host;
  Tensor device;
  size_t used = 0;

  void reserve(size_t bytes) {  // grows only while nothing is in flight
    host.reserve(bytes);
    reserve_device(device, bytes);
  }
  void restart() { used = 0; }
  // `bytes` of `src` copied up on `stream`: where they land on the device.
  void* send(const void* src, size_t bytes, cudaStream_t stream) {
    NW_CHECK(used + bytes <= host.bytes, "StagedLists: ", used + bytes, " bytes, ", host.bytes, " reserved");
    char* h = static_cast<char*>(host.data.get()) + used;
    char* d = static_cast<char*>(device.data) + used;
    std::memcpy(h, src, bytes);
    NW_CUDA_CHECK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, stream));
    used += (bytes + 15) / 16 * 16;
    return d;
  }
};

}  // namespace narwhal
