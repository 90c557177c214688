// The CPU forward against transformers' float32 logits on the committed fixtures (tools/make_fixtures.py):
// prefill + cached greedy decode, greedy ids, the MTP module, and the same through `narwhal generate`.
// Tolerance 5e-5 relative (max |diff| / max |ref| per row): both sides are float32 on the same BF16 (or
// dequantized FP8) weights, so only summation order differs; that lands near 1e-6.
#include <gtest/gtest.h>

#include <numeric>

#include "core/error.h"
#include "core/json.h"
#include "model/deepseek_model.h"
#include "ops/sampling.h"
#include "test_util.h"

namespace narwhal {
namespace {

constexpr double kTolerance = 5e-5;

struct Reference {
  std::vector<int32_t> prompt, output;
  std::vector<std::vector<float>> logits, mtp_logits;
};

Reference read_reference(const std::string& fixture) {
  json j = read_json_file(testing::fixture_dir(fixture) + "/reference.json");
  Reference r;
  r.prompt = j["prompt_ids"].get<std::vector<int32_t>>();
  r.output = j["output_ids"].get<std::vector<int32_t>>();
  r.logits = j["logits"].get<std::vector<std::vector<float>>>();
  if (j.contains("mtp_logits")) r.mtp_logits = j["mtp_logits"].get<std::vector<std::vector<float>>>();
  return r;
}

void expect_row(const float* actual, const std::vector<float>& expected, const std::string& what) {
  testing::ErrorStats e = testing::compare(actual, expected.data(), static_cast<int64_t>(expected.size()));
  EXPECT_LE(e.rel, kTolerance) << what << ": max-abs " << e.max_abs << ", rel " << e.rel;
  ::testing::Test::RecordProperty(what, cat(e.rel));
}

class Fixture : public ::testing::TestWithParam<const char*> {};

TEST_P(Fixture, LogitsAndGreedyIdsMatchTransformers) {
  const std::string name = GetParam();
  Reference ref = read_reference(name);
  DeepSeekModel model = DeepSeekModel::load(testing::fixture_dir(name));
  const int64_t vocab = model.config().vocab_size;
  ASSERT_EQ(static_cast<int64_t>(ref.logits[0].size()), vocab);
  std::vector<int32_t> pages(8);  // 64 tokens: the longest fixture's prompt (37) and outputs
  std::iota(pages.begin(), pages.end(), 0);
  KvCache cache(model.config(), model.num_cache_layers(), 8, 8);  // page boundaries inside the prompt

  std::vector<int32_t> step = ref.prompt;
  int64_t prefix = 0;
  for (size_t i = 0; i < ref.output.size(); ++i) {
    ForwardBatch batch;
    batch.add_sequence(step, prefix, pages);
    Tensor logits = model.forward(batch, cache).logits;
    expect_row(logits.f32(), ref.logits[i], name + " row " + std::to_string(i));
    EXPECT_EQ(ops::argmax(logits.f32(), vocab), ref.output[i]) << name << " greedy step " << i;
    prefix += static_cast<int64_t>(step.size());
    step = {ref.output[i]};  // teacher-forced, so one wrong id cannot hide later rows
  }
}

class MtpFixture : public ::testing::TestWithParam<const char*> {};

// The reference feeds the MTP module the main model's final-normed hidden states (SGLang's convention).
TEST_P(MtpFixture, MtpLogitsMatchReference) {
  const std::string name = GetParam();
  Reference ref = read_reference(name);
  DeepSeekModel model = DeepSeekModel::load(testing::fixture_dir(name));
  ASSERT_EQ(model.num_mtp_layers(), 1);
  std::vector<int32_t> pages = {2, 0, 3, 1};
  KvCache cache(model.config(), model.num_cache_layers(), 4, 8);
  ForwardBatch main;
  main.add_sequence(ref.prompt, 0, pages);
  ForwardOutput out = model.forward(main, cache, {AttentionForm::kAuto, false, true});
  const int64_t n = static_cast<int64_t>(ref.prompt.size()) - 1;
  ForwardBatch mtp;
  mtp.add_sequence({ref.prompt.begin() + 1, ref.prompt.end()}, 0, pages);
  Tensor logits = model.forward_mtp(0, mtp, out.hidden.rows(0, n), cache, {AttentionForm::kAuto, true, false}).logits;
  ASSERT_EQ(static_cast<int64_t>(ref.mtp_logits.size()), n);
  for (int64_t i = 0; i < n; ++i)
    expect_row(logits.f32() + i * logits.size(1), ref.mtp_logits[i], name + " mtp row " + std::to_string(i));
}

// End to end through the CLI: `generate --json --return-logits` prints the same rows.
TEST_P(Fixture, GenerateCommandPrintsReferenceLogits) {
  const std::string name = GetParam();
  Reference ref = read_reference(name);
  std::string ids;
  for (int32_t id : ref.prompt) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  const std::string command = testing::narwhal_bin() + " generate --model-path " + testing::fixture_dir(name) +
                              " --input-ids " + ids + " --max-new-tokens " + std::to_string(ref.output.size()) +
                              " --temperature 0 --ignore-eos --json --return-logits --log-level error";
  const std::string text = testing::run_command(command, 0);
  json out = json::parse(text);
  EXPECT_EQ(out["output_ids"].get<std::vector<int32_t>>(), ref.output);
  auto rows = out["logits"].get<std::vector<std::vector<float>>>();
  ASSERT_EQ(rows.size(), ref.logits.size());
  for (size_t i = 0; i < rows.size(); ++i) expect_row(rows[i].data(), ref.logits[i], name + " cli row " + std::to_string(i));
}

INSTANTIATE_TEST_SUITE_P(Transformers, Fixture,
                         ::testing::Values("v2_lite", "v2", "v3", "v3_fp8", "v3_odd", "v2_odd"));
INSTANTIATE_TEST_SUITE_P(Transformers, MtpFixture, ::testing::Values("v3", "v3_fp8"));

}  // namespace
}  // namespace narwhal
