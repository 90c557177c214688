// The GPU forward (CudaModelRunner) against transformers' fixtures, and its optimizations against each other:
// tuned == portable kernels, CUDA graph == eager (and its expert counts exact), absorbed == decompressed, ragged ==
// alone, prefix == recompute.
// Tolerances:
//  - vs the fixtures 2e-2 in ||gpu - ref||_2 / ||ref||_2 per row: transformers runs float32 on the same BF16
//    weights, the GPU rounds every activation to BF16 (2^-9 relative per rounding, ~10 roundings deep per layer)
//    and the logits themselves to BF16; FP8 fixtures are dequantized to BF16 at load (their dims are not whole
//    128-blocks), one more rounding. forward_diff_test.cpp measures this error over 40 random configs.
//  - between two GPU paths (rel = max |diff| / max |ref| per row) 2e-2: both BF16, different kernels and
//    summation orders (tuned vs portable differ most: FP32 accumulation in different tile orders, then BF16
//    rounding of every intermediate).
//  - FP8 weights kept FP8 vs the CPU reference, and absorbed vs decompressed with FP8 weights, 8e-2: each form
//    quantizes different activations to e4m3 per 128 channels (absorbed: q_nope and the attention's latent
//    output; decompressed: the cached latents before kv_b), 3 mantissa bits, up to 2^-4 relative per element;
//    measured 4-5.5e-2. A wrong kernel gives O(1).
#include <gtest/gtest.h>

#include <numeric>

#include "core/error.h"
#include "core/json.h"
#include "cuda/gpu_test_util.h"
#include "cuda/routing_compare.h"
#include "model/cuda_weights.h"
#include "runtime/cuda_model_runner.h"
#include "test_util.h"

namespace narwhal {
namespace {

constexpr double kFixtureTolerance = 2e-2;
constexpr double kPathTolerance = 2e-2;
constexpr double kFp8FormTolerance = 8e-2;

std::vector<int32_t> iota_pages(int first, int count) {
  std::vector<int32_t> pages(count);
  std::iota(pages.begin(), pages.end(), first);
  return pages;
}

double row_error(const float* actual, const float* expected, int64_t n) {
  return testing::compare(actual, expected, n).rel;
}

CudaRunnerOptions small_options() {
  CudaRunnerOptions o;
  o.page_size = 16;
  o.max_total_tokens = 4096;
  o.max_tokens_per_step = 1024;
  o.cuda_graph_max_bs = 8;
  return o;
}

class CudaFixture : public ::testing::TestWithParam<const char*> {};

// Prefill the prompt, then decode the reference's own greedy tokens; every row vs transformers. The GPU runs its
// experts with the routing of the CPU reference (equal to transformers to ~1e-6), so that a near tie of expert
// scores, which BF16 noise decides either way, cannot make it a different computation (forward_diff_test.cpp
// says more); its own routing of the same scores must be what the CPU router makes of them.
TEST_P(CudaFixture, LogitsMatchTransformers) {
  NW_REQUIRE_GPU();
  const std::string name = GetParam();
  json ref = read_json_file(testing::fixture_dir(name) + "/reference.json");
  const auto prompt = ref["prompt_ids"].get<std::vector<int32_t>>();
  const auto output = ref["output_ids"].get<std::vector<int32_t>>();
  const auto logits = ref["logits"].get<std::vector<std::vector<float>>>();
  const DeepSeekModel cpu = DeepSeekModel::load(testing::fixture_dir(name));
  KvCache cpu_cache(cpu.config(), cpu.config().num_hidden_layers, 4, 16);
  CudaRunnerOptions o = small_options();
  o.disable_cuda_graph = true;
  auto runner = CudaModelRunner::load(testing::fixture_dir(name), o);
  const int64_t vocab = runner->config().vocab_size;
  std::vector<int32_t> step = prompt;
  int64_t prefix = 0;
  for (size_t i = 0; i < output.size(); ++i) {
    ForwardBatch batch;
    batch.add_sequence(step, prefix, iota_pages(0, 4));
    RoutingTrace want, got;
    ForwardOptions options;
    options.routing_trace = &want;
    cpu.forward(batch, cpu_cache, options);
    runner->set_routing_override(&want);
    runner->set_routing_trace(&got);
    const Tensor got_logits = runner->run(batch);
    runner->set_routing_override(nullptr);
    runner->set_routing_trace(nullptr);
    EXPECT_EQ(testing::compare_routing(cpu, want, got).error, "") << name << " row " << i;
    const double err = testing::l2_rel_error(got_logits.f32(), logits[i].data(), vocab);
    EXPECT_LE(err, kFixtureTolerance) << name << " row " << i;
    ::testing::Test::RecordProperty(name + "_row" + std::to_string(i), cat(err));
    // Greedy id: must agree wherever the reference's top-2 margin exceeds the error we allow.
    std::vector<float> sorted = logits[i];
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    const float range = *std::max_element(logits[i].begin(), logits[i].end(),
                                          [](float a, float b) { return std::abs(a) < std::abs(b); });
    if (sorted[0] - sorted[1] > 2 * kFixtureTolerance * std::abs(range)) {
      EXPECT_EQ(std::max_element(got_logits.f32(), got_logits.f32() + vocab) - got_logits.f32(), output[i])
          << name << " row " << i;
    }
    prefix += static_cast<int64_t>(step.size());
    step = {output[i]};
  }
}

INSTANTIATE_TEST_SUITE_P(All, CudaFixture,
                         ::testing::Values("v2_lite", "v2", "v3", "v3_fp8", "v3_odd", "v2_odd"));

ModelConfig deepseek_dims_config(bool fp8) {
  return ModelConfig::from_json(testing::deepseek_dims_json(fp8), "test config");
}

std::unique_ptr<CudaModelRunner> dummy_runner(bool fp8, CudaRunnerOptions o) {
  ModelConfig c = deepseek_dims_config(fp8);
  CudaModelWeights w = dummy_cuda_weights(c, 7);
  return std::make_unique<CudaModelRunner>(c, std::move(w), o);
}

std::vector<int32_t> tokens(int n, int salt) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 37 + salt * 101 + 5) % 1000;
  return t;
}

// Runs prompts (one sequence each, own pages), then `steps` decode steps; returns every logits row.
std::vector<Tensor> prompts_then_decode(CudaModelRunner& r, const std::vector<std::vector<int32_t>>& prompts,
                                        int steps, AttentionForm form = AttentionForm::kAuto) {
  std::vector<Tensor> rows;
  ForwardBatch prefill;
  for (size_t s = 0; s < prompts.size(); ++s) prefill.add_sequence(prompts[s], 0, iota_pages(s * 32, 32));
  rows.push_back(r.run(prefill, form));
  for (int step = 0; step < steps; ++step) {
    ForwardBatch decode;
    for (size_t s = 0; s < prompts.size(); ++s)
      decode.add_sequence({static_cast<int32_t>((step * 13 + s) % 1000)},
                          static_cast<int64_t>(prompts[s].size()) + step, iota_pages(s * 32, 32));
    rows.push_back(r.run(decode, form));
  }
  return rows;
}

void expect_close(const std::vector<Tensor>& a, const std::vector<Tensor>& b, double tol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].shape, b[i].shape);
    const int64_t vocab = a[i].size(1);
    for (int64_t s = 0; s < a[i].size(0); ++s) {
      const double err = row_error(a[i].f32() + s * vocab, b[i].f32() + s * vocab, vocab);
      EXPECT_LE(err, tol) << what << ": step " << i << " sequence " << s;
    }
  }
}

const std::vector<std::vector<int32_t>> kPrompts = {tokens(100, 1), tokens(37, 2), tokens(64, 3)};

// The whole tuned forward (BF16, or FP8 kept FP8) against the CPU reference on a checkpoint at DeepSeek's dims:
// a prompt, then decode steps. The CPU side is float32 on the same (dequantized) weights. With FP8 activations
// (~3e-2 off) a token whose router scores nearly tie may pick another expert than the CPU does, which moves
// that step's logits far (seen once: 0.38 at one step, 2.7-3.5e-2 at the others); one such step is allowed.
// A wrong kernel is off at every step.
TEST(CudaModel, TunedForwardMatchesCpuReference) {
  NW_REQUIRE_GPU();
  for (bool fp8 : {false, true}) {
    int within = 0;
    testing::TempDir dir;
    testing::write_random_checkpoint(dir.path(), testing::deepseek_dims_json(fp8), 11, fp8);
    DeepSeekModel cpu = DeepSeekModel::load(dir.path());
    KvCache cache(cpu.config(), cpu.config().num_hidden_layers, 16, 16);
    auto gpu = CudaModelRunner::load(dir.path(), small_options());
    std::vector<int32_t> step = tokens(90, 5);
    int64_t prefix = 0;
    for (int i = 0; i < 4; ++i) {
      ForwardBatch batch;
      batch.add_sequence(step, prefix, iota_pages(0, 16));
      Tensor want = cpu.forward(batch, cache).logits, got = gpu->run(batch);
      const double err = row_error(got.f32(), want.f32(), want.size(1));
      if (!fp8) {
        EXPECT_LE(err, kFixtureTolerance) << "bf16 step " << i;
      }
      within += err <= (fp8 ? kFp8FormTolerance : kFixtureTolerance);
      ::testing::Test::RecordProperty(cat(fp8 ? "fp8" : "bf16", "_step", i), cat(err));
      prefix += static_cast<int64_t>(step.size());
      step = {static_cast<int32_t>(std::max_element(want.f32(), want.f32() + want.size(1)) - want.f32())};
    }
    EXPECT_GE(within, 3) << (fp8 ? "fp8" : "bf16") << ": steps within tolerance";
  }
}

TEST(CudaModel, TunedKernelsMatchPortableKernels) {
  NW_REQUIRE_GPU();
  CudaRunnerOptions o = small_options();
  o.disable_cuda_graph = true;
  auto tuned = dummy_runner(false, o);
  o.kernels = KernelChoice::kPortable;
  auto portable = dummy_runner(false, o);
  expect_close(prompts_then_decode(*tuned, kPrompts, 3), prompts_then_decode(*portable, kPrompts, 3),
               kPathTolerance, "tuned vs portable");
}

TEST(CudaModel, GraphReplayMatchesEager) {
  NW_REQUIRE_GPU();
  for (bool fp8 : {false, true}) {
    CudaRunnerOptions o = small_options();
    auto graphed = dummy_runner(fp8, o);
    EXPECT_FALSE(graphed->graph_batch_sizes().empty());
    o.disable_cuda_graph = true;
    auto eager = dummy_runner(fp8, o);
    // 3 sequences replay the batch-4 graph with one padding row.
    expect_close(prompts_then_decode(*graphed, kPrompts, 4), prompts_then_decode(*eager, kPrompts, 4), 5e-3,
                 fp8 ? "fp8 graph vs eager" : "graph vs eager");
    // The expert counts leave out the padding row and the capture's steps: each runner counted the tokens it ran.
    int64_t tokens = 4 * static_cast<int64_t>(kPrompts.size());
    for (const auto& p : kPrompts) tokens += static_cast<int64_t>(p.size());
    for (const CudaModelRunner* r : {graphed.get(), eager.get()}) {
      const std::vector<int64_t> counts = r->expert_tokens();
      EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), int64_t{0}),
                testing::routed_choices(r->config(), tokens)) << (r == eager.get() ? "eager" : "graphs");
    }
  }
}

TEST(CudaModel, AbsorbedMatchesDecompressed) {
  NW_REQUIRE_GPU();
  for (bool fp8 : {false, true}) {
    CudaRunnerOptions o = small_options();
    o.disable_cuda_graph = true;
    auto a = dummy_runner(fp8, o);
    auto b = dummy_runner(fp8, o);
    expect_close(prompts_then_decode(*a, kPrompts, 3, AttentionForm::kDecompressed),
                 prompts_then_decode(*b, kPrompts, 3, AttentionForm::kAuto), fp8 ? kFp8FormTolerance : kPathTolerance,
                 fp8 ? "fp8 decompressed vs absorbed" : "decompressed vs absorbed");
  }
}

// A mixed step (decodes beside a prompt chunk) runs in two parts, the decodes absorbed (the runner splits it,
// CudaStep::parts); it must equal the same step all decompressed, with the decodes first (as the engine plans),
// last, and between two chunks (three runs: not split).
TEST(CudaModel, MixedStepMatchesOneForm) {
  NW_REQUIRE_GPU();
  for (bool fp8 : {false, true}) {
    CudaRunnerOptions o = small_options();
    o.disable_cuda_graph = true;
    auto split = dummy_runner(fp8, o);
    auto whole = dummy_runner(fp8, o);
    prompts_then_decode(*split, kPrompts, 0);
    prompts_then_decode(*whole, kPrompts, 0);
    const auto prefix = [](size_t s) { return static_cast<int64_t>(kPrompts[s].size()); };
    const auto decode = [&](ForwardBatch& b, size_t s) { b.add_sequence({7}, prefix(s), iota_pages(s * 32, 32)); };
    const auto chunk = [&](ForwardBatch& b, size_t s) {
      b.add_sequence(tokens(20, static_cast<int>(s) + 9), prefix(s), iota_pages(s * 32, 32));
    };
    ForwardBatch decodes_first, decodes_last, three_runs;
    decode(decodes_first, 0), decode(decodes_first, 1), chunk(decodes_first, 2);
    chunk(decodes_last, 0), decode(decodes_last, 1), decode(decodes_last, 2);
    chunk(three_runs, 0), decode(three_runs, 1), chunk(three_runs, 2);
    for (const ForwardBatch* b : {&decodes_first, &decodes_last, &three_runs}) {
      // The same positions are rewritten by each batch: both runners store the same latents there.
      expect_close({split->run(*b, AttentionForm::kAuto)}, {whole->run(*b, AttentionForm::kDecompressed)},
                   fp8 ? kFp8FormTolerance : kPathTolerance, fp8 ? "fp8 mixed step" : "mixed step");
    }
  }
}

TEST(CudaModel, RaggedBatchMatchesEachAlone) {
  NW_REQUIRE_GPU();
  CudaRunnerOptions o = small_options();
  auto together = dummy_runner(false, o);
  auto alone = dummy_runner(false, o);
  std::vector<Tensor> batched = prompts_then_decode(*together, kPrompts, 2);
  for (size_t s = 0; s < kPrompts.size(); ++s) {
    ForwardBatch one;
    one.add_sequence(kPrompts[s], 0, iota_pages(s * 32, 32));
    Tensor got = alone->run(one);
    const int64_t vocab = got.size(1);
    EXPECT_LE(row_error(batched[0].f32() + s * vocab, got.f32(), vocab), kPathTolerance) << "sequence " << s;
  }
}

TEST(CudaModel, PrefixReuseMatchesRecompute) {
  NW_REQUIRE_GPU();
  CudaRunnerOptions o = small_options();
  auto runner = dummy_runner(false, o);
  const std::vector<int32_t> prompt = tokens(150, 4);
  ForwardBatch whole;
  whole.add_sequence(prompt, 0, iota_pages(0, 16));
  Tensor full = runner->run(whole);
  // The same prompt on other pages: 70 tokens first (ending inside a page), then the rest over that prefix.
  ForwardBatch head, tail;
  head.add_sequence({prompt.begin(), prompt.begin() + 70}, 0, iota_pages(16, 16));
  runner->run(head);
  tail.add_sequence({prompt.begin() + 70, prompt.end()}, 70, iota_pages(16, 16));
  Tensor reused = runner->run(tail);
  EXPECT_LE(row_error(reused.f32(), full.f32(), full.size(1)), kPathTolerance);
}

}  // namespace
}  // namespace narwhal
