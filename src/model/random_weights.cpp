// Seeded random checkpoint tensors and FP8 block quantization.
#include "model/random_weights.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace narwhal {

namespace {

Tensor random_f32(const TensorSpec& spec, std::mt19937_64& rng) {
  Tensor t = Tensor::zeros(DType::kF32, spec.shape);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float std_dev = spec.role == TensorRole::kEmbedding ? 1.0f
                        : spec.role == TensorRole::kBias    ? 0.05f
                                                            : 1.0f / std::sqrt(static_cast<float>(spec.fan_in()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = normal(rng);
    t.f32()[i] = spec.role == TensorRole::kNorm ? 1.0f + 0.1f * v : std_dev * v;
  }
  return t;
}

Tensor to_bf16(const Tensor& f) {
  Tensor t = Tensor::zeros(DType::kBF16, f.shape);
  for (int64_t i = 0; i < f.numel(); ++i) t.ptr<uint16_t>()[i] = float_to_bf16(f.f32()[i]);
  return t;
}

}  // namespace

std::pair<Tensor, Tensor> quantize_fp8_blockwise(const Tensor& w, int block_n, int block_k) {
  const int64_t rows = w.size(0), cols = w.size(1);
  const int64_t brows = (rows + block_n - 1) / block_n, bcols = (cols + block_k - 1) / block_k;
  Tensor q = Tensor::zeros(DType::kF8E4M3, {rows, cols});
  Tensor scale = Tensor::zeros(DType::kF32, {brows, bcols});
  for (int64_t br = 0; br < brows; ++br)
    for (int64_t bc = 0; bc < bcols; ++bc) {
      const int64_t r_end = std::min(rows, (br + 1) * block_n), c_end = std::min(cols, (bc + 1) * block_k);
      float amax = 0.0f;
      for (int64_t r = br * block_n; r < r_end; ++r)
        for (int64_t c = bc * block_k; c < c_end; ++c) amax = std::max(amax, std::fabs(w.f32()[r * cols + c]));
      const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
      scale.f32()[br * bcols + bc] = s;
      for (int64_t r = br * block_n; r < r_end; ++r)
        for (int64_t c = bc * block_k; c < c_end; ++c)
          q.ptr<uint8_t>()[r * cols + c] = float_to_fp8_e4m3(w.f32()[r * cols + c] / s);
    }
  return {q, scale};
}

std::vector<std::pair<std::string, Tensor>> random_checkpoint_tensors(const ModelConfig& config, uint64_t seed,
                                                                      bool fp8) {
  std::mt19937_64 rng(seed);
  const Fp8Config blocks = config.fp8.value_or(Fp8Config{});
  std::vector<std::pair<std::string, Tensor>> out;
  for (const TensorSpec& spec : checkpoint_tensors(config)) {
    Tensor values = random_f32(spec, rng);
    if (spec.role == TensorRole::kBias) {
      out.emplace_back(spec.name, values);
    } else if (fp8 && spec.role == TensorRole::kLinear) {
      auto [q, scale] = quantize_fp8_blockwise(values, blocks.block_n, blocks.block_k);
      out.emplace_back(spec.name, q);
      out.emplace_back(spec.name + "_scale_inv", scale);
    } else {
      out.emplace_back(spec.name, to_bf16(values));
    }
  }
  return out;
}

}  // namespace narwhal
