// Benchmark of MLA prefill attention (varlen causal flash attention over decompressed K/V): us, TFLOPS and %
// of the bf16 tensor-core peak, which this run measures with a large cuBLASLt GEMM.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "core/cuda_check.h"
#include "core/dtype.h"
#include "core/tensor.h"
#include "ops/cuda/mla.h"

namespace {

using narwhal::DType;
using narwhal::Device;
using narwhal::Tensor;

#define CUBLAS_CHECK(expr) NW_CHECK((expr) == CUBLAS_STATUS_SUCCESS, #expr, " failed")

constexpr int64_t kQk = 192, kKv = 256, kV = 128, kLatentWidth = 576;

// Median time in microseconds of `launch` over `reps` runs, each between its own pair of events.
double median_us(const std::function<void(int)>& launch, int reps) {
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
  NW_CUDA_CHECK(cudaEventDestroy(start));
  NW_CUDA_CHECK(cudaEventDestroy(stop));
  std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
  return ms[reps / 2] * 1e3;
}

// A device BF16 tensor of uniform values in [-1, 1) (a hash of the index: fast and never zero-filled).
Tensor random_device_bf16(std::vector<int64_t> shape, uint64_t seed) {
  Tensor host = Tensor::zeros(DType::kBF16, std::move(shape));
  uint16_t* bits = host.ptr<uint16_t>();
#pragma omp parallel for
  for (int64_t i = 0; i < host.numel(); ++i) {
    uint64_t z = (static_cast<uint64_t>(i) + seed * 0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 31)) * 0x94d049bb133111ebull;
    bits[i] = narwhal::float_to_bf16(static_cast<float>(z >> 40) / static_cast<float>(1 << 23) - 1.0f);
  }
  return host.to(Device::kCUDA);
}

// Dense BF16 GEMM throughput (TFLOPS) of cuBLASLt at 8192^3 on random data: the tensor-core roofline.
double measure_bf16_peak_tflops() {
  constexpr int64_t n = 8192;
  Tensor a = random_device_bf16({n, n}, 1), b = random_device_bf16({n, n}, 2);
  Tensor c = Tensor::empty(DType::kBF16, {n, n}, Device::kCUDA);
  constexpr size_t kWorkspaceBytes = 64 << 20;
  Tensor workspace = Tensor::empty(DType::kBF16, {kWorkspaceBytes / 2}, Device::kCUDA);
  cublasLtHandle_t lt;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t layout;
  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, CUDA_R_16BF, n, n, n));
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &kWorkspaceBytes, sizeof(kWorkspaceBytes)));
  cublasLtMatmulHeuristicResult_t heuristic;
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, layout, layout, layout, layout, pref, 1, &heuristic, &found));
  NW_CHECK(found > 0, "cuBLASLt found no BF16 GEMM algorithm");
  const float alpha = 1.0f, beta = 0.0f;
  const double us = median_us(
      [&](int) {
        CUBLAS_CHECK(cublasLtMatmul(lt, desc, &alpha, a.data, layout, b.data, layout, &beta, c.data, layout, c.data,
                                    layout, &heuristic.algo, workspace.data, kWorkspaceBytes, nullptr));
      },
      20);
  CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
  CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(layout));
  CUBLAS_CHECK(cublasLtMatmulDescDestroy(desc));
  CUBLAS_CHECK(cublasLtDestroy(lt));
  return 2.0 * n * n * n / us * 1e-6;
}

Tensor device_ints(const std::vector<int32_t>& values) {
  Tensor t = Tensor::zeros(DType::kI32, {static_cast<int64_t>(values.size())});
  std::copy(values.begin(), values.end(), t.ptr<int32_t>());
  return t.to(Device::kCUDA);
}

struct Config {
  int64_t heads, batch, fresh, prefix;
};

}  // namespace

int main() {
  cudaDeviceProp prop;
  NW_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double peak = measure_bf16_peak_tflops();
  std::printf("device %s, measured bf16 dense peak (cuBLASLt 8192^3): %.0f TFLOPS\n", prop.name, peak);

  std::vector<Config> configs;
  for (int64_t heads : {16, 128})
    for (int64_t prefix : {0, 4096})
      for (int64_t batch : {1, 4})
        for (int64_t fresh : {1024, 4096, 8192}) configs.push_back({heads, batch, fresh, prefix});

  // One random buffer set as large as the largest config; smaller configs rotate through disjoint slices of
  // it so that consecutive runs never find their inputs in the 50 MB L2.
  int64_t max_tokens_heads = 0, max_keys_heads = 0, max_keys = 0;
  for (const Config& c : configs) {
    max_tokens_heads = std::max(max_tokens_heads, c.batch * c.fresh * c.heads);
    max_keys_heads = std::max(max_keys_heads, c.batch * (c.prefix + c.fresh) * c.heads);
    max_keys = std::max(max_keys, c.batch * (c.prefix + c.fresh));
  }
  Tensor q = random_device_bf16({max_tokens_heads, kQk}, 3);
  Tensor kv = random_device_bf16({max_keys_heads, kKv}, 4);
  Tensor latents = random_device_bf16({max_keys, kLatentWidth}, 5);
  Tensor out = Tensor::empty(DType::kBF16, {max_tokens_heads, kV}, Device::kCUDA);

  std::printf("\n%5s %5s %6s %6s | %10s %8s %7s\n", "heads", "batch", "new", "prefix", "time (us)", "TFLOPS",
              "% peak");
  for (const Config& c : configs) {
    std::vector<int32_t> cu_q{0}, cu_k{0};
    for (int64_t b = 0; b < c.batch; ++b) {
      cu_q.push_back(static_cast<int32_t>(cu_q.back() + c.fresh));
      cu_k.push_back(static_cast<int32_t>(cu_k.back() + c.prefix + c.fresh));
    }
    Tensor cu_q_dev = device_ints(cu_q), cu_k_dev = device_ints(cu_k);
    const int64_t tokens = cu_q.back(), keys = cu_k.back();
    const int64_t slices = std::max<int64_t>(1, std::min(max_tokens_heads / (tokens * c.heads),
                                                         max_keys_heads / (keys * c.heads)));
    const float scale = 1.0f / std::sqrt(static_cast<float>(kQk));
    const double us = median_us(
        [&](int i) {
          const int64_t s = i % slices;
          Tensor q_s = q.rows(s * tokens * c.heads, (s + 1) * tokens * c.heads).reshape({tokens, c.heads, kQk});
          Tensor kv_s = kv.rows(s * keys * c.heads, (s + 1) * keys * c.heads).reshape({keys, c.heads, kKv});
          Tensor out_s = out.rows(s * tokens * c.heads, (s + 1) * tokens * c.heads).reshape({tokens, c.heads, kV});
          narwhal::ops::cuda::mla_prefill_attention(q_s, kv_s, latents.rows(0, keys), cu_q_dev, cu_k_dev, c.fresh,
                                                    scale, out_s, nullptr);
        },
        20);
    // Query i of a sequence sees prefix + i + 1 keys; each key costs 2 * (192 + 128) FLOPs (QK^T and PV).
    const double visible_pairs = static_cast<double>(c.batch) * c.heads *
                                 (static_cast<double>(c.fresh) * c.prefix + c.fresh * (c.fresh + 1) / 2.0);
    const double tflops = visible_pairs * 2.0 * (kQk + kV) / us * 1e-6;
    std::printf("%5ld %5ld %6ld %6ld | %10.1f %8.1f %6.1f%%\n", c.heads, c.batch, c.fresh, c.prefix, us, tflops,
                100.0 * tflops / peak);
  }
  return 0;
}
