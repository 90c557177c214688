// config.json parsing: both layouts, per-model-type defaults, YaRN numbers, and errors naming the field.
#include <gtest/gtest.h>

#include <cmath>

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

}  // namespace
}  // namespace narwhal
