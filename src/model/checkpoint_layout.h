// The tensor names and shapes of a DeepSeek checkpoint in the official Hugging Face layout, from its config.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "core/json.h"
#include "model/model_config.h"

namespace narwhal {

// kLinear weights are the ones DeepSeek-V3's release stores in FP8; kPlainLinear ones (lm_head, router,
// MTP eh_proj) stay BF16 there.
enum class TensorRole { kNorm, kEmbedding, kLinear, kPlainLinear, kBias };

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  TensorRole role;
  int64_t fan_in() const { return shape.size() == 2 ? shape[1] : 1; }
};

// Every tensor of the main model and of `config.num_nextn_predict_layers` MTP layers, per-expert names.
std::vector<TensorSpec> checkpoint_tensors(const ModelConfig& config);

// Split points of tensors with these byte sizes into `num_shards` shards of roughly equal size, in order:
// shard k holds tensors [ends[k-1], ends[k]).
std::vector<size_t> plan_shards(const std::vector<int64_t>& bytes, int num_shards);

// Writes a sharded checkpoint one shard at a time (so one larger than memory can be produced piece by
// piece): config.json at construction, model-0000k-of-0000n.safetensors per write_shard, the index at finish.
class CheckpointWriter {
 public:
  CheckpointWriter(std::string dir, const std::string& config_json, int num_shards);
  void write_shard(const std::vector<std::pair<std::string, Tensor>>& tensors);
  void finish();

 private:
  std::string dir_;
  int num_shards_;
  int next_shard_ = 0;
  json weight_map_ = json::object();
  size_t total_bytes_ = 0;
};

// Writes config.json, `num_shards` safetensors shards and model.safetensors.index.json into `dir`.
// `tensors` are host tensors in any dtype, already in checkpoint layout.
void write_checkpoint(const std::string& dir, const std::string& config_json,
                      const std::vector<std::pair<std::string, Tensor>>& tensors, int num_shards);

}  // namespace narwhal
