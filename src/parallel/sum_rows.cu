// sum_rows_cuda: the device-local backend's rank-ordered sum, element for element the host's arithmetic.
#include <cuda_bf16.h>

#include "core/cuda_check.h"
#include "core/error.h"
#include "parallel/sum_rows.h"

namespace narwhal {

namespace {

struct F32 {
  using T = float;
  using Acc = float;
  __device__ static Acc load(T v) { return v; }
  __device__ static T store(Acc v) { return v; }
};
struct BF16 {
  using T = __nv_bfloat16;
  using Acc = float;
  __device__ static Acc load(T v) { return __bfloat162float(v); }
  __device__ static T store(Acc v) { return __float2bfloat16_rn(v); }
};
struct I32 {
  using T = int32_t;
  using Acc = uint32_t;
  __device__ static Acc load(T v) { return static_cast<uint32_t>(v); }
  __device__ static T store(Acc v) { return static_cast<int32_t>(v); }
};

template <typename K>
__global__ void sum_rows_kernel(const typename K::T* rows, int count, int64_t n, typename K::T* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    typename K::Acc acc = K::load(rows[i]);
    for (int r = 1; r < count; ++r) acc += K::load(rows[r * n + i]);
    out[i] = K::store(acc);
  }
}

template <typename K>
void launch_sum(const void* rows, int count, int64_t n, void* out, cudaStream_t stream) {
  if (n == 0) return;
  constexpr int kThreads = 256;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  sum_rows_kernel<K><<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096), kThreads, 0, stream>>>(
      static_cast<const typename K::T*>(rows), count, n, static_cast<typename K::T*>(out));
  NW_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void sum_rows_cuda(const void* rows, int count, int64_t n, DType dtype, void* out, cudaStream_t stream) {
  switch (dtype) {
    case DType::kF32: return launch_sum<F32>(rows, count, n, out, stream);
    case DType::kBF16: return launch_sum<BF16>(rows, count, n, out, stream);
    case DType::kI32: return launch_sum<I32>(rows, count, n, out, stream);
    default: throw Error(cat("sum of ", dtype_name(dtype), " is not supported"));
  }
}

}  // namespace narwhal
