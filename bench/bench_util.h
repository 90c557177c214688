// Shared pieces of the kernel micro-benchmarks: event timing, random device data, and the two rooflines every
// table is read against (HBM bandwidth from a large device-to-device copy, BF16 tensor-core peak from cuBLASLt).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "core/cuda_check.h"
#include "core/dtype.h"
#include "core/tensor.h"

namespace narwhal::bench {

#define NW_BENCH_CUBLAS_CHECK(expr) NW_CHECK((expr) == CUBLAS_STATUS_SUCCESS, #expr, " failed")

// Median time in microseconds of `launch` over `reps` runs (after 3 warm-up runs), each between its own pair of
// events; launch(i) gets the run index so callers can rotate buffers.
inline double median_us(const std::function<void(int)>& launch, int reps) {
  cudaEvent_t start, stop;
  NW_CUDA_CHECK(cudaEventCreate(&start));
  NW_CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) launch(i);
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) {
    NW_CUDA_CHECK(cudaEventRecord(start));
    launch(i);
    NW_CUDA_CHECK(cudaEventRecord(stop));
    NW_CUDA_CHECK(cudaEventSynchronize(stop));
    NW_CUDA_CHECK(cudaEventElapsedTime(&ms[i], start, stop));
  }
  NW_CUDA_CHECK(cudaGetLastError());
  NW_CUDA_CHECK(cudaEventDestroy(start));
  NW_CUDA_CHECK(cudaEventDestroy(stop));
  std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
  return ms[reps / 2] * 1e3;
}

inline uint64_t mix_hash(uint64_t i, uint64_t seed) {
  uint64_t z = (i + seed * 0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 31)) * 0x94d049bb133111ebull;
  return z ^ (z >> 29);
}

// A host buffer of random bytes (a hash of the index: fast, never zero-filled); FP8 e4m3 bytes avoid the NaN
// codes, BF16 elements are uniform in [-1, 1).
inline Tensor random_host(DType dtype, std::vector<int64_t> shape, uint64_t seed) {
  Tensor host = Tensor::zeros(dtype, std::move(shape));
  const int64_t n = host.numel();
  if (dtype == DType::kBF16) {
    uint16_t* bits = host.ptr<uint16_t>();
#pragma omp parallel for
    for (int64_t i = 0; i < n; ++i)
      bits[i] = float_to_bf16(static_cast<float>(mix_hash(i, seed) >> 40) / static_cast<float>(1 << 23) - 1.0f);
  } else if (dtype == DType::kF8E4M3) {
    uint8_t* bits = host.ptr<uint8_t>();
#pragma omp parallel for
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t b = static_cast<uint8_t>(mix_hash(i, seed) >> 32);
      bits[i] = (b & 0x7f) == 0x7f ? 0x38 : b;
    }
  } else {
    float* v = host.f32();
#pragma omp parallel for
    for (int64_t i = 0; i < n; ++i) v[i] = 0.5f + static_cast<float>(mix_hash(i, seed) >> 40) / (1 << 24);
  }
  return host;
}

// A device tensor of random data; large ones repeat a 64 MB random pattern, copied on the device (host
// generation of many GB would dominate the run).
inline Tensor random_device(DType dtype, std::vector<int64_t> shape, uint64_t seed) {
  Tensor out = Tensor::empty(dtype, shape, Device::kCUDA);
  const size_t bytes = out.nbytes(), chunk = std::min<size_t>(bytes, size_t{64} << 20);
  const int64_t chunk_elems = static_cast<int64_t>(chunk / dtype_size(dtype));
  Tensor pattern = random_host(dtype, {chunk_elems}, seed).to(Device::kCUDA);
  for (size_t off = 0; off < bytes; off += chunk)
    NW_CUDA_CHECK(cudaMemcpy(static_cast<char*>(out.data) + off, pattern.data, std::min(chunk, bytes - off),
                             cudaMemcpyDeviceToDevice));
  return out;
}

// Device memory bandwidth in GB/s: a 2 GB device-to-device copy, counting bytes read plus bytes written.
inline double measure_hbm_gbps() {
  constexpr size_t kBytes = size_t{2} << 30;
  Tensor a = random_device(DType::kBF16, {static_cast<int64_t>(kBytes / 2)}, 7);
  Tensor b = Tensor::empty(DType::kBF16, {static_cast<int64_t>(kBytes / 2)}, Device::kCUDA);
  const double us =
      median_us([&](int) { NW_CUDA_CHECK(cudaMemcpyAsync(b.data, a.data, kBytes, cudaMemcpyDeviceToDevice)); }, 10);
  return 2.0 * kBytes / us * 1e-3;
}

// Dense BF16 GEMM throughput (TFLOPS) of cuBLASLt at 8192^3 on random data: the tensor-core roofline.
inline double measure_bf16_peak_tflops() {
  constexpr int64_t n = 8192;
  Tensor a = random_device(DType::kBF16, {n, n}, 1), b = random_device(DType::kBF16, {n, n}, 2);
  Tensor c = Tensor::empty(DType::kBF16, {n, n}, Device::kCUDA);
  constexpr size_t kWorkspaceBytes = 64 << 20;
  Tensor workspace = Tensor::empty(DType::kBF16, {kWorkspaceBytes / 2}, Device::kCUDA);
  cublasLtHandle_t lt;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t layout;
  cublasLtMatmulPreference_t pref;
  NW_BENCH_CUBLAS_CHECK(cublasLtCreate(&lt));
  NW_BENCH_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T;
  NW_BENCH_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
  NW_BENCH_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, CUDA_R_16BF, n, n, n));
  NW_BENCH_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  NW_BENCH_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                             &kWorkspaceBytes, sizeof(kWorkspaceBytes)));
  cublasLtMatmulHeuristicResult_t heuristic;
  int found = 0;
  NW_BENCH_CUBLAS_CHECK(
      cublasLtMatmulAlgoGetHeuristic(lt, desc, layout, layout, layout, layout, pref, 1, &heuristic, &found));
  NW_CHECK(found > 0, "cuBLASLt found no BF16 GEMM algorithm");
  const float alpha = 1.0f, beta = 0.0f;
  const double us = median_us(
      [&](int) {
        NW_BENCH_CUBLAS_CHECK(cublasLtMatmul(lt, desc, &alpha, a.data, layout, b.data, layout, &beta, c.data, layout,
                                             c.data, layout, &heuristic.algo, workspace.data, kWorkspaceBytes,
                                             nullptr));
      },
      20);
  NW_BENCH_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
  NW_BENCH_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(layout));
  NW_BENCH_CUBLAS_CHECK(cublasLtMatmulDescDestroy(desc));
  NW_BENCH_CUBLAS_CHECK(cublasLtDestroy(lt));
  return 2.0 * n * n * n / us * 1e-6;
}

inline Tensor device_i32(const std::vector<int32_t>& values, std::vector<int64_t> shape) {
  Tensor t = Tensor::zeros(DType::kI32, std::move(shape));
  std::copy(values.begin(), values.end(), t.ptr<int32_t>());
  return t.to(Device::kCUDA);
}

}  // namespace narwhal::bench
