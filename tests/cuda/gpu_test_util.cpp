// GPU test helpers.
#include "cuda/gpu_test_util.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <numeric>
#include <random>

#include "core/cuda_check.h"

namespace narwhal::testing {

int gpu_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

bool gpu_available() { return gpu_count() > 0; }

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

RandomFp8 random_fp8_blocks(std::vector<int64_t> shape, uint64_t seed) {
  constexpr int64_t kBlock = 128;
  const int64_t rows = shape[shape.size() - 2], cols = shape.back(), batch = shape.size() == 3 ? shape[0] : 1;
  const int64_t row_blocks = (rows + kBlock - 1) / kBlock, col_blocks = (cols + kBlock - 1) / kBlock;
  std::vector<int64_t> scale_shape = shape;
  scale_shape[shape.size() - 2] = row_blocks;
  scale_shape.back() = col_blocks;
  RandomFp8 w{Tensor::zeros(DType::kF8E4M3, shape), Tensor::zeros(DType::kF32, scale_shape),
              Tensor::zeros(DType::kF32, shape), {}, {}};
  // Codes of magnitude 2^-6 .. 2^3 (and zero) with random signs: a spread like a quantized trained block.
  std::vector<uint8_t> codes;
  for (int bits = 0; bits < 256; ++bits) {
    const float v = std::fabs(fp8_e4m3_to_float(static_cast<uint8_t>(bits)));
    if (v == 0.0f || (v >= 0.015625f && v <= 8.0f)) codes.push_back(static_cast<uint8_t>(bits));
  }
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> scale_dist(0.5f, 1.5f);
  for (int64_t i = 0; i < w.scale_inv.numel(); ++i)
    w.scale_inv.f32()[i] = scale_dist(rng) / (4.0f * std::sqrt(static_cast<float>(cols)));
  uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;  // xorshift: the weights are large, mt19937 is slow here
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        const int64_t i = (b * rows + r) * cols + c;
        const uint8_t code = codes[(state >> 32) % codes.size()];
        w.q.ptr<uint8_t>()[i] = code;
        w.dequantized.f32()[i] =
            fp8_e4m3_to_float(code) * w.scale_inv.f32()[(b * row_blocks + r / kBlock) * col_blocks + c / kBlock];
      }
  w.q_device = w.q.to(Device::kCUDA);
  w.scale_inv_device = w.scale_inv.to(Device::kCUDA);
  return w;
}

Tensor device_i32(const std::vector<int32_t>& values, std::vector<int64_t> shape) {
  Tensor t = Tensor::zeros(DType::kI32, std::move(shape));
  std::copy(values.begin(), values.end(), t.ptr<int32_t>());
  return t.to(Device::kCUDA);
}

Tensor poisoned(DType dtype, std::vector<int64_t> shape) {
  Tensor t = Tensor::empty(dtype, std::move(shape), Device::kCUDA);
  NW_CUDA_CHECK(cudaMemset(t.data, 0xff, t.nbytes()));
  return t;
}

ScatteredPages scattered_pages(const std::vector<int64_t>& lengths, int64_t page_size, uint64_t seed) {
  ScatteredPages pages;
  pages.pool_pages = 3;
  for (int64_t len : lengths) {
    const int64_t n = (len + page_size - 1) / page_size;
    pages.max_pages = std::max(pages.max_pages, n);
    pages.pool_pages += n;
  }
  pages.max_pages = std::max<int64_t>(pages.max_pages, 1);
  std::vector<int32_t> pool(pages.pool_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), std::mt19937(static_cast<uint32_t>(seed)));
  pages.table.assign(lengths.size() * pages.max_pages, -1);
  int64_t next = 0;
  for (size_t s = 0; s < lengths.size(); ++s)
    for (int64_t p = 0; p * page_size < lengths[s]; ++p) pages.table[s * pages.max_pages + p] = pool[next++];
  return pages;
}

ErrorStats expect_close(const Tensor& device_result, const Tensor& reference, double tolerance,
                        const std::string& what) {
  const Tensor got = to_host_f32(device_result);
  EXPECT_EQ(got.numel(), reference.numel()) << what;
  if (got.numel() != reference.numel()) return {};
  const ErrorStats e = compare(got.f32(), reference.f32(), reference.numel());
  std::cout << "[ " << what << " ] max-abs " << e.max_abs << " rel " << e.rel << " (tolerance " << tolerance
            << ")\n";
  EXPECT_LE(e.rel, tolerance) << what << ": max-abs " << e.max_abs;
  return e;
}

json deepseek_dims_json(bool fp8) {
  json j = small_v3_config();
  j["hidden_size"] = 1024;
  j["num_hidden_layers"] = 2;
  j["num_attention_heads"] = 16;
  j["q_lora_rank"] = 512;
  j["kv_lora_rank"] = 512;
  j["qk_nope_head_dim"] = 128;
  j["qk_rope_head_dim"] = 64;
  j["v_head_dim"] = 128;
  j["intermediate_size"] = 1024;
  j["moe_intermediate_size"] = 256;
  j["n_routed_experts"] = 16;
  j["num_experts_per_tok"] = 4;
  j["n_shared_experts"] = 1;
  j["n_group"] = 4;
  j["topk_group"] = 2;
  j["vocab_size"] = 1000;
  j["max_position_embeddings"] = 4096;
  j["num_nextn_predict_layers"] = 0;
  if (fp8)
    j["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                                {"weight_block_size", {128, 128}}};
  return j;
}

}  // namespace narwhal::testing
