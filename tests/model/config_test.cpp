// config.json parsing: both layouts, per-model-type defaults, YaRN numbers, and errors naming the field.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "model/model_config.h"
#include "test_util.h"

namespace narwhal {
namespace {

std::string parse_error(const json& j) {
  try {
    ModelConfig::from_json(j, "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "parsed: " << j.dump();
  return "";
}

TEST(ModelConfig, OfficialV3Layout) {
  ModelConfig c = ModelConfig::from_json(testing::small_v3_config(), "cfg.json");
  EXPECT_EQ(c.model_type, ModelType::kDeepseekV3);
  EXPECT_EQ(c.q_lora_rank, 48);
  EXPECT_EQ(c.topk_method, TopkMethod::kNoauxTc);
  EXPECT_EQ(c.scoring_func, ScoringFunc::kSigmoid);
  EXPECT_TRUE(c.rope.yarn);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 64);
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{1});
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_FALSE(c.is_moe_layer(0));
}

TEST(ModelConfig, TransformersV5LayoutInfersRoutingFromModelType) {
  json j = testing::small_v3_config();
  j["architectures"] = nullptr;
  for (const char* key : {"topk_method", "scoring_func", "rope_scaling", "rope_theta", "norm_topk_prob"}) j.erase(key);
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 50000.0}, {"factor", 4.0},
                          {"original_max_position_embeddings", 64}, {"mscale", 1.0}, {"mscale_all_dim", 0.707}};
  ModelConfig c = ModelConfig::from_json(j, "cfg.json");
  EXPECT_EQ(c.topk_method, TopkMethod::kNoauxTc);
  EXPECT_EQ(c.scoring_func, ScoringFunc::kSigmoid);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.rope.theta, 50000.0);
  EXPECT_TRUE(c.rope.yarn);

  json v2 = j;
  v2["model_type"] = "deepseek_v2";
  v2["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
  v2["q_lora_rank"] = nullptr;
  ModelConfig c2 = ModelConfig::from_json(v2, "cfg.json");
  EXPECT_EQ(c2.topk_method, TopkMethod::kGreedy);
  EXPECT_EQ(c2.scoring_func, ScoringFunc::kSoftmax);
  EXPECT_FALSE(c2.q_lora_rank.has_value());
  EXPECT_FALSE(c2.rope.yarn);
}

TEST(ModelConfig, YarnSoftmaxScaleOfDeepSeekV3) {
  // DeepSeek-V3: qk_head_dim 192, factor 40, mscale_all_dim 1 -> scale = 192^-0.5 * (0.1 ln 40 + 1)^2.
  json j = testing::small_v3_config();
  j["qk_nope_head_dim"] = 128;
  j["qk_rope_head_dim"] = 64;
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 40}, {"original_max_position_embeddings", 4096},
                       {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 1.0}, {"mscale_all_dim", 1.0}};
  ModelConfig c = ModelConfig::from_json(j, "cfg.json");
  const double m = 0.1 * std::log(40.0) + 1.0;
  EXPECT_NEAR(c.softmax_scale(), m * m / std::sqrt(192.0), 1e-12);
  EXPECT_FLOAT_EQ(c.rope_attention_scaling(), 1.0f);  // mscale == mscale_all_dim
  std::vector<float> inv = c.rope_inv_freq();
  ASSERT_EQ(inv.size(), 32u);
  EXPECT_FLOAT_EQ(inv[0], 1.0f);                                  // fastest pair: extrapolated
  EXPECT_NEAR(inv[31], std::pow(10000.0, -62.0 / 64) / 40, 1e-9);  // slowest pair: interpolated by the factor
}

TEST(ModelConfig, ErrorsNameTheField) {
  json j = testing::small_v3_config();
  j.erase("kv_lora_rank");
  EXPECT_EQ(parse_error(j), "cfg.json: missing required field 'kv_lora_rank'");

  j = testing::small_v3_config();
  j["hidden_size"] = "big";
  EXPECT_EQ(parse_error(j), "cfg.json: field 'hidden_size' must be an integer, got \"big\"");

  j = testing::small_v3_config();
  j["rope_scaling"]["type"] = "dynamic";
  EXPECT_NE(parse_error(j).find("'rope_scaling.type' is 'dynamic'"), std::string::npos);

  j = testing::small_v3_config();
  j["model_type"] = "llama";
  EXPECT_NE(parse_error(j).find("field 'model_type' is 'llama'"), std::string::npos);

  j = testing::small_v3_config();
  j["quantization_config"] = {{"quant_method", "awq"}};
  EXPECT_NE(parse_error(j).find("'quantization_config.quant_method' is 'awq'"), std::string::npos);

  j = testing::small_v3_config();
  j["n_group"] = 3;
  EXPECT_NE(parse_error(j).find("'n_group' (3) must divide n_routed_experts (8)"), std::string::npos);

  j = testing::small_v3_config();
  j["topk_method"] = "greedy";
  EXPECT_NE(parse_error(j).find("deepseek_v3 models route with"), std::string::npos);

  j = testing::small_v3_config();
  j["hidden_act"] = "gelu";
  EXPECT_NE(parse_error(j).find("'hidden_act' is 'gelu'"), std::string::npos);
}

// Every field a forward divides by, takes a log of, or sizes a tensor with is range-checked at load: a config that
// parses serves finite logits. Each refusal names the file, the field and the value.
TEST(ModelConfig, RangesAreCheckedAtLoad) {
  struct Case {
    const char* key;  // "rope_scaling.x" edits the nested object
    json value;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"rope_scaling.factor", 0, "(rope_scaling): field 'factor' must be positive, got 0"},
      {"rope_scaling.factor", -4, "(rope_scaling): field 'factor' must be positive, got -4"},
      {"rope_scaling.mscale", -1.0, "(rope_scaling): field 'mscale' must be >= 0, got -1"},
      {"rope_scaling.mscale_all_dim", -0.5, "(rope_scaling): field 'mscale_all_dim' must be >= 0, got -0.5"},
      {"rope_scaling.beta_fast", -32, "(rope_scaling): field 'beta_fast' must be positive, got -32"},
      {"rope_scaling.beta_slow", 64, "(rope_scaling): field 'beta_fast' (32) must be >= beta_slow (64)"},
      {"rope_scaling.attention_factor", 0, "(rope_scaling): field 'attention_factor' must be positive, got 0"},
      {"rope_scaling.original_max_position_embeddings", 0,
       "(rope_scaling): field 'original_max_position_embeddings' must be positive, got 0"},
      {"rope_theta", 1, "field 'rope_theta' must be > 1, got 1"},
      {"rope_theta", -10000, "field 'rope_theta' must be > 1, got -10000"},
      {"rms_norm_eps", 0, "field 'rms_norm_eps' must be positive, got 0"},
      {"rms_norm_eps", -1e-6, "field 'rms_norm_eps' must be positive, got -1e-06"},
      {"routed_scaling_factor", 0, "field 'routed_scaling_factor' must be positive, got 0"},
      {"vocab_size", 0, "field 'vocab_size' must be positive, got 0"},
      {"hidden_size", -160, "field 'hidden_size' must be positive, got -160"},
      {"num_attention_heads", 0, "field 'num_attention_heads' must be positive, got 0"},
      {"num_attention_heads", 4294967299LL, "field 'num_attention_heads' is out of range, got 4294967299"},
      {"num_hidden_layers", 0, "field 'num_hidden_layers' must be positive, got 0"},
      {"kv_lora_rank", 0, "field 'kv_lora_rank' must be positive, got 0"},
      {"q_lora_rank", -48, "field 'q_lora_rank' must be positive, got -48"},
      {"qk_rope_head_dim", 0, "field 'qk_rope_head_dim' must be positive, got 0"},
      {"v_head_dim", 1LL << 40, "field 'v_head_dim' is implausibly large, got 1099511627776"},
      {"max_position_embeddings", 0, "field 'max_position_embeddings' must be positive, got 0"},
      {"n_routed_experts", -8, "field 'n_routed_experts' must be >= 0, got -8"},
      {"n_routed_experts", 4294967304LL, "field 'n_routed_experts' is out of range, got 4294967304"},
      {"n_shared_experts", -1, "field 'n_shared_experts' must be >= 0, got -1"},
      {"moe_intermediate_size", 0, "field 'moe_intermediate_size' must be positive, got 0"},
      {"num_experts_per_tok", 9, "field 'num_experts_per_tok' must be in [1, n_routed_experts = 8], got 9"},
      {"num_experts_per_tok", 0, "field 'num_experts_per_tok' must be in [1, n_routed_experts = 8], got 0"},
      {"n_group", 0, "field 'n_group' must be positive, got 0"},
      {"topk_group", 5, "field 'topk_group' (5) exceeds n_group (4)"},
      {"topk_group", 1, "field 'num_experts_per_tok' (3) exceeds topk_group x experts per group (1 x 2)"},
      {"moe_layer_freq", 0, "field 'moe_layer_freq' must be positive, got 0"},
      {"first_k_dense_replace", 4, "field 'first_k_dense_replace' must be in [0, num_hidden_layers = 3], got 4"},
      {"first_k_dense_replace", -1, "field 'first_k_dense_replace' must be in [0, num_hidden_layers = 3], got -1"},
      {"num_nextn_predict_layers", -1, "field 'num_nextn_predict_layers' must be >= 0, got -1"},
      {"bos_token_id", 97, "field 'bos_token_id' holds 97, outside the vocabulary (vocab_size 97)"},
      {"eos_token_id", 4294967297LL, "field 'eos_token_id' holds 4294967297, outside the vocabulary"},
      {"eos_token_id", json::array({1, -1}), "field 'eos_token_id' holds -1, outside the vocabulary"},
      {"quantization_config", {{"quant_method", "fp8"}, {"weight_block_size", {4294967424LL, 128}}},
       "'quantization_config.weight_block_size' must be two integers in [1, 65536]"},
  };
  for (const Case& c : cases) {
    json j = testing::small_v3_config();
    const std::string key = c.key;
    if (key.rfind("rope_scaling.", 0) == 0) j["rope_scaling"][key.substr(13)] = c.value;
    else j[key] = c.value;
    const std::string error = parse_error(j);
    EXPECT_EQ(error.rfind("cfg.json", 0), 0u) << error;
    EXPECT_NE(error.find(c.expected), std::string::npos) << c.key << " = " << c.value.dump() << ": " << error;
  }
  // A non-finite number cannot come from JSON text, but one built in code is refused the same way.
  json j = testing::small_v3_config();
  j["rms_norm_eps"] = std::numeric_limits<double>::infinity();
  EXPECT_NE(parse_error(j).find("field 'rms_norm_eps' must be finite"), std::string::npos);
}

}  // namespace
}  // namespace narwhal
