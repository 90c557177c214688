// Official DeepSeek checkpoint layout (tensor names and shapes) and a sharded checkpoint writer.
#include "model/checkpoint_layout.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/json.h"
#include "model/safetensors.h"

namespace narwhal {

namespace {

void add_mlp(std::vector<TensorSpec>& out, const std::string& p, int64_t hidden, int64_t inter) {
  out.push_back({p + "gate_proj.weight", {inter, hidden}, TensorRole::kLinear});
  out.push_back({p + "up_proj.weight", {inter, hidden}, TensorRole::kLinear});
  out.push_back({p + "down_proj.weight", {hidden, inter}, TensorRole::kLinear});
}

void add_layer(std::vector<TensorSpec>& out, const ModelConfig& c, int layer) {
  const std::string p = cat("model.layers.", layer, ".");
  const int64_t h = c.num_attention_heads, hidden = c.hidden_size;
  out.push_back({p + "input_layernorm.weight", {hidden}, TensorRole::kNorm});
  out.push_back({p + "post_attention_layernorm.weight", {hidden}, TensorRole::kNorm});
  const std::string a = p + "self_attn.";
  if (c.q_lora_rank) {
    out.push_back({a + "q_a_proj.weight", {*c.q_lora_rank, hidden}, TensorRole::kLinear});
    out.push_back({a + "q_a_layernorm.weight", {*c.q_lora_rank}, TensorRole::kNorm});
    out.push_back({a + "q_b_proj.weight", {h * c.qk_head_dim(), *c.q_lora_rank}, TensorRole::kLinear});
  } else {
    out.push_back({a + "q_proj.weight", {h * c.qk_head_dim(), hidden}, TensorRole::kLinear});
  }
  out.push_back({a + "kv_a_proj_with_mqa.weight", {c.kv_cache_dim(), hidden}, TensorRole::kLinear});
  out.push_back({a + "kv_a_layernorm.weight", {c.kv_lora_rank}, TensorRole::kNorm});
  out.push_back({a + "kv_b_proj.weight", {h * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank},
                 TensorRole::kLinear});
  out.push_back({a + "o_proj.weight", {hidden, h * c.v_head_dim}, TensorRole::kLinear});
  const std::string m = p + "mlp.";
  if (!c.is_moe_layer(layer)) {
    add_mlp(out, m, hidden, c.intermediate_size);
    return;
  }
  out.push_back({m + "gate.weight", {c.n_routed_experts, hidden}, TensorRole::kPlainLinear});
  if (c.topk_method == TopkMethod::kNoauxTc)
    out.push_back({m + "gate.e_score_correction_bias", {c.n_routed_experts}, TensorRole::kBias});
  for (int e = 0; e < c.n_routed_experts; ++e) add_mlp(out, cat(m, "experts.", e, "."), hidden, c.moe_intermediate_size);
  if (c.n_shared_experts > 0)
    add_mlp(out, m + "shared_experts.", hidden, c.n_shared_experts * c.moe_intermediate_size);
}

}  // namespace

std::vector<TensorSpec> checkpoint_tensors(const ModelConfig& c) {
  const int64_t hidden = c.hidden_size;
  std::vector<TensorSpec> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, hidden}, TensorRole::kEmbedding});
  for (int layer = 0; layer < c.num_hidden_layers; ++layer) add_layer(out, c, layer);
  out.push_back({"model.norm.weight", {hidden}, TensorRole::kNorm});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, hidden}, TensorRole::kPlainLinear});
  for (int k = 0; k < c.num_nextn_predict_layers; ++k) {
    const int layer = c.num_hidden_layers + k;
    const std::string p = cat("model.layers.", layer, ".");
    out.push_back({p + "enorm.weight", {hidden}, TensorRole::kNorm});
    out.push_back({p + "hnorm.weight", {hidden}, TensorRole::kNorm});
    out.push_back({p + "eh_proj.weight", {hidden, 2 * hidden}, TensorRole::kPlainLinear});
    add_layer(out, c, layer);
    out.push_back({p + "shared_head.norm.weight", {hidden}, TensorRole::kNorm});
  }
  return out;
}

std::vector<size_t> plan_shards(const std::vector<int64_t>& bytes, int num_shards) {
  int64_t total = 0;
  for (int64_t b : bytes) total += b;
  std::vector<size_t> ends;
  size_t end = 0;
  int64_t written = 0;
  for (int shard = 0; shard < num_shards; ++shard) {
    const int64_t target = total * (shard + 1) / num_shards;
    while (end < bytes.size() && (written < target || shard == num_shards - 1)) written += bytes[end++];
    ends.push_back(end);
  }
  return ends;
}

CheckpointWriter::CheckpointWriter(std::string dir, const std::string& config_json, int num_shards)
    : dir_(std::move(dir)), num_shards_(num_shards) {
  namespace fs = std::filesystem;
  fs::create_directories(dir_);
  std::ofstream config(fs::path(dir_) / "config.json");
  config << config_json << "\n";
  NW_CHECK(config.good(), dir_, "/config.json: write failed");
}

void CheckpointWriter::write_shard(const std::vector<std::pair<std::string, Tensor>>& tensors) {
  NW_CHECK(next_shard_ < num_shards_, dir_, ": more shards written than announced (", num_shards_, ")");
  char file_name[64];
  std::snprintf(file_name, sizeof file_name, "model-%05d-of-%05d.safetensors", ++next_shard_, num_shards_);
  for (const auto& [name, tensor] : tensors) {
    weight_map_[name] = file_name;
    total_bytes_ += tensor.nbytes();
  }
  write_safetensors((std::filesystem::path(dir_) / file_name).string(), tensors);
}

void CheckpointWriter::finish() {
  NW_CHECK(next_shard_ == num_shards_, dir_, ": ", next_shard_, " of ", num_shards_, " shards written");
  json index = {{"metadata", {{"total_size", total_bytes_}}}, {"weight_map", weight_map_}};
  std::ofstream out(std::filesystem::path(dir_) / "model.safetensors.index.json");
  out << index.dump(2) << "\n";
  NW_CHECK(out.good(), dir_, "/model.safetensors.index.json: write failed");
}

void write_checkpoint(const std::string& dir, const std::string& config_json,
                      const std::vector<std::pair<std::string, Tensor>>& tensors, int num_shards) {
  std::vector<int64_t> bytes;
  for (const auto& entry : tensors) bytes.push_back(static_cast<int64_t>(entry.second.nbytes()));
  CheckpointWriter writer(dir, config_json, num_shards);
  size_t begin = 0;
  for (size_t end : plan_shards(bytes, num_shards)) {
    writer.write_shard({tensors.begin() + begin, tensors.begin() + end});
    begin = end;
  }
  writer.finish();
}

}  // namespace narwhal
