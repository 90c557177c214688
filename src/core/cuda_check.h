// NW_CUDA_CHECK: turns a failed CUDA runtime call into an Error naming the call, file and line.
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
