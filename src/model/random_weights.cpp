// Seeded random checkpoint tensors (counter-based, so every tensor and every element is generated
// independently and in parallel), FP8 block quantization, and a writer for checkpoints larger than memory.
#include "model/random_weights.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/progress.h"

namespace narwhal {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t hash_name(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Standard normals by Box-Muller over a counter hash: element i depends only on (key, i).
void fill_normal(float* out, int64_t n, uint64_t key) {
#pragma omp parallel for schedule(static)
  for (int64_t pair = 0; pair < (n + 1) / 2; ++pair) {
    const uint64_t bits = splitmix64(key ^ splitmix64(static_cast<uint64_t>(pair)));
    const double u1 = (static_cast<double>(bits >> 40) + 0.5) / static_cast<double>(1ull << 24);
    const double u2 = static_cast<double>(bits & 0xffffffull) / static_cast<double>(1ull << 24);
    const double r = std::sqrt(-2.0 * std::log(u1)), theta = 6.283185307179586 * u2;
    out[2 * pair] = static_cast<float>(r * std::cos(theta));
    if (2 * pair + 1 < n) out[2 * pair + 1] = static_cast<float>(r * std::sin(theta));
  }
}

Tensor random_f32(const TensorSpec& spec, uint64_t seed) {
  Tensor t = Tensor::zeros(DType::kF32, spec.shape);
  float* v = t.f32();
  fill_normal(v, t.numel(), splitmix64(seed) ^ hash_name(spec.name));
  const float std_dev = spec.role == TensorRole::kEmbedding ? 1.0f
                        : spec.role == TensorRole::kBias    ? 0.05f
                                                            : 1.0f / std::sqrt(static_cast<float>(spec.fan_in()));
  const float offset = spec.role == TensorRole::kNorm ? 1.0f : 0.0f;
  const float scale = spec.role == TensorRole::kNorm ? 0.1f : std_dev;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = offset + scale * v[i];
  return t;
}

Tensor to_bf16(const Tensor& f) {
  Tensor t = Tensor::zeros(DType::kBF16, f.shape);
  uint16_t* out = t.ptr<uint16_t>();
  const float* in = f.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < f.numel(); ++i) out[i] = float_to_bf16(in[i]);
  return t;
}

bool stored_fp8(const TensorSpec& spec, bool fp8) { return fp8 && spec.role == TensorRole::kLinear; }

}  // namespace

std::pair<Tensor, Tensor> quantize_fp8_blockwise(const Tensor& w, int block_n, int block_k) {
  const int64_t rows = w.size(0), cols = w.size(1);
  const int64_t brows = (rows + block_n - 1) / block_n, bcols = (cols + block_k - 1) / block_k;
  Tensor q = Tensor::zeros(DType::kF8E4M3, {rows, cols});
  Tensor scale = Tensor::zeros(DType::kF32, {brows, bcols});
#pragma omp parallel for schedule(dynamic)
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

std::vector<std::pair<std::string, Tensor>> random_spec_tensors(const TensorSpec& spec, uint64_t seed, bool fp8,
                                                                const Fp8Config& blocks) {
  Tensor values = random_f32(spec, seed);
  if (spec.role == TensorRole::kBias) return {{spec.name, values}};
  if (stored_fp8(spec, fp8)) {
    auto [q, scale] = quantize_fp8_blockwise(values, blocks.block_n, blocks.block_k);
    return {{spec.name, q}, {spec.name + "_scale_inv", scale}};
  }
  return {{spec.name, to_bf16(values)}};
}

std::vector<std::pair<std::string, Tensor>> random_checkpoint_tensors(const ModelConfig& config, uint64_t seed,
                                                                      bool fp8) {
  const Fp8Config blocks = config.fp8.value_or(Fp8Config{});
  std::vector<std::pair<std::string, Tensor>> out;
  for (const TensorSpec& spec : checkpoint_tensors(config))
    for (auto& entry : random_spec_tensors(spec, seed, fp8, blocks)) out.push_back(std::move(entry));
  return out;
}

void write_random_checkpoint(const std::string& dir, const std::string& config_json, const ModelConfig& config,
                             uint64_t seed, bool fp8, int64_t shard_bytes) {
  const Fp8Config blocks = config.fp8.value_or(Fp8Config{});
  const std::vector<TensorSpec> specs = checkpoint_tensors(config);
  std::vector<int64_t> bytes;
  for (const TensorSpec& spec : specs) {
    int64_t numel = 1;
    for (int64_t d : spec.shape) numel *= d;
    int64_t b = numel * (spec.role == TensorRole::kBias ? 4 : stored_fp8(spec, fp8) ? 1 : 2);
    if (stored_fp8(spec, fp8))
      b += 4 * ((spec.shape[0] + blocks.block_n - 1) / blocks.block_n) *
           ((spec.shape[1] + blocks.block_k - 1) / blocks.block_k);
    bytes.push_back(b);
  }
  int64_t total = 0;
  for (int64_t b : bytes) total += b;
  NW_CHECK(shard_bytes > 0, dir, ": shard size must be positive");
  const int num_shards = static_cast<int>(std::max<int64_t>(1, (total + shard_bytes - 1) / shard_bytes));
  const std::vector<size_t> ends = plan_shards(bytes, num_shards);
  CheckpointWriter writer(dir, config_json, static_cast<int>(ends.size()));
  ProgressBar progress("Writing " + dir, static_cast<int64_t>(specs.size()));
  size_t begin = 0;
  for (size_t end : ends) {
    std::vector<std::pair<std::string, Tensor>> shard;
    for (size_t i = begin; i < end; ++i, progress.advance())
      for (auto& entry : random_spec_tensors(specs[i], seed, fp8, blocks)) shard.push_back(std::move(entry));
    writer.write_shard(shard);
    begin = end;
  }
  writer.finish();
  progress.finish();
}

}  // namespace narwhal
