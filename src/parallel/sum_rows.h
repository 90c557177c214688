// The rank-ordered sum of the exchange backends, on the host and on the GPU, with the same bits on both.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace narwhal {

// out = rows[0] + rows[1] + ... + rows[count - 1], n elements each, added in that order: F32 in F32, BF16 in F32
// rounded to BF16 once at the end, I32 wrapping. Every rank sums the same rows so every rank gets the same bits.
void sum_rows_host(const void* rows, int count, int64_t n, DType dtype, void* out);
// The same on device memory, queued on `stream`.
void sum_rows_cuda(const void* rows, int count, int64_t n, DType dtype, void* out, cudaStream_t stream);

}  // namespace narwhal
