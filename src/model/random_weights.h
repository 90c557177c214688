// Random weights in checkpoint layout (for the bundled tiny model, tests and benchmarks), and FP8
// block quantization as DeepSeek-V3's release stores it.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "model/checkpoint_layout.h"

namespace narwhal {

// One tensor per checkpoint_tensors(config) entry, seeded: linears N(0, 1/fan_in), embeddings N(0, 1),
// norm weights 1 + 0.1 N(0, 1) (so they are not all ones), the correction bias 0.05 N(0, 1) in F32,
// everything else BF16. With `fp8`, kLinear weights become F8_E4M3 plus `<name>_scale_inv` block scales.
std::vector<std::pair<std::string, Tensor>> random_checkpoint_tensors(const ModelConfig& config, uint64_t seed,
                                                                      bool fp8 = false);

// The tensors of one checkpoint entry (two when stored FP8: the weight and its `_scale_inv`); depends only on
// (seed, spec.name), so entries can be generated in any order.
std::vector<std::pair<std::string, Tensor>> random_spec_tensors(const TensorSpec& spec, uint64_t seed, bool fp8,
                                                                const Fp8Config& blocks);

// Writes a random checkpoint of any size, shard by shard (each about `shard_bytes`), with a progress bar:
// the full-size checkpoints for benchmarks (DeepSeek-V2-Lite is 31 GB in BF16).
void write_random_checkpoint(const std::string& dir, const std::string& config_json, const ModelConfig& config,
                             uint64_t seed, bool fp8, int64_t shard_bytes);

// Block-wise FP8 e4m3 quantization of an F32 matrix: per block scale = amax / 448, q = w / scale.
// Returns {F8_E4M3 weight, F32 scale_inv [ceil(rows/block_n), ceil(cols/block_k)]}.
std::pair<Tensor, Tensor> quantize_fp8_blockwise(const Tensor& weight, int block_n, int block_k);

}  // namespace narwhal
