// GPU test helpers.
#include "cuda/gpu_test_util.h"

#include <cuda_runtime.h>

#include <random>

#include "core/cuda_check.h"

namespace narwhal::testing {

bool gpu_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

RandomBf16 random_bf16(std::vector<int64_t> shape, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  Tensor bits = Tensor::zeros(DType::kBF16, shape);
  Tensor host = Tensor::zeros(DType::kF32, shape);
  for (int64_t i = 0; i < host.numel(); ++i) {
    bits.ptr<uint16_t>()[i] = float_to_bf16(normal(rng));
    host.f32()[i] = bf16_to_float(bits.ptr<uint16_t>()[i]);
  }
  return {host, bits.to(Device::kCUDA)};
}

Tensor to_host_f32(const Tensor& device_tensor) {
  Tensor raw = device_tensor.to(Device::kCPU);
  if (raw.dtype == DType::kF32) return raw;
  Tensor out = Tensor::zeros(DType::kF32, raw.shape);
  for (int64_t i = 0; i < raw.numel(); ++i) out.f32()[i] = bf16_to_float(raw.ptr<uint16_t>()[i]);
  return out;
}

}  // namespace narwhal::testing
