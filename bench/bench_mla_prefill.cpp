// Benchmark of MLA prefill attention (varlen causal flash attention over decompressed K/V): us, TFLOPS and %
// of the bf16 tensor-core peak, which this run measures with a large cuBLASLt GEMM.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "bench_util.h"
#include "core/cuda_check.h"
#include "core/dtype.h"
#include "core/tensor.h"
#include "ops/cuda/mla.h"

namespace {

using narwhal::DType;
using narwhal::Device;
using narwhal::Tensor;
using narwhal::bench::median_us;

constexpr int64_t kQk = 192, kKv = 256, kV = 128, kLatentWidth = 576;

struct Config {
  int64_t heads, batch, fresh, prefix;
};

}  // namespace

int main() {
  cudaDeviceProp prop;
  NW_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double peak = narwhal::bench::measure_bf16_peak_tflops();
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
  Tensor q = narwhal::bench::random_device(DType::kBF16, {max_tokens_heads, kQk}, 3);
  Tensor kv = narwhal::bench::random_device(DType::kBF16, {max_keys_heads, kKv}, 4);
  Tensor latents = narwhal::bench::random_device(DType::kBF16, {max_keys, kLatentWidth}, 5);
  Tensor out = Tensor::empty(DType::kBF16, {max_tokens_heads, kV}, Device::kCUDA);

  std::printf("\n%5s %5s %6s %6s | %10s %8s %7s\n", "heads", "batch", "new", "prefix", "time (us)", "TFLOPS",
              "% peak");
  for (const Config& c : configs) {
    std::vector<int32_t> cu_q{0}, cu_k{0};
    for (int64_t b = 0; b < c.batch; ++b) {
      cu_q.push_back(static_cast<int32_t>(cu_q.back() + c.fresh));
      cu_k.push_back(static_cast<int32_t>(cu_k.back() + c.prefix + c.fresh));
    }
    Tensor cu_q_dev = narwhal::bench::device_i32(cu_q, {c.batch + 1});
    Tensor cu_k_dev = narwhal::bench::device_i32(cu_k, {c.batch + 1});
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
