// Benchmark of MLA decode (absorbed MQA over the paged 576-wide BF16 latent cache) at FlashMLA's shapes: batch
// 128, q_len 1, s_k 4096..32768, 16 and 128 query heads, page 64. Prints us, GB/s of cache + q + out moved and
// TFLOPS, against the HBM bandwidth and BF16 peak this run measures.
#include <cstdio>
#include <vector>

#include "bench_util.h"
#include "ops/cuda/mla.h"

namespace {

using narwhal::DType;
using narwhal::Device;
using narwhal::Tensor;
namespace bench = narwhal::bench;

constexpr int64_t kBatch = 128, kPage = 64, kWidth = 576, kLatent = 512;

}  // namespace

int main() {
  cudaDeviceProp prop;
  NW_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double hbm = bench::measure_hbm_gbps(), peak = bench::measure_bf16_peak_tflops();
  std::printf("device %s (%d SMs): HBM %.0f GB/s (2 GB D2D copy), BF16 dense peak %.0f TFLOPS (cuBLASLt 8192^3)\n",
              prop.name, prop.multiProcessorCount, hbm, peak);

  const int64_t max_seq = 32768, pages_per_seq = max_seq / kPage;
  // One cache for every config: sequence b owns pages [b * pages_per_seq, ...), so a config reads kBatch * s_k
  // distinct rows (>= 600 MB, far past the 50 MB L2).
  Tensor cache = bench::random_device(DType::kBF16, {kBatch * pages_per_seq, kPage, kWidth}, 1);
  std::vector<int32_t> table(kBatch * pages_per_seq);
  for (int64_t i = 0; i < kBatch * pages_per_seq; ++i) table[i] = static_cast<int32_t>(i);
  const Tensor page_table = bench::device_i32(table, {kBatch, pages_per_seq});

  std::printf("\n%5s %6s %6s | %9s %8s %7s %8s %7s\n", "batch", "heads", "s_k", "time (us)", "GB/s", "% HBM",
              "TFLOPS", "% peak");
  for (int64_t heads : {16, 128}) {
    Tensor q = bench::random_device(DType::kBF16, {kBatch, heads, kWidth}, 2);
    Tensor out = Tensor::empty(DType::kBF16, {kBatch, heads, kLatent}, Device::kCUDA);
    narwhal::ops::cuda::MlaDecodeParams params;
    params.heads = heads;
    params.q_len = 1;
    params.softmax_scale = 0.0722f;
    params.page_size = kPage;
    const size_t ws_bytes = narwhal::ops::cuda::mla_decode_workspace_bytes(kBatch, params, prop.multiProcessorCount);
    Tensor workspace = Tensor::empty(DType::kBF16, {static_cast<int64_t>(ws_bytes / 2) + 1}, Device::kCUDA);
    for (int64_t s_k : {4096, 8192, 16384, 32768}) {
      const Tensor seq_lens = bench::device_i32(std::vector<int32_t>(kBatch, static_cast<int32_t>(s_k)), {kBatch});
      const double us = bench::median_us(
          [&](int) {
            narwhal::ops::cuda::mla_decode(q, cache, page_table, seq_lens, narwhal::Tensor{}, params, out,
                                           workspace.data, ws_bytes, nullptr);
          },
          30);
      const double bytes = static_cast<double>(kBatch) * (s_k * kWidth + heads * (kWidth + kLatent)) * 2.0;
      const double flops = 2.0 * kBatch * heads * s_k * (kWidth + kLatent);
      const double gbps = bytes / us * 1e-3, tflops = flops / us * 1e-6;
      std::printf("%5ld %6ld %6ld | %9.1f %8.0f %6.1f%% %8.1f %6.1f%%\n", kBatch, heads, s_k, us, gbps,
                  100.0 * gbps / hbm, tflops, 100.0 * tflops / peak);
    }
  }
  return 0;
}
