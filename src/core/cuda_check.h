// NW_CUDA_CHECK: turns a failed CUDA runtime call into an Error naming the call, file and line; and the check that
// a usable GPU exists before any CUDA work starts.
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"

#define NW_CUDA_CHECK(expr)                                                                                   \
  do {                                                                                                        \
    cudaError_t nw_status_ = (expr);                                                                          \
    if (nw_status_ != cudaSuccess)                                                                            \
      throw ::narwhal::Error(::narwhal::cat(#expr, " failed: ", cudaGetErrorString(nw_status_), " (", __FILE__, \
                                            ":", __LINE__, ")"));                                             \
  } while (0)

namespace narwhal {

// Throws an Error saying that `what` needs a CUDA GPU when none is usable (no driver, a driver too old for this
// build, no device), instead of letting the first cudaMalloc fail with a raw driver message.
inline void require_cuda_device(const char* what, const char* hint = "") {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status == cudaSuccess && count > 0) return;
  cudaGetLastError();  // clear the sticky error of the failed query
  throw Error(cat(what, " needs a CUDA GPU, and none is usable here (",
                  status == cudaSuccess ? "no CUDA device found" : cudaGetErrorString(status),
                  ")", hint));
}

}  // namespace narwhal
