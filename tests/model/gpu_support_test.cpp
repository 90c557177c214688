// check_gpu_support: configs the GPU kernels cannot take are refused at load, naming the config.json field and
// its value (no GPU is needed to check); the shapes of released checkpoints and of the fixtures pass.
#include <gtest/gtest.h>

#include "core/error.h"
#include "model/cuda_model.h"
#include "test_util.h"

namespace narwhal {
namespace {

std::string refusal(const json& config) {
  try {
    check_gpu_support(ModelConfig::from_json(config, "config.json"));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// DeepSeek-V3's layout at its real dims, with Kimi K2's 384 experts.
json released_shapes() {
  json v3 = testing::small_v3_config();
  v3["qk_rope_head_dim"] = 64;
  v3["qk_nope_head_dim"] = 128;
  v3["v_head_dim"] = 128;
  v3["kv_lora_rank"] = 512;
  v3["hidden_size"] = 7168;
  v3["num_attention_heads"] = 128;
  v3["n_routed_experts"] = 384;  // Kimi K2, DeepSeek-V3's layout
  v3["n_group"] = 1;
  v3["topk_group"] = 1;
  v3["num_experts_per_tok"] = 8;
  v3["intermediate_size"] = 18432;
  v3["moe_intermediate_size"] = 2048;
  v3["q_lora_rank"] = 1536;
  return v3;
}

TEST(GpuSupport, ReleasedShapesAndFixturesPass) {
  EXPECT_EQ(refusal(released_shapes()), "");
  for (const char* fixture : {"v2_lite", "v2", "v3", "v3_fp8", "v3_odd", "v2_odd"})
    EXPECT_EQ(refusal(read_json_file(testing::fixture_dir(fixture) + "/config.json")), "") << fixture;
}

TEST(GpuSupport, RefusalsNameTheField) {
  const json base = read_json_file(testing::fixture_dir("v3_odd") + "/config.json");
  const std::pair<const char*, json> cases[] = {{"hidden_size", 196}, {"v_head_dim", 44}, {"qk_nope_head_dim", 30},
                                                {"kv_lora_rank", 90}, {"q_lora_rank", 100}};
  for (const auto& [field, value] : cases) {
    json c = base;
    c[field] = value;
    const std::string message = refusal(c);
    EXPECT_NE(message.find(std::string("'") + field + "' is " + value.dump()), std::string::npos) << message;
  }
  // A TP rank's slice is what the kernels get: moe_intermediate_size 24 leaves 12 per rank at TP 2.
  try {
    check_gpu_support(ModelConfig::from_json(base, "config.json"), {1, 2});
    ADD_FAILURE() << "a 12-wide expert slice passed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'moe_intermediate_size' is 24, 12 per rank at --tp-size 2"),
              std::string::npos)
        << e.what();
  }
  json many = base;
  many["n_routed_experts"] = 480;
  many["n_group"] = 6;
  EXPECT_NE(refusal(many).find("480 routed experts"), std::string::npos) << refusal(many);
}

// DP attention splits the heads and vocabulary over a DP group and the MLP / MoE over every rank: the released
// shapes pass at TP 8 with DP 8 (EP 8) and DP 2, and a refusal names --dp-size beside --tp-size.
TEST(GpuSupport, DpAttentionSlicesPass) {
  const ModelConfig released = ModelConfig::from_json(released_shapes(), "config.json");
  for (const TpSlice slice : {TpSlice{0, 8, 8, 8}, TpSlice{5, 8, 1, 2}, TpSlice{7, 8, 8, 2}, TpSlice{3, 4, 1, 4}})
    EXPECT_NO_THROW(check_gpu_support(released, slice)) << "rank " << slice.rank << " dp " << slice.dp_size;
  const json odd = read_json_file(testing::fixture_dir("v3_odd") + "/config.json");
  try {
    check_gpu_support(ModelConfig::from_json(odd, "config.json"), {1, 2, 1, 2});
    ADD_FAILURE() << "a 12-wide expert slice passed under DP attention";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'moe_intermediate_size' is 24, 12 per rank at --tp-size 2 --dp-size 2"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace narwhal
