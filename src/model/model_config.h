// ModelConfig: the architecture read from a checkpoint's config.json (official DeepSeek or transformers v5 layout).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/json.h"

namespace narwhal {

enum class ModelType { kDeepseekV2, kDeepseekV3 };
enum class ScoringFunc { kSoftmax, kSigmoid };
enum class TopkMethod { kGreedy, kGroupLimitedGreedy, kNoauxTc };

// Rotary embedding parameters after both layouts are normalised (`rope_scaling` + `rope_theta`, or
// `rope_parameters`). Only "default" and "yarn" exist in DeepSeek checkpoints; others are rejected.
struct RopeConfig {
  double theta = 10000.0;
  bool yarn = false;
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  std::optional<double> mscale;
  std::optional<double> mscale_all_dim;
  std::optional<double> attention_factor;
  bool truncate = true;
  // Interleaved pairs (x0,x1),(x2,x3).. as DeepSeek lays out q_pe/k_pe; false = NeoX halves (V3 rope_interleave=false).
  bool interleave = true;
};

// FP8 block quantization of linear weights (`quantization_config`, quant_method fp8).
struct Fp8Config {
  int block_n = 128;  // rows (output features) per scale block
  int block_k = 128;  // columns (input features) per scale block
};

struct ModelConfig {
  ModelType model_type = ModelType::kDeepseekV3;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  std::optional<int64_t> q_lora_rank;  // null: q comes from one q_proj (V2-Lite)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t moe_intermediate_size = 0;
  int n_routed_experts = 0;  // 0: every layer is dense
  int n_shared_experts = 0;
  int num_experts_per_tok = 0;
  int first_k_dense_replace = 0;
  int moe_layer_freq = 1;
  int n_group = 1;
  int topk_group = 1;
  TopkMethod topk_method = TopkMethod::kGreedy;
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  int num_nextn_predict_layers = 0;
  std::optional<int> bos_token_id;
  std::vector<int> eos_token_ids;
  std::optional<Fp8Config> fp8;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Width of one token's MLA latent cache entry: compressed kv + the shared rope key.
  int64_t kv_cache_dim() const { return kv_lora_rank + qk_rope_head_dim; }
  // Layer index >= num_hidden_layers are MTP layers; the same rule decides MoE for them.
  bool is_moe_layer(int layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  // Whether routed weights are renormalised to sum 1 before routed_scaling_factor.
  bool renormalize_topk() const;
  // Softmax scale of attention: qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 under YaRN.
  double softmax_scale() const;
  // Per-pair inverse frequencies of the rotary embedding (qk_rope_head_dim / 2 values, float32 as torch computes them).
  std::vector<float> rope_inv_freq() const;
  // Factor applied to cos and sin (YaRN's attention factor; 1 otherwise).
  float rope_attention_scaling() const;

  // Parses config.json text; `source` names the file in error messages.
  static ModelConfig from_json(const json& j, const std::string& source);
  static ModelConfig from_file(const std::string& path);
};

const char* topk_method_name(TopkMethod m);

}  // namespace narwhal
