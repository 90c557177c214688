// ops::cuda::mtp_input: a CTA per token normalises its embedding row and its hidden row (8 BF16 values a thread and
// chunk, held in registers between the sum of squares and the scaled store) into the two halves of its joined row.
#include "ops/cuda/mtp_input.h"

#include "core/error.h"
#include "ops/cuda/block_primitives.cuh"
#include "ops/cuda/common.cuh"

namespace narwhal::ops::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kChunks = 4;  // 8-value chunks a thread holds: H <= 8 * kChunks * kThreads = 8192

// Normalises one row of `hidden` BF16 values by `weight` into `out` (a CTA's threads together).
__device__ void norm_row(const bf16* in, const bf16* weight, float eps, int hidden, bf16* out, float* scratch) {
  const int chunks = hidden / 8;
  float x[kChunks][8];
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    const int c = threadIdx.x + j * kThreads;
    if (c >= chunks) break;
    bf16x8_to_float(*reinterpret_cast<const uint4*>(in + 8 * c), x[j]);
#pragma unroll
    for (int i = 0; i < 8; ++i) sum += x[j][i] * x[j][i];
  }
  const float inv = rsqrtf(block_reduce<kThreads>(sum, scratch, [](float a, float b) { return a + b; }) /
                               static_cast<float>(hidden) + eps);
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    const int c = threadIdx.x + j * kThreads;
    if (c >= chunks) break;
    float g[8];
    bf16x8_to_float(*reinterpret_cast<const uint4*>(weight + 8 * c), g);
    uint4 packed;
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
    for (int i = 0; i < 4; ++i)
      o[i] = __floats2bfloat162_rn(g[2 * i] * (x[j][2 * i] * inv), g[2 * i + 1] * (x[j][2 * i + 1] * inv));
    *reinterpret_cast<uint4*>(out + 8 * c) = packed;
  }
}

__global__ void __launch_bounds__(kThreads) mtp_input_kernel(const int32_t* ids, const bf16* table, const bf16* hidden,
                                                             const bf16* enorm, const bf16* hnorm, float eps, int h,
                                                             bf16* joined) {
  __shared__ float scratch[kThreads / 32];
  grid_dependency_wait();
  const int64_t t = blockIdx.x;
  bf16* row = joined + t * 2 * h;
  norm_row(table + static_cast<int64_t>(ids[t]) * h, enorm, eps, h, row, scratch);
  norm_row(hidden + t * h, hnorm, eps, h, row + h, scratch);
}

void check(const Tensor& t, DType dtype, std::vector<int64_t> shape, const char* name) {
  NW_CHECK(t.device == Device::kCUDA && t.dtype == dtype && t.shape == shape &&
               reinterpret_cast<uintptr_t>(t.data) % 16 == 0,
           "cuda::mtp_input: ", name, " is ", dtype_name(t.dtype), t.shape_string(),
           t.device == Device::kCUDA ? "" : " on the host", ", expected a 16-byte aligned CUDA ", dtype_name(dtype),
           shape_to_string(shape));
}

}  // namespace

void mtp_input(const Tensor& ids, const Tensor& table, const Tensor& hidden, const Tensor& enorm, const Tensor& hnorm,
               float eps, Tensor& joined, cudaStream_t stream) {
  const int64_t t = ids.numel(), h = table.ndim() == 2 ? table.size(1) : 0;
  NW_CHECK(h > 0 && h % 8 == 0 && h <= 8 * kChunks * kThreads && ids.ndim() == 1, "cuda::mtp_input: table",
           table.shape_string(), " ids", ids.shape_string(), ": hidden size a multiple of 8, at most ",
           8 * kChunks * kThreads, ", ids one-dimensional");
  NW_CHECK(ids.device == Device::kCUDA && ids.dtype == DType::kI32, "cuda::mtp_input: ids must be CUDA I32");
  check(table, DType::kBF16, table.shape, "table");
  check(hidden, DType::kBF16, {t, h}, "hidden");
  check(enorm, DType::kBF16, {h}, "enorm");
  check(hnorm, DType::kBF16, {h}, "hnorm");
  check(joined, DType::kBF16, {t, 2 * h}, "joined");
  if (t == 0) return;
  launch(mtp_input_kernel, dim3(static_cast<unsigned>(t)), dim3(kThreads), 0, stream, ids.ptr<int32_t>(),
         device_ptr<bf16>(table), device_ptr<bf16>(hidden), device_ptr<bf16>(enorm), device_ptr<bf16>(hnorm), eps,
         static_cast<int>(h), device_ptr<bf16>(joined));
}

}  // namespace narwhal::ops::cuda
