// make-model's presets: the configs parse, and their parameter counts are the released models'.
#include <gtest/gtest.h>

#include "core/error.h"
#include "model/checkpoint_layout.h"
#include "model/model_presets.h"

namespace narwhal {
namespace {

double billions_of_parameters(const ModelConfig& config) {
  double total = 0;
  for (const TensorSpec& spec : checkpoint_tensors(config)) {
    double n = 1;
    for (int64_t d : spec.shape) n *= static_cast<double>(d);
    total += n;
  }
  return total / 1e9;
}

TEST(ModelPresets, ParameterCountsMatchTheReleasedModels) {
  // DeepSeek-V2-Lite: 15.7B; DeepSeek-V3: 671B in the main model (all 61 layers kept, MTP dropped).
  EXPECT_NEAR(billions_of_parameters(ModelConfig::from_json(model_preset_config("v2-lite", 0, false), "v2-lite")),
              15.7, 0.1);
  EXPECT_NEAR(billions_of_parameters(ModelConfig::from_json(model_preset_config("v3", 61, true), "v3")), 671.0, 0.5);
}

TEST(ModelPresets, CutModelsKeepMoeLayersAndDropMtp) {
  const ModelConfig config = ModelConfig::from_json(model_preset_config("v3", 2, true), "v3");
  EXPECT_EQ(config.num_hidden_layers, 2);
  EXPECT_TRUE(config.is_moe_layer(1));
  EXPECT_EQ(config.num_nextn_predict_layers, 0);
  ASSERT_TRUE(config.fp8.has_value());
  EXPECT_EQ(config.fp8->block_n, 128);
}

TEST(ModelPresets, UnknownPresetIsAnError) {
  EXPECT_THROW(model_preset_config("v4", 0, false), Error);
}

}  // namespace
}  // namespace narwhal
