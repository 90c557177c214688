// Benchmark of the FP8 block-scaled GEMM (GemmRunner::linear_fp8: per-token-group activation quantization, then
// cuBLASLt VEC128 x BLK128x128 or the own small-M kernel) at DeepGEMM's DeepSeek-V3 shapes. Prints us, TFLOPS and
// weight GB/s of each path; the times include the activation quantization, as the forward pays it.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench_util.h"
#include "ops/cuda/gemm.h"

namespace {

using narwhal::DType;
using narwhal::Device;
using narwhal::Tensor;
namespace bench = narwhal::bench;
namespace cuda = narwhal::ops::cuda;

constexpr size_t kRotateBytes = size_t{256} << 20;  // weights + activations cycled per run: 5x the 50 MB L2

}  // namespace

// usage: bench_gemm_fp8 [N K M]  (one shape only, e.g. under a profiler)
int main(int argc, char** argv) {
  cudaDeviceProp prop;
  NW_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double hbm = bench::measure_hbm_gbps(), peak = bench::measure_bf16_peak_tflops();
  std::printf("device %s: HBM %.0f GB/s (2 GB D2D copy), BF16 dense peak %.0f TFLOPS (FP8 nominal 2x: %.0f)\n",
              prop.name, hbm, peak, 2 * peak);
  std::printf("targets: >= 1150 TFLOPS at M=4096, >= 250 TFLOPS at M=64\n");

  cuda::GemmRunnerOptions options;
  options.max_fp8_elements = int64_t{4096} * 16384;
  cuda::GemmRunner runner(options);
  std::vector<std::pair<int64_t, int64_t>> shapes = {{2112, 7168}, {24576, 1536}, {32768, 512},
                                                     {7168, 16384}, {4096, 7168},  {7168, 2048}};
  std::vector<int64_t> ms = {64, 128, 4096};
  if (argc == 4) {
    shapes = {{std::atoll(argv[1]), std::atoll(argv[2])}};
    ms = {std::atoll(argv[3])};
  }
  std::printf("\n%6s %6s %6s | %-8s %9s %8s %9s %9s\n", "M", "N", "K", "path", "time (us)", "TFLOPS", "W GB/s",
              "quant us");
  for (auto [n, k] : shapes) {
    const int64_t weight_bytes = n * k;
    const int64_t copies = std::max<int64_t>(1, static_cast<int64_t>(kRotateBytes / weight_bytes));
    std::vector<cuda::Fp8BlockWeight> weights;
    for (int64_t c = 0; c < copies; ++c) {
      const Tensor q = bench::random_device(DType::kF8E4M3, {n, k}, 10 + c);
      const Tensor scale = bench::random_host(DType::kF32, {(n + 127) / 128, (k + 127) / 128}, 20 + c);
      weights.push_back(cuda::make_fp8_block_weight(q, scale.to(Device::kCUDA)));
    }
    for (int64_t m : ms) {
      const int64_t x_copies = std::max<int64_t>(1, static_cast<int64_t>(kRotateBytes / (m * k * 2)));
      std::vector<Tensor> xs;
      for (int64_t c = 0; c < std::min<int64_t>(x_copies, copies); ++c)
        xs.push_back(bench::random_device(DType::kBF16, {m, k}, 30 + c));
      Tensor y = Tensor::empty(DType::kBF16, {m, n}, Device::kCUDA);
      // The activation quantization alone, included in both paths' times.
      Tensor q = Tensor::empty(DType::kF8E4M3, {m, k}, Device::kCUDA);
      Tensor q_scale = Tensor::empty(DType::kF32, {(k + 127) / 128, m}, Device::kCUDA);
      const double quant_us = bench::median_us(
          [&](int i) { cuda::quantize_fp8_token_groups(xs[i % xs.size()], q, q_scale, nullptr); }, 30);
      for (auto [path, name] : {std::pair{cuda::Fp8GemmPath::kSmallM, "small-m"},
                                std::pair{cuda::Fp8GemmPath::kCublasLt, "cublaslt"}}) {
        double us = 0;
        try {
          us = bench::median_us(
              [&](int i) { runner.linear_fp8(xs[i % xs.size()], weights[i % weights.size()], y, nullptr, path); },
              30);
        } catch (const narwhal::Error& e) {
          std::printf("%6ld %6ld %6ld | %-8s unsupported: %s\n", m, n, k, name, e.what());
          continue;
        }
        const double tflops = 2.0 * m * n * k / us * 1e-6, gbps = static_cast<double>(weight_bytes) / us * 1e-3;
        std::printf("%6ld %6ld %6ld | %-8s %9.1f %8.1f %9.0f %9.1f\n", m, n, k, name, us, tflops, gbps, quant_us);
      }
    }
  }
  std::printf("(W GB/s counts FP8 weight bytes only; HBM measured above is the memory-bound ceiling)\n");
  return 0;
}
