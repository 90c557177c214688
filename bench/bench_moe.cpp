// Benchmark of the fused MoE (ops::cuda::moe_experts: sort/align, grouped gate_up GEMM + SiLU-and-mul, grouped down
// GEMM, weighted sum; shared experts folded in) at V2-Lite (BF16, whole model on one GPU) and a V3 TP-8 rank (FP8,
// intermediate 2048 / 8) shapes, 1..4096 tokens with uniform random routing. Prints ms, GB/s of the expert weights
// the step touches, TFLOPS, and the time over its roofline floor max(bytes / HBM, FLOPs / BF16 peak).
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "bench_util.h"
#include "ops/cuda/moe.h"

namespace {

using narwhal::DType;
using narwhal::Device;
using narwhal::Tensor;
namespace bench = narwhal::bench;

struct MoeShape {
  const char* name;
  int64_t hidden, inter;
  int routed, shared, top_k;
  bool fp8;
};

constexpr int kRoutings = 8;  // routing sets cycled per run, so small-T runs do not find their experts in L2

struct Routing {
  Tensor ids, weights;
  int64_t experts_touched = 0;
};

Routing random_routing(int64_t tokens, const MoeShape& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> experts(s.routed), ids;
  std::iota(experts.begin(), experts.end(), 0);
  std::vector<char> touched(s.routed, 0);
  for (int64_t t = 0; t < tokens; ++t) {
    std::shuffle(experts.begin(), experts.end(), rng);
    for (int j = 0; j < s.top_k; ++j) {
      ids.push_back(experts[j]);
      touched[experts[j]] = 1;
    }
  }
  Routing r;
  r.ids = bench::device_i32(ids, {tokens, s.top_k});
  r.weights = Tensor::from_floats(std::vector<float>(tokens * s.top_k, 0.3f), {tokens, s.top_k}).to(Device::kCUDA);
  r.experts_touched = std::count(touched.begin(), touched.end(), 1) + s.shared;
  return r;
}

}  // namespace

int main() {
  cudaDeviceProp prop;
  NW_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double hbm = bench::measure_hbm_gbps(), peak = bench::measure_bf16_peak_tflops();
  std::printf("device %s: HBM %.0f GB/s (2 GB D2D copy), BF16 dense peak %.0f TFLOPS (cuBLASLt 8192^3)\n",
              prop.name, hbm, peak);

  const MoeShape shapes[] = {{"V2-Lite bf16", 2048, 1408, 64, 2, 6, false},
                             {"V3 TP8-rank fp8", 7168, 256, 256, 1, 8, true}};
  const int64_t max_tokens = 4096;
  std::printf("\n%-16s %6s | %9s %9s %8s %8s %8s\n", "shape", "tokens", "time (ms)", "W GB/s", "TFLOPS",
              "floor ms", "x floor");
  for (const MoeShape& s : shapes) {
    const int64_t experts = s.routed + s.shared;
    const DType wtype = s.fp8 ? DType::kF8E4M3 : DType::kBF16;
    narwhal::ops::cuda::MoeExpertWeights w;
    w.num_shared = s.shared;
    w.gate_up = bench::random_device(wtype, {experts, 2 * s.inter, s.hidden}, 1);
    w.down = bench::random_device(wtype, {experts, s.hidden, s.inter}, 2);
    if (s.fp8) {
      w.gate_up_scale_inv =
          bench::random_host(DType::kF32, {experts, 2 * s.inter / 128, s.hidden / 128}, 3).to(Device::kCUDA);
      w.down_scale_inv =
          bench::random_host(DType::kF32, {experts, s.hidden / 128, s.inter / 128}, 4).to(Device::kCUDA);
    }
    const double expert_bytes = 3.0 * s.hidden * s.inter * (s.fp8 ? 1 : 2);
    const size_t ws_bytes = narwhal::ops::cuda::moe_experts_workspace_bytes(max_tokens, s.top_k, w);
    Tensor workspace = Tensor::empty(DType::kBF16, {static_cast<int64_t>(ws_bytes / 2) + 1}, Device::kCUDA);
    Tensor x = bench::random_device(DType::kBF16, {max_tokens, s.hidden}, 5);
    Tensor out = Tensor::empty(DType::kBF16, {max_tokens, s.hidden}, Device::kCUDA);
    for (int64_t tokens : {1, 8, 64, 256, 1024, 4096}) {
      std::vector<Routing> routings;
      double touched = 0;
      for (int r = 0; r < kRoutings; ++r) {
        routings.push_back(random_routing(tokens, s, 100 + r));
        touched += routings.back().experts_touched;
      }
      touched /= kRoutings;
      Tensor x_t = x.rows(0, tokens), out_t = out.rows(0, tokens);
      const double us = bench::median_us(
          [&](int i) {
            const Routing& r = routings[i % kRoutings];
            narwhal::ops::cuda::moe_experts(x_t, r.ids, r.weights, w, out_t, workspace.data, ws_bytes, nullptr);
          },
          20);
      const double bytes = touched * expert_bytes + 2.0 * tokens * s.hidden * 2;
      const double flops = 6.0 * tokens * (s.top_k + s.shared) * s.hidden * s.inter;
      const double floor_us = std::max(bytes / hbm * 1e-3, flops / peak * 1e-6);
      std::printf("%-16s %6ld | %9.3f %9.0f %8.1f %8.3f %8.2f\n", s.name, tokens, us * 1e-3,
                  touched * expert_bytes / us * 1e-3, flops / us * 1e-6, floor_us * 1e-3, us / floor_us);
    }
  }
  std::printf("(floor: touched expert weights / HBM vs FLOPs / BF16 peak; the kernel computes FP8 weights in BF16)\n");
  return 0;
}
