// The forward pass agrees with itself across its optimizations: absorbed == decompressed MLA, ragged
// batch == each sequence alone, paged prefix reuse == full recompute, cached decode == recompute, FP8 ==
// its dequantized weights. Tolerance 2e-5 relative: the same float32 math in another order.
#include <gtest/gtest.h>

#include <numeric>

#include "core/error.h"
#include "model/deepseek_model.h"
#include "model/random_weights.h"
#include "test_util.h"

namespace narwhal {
namespace {

using testing::compare;
using testing::TempDir;

constexpr double kTolerance = 2e-5;

std::vector<int32_t> iota_pages(int64_t n, int32_t first = 0) {
  std::vector<int32_t> pages(n);
  std::iota(pages.begin(), pages.end(), first);
  return pages;
}

std::vector<int32_t> tokens(int n, int salt, int vocab) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 37 + salt * 11 + 3) % vocab;
  return t;
}

void expect_close(const Tensor& actual, const Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.shape, expected.shape) << what;
  testing::ErrorStats e = compare(actual.f32(), expected.f32(), actual.numel());
  EXPECT_LE(e.rel, kTolerance) << what << ": max-abs " << e.max_abs << ", rel " << e.rel;
}

class ForwardConsistency : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    testing::write_random_checkpoint(dir_->path(), testing::small_v3_config(), 7);
    model_ = new DeepSeekModel(DeepSeekModel::load(dir_->path()));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }
  KvCache cache(int64_t pages = 64, int64_t page_size = 4) const {
    return KvCache(model_->config(), model_->num_cache_layers(), pages, page_size);
  }
  int vocab() const { return static_cast<int>(model_->config().vocab_size); }

  static TempDir* dir_;
  static DeepSeekModel* model_;
};
TempDir* ForwardConsistency::dir_ = nullptr;
DeepSeekModel* ForwardConsistency::model_ = nullptr;

TEST_F(ForwardConsistency, AbsorbedEqualsDecompressed) {
  ForwardOutput out[2];
  for (AttentionForm form : {AttentionForm::kDecompressed, AttentionForm::kAbsorbed}) {
    KvCache kv = cache();
    ForwardBatch prefill;  // warm a prefix with the default forms, then compare one mixed step
    prefill.add_sequence(tokens(6, 1, vocab()), 0, iota_pages(8, 0));
    model_->forward(prefill, kv);
    ForwardBatch step;
    step.add_sequence(tokens(5, 2, vocab()), 6, iota_pages(8, 0));
    step.add_sequence(tokens(9, 3, vocab()), 0, iota_pages(8, 8));
    step.add_sequence(tokens(1, 4, vocab()), 0, iota_pages(1, 16));
    out[form == AttentionForm::kAbsorbed] = model_->forward(step, kv, {form, true, false});
  }
  expect_close(out[1].logits, out[0].logits, "absorbed vs decompressed");
}

TEST_F(ForwardConsistency, RaggedBatchEqualsEachAlone) {
  const std::vector<std::vector<int32_t>> prompts = {tokens(7, 1, vocab()), tokens(1, 2, vocab()),
                                                     tokens(13, 3, vocab())};
  KvCache batched_kv = cache();
  ForwardBatch batch;
  for (size_t i = 0; i < prompts.size(); ++i) batch.add_sequence(prompts[i], 0, iota_pages(4, 4 * static_cast<int>(i)));
  ForwardOutput batched = model_->forward(batch, batched_kv);
  for (size_t i = 0; i < prompts.size(); ++i) {
    KvCache kv = cache();
    ForwardBatch alone;
    alone.add_sequence(prompts[i], 0, iota_pages(4));
    ForwardOutput out = model_->forward(alone, kv);
    expect_close(batched.logits.rows(i, i + 1), out.logits, "sequence " + std::to_string(i));
  }
}

TEST_F(ForwardConsistency, PagedPrefixReuseEqualsFullRecompute) {
  const std::vector<int32_t> prompt = tokens(23, 5, vocab());
  KvCache full_kv = cache();
  ForwardBatch full;
  full.add_sequence(prompt, 0, iota_pages(6));
  ForwardOutput expected = model_->forward(full, full_kv, {AttentionForm::kAuto, true, false});

  // Same tokens in two chunks, through pages scattered across the cache (a page boundary inside the
  // second chunk, and the first chunk ending mid-page).
  const std::vector<int32_t> pages = {41, 3, 17, 60, 8, 29};
  KvCache kv = cache();
  ForwardBatch first;
  first.add_sequence({prompt.begin(), prompt.begin() + 10}, 0, pages);
  ForwardOutput a = model_->forward(first, kv, {AttentionForm::kAuto, true, false});
  ForwardBatch second;
  second.add_sequence({prompt.begin() + 10, prompt.end()}, 10, pages);
  ForwardOutput b = model_->forward(second, kv, {AttentionForm::kAuto, true, false});
  expect_close(a.logits, expected.logits.rows(0, 10), "first chunk");
  expect_close(b.logits, expected.logits.rows(10, 23), "second chunk over the cached prefix");
}

TEST_F(ForwardConsistency, CachedDecodeEqualsRecompute) {
  std::vector<int32_t> seq = tokens(5, 9, vocab());
  KvCache kv = cache();
  ForwardBatch prefill;
  prefill.add_sequence(seq, 0, iota_pages(8));
  ForwardOutput step = model_->forward(prefill, kv);
  for (int i = 0; i < 6; ++i) {
    KvCache fresh = cache();
    ForwardBatch whole;
    whole.add_sequence(seq, 0, iota_pages(8));
    expect_close(step.logits, model_->forward(whole, fresh).logits, "decode step " + std::to_string(i));
    const int32_t next = (seq.back() * 13 + i) % vocab();
    ForwardBatch decode;
    decode.add_sequence({next}, static_cast<int64_t>(seq.size()), iota_pages(8));
    step = model_->forward(decode, kv);
    seq.push_back(next);
  }
}

// A speculative tree's verify (tree drafting): each node's logits are those of its root-to-node path run as a chain
// (the same keys, its ancestors', at the same positions: depth, not slot), whatever its siblings hold.
TEST_F(ForwardConsistency, TreeVerifyEqualsEachPathAsAChain) {
  const std::vector<int32_t> prompt = tokens(7, 5, vocab());
  //            pending  a  b  c (a)  d (a)  e (b)
  const std::vector<int32_t> tree = {11, 3, 8, 21, 5, 13}, parents = {-1, 0, 0, 1, 1, 2};
  auto after_prompt = [&] {
    KvCache kv = cache();
    ForwardBatch prefill;
    prefill.add_sequence(prompt, 0, iota_pages(8));
    model_->forward(prefill, kv);
    return kv;
  };
  KvCache kv = after_prompt();
  ForwardBatch verify;
  verify.add_tree(tree, parents, 7, iota_pages(8));
  EXPECT_EQ(verify.positions, (std::vector<int32_t>{7, 8, 8, 9, 9, 9}));
  ForwardOptions all_rows;
  all_rows.logit_rows = {0, 1, 2, 3, 4, 5};
  const Tensor got = model_->forward(verify, kv, all_rows).logits;
  const int64_t v = vocab();
  for (int64_t j = 0; j < 6; ++j) {
    std::vector<int32_t> path;
    for (int64_t k = j; k >= 0; k = parents[static_cast<size_t>(k)]) path.insert(path.begin(), tree[static_cast<size_t>(k)]);
    KvCache chain_kv = after_prompt();
    ForwardBatch chain;
    chain.add_sequence(path, 7, iota_pages(8), static_cast<int64_t>(path.size()) - 1);
    const Tensor want = model_->forward(chain, chain_kv).logits;
    Tensor row = Tensor::zeros(DType::kF32, {1, v});
    std::copy(got.f32() + j * v, got.f32() + (j + 1) * v, row.f32());
    expect_close(row, want, "tree node " + std::to_string(j));
  }
  // Keeping path 0 -> a -> d: its latents move to the chain's slots, and the next decode is the chain's.
  kv.keep_tree_path(iota_pages(8), 7, {0, 1, 4});
  KvCache chain_kv = after_prompt();
  ForwardBatch chain;
  chain.add_sequence({tree[0], tree[1], tree[4]}, 7, iota_pages(8), 2);
  model_->forward(chain, chain_kv);
  ForwardBatch next;
  next.add_sequence({17}, 10, iota_pages(8));
  const Tensor after_tree = model_->forward(next, kv).logits;
  expect_close(after_tree, model_->forward(next, chain_kv).logits, "decode after the kept path");
  // A parent after its child is refused by name.
  ForwardBatch bad;
  EXPECT_THROW(bad.add_tree({1, 2, 3}, {-1, 2, 0}, 7, iota_pages(8)), Error);
}

TEST_F(ForwardConsistency, MtpModuleRunsOverMainHiddenStates) {
  ASSERT_EQ(model_->num_mtp_layers(), 1);
  const std::vector<int32_t> prompt = tokens(9, 4, vocab());
  KvCache kv = cache();
  ForwardBatch main;
  main.add_sequence(prompt, 0, iota_pages(4));
  ForwardOutput out = model_->forward(main, kv, {AttentionForm::kAuto, false, true});
  // MTP position i pairs hidden[i] with token i + 1.
  ForwardBatch mtp;
  mtp.add_sequence({prompt.begin() + 1, prompt.end()}, 0, iota_pages(4));
  Tensor hidden = out.hidden.rows(0, 8);
  ForwardOutput spec = model_->forward_mtp(0, mtp, hidden, kv, {AttentionForm::kAuto, true, false});
  EXPECT_EQ(spec.logits.shape, (std::vector<int64_t>{8, vocab()}));
  // The MTP layer is causal too: its first 4 rows do not depend on what follows.
  ForwardBatch shorter;
  shorter.add_sequence({prompt.begin() + 1, prompt.begin() + 5}, 0, iota_pages(4));
  KvCache kv2 = cache();
  ForwardOutput part = model_->forward_mtp(0, shorter, out.hidden.rows(0, 4), kv2, {AttentionForm::kAuto, true, false});
  expect_close(part.logits, spec.logits.rows(0, 4), "MTP prefix");
}

TEST(ForwardFp8, Fp8CheckpointEqualsItsDequantizedWeights) {
  json config = testing::small_v3_config();
  config["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                                   {"weight_block_size", {128, 128}}};
  TempDir fp8_dir, plain_dir;
  ModelConfig parsed = ModelConfig::from_json(config, "test");
  auto tensors = random_checkpoint_tensors(parsed, 3, /*fp8=*/true);
  write_checkpoint(fp8_dir.path(), config.dump(), tensors, 2);
  // The same weights stored dequantized in F32, without quantization_config.
  std::vector<std::pair<std::string, Tensor>> plain;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    if (name.ends_with("_scale_inv")) continue;
    if (t.dtype != DType::kF8E4M3) {
      plain.emplace_back(name, t);
      continue;
    }
    const Tensor& scale = tensors[i + 1].second;
    Tensor f = Tensor::zeros(DType::kF32, t.shape);
    for (int64_t r = 0; r < t.size(0); ++r)
      for (int64_t c = 0; c < t.size(1); ++c)
        f.f32()[r * t.size(1) + c] =
            fp8_e4m3_to_float(t.ptr<uint8_t>()[r * t.size(1) + c]) * scale.f32()[(r / 128) * scale.size(1) + c / 128];
    plain.emplace_back(name, f);
  }
  json plain_config = config;
  plain_config.erase("quantization_config");
  write_checkpoint(plain_dir.path(), plain_config.dump(), plain, 2);

  DeepSeekModel a = DeepSeekModel::load(fp8_dir.path()), b = DeepSeekModel::load(plain_dir.path());
  KvCache kv_a(a.config(), a.num_cache_layers(), 8, 64), kv_b(b.config(), b.num_cache_layers(), 8, 64);
  ForwardBatch batch;
  batch.add_sequence(tokens(11, 1, 97), 0, iota_pages(1));
  Tensor la = a.forward(batch, kv_a).logits, lb = b.forward(batch, kv_b).logits;
  testing::ErrorStats e = compare(la.f32(), lb.f32(), la.numel());
  EXPECT_EQ(e.max_abs, 0.0) << "FP8 load must dequantize exactly to w * scale";
}

TEST(ForwardMtp, ConfigAnnouncingMtpWithoutWeightsStillRuns) {
  TempDir dir;
  json config = testing::small_v3_config();
  ModelConfig parsed = ModelConfig::from_json(config, "test");
  std::vector<std::pair<std::string, Tensor>> kept;
  for (auto& entry : random_checkpoint_tensors(parsed, 5))
    if (entry.first.rfind("model.layers.3.", 0) != 0) kept.push_back(entry);  // drop the MTP layer
  write_checkpoint(dir.path(), config.dump(), kept, 1);
  DeepSeekModel model = DeepSeekModel::load(dir.path());
  EXPECT_EQ(model.num_mtp_layers(), 0);
  KvCache kv(model.config(), model.num_cache_layers(), 4, 8);
  ForwardBatch batch;
  batch.add_sequence(tokens(5, 1, 97), 0, iota_pages(4));
  EXPECT_EQ(model.forward(batch, kv).logits.size(1), 97);
}

}  // namespace
}  // namespace narwhal
