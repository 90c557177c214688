// Benchmark of the BF16 decode-sized products (GemmRunner::linear_bf16): the own weight-streaming GEMV against
// cuBLASLt at M = 1 .. kBf16SmallMMaxKernelRows, at DeepSeek-V2-Lite's and the trained tiny model's shapes. Prints
// us and weight GB/s of each path; the crossing is what kBf16SmallMMaxRows (gemm.h) is set from.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench_util.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/gemm_kernels.h"

namespace {

using narwhal::DType;
using narwhal::Device;
using narwhal::Tensor;
namespace bench = narwhal::bench;
namespace cuda = narwhal::ops::cuda;

constexpr size_t kRotateBytes = size_t{256} << 20;  // weights cycled per run: 5x the 50 MB L2

struct Shape {
  const char* name;
  int64_t n, k;
};

}  // namespace

// usage: bench_gemm_bf16 [N K]  (one shape only, e.g. under a profiler)
int main(int argc, char** argv) {
  cudaDeviceProp prop;
  NW_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double hbm = bench::measure_hbm_gbps();
  std::printf("device %s: HBM %.0f GB/s (2 GB D2D copy)\n", prop.name, hbm);
  cuda::GemmRunner runner;
  std::vector<Shape> shapes = {
      {"v2-lite q_proj", 3072, 2048},      {"v2-lite kv_a", 576, 2048},      {"v2-lite o_proj", 2048, 2048},
      {"v2-lite dense up", 21888, 2048},  {"v2-lite dense down", 2048, 10944}, {"v2-lite lm_head", 102400, 2048},
      {"tiny q_b", 768, 128},              {"tiny o_proj", 256, 512},        {"tiny lm_head", 640, 256}};
  if (argc == 3) shapes = {{"given", std::atoll(argv[1]), std::atoll(argv[2])}};
  std::printf("\n%-20s %6s %6s %3s | %10s %8s | %10s %8s | %s\n", "shape", "N", "K", "M", "GEMV us", "GB/s",
              "cuBLASLt us", "GB/s", "faster");
  for (const Shape& s : shapes) {
    const int64_t weight_bytes = s.n * s.k * 2;
    const int64_t copies = std::max<int64_t>(1, static_cast<int64_t>(kRotateBytes / weight_bytes));
    std::vector<Tensor> weights;
    for (int64_t c = 0; c < copies; ++c) weights.push_back(bench::random_device(DType::kBF16, {s.n, s.k}, 10 + c));
    const Tensor x = bench::random_device(DType::kBF16, {cuda::kBf16SmallMMaxKernelRows, s.k}, 30);
    for (int64_t m = 1; m <= cuda::kBf16SmallMMaxKernelRows; ++m) {
      Tensor y = Tensor::empty(DType::kBF16, {m, s.n}, Device::kCUDA);
      const Tensor xm = x.rows(0, m);
      double us[2];
      for (int p = 0; p < 2; ++p) {
        const auto path = p == 0 ? cuda::Bf16GemmPath::kGemv : cuda::Bf16GemmPath::kCublasLt;
        us[p] = bench::median_us(
            [&](int i) { runner.linear_bf16(xm, weights[i % weights.size()], y, nullptr, false, path); }, 50);
      }
      auto gbps = [&](double t) { return static_cast<double>(weight_bytes) / t * 1e-3; };
      std::printf("%-20s %6ld %6ld %3ld | %10.1f %8.0f | %10.1f %8.0f | %s\n", s.name, s.n, s.k, m, us[0],
                  gbps(us[0]), us[1], gbps(us[1]), us[0] <= us[1] ? "GEMV" : "cuBLASLt");
    }
  }
  std::printf("(GB/s counts BF16 weight bytes only; HBM measured above is the memory-bound ceiling)\n");
  return 0;
}
