// The CPU side of the random-config differential test (the GPU side is tests/cuda/forward_diff_test.cpp): every
// drawn config parses, its random checkpoint (BF16 or FP8 with partial edge blocks) loads, and the reference
// forward over the step script gives finite logits, the same in its absorbed and decompressed MLA forms (2e-5
// relative: the same float32 math in another order).
#include <gtest/gtest.h>

#include <cmath>

#include "core/logging.h"
#include "model/deepseek_model.h"
#include "random_config.h"
#include "step_script.h"
#include "test_util.h"

namespace narwhal {
namespace {

constexpr int kConfigs = 16;  // the GPU side runs 40; here a CI-sized sample of the same generator
constexpr double kFormTolerance = 2e-5;

TEST(RandomConfigs, LoadAndRunOnTheCpu) {
  set_log_level(LogLevel::kWarning);  // 40 loads would print 40 progress bars
  for (int seed = 1; seed <= kConfigs; ++seed) {
    const testing::RandomModel drawn = testing::random_model(seed);
    SCOPED_TRACE(drawn.summary);
    testing::TempDir dir;
    testing::write_random_checkpoint(dir.path(), drawn.config, seed, drawn.fp8);
    const DeepSeekModel model = DeepSeekModel::load(dir.path());
    const testing::StepScript script = testing::make_step_script(seed, model.config().vocab_size, 16);
    std::vector<std::vector<Tensor>> by_form;
    for (AttentionForm form : {AttentionForm::kDecompressed, AttentionForm::kAbsorbed}) {
      KvCache cache(model.config(), model.num_cache_layers(), script.pages_needed, 16);
      ForwardOptions options;
      options.attention = form;
      by_form.push_back(testing::run_step_script(
          script, [&](const ForwardBatch& b) { return model.forward(b, cache, options).logits; }));
    }
    for (size_t i = 0; i < script.steps.size(); ++i) {
      const Tensor& a = by_form[0][i];
      const Tensor& b = by_form[1][i];
      bool finite = true;
      for (int64_t j = 0; j < a.numel(); ++j) finite = finite && std::isfinite(a.f32()[j]);
      EXPECT_TRUE(finite) << script.names[i];
      EXPECT_LE(testing::compare(b.f32(), a.f32(), a.numel()).rel, kFormTolerance) << script.names[i];
    }
  }
}

}  // namespace
}  // namespace narwhal
