// The configs of make-model's presets, copied from the released DeepSeek checkpoints where they have one.
#include "model/model_presets.h"

#include <algorithm>

#include "core/error.h"

namespace narwhal {

namespace {

json yarn(double factor, double mscale) {
  return {{"type", "yarn"}, {"factor", factor}, {"original_max_position_embeddings", 4096}, {"beta_fast", 32},
          {"beta_slow", 1}, {"mscale", mscale}, {"mscale_all_dim", mscale}};
}

// DeepSeek-V3's architecture at a size a CPU runs interactively: YaRN, noaux_tc routing, one MTP layer,
// and the real V3 vocabulary so the real tokenizer fits it.
json tiny_v3() {
  return {{"architectures", {"DeepseekV3ForCausalLM"}}, {"model_type", "deepseek_v3"}, {"vocab_size", 129280},
          {"hidden_size", 256}, {"intermediate_size", 768}, {"moe_intermediate_size", 128},
          {"num_hidden_layers", 4}, {"num_attention_heads", 4}, {"num_key_value_heads", 4}, {"q_lora_rank", 192},
          {"kv_lora_rank", 128}, {"qk_nope_head_dim", 32}, {"qk_rope_head_dim", 32}, {"v_head_dim", 32},
          {"n_routed_experts", 16}, {"n_shared_experts", 1}, {"num_experts_per_tok", 4}, {"n_group", 4},
          {"topk_group", 2}, {"topk_method", "noaux_tc"}, {"scoring_func", "sigmoid"}, {"norm_topk_prob", true},
          {"routed_scaling_factor", 2.5}, {"first_k_dense_replace", 1}, {"moe_layer_freq", 1},
          {"num_nextn_predict_layers", 1}, {"hidden_act", "silu"}, {"rms_norm_eps", 1e-6},
          {"max_position_embeddings", 16384}, {"rope_theta", 10000}, {"rope_scaling", yarn(4, 1.0)},
          {"bos_token_id", 0}, {"eos_token_id", 1}, {"tie_word_embeddings", false}, {"torch_dtype", "bfloat16"}};
}

// deepseek-ai/DeepSeek-V2-Lite (15.7B parameters, 2.4B active).
json v2_lite() {
  return {{"architectures", {"DeepseekV2ForCausalLM"}}, {"model_type", "deepseek_v2"}, {"vocab_size", 102400},
          {"hidden_size", 2048}, {"intermediate_size", 10944}, {"moe_intermediate_size", 1408},
          {"num_hidden_layers", 27}, {"num_attention_heads", 16}, {"num_key_value_heads", 16},
          {"q_lora_rank", nullptr}, {"kv_lora_rank", 512}, {"qk_nope_head_dim", 128}, {"qk_rope_head_dim", 64},
          {"v_head_dim", 128}, {"n_routed_experts", 64}, {"n_shared_experts", 2}, {"num_experts_per_tok", 6},
          {"n_group", 1}, {"topk_group", 1}, {"topk_method", "greedy"}, {"scoring_func", "softmax"},
          {"norm_topk_prob", false}, {"routed_scaling_factor", 1.0}, {"first_k_dense_replace", 1},
          {"moe_layer_freq", 1}, {"hidden_act", "silu"}, {"rms_norm_eps", 1e-6},
          {"max_position_embeddings", 163840}, {"rope_theta", 10000}, {"rope_scaling", yarn(40, 0.707)},
          {"bos_token_id", 100000}, {"eos_token_id", 100001}, {"tie_word_embeddings", false},
          {"torch_dtype", "bfloat16"}};
}

// deepseek-ai/DeepSeek-V3 (671B parameters, 37B active).
json v3() {
  return {{"architectures", {"DeepseekV3ForCausalLM"}}, {"model_type", "deepseek_v3"}, {"vocab_size", 129280},
          {"hidden_size", 7168}, {"intermediate_size", 18432}, {"moe_intermediate_size", 2048},
          {"num_hidden_layers", 61}, {"num_attention_heads", 128}, {"num_key_value_heads", 128},
          {"q_lora_rank", 1536}, {"kv_lora_rank", 512}, {"qk_nope_head_dim", 128}, {"qk_rope_head_dim", 64},
          {"v_head_dim", 128}, {"n_routed_experts", 256}, {"n_shared_experts", 1}, {"num_experts_per_tok", 8},
          {"n_group", 8}, {"topk_group", 4}, {"topk_method", "noaux_tc"}, {"scoring_func", "sigmoid"},
          {"norm_topk_prob", true}, {"routed_scaling_factor", 2.5}, {"first_k_dense_replace", 3},
          {"moe_layer_freq", 1}, {"num_nextn_predict_layers", 1}, {"hidden_act", "silu"}, {"rms_norm_eps", 1e-6},
          {"max_position_embeddings", 163840}, {"rope_theta", 10000}, {"rope_scaling", yarn(40, 1.0)},
          {"bos_token_id", 0}, {"eos_token_id", 1}, {"tie_word_embeddings", false}, {"torch_dtype", "bfloat16"}};
}

}  // namespace

json model_preset_config(const std::string& name, int num_layers, bool fp8) {
  json config = name == "tiny" ? tiny_v3() : name == "v2-lite" ? v2_lite() : name == "v3" ? v3() : json();
  NW_CHECK(!config.is_null(), "--preset ", name, ": unknown preset (available: ", kModelPresetNames, ")");
  if (num_layers > 0) {
    config["num_hidden_layers"] = num_layers;
    // A cut model keeps its dense layers only where it still has room for MoE ones, and no MTP layer: it
    // exists to measure layer shapes, and the MTP layer of a full-size config is a whole extra MoE layer.
    config["first_k_dense_replace"] = std::min(config["first_k_dense_replace"].get<int>(), num_layers - 1);
    config["num_nextn_predict_layers"] = 0;
  }
  if (fp8)
    config["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                                     {"weight_block_size", {128, 128}}};
  return config;
}

}  // namespace narwhal
