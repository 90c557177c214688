// The CPU forward split over TP ranks (rank threads on the host backend) against the same model at TP 1: every
// fixture at TP 2 and 4 (the splits that do not divide are refused, naming the field), the MTP module, random
// configs at TP 2, transformers v5's stacked experts and tied embeddings, expert parallelism (EP 2, 4 and 8), DeepEP's
// all-to-all dispatch (--moe-a2a-backend deepep, EP = TP 2, 4 and 8, normal, low-latency and auto mode; ranks whose
// experts nobody picks), and the FP8 rule that a kept-FP8 weight is cut with whole blocks.
// Tolerance 1e-5 relative (max |diff| / max |ref| per step): TP adds the same float32 products in another
// grouping (per-rank partial sums of o_proj, down_proj and the experts, then summed in rank order); measured at
// most 1.2e-6 on the fixtures (deepep adds each token's experts per rank, then the ranks in order). The greedy ids
// must be equal, and every rank must hold the same bits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <numeric>
#include <optional>
#include <tuple>

#include "core/error.h"
#include "core/logging.h"
#include "model/checkpoint_layout.h"
#include "model/checkpoint_slice.h"
#include "model/deepseek_model.h"
#include "model/safetensors.h"
#include "ops/sampling.h"
#include "parallel/process_world.h"
#include "random_config.h"
#include "step_script.h"
#include "test_util.h"

namespace narwhal {
namespace {

constexpr double kTolerance = 1e-5;

// What one run of a model gives: the step script's logits, the greedy continuation of a prompt and its logits,
// and (with MTP) the MTP module's logits over the prompt.
struct Outputs {
  std::vector<Tensor> steps;
  std::vector<int32_t> greedy;
  std::vector<Tensor> greedy_logits;
  Tensor mtp;
};

Outputs run_model(const DeepSeekModel& model, uint64_t seed) {
  const int64_t vocab = model.config().vocab_size;
  Outputs out;
  const testing::StepScript script = testing::make_step_script(seed, vocab, 8);
  {
    KvCache cache(model.config(), model.num_cache_layers(), script.pages_needed, 8);
    out.steps = testing::run_step_script(script, [&](const ForwardBatch& b) { return model.forward(b, cache).logits; });
  }
  std::vector<int32_t> pages(8);
  std::iota(pages.begin(), pages.end(), 0);
  KvCache cache(model.config(), model.num_cache_layers(), 8, 8);
  std::vector<int32_t> prompt(13);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 37 + seed * 11 + 3) % vocab);
  ForwardBatch batch;
  batch.add_sequence(prompt, 0, pages);
  const ForwardOutput first = model.forward(batch, cache, {AttentionForm::kAuto, false, true});
  if (model.num_mtp_layers() > 0) {
    ForwardBatch mtp;
    mtp.add_sequence({prompt.begin() + 1, prompt.end()}, 0, pages);
    const int64_t n = static_cast<int64_t>(prompt.size()) - 1;
    out.mtp = model.forward_mtp(0, mtp, first.hidden.rows(0, n), cache, {AttentionForm::kAuto, true, false}).logits;
  }
  Tensor logits = first.logits;
  int64_t prefix = static_cast<int64_t>(prompt.size());
  for (int i = 0; i < 6; ++i) {
    out.greedy_logits.push_back(logits);
    out.greedy.push_back(ops::argmax(logits.f32(), vocab));
    ForwardBatch next;
    next.add_sequence({out.greedy.back()}, prefix++, pages);
    logits = model.forward(next, cache).logits;
  }
  return out;
}

// Rank `rank` of `tp`, the experts over `ep` groups; with `deepep` (ep == tp), DeepEP's dispatch in that mode.
TpSlice slice_of(int rank, int tp, int ep, std::optional<DeepEpMode> deepep) {
  return {rank, tp, ep, 1, deepep ? MoeA2aBackend::kDeepEp : MoeA2aBackend::kNone, deepep.value_or(DeepEpMode::kAuto)};
}

DeepSeekModel load_rank(const std::string& model_dir, const TpSlice& slice, Communicator& comm) {
  const ModelConfig config = ModelConfig::from_file(model_dir + "/config.json");
  ModelWeights weights = load_weights(config, Checkpoint(model_dir), Device::kCPU, slice);
  return DeepSeekModel(config, std::move(weights), &comm, slice.ep_size, nullptr, 1, slice.moe_a2a,
                       slice.deepep_mode);
}

// Runs `model_dir` split over `tp` rank threads (as slice_of says); returns each rank's outputs.
std::vector<Outputs> run_tp(const std::string& model_dir, int tp, uint64_t seed, int ep = 1,
                            std::optional<DeepEpMode> deepep = std::nullopt) {
  std::vector<Outputs> outputs(tp);
  run_ranks(tp, [&](const ParallelConfig& rank, Communicator& comm) {
    outputs[rank.tp_rank()] = run_model(load_rank(model_dir, slice_of(rank.tp_rank(), tp, ep, deepep), comm), seed);
  });
  return outputs;
}


double max_rel_error(const Tensor& actual, const Tensor& expected) {
  EXPECT_EQ(actual.shape, expected.shape);
  return testing::compare(actual.f32(), expected.f32(), expected.numel()).rel;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape == b.shape && std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

// Every rank equals rank 0 bit for bit, and rank 0 equals TP 1 within the tolerance; returns the largest error.
double expect_tp_matches(const Outputs& tp1, const std::vector<Outputs>& ranks, const std::string& what) {
  double worst = 0;
  const Outputs& r0 = ranks[0];
  EXPECT_EQ(r0.greedy, tp1.greedy) << what << ": greedy ids";
  for (size_t i = 0; i < tp1.steps.size(); ++i) worst = std::max(worst, max_rel_error(r0.steps[i], tp1.steps[i]));
  for (size_t i = 0; i < tp1.greedy_logits.size() && i < r0.greedy_logits.size(); ++i)
    worst = std::max(worst, max_rel_error(r0.greedy_logits[i], tp1.greedy_logits[i]));
  if (tp1.mtp.defined()) worst = std::max(worst, max_rel_error(r0.mtp, tp1.mtp));
  EXPECT_LE(worst, kTolerance) << what;
  for (size_t r = 1; r < ranks.size(); ++r) {
    for (size_t i = 0; i < tp1.steps.size(); ++i)
      EXPECT_TRUE(same_bits(ranks[r].steps[i], r0.steps[i])) << what << ": rank " << r << " step " << i;
    EXPECT_EQ(ranks[r].greedy, r0.greedy) << what << ": rank " << r;
  }
  ::testing::Test::RecordProperty(what, cat(worst));
  return worst;
}

// "" when `tp` splits the config, else the refusal.
std::string refusal(const std::string& model_dir, int tp) {
  try {
    tp_dims(ModelConfig::from_file(model_dir + "/config.json"), {0, tp});
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

class TpFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(TpFixture, Tp2And4GiveTp1Logits) {
  set_log_level(LogLevel::kWarning);
  const std::string dir = testing::fixture_dir(GetParam());
  const Outputs tp1 = run_model(DeepSeekModel::load(dir), 5);
  for (int tp : {2, 4}) {
    const std::string what = cat(GetParam(), " tp ", tp);
    if (const std::string refused = refusal(dir, tp); !refused.empty()) {
      // Only the odd fixtures' heads (5 and 6) do not split.
      EXPECT_NE(refused.find("num_attention_heads"), std::string::npos) << refused;
      EXPECT_NE(refused.find(cat("does not split evenly over ", tp, " ranks")), std::string::npos) << refused;
      EXPECT_TRUE(std::string(GetParam()).find("odd") != std::string::npos) << what << ": " << refused;
      continue;
    }
    const double err = expect_tp_matches(tp1, run_tp(dir, tp, 5), what);
    std::printf("%s: max rel error vs TP 1 %.2e\n", what.c_str(), err);
  }
}

// Expert parallelism (EP-MoE) with TP attention: EP 2 at TP 2 (each expert whole on one rank), EP 2 at TP 4 (each
// expert split over a pair of ranks) and EP 4 at TP 4, against TP 1; then DeepEP's dispatch (EP = TP 2 and 4) in
// every mode: the step script mixes prefill and decode steps (auto switches between the modes), the greedy
// continuation decodes one token at a time (at TP 4 three of the four slices are empty) and the MTP module's layer
// is a MoE layer too. The odd fixtures' heads do not split (dp_attention_test.cpp runs them with deepep).
TEST_P(TpFixture, ExpertParallelGivesTp1Logits) {
  set_log_level(LogLevel::kWarning);
  const std::string dir = testing::fixture_dir(GetParam());
  if (std::string(GetParam()).find("odd") != std::string::npos) GTEST_SKIP() << "its heads do not split";
  const Outputs tp1 = run_model(DeepSeekModel::load(dir), 5);
  std::vector<std::tuple<int, int, std::optional<DeepEpMode>>> splits = {{2, 2, {}}, {4, 2, {}}, {4, 4, {}}};
  for (int tp : {2, 4})
    for (DeepEpMode mode : {DeepEpMode::kNormal, DeepEpMode::kLowLatency, DeepEpMode::kAuto})
      splits.emplace_back(tp, tp, mode);
  for (const auto& [tp, ep, deepep] : splits) {
    const std::string what =
        cat(GetParam(), " tp ", tp, " ep ", ep, deepep ? cat(" deepep ", deepep_mode_name(*deepep)) : "");
    const double err = expect_tp_matches(tp1, run_tp(dir, tp, 5, ep, deepep), what);
    std::printf("%s: max rel error vs TP 1 %.2e\n", what.c_str(), err);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TpFixture, ::testing::Values("v2_lite", "v2", "v3", "v3_fp8", "v3_odd", "v2_odd"));

// small_v3_config with `heads` heads and `experts` routed experts in `groups` groups (top-2 of them, top-2
// experts), its intermediate sizes split over up to 8 ranks.
json expert_parallel_config(int heads, int experts, int groups) {
  json c = testing::small_v3_config();
  c["num_attention_heads"] = heads;
  c["n_routed_experts"] = experts;
  c["n_group"] = groups;
  c["topk_group"] = std::min(groups, 2);
  c["num_experts_per_tok"] = 2;
  c["moe_intermediate_size"] = 64;
  c["intermediate_size"] = 256;
  return c;
}

// Routed experts that do not split over the EP groups, an EP size that does not divide the TP size, and deepep
// with experts split inside EP groups.
TEST(TensorParallel, UnevenExpertSplitsAreRefused) {
  const ModelConfig config = ModelConfig::from_json(expert_parallel_config(4, 6, 1), "config.json");
  for (const auto& [slice, expected] :
       {std::pair{TpSlice{0, 4, 4}, "config.json's n_routed_experts at this --ep-size = 6 does not split evenly over 4"},
        std::pair{TpSlice{0, 4, 3}, "--ep-size 3 does not divide --tp-size 4"},
        std::pair{TpSlice{0, 4, 2, 1, MoeA2aBackend::kDeepEp},
                  "--moe-a2a-backend deepep needs --ep-size equal to --tp-size (whole experts per rank), got --ep-size "
                  "2 with --tp-size 4"}}) {
    try {
      tp_dims(config, slice);
      ADD_FAILURE() << "ep " << slice.ep_size << " was not refused";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  }
}

TEST(TensorParallel, UnevenSplitsAreRefusedNamingTheField) {
  EXPECT_NE(refusal(testing::fixture_dir("v2_odd"), 2).find("config.json's num_attention_heads = 5 does not split "
                                                            "evenly over 2 ranks"),
            std::string::npos);
  json c = testing::small_v3_config();  // 3 heads, intermediate 200, moe_intermediate 72
  c["num_attention_heads"] = 4;
  const ModelConfig config = ModelConfig::from_json(c, "config.json");
  for (int tp : {2, 4}) EXPECT_NO_THROW(tp_dims(config, {0, tp}));
  try {
    tp_dims(config, {0, 16});
    ADD_FAILURE() << "16 ranks split 4 heads";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_attention_heads = 4"), std::string::npos) << e.what();
  }
  c["moe_intermediate_size"] = 70;
  try {
    tp_dims(ModelConfig::from_json(c, "config.json"), {1, 4});
    ADD_FAILURE() << "4 ranks split moe_intermediate_size 70";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("moe_intermediate_size = 70 does not split evenly over 4"), std::string::npos)
        << e.what();
  }
}

TEST(TensorParallel, UnevenVocabulariesArePadded) {
  json c = testing::small_v3_config();  // vocab 97
  c["num_attention_heads"] = 4;
  c["intermediate_size"] = 192;
  const TpDims last = tp_dims(ModelConfig::from_json(c, "config.json"), {3, 4});
  EXPECT_EQ(last.vocab.begin, 96);
  EXPECT_EQ(last.vocab.size, 32);  // ceil(97 / 4) = 25 rounded up to 32: 1 real row, 31 of padding
  EXPECT_EQ(tp_dims(ModelConfig::from_json(c, "config.json"), {0, 1}).vocab.size, 97) << "TP 1 holds the table as is";
}

// Random configs from the differential generator, at TP 2, on the first seeds whose dims split in two (and whose
// hidden size keeps the test quick).
TEST(TensorParallel, RandomConfigsAtTp2GiveTp1Logits) {
  set_log_level(LogLevel::kWarning);
  int tested = 0;
  for (uint64_t seed = 1; tested < 3 && seed < 64; ++seed) {
    const testing::RandomModel drawn = testing::random_model(seed);
    if (drawn.config["hidden_size"].get<int64_t>() > 384) continue;
    try {
      tp_dims(ModelConfig::from_json(drawn.config, "config.json"), {0, 2});
    } catch (const Error&) {
      continue;
    }
    SCOPED_TRACE(drawn.summary);
    testing::TempDir dir;
    testing::write_random_checkpoint(dir.path(), drawn.config, seed, drawn.fp8);
    const Outputs tp1 = run_model(DeepSeekModel::load(dir.path()), seed);
    expect_tp_matches(tp1, run_tp(dir.path(), 2, seed), drawn.summary);
    ++tested;
  }
  EXPECT_EQ(tested, 3);
}

// The checkpoint in `from` rewritten into `to` with transformers v5's stacked experts: each MoE layer's
// mlp.experts.gate_up_proj [E, 2I, H] (an expert's gate rows, then its up rows) and mlp.experts.down_proj [E, H, I].
void write_stacked_experts(const std::string& from, const std::string& to) {
  const ModelConfig c = ModelConfig::from_file(from + "/config.json");
  const Checkpoint checkpoint(from);
  const auto copy = [&](const std::vector<std::string>& names, std::vector<int64_t> shape) {
    Tensor t = Tensor::zeros(checkpoint.get(names[0]).dtype, std::move(shape));
    char* dst = static_cast<char*>(t.data);
    for (const std::string& name : names) {
      const TensorInfo& info = checkpoint.get(name);
      std::memcpy(dst, info.data, info.nbytes);
      dst += info.nbytes;
    }
    return t;
  };
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const TensorSpec& spec : checkpoint_tensors(c))
    if (spec.name.find(".mlp.experts.") == std::string::npos)
      tensors.push_back({spec.name, copy({spec.name}, spec.shape)});
  const int64_t e = c.n_routed_experts, inter = c.moe_intermediate_size, hidden = c.hidden_size;
  for (int layer = 0; layer < c.num_hidden_layers + c.num_nextn_predict_layers; ++layer) {
    if (!c.is_moe_layer(layer)) continue;
    const std::string p = cat("model.layers.", layer, ".mlp.experts.");
    std::vector<std::string> gate_up, down;
    for (int64_t x = 0; x < e; ++x) {
      gate_up.insert(gate_up.end(), {cat(p, x, ".gate_proj.weight"), cat(p, x, ".up_proj.weight")});
      down.push_back(cat(p, x, ".down_proj.weight"));
    }
    tensors.push_back({p + "gate_up_proj", copy(gate_up, {e, 2 * inter, hidden})});
    tensors.push_back({p + "down_proj", copy(down, {e, hidden, inter})});
  }
  write_checkpoint(to, read_text_file(from + "/config.json"), tensors, 2);
}

// Layouts no fixture has: transformers v5's stacked experts (cut per expert matrix), and tied embeddings (the
// lm_head is the embedding's vocabulary shard).
TEST(TensorParallel, StackedExpertsAndTiedEmbeddingsGiveTp1Logits) {
  set_log_level(LogLevel::kWarning);
  json c = testing::small_v3_config();  // 4 heads, intermediate 200, moe_intermediate 72, vocab 97 (padded)
  c["num_attention_heads"] = 4;
  testing::TempDir per_expert, stacked;
  testing::write_random_checkpoint(per_expert.path(), c, 9);
  write_stacked_experts(per_expert.path(), stacked.path());
  const Outputs tp1 = run_model(DeepSeekModel::load(per_expert.path()), 9);
  const Outputs stacked_tp1 = run_model(DeepSeekModel::load(stacked.path()), 9);
  for (size_t i = 0; i < tp1.steps.size(); ++i)
    EXPECT_TRUE(same_bits(stacked_tp1.steps[i], tp1.steps[i])) << "the stacked layout is the same model, step " << i;
  for (int tp : {2, 4}) expect_tp_matches(tp1, run_tp(stacked.path(), tp, 9), cat("stacked experts tp ", tp));
  c["tie_word_embeddings"] = true;
  testing::TempDir tied;
  testing::write_random_checkpoint(tied.path(), c, 10);
  expect_tp_matches(run_model(DeepSeekModel::load(tied.path()), 10), run_tp(tied.path(), 2, 10), "tied tp 2");
}

// EP 8 at TP 8 (8 heads, one routed expert of 8 per rank: most tokens' choices are on other ranks, and experts
// no token picks leave their rank with nothing to add), EP 4 at TP 8, and transformers v5's stacked experts at
// EP 2 (every expert read, this rank's kept).
TEST(TensorParallel, ExpertParallelAtTp8AndStackedExperts) {
  set_log_level(LogLevel::kWarning);
  const json c = expert_parallel_config(8, 8, 4);
  testing::TempDir per_expert, stacked;
  testing::write_random_checkpoint(per_expert.path(), c, 12);
  const Outputs tp1 = run_model(DeepSeekModel::load(per_expert.path()), 12);
  for (int ep : {8, 4}) expect_tp_matches(tp1, run_tp(per_expert.path(), 8, 12, ep), cat("tp 8 ep ", ep));
  for (DeepEpMode mode : {DeepEpMode::kNormal, DeepEpMode::kLowLatency})
    expect_tp_matches(tp1, run_tp(per_expert.path(), 8, 12, 8, mode), cat("tp 8 deepep ", deepep_mode_name(mode)));
  write_stacked_experts(per_expert.path(), stacked.path());
  expect_tp_matches(tp1, run_tp(stacked.path(), 2, 12, 2), "stacked experts tp 2 ep 2");
}

// The v3 fixture with EP ranks 2 and 3's experts (8-15 of 16 at EP 4: router groups 2 and 3) made unpickable by a
// correction bias of -100, in `to`.
void write_unpicked_experts(const std::string& to) {
  const std::string from = testing::fixture_dir("v3");
  const ModelConfig c = ModelConfig::from_file(from + "/config.json");
  const Checkpoint checkpoint(from);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const TensorSpec& spec : checkpoint_tensors(c)) {
    const TensorInfo& info = checkpoint.get(spec.name);
    Tensor t = Tensor::zeros(info.dtype, spec.shape);
    std::memcpy(t.data, info.data, info.nbytes);
    if (spec.name.find("e_score_correction_bias") != std::string::npos)
      for (int64_t e = c.n_routed_experts / 2; e < c.n_routed_experts; ++e) t.f32()[e] = -100.0f;
    tensors.push_back({spec.name, t});
  }
  write_checkpoint(to, read_text_file(from + "/config.json"), tensors, 2);
}

// deepep at TP 4 where ranks 2 and 3 hold experts nobody picks: in a decode step of one token (one row, on rank 0)
// they receive nothing at all, and in prefill steps only their own slice. TP 1's logits, and the expert counts of
// rank 0 (the TP group's sum) equal TP 1's: every choice once, none on the unpicked experts.
TEST(TensorParallel, DeepEpRanksThatReceiveNothingStillMeetTheOthers) {
  set_log_level(LogLevel::kWarning);
  testing::TempDir dir;
  write_unpicked_experts(dir.path());
  const Outputs tp1 = run_model(DeepSeekModel::load(dir.path()), 6);
  for (DeepEpMode mode : {DeepEpMode::kNormal, DeepEpMode::kLowLatency})
    expect_tp_matches(tp1, run_tp(dir.path(), 4, 6, 4, mode), cat("unpicked experts deepep ", deepep_mode_name(mode)));
  // One prompt, then one decode step, with the expert counts.
  const auto count = [&](const DeepSeekModel& model) {
    std::vector<int64_t> experts(static_cast<size_t>(model.config().n_routed_experts), 0);
    ForwardOptions options;
    options.expert_tokens = &experts;
    KvCache cache(model.config(), model.num_cache_layers(), 4, 8);
    ForwardBatch prompt, decode;
    prompt.add_sequence({5, 17, 42, 7, 9}, 0, {0});
    decode.add_sequence({3}, 5, {0});
    model.forward(prompt, cache, options);
    model.forward(decode, cache, options);
    return experts;
  };
  const std::vector<int64_t> want = count(DeepSeekModel::load(dir.path()));
  for (size_t e = want.size() / 2; e < want.size(); ++e) EXPECT_EQ(want[e], 0) << "expert " << e << " was picked";
  std::vector<std::vector<int64_t>> got(4);
  run_ranks(4, [&](const ParallelConfig& rank, Communicator& comm) {
    got[rank.tp_rank()] = count(load_rank(dir.path(), slice_of(rank.tp_rank(), 4, 4, DeepEpMode::kAuto), comm));
  });
  for (int r = 0; r < 4; ++r) EXPECT_EQ(got[r], want) << "rank " << r << "'s expert counts";
}

// A mapped-like FP8 tensor [256, 384] with 2 x 3 block scales, for the cut rules.
struct Fp8Matrix {
  std::vector<unsigned char> bytes = std::vector<unsigned char>(256 * 384);
  std::string file = "model.safetensors";
  TensorInfo info;
  BlockScales scales;
  Fp8Matrix() {
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>((i * 7) % 120);
    info = {"layers.0.q_b_proj.weight", DType::kF8E4M3, {256, 384}, bytes.data(), bytes.size(), &file};
    scales.scale = Tensor::from_floats({1, 2, 3, 4, 5, 6}, {2, 3});
  }
};

TEST(TensorParallel, Fp8KeptFp8IsCutWithWholeBlocks) {
  const Fp8Matrix m;
  const Fp8Cut rows = read_fp8(m.info, m.scales, Cut::rows({128, 128}), 2);
  ASSERT_EQ(rows.q.shape, (std::vector<int64_t>{128, 384}));
  EXPECT_EQ(std::memcmp(rows.q.data, m.bytes.data() + 128 * 384, 128 * 384), 0);
  ASSERT_EQ(rows.scale.shape, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(rows.scale.f32()[0], 4);
  const Fp8Cut cols = read_fp8(m.info, m.scales, Cut::cols({256, 128}), 3);
  ASSERT_EQ(cols.scale.shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(cols.scale.f32()[1], 6);
  EXPECT_EQ(cols.q.ptr<unsigned char>()[128 + 5], m.bytes[384 + 256 + 5]);
  try {
    read_fp8(m.info, m.scales, Cut::rows({64, 64}), 4);
    ADD_FAILURE() << "a cut inside a block was taken";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const char* part : {"layers.0.q_b_proj.weight", "--tp-size 4", "row 64 falls inside FP8 scale block 0"})
      EXPECT_NE(message.find(part), std::string::npos) << message;
  }
}

// Dequantizing can cut anywhere: each element takes its own block's scale, so a cut equals the whole one's part.
TEST(TensorParallel, DequantizedFp8CutsEqualTheWholeTensorsPart) {
  const Fp8Matrix m;
  const Tensor whole = read_f32(m.info, {}, m.scales);
  const Tensor part = read_f32(m.info, Cut::cols({100, 96}), m.scales);
  for (int64_t r = 0; r < 256; ++r)
    for (int64_t c = 0; c < 96; ++c) ASSERT_EQ(part.f32()[r * 96 + c], whole.f32()[r * 384 + 100 + c]);
  const Tensor padded = read_f32(m.info, Cut::rows({200, 80}), m.scales);
  EXPECT_EQ(padded.f32()[55 * 384 + 3], whole.f32()[255 * 384 + 3]);
  EXPECT_EQ(padded.f32()[56 * 384 + 3], 0.0f) << "rows past the end read as zeros";
  const Tensor beyond = read_f32(m.info, Cut::rows({264, 8}), m.scales);  // a shard that is padding only
  for (int64_t i = 0; i < beyond.numel(); ++i) ASSERT_EQ(beyond.f32()[i], 0.0f);
}

}  // namespace
}  // namespace narwhal
