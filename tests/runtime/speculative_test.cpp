// Speculative decoding's host arithmetic: which rows verify, how many draws are kept, the draft model's batches and
// rounds (DraftChain, which the CPU and GPU runners both follow).
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "runtime/speculative.h"
#include "test_util.h"

namespace narwhal {
namespace {

// A prompt chunk of 3 tokens (not drawing), a decode with 2 drafts, a decode without drafts.
ForwardBatch verify_batch() {
  ForwardBatch b;
  b.add_sequence({10, 11, 12}, 0, {0}, 0, 13);
  b.add_sequence({20, 21, 22}, 5, {1, 2}, 2);
  b.add_sequence({30}, 2, {3});
  return b;
}

TEST(Speculative, VerifyRowsAreEachDrawingSequencesPendingTokenAndDrafts) {
  const ForwardBatch b = verify_batch();
  SamplingParams greedy;
  greedy.temperature = 0;
  const std::vector<SampleRequest> samples{{1, &greedy}, {2, &greedy}};
  const VerifyRows rows = verify_rows(b, samples);
  EXPECT_EQ(rows.token_rows, (std::vector<int64_t>{3, 4, 5, 6}));
  EXPECT_EQ(rows.first, (std::vector<int64_t>{-1, 0, 3}));
  const std::vector<SampleRequest> outside{{3, &greedy}};
  EXPECT_THROW(verify_rows(b, outside), Error);
}

// Padded to 4 new tokens, as a GPU verify runs it: the chunk keeps its 3 rows, each decode takes 4.
TEST(Speculative, PaddedRowsPadEveryDecodeToTheVerifyLength) {
  const ForwardBatch b = verify_batch();
  EXPECT_FALSE(b.all_decode());
  EXPECT_EQ(b.padded_rows(4), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 7}));
  EXPECT_EQ(b.padded_rows(0), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));  // not a verify: nothing padded
  EXPECT_EQ(b.seqs[1].step_rows(4), 4);
  EXPECT_EQ(b.seqs[0].step_rows(4), 3);
  ForwardBatch trees;
  trees.add_tree({5, 6, 7}, {-1, -1, 0}, 3, {0});
  trees.add_sequence({8}, 2, {1});
  EXPECT_TRUE(trees.all_decode());
  EXPECT_EQ(trees.padded_rows(3), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(Speculative, PendingTokenLogitsAreEachDrawingSequencesFirstRow) {
  const ForwardBatch b = verify_batch();
  SamplingParams greedy;
  greedy.temperature = 0;
  const std::vector<SampleRequest> samples{{1, &greedy}, {2, &greedy}};
  const VerifyRows rows = verify_rows(b, samples);
  Tensor row_logits = Tensor::zeros(DType::kF32, {4, 2});
  for (int64_t i = 0; i < 8; ++i) row_logits.f32()[i] = static_cast<float>(i);
  const Tensor out = pending_token_logits(rows, row_logits);
  ASSERT_EQ(out.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(std::vector<float>(out.f32(), out.f32() + 6), (std::vector<float>{0, 0, 0, 1, 6, 7}));
}

TEST(Speculative, AcceptedLengthKeepsTheMatchingDraftsAndOneDrawMore) {
  const std::vector<int32_t> drafts{5, 6, 7};
  EXPECT_EQ(accepted_length(drafts, std::vector<int32_t>{5, 6, 7, 8}), 4);
  EXPECT_EQ(accepted_length(drafts, std::vector<int32_t>{5, 9, 7, 8}), 2);
  EXPECT_EQ(accepted_length(drafts, std::vector<int32_t>{1, 6, 7, 8}), 1);
  EXPECT_EQ(accepted_length({}, std::vector<int32_t>{4}), 1);
  EXPECT_THROW(accepted_length(drafts, std::vector<int32_t>{5}), Error);
}

// Tree drafting's greedy walk: root 0 (token 11) with children a (3) and b (8); a's children c (21), d (5); b's e (13).
TEST(Speculative, TreePathFollowsTheChildHoldingEachDraw) {
  const std::vector<int32_t> tokens = {11, 3, 8, 21, 5, 13}, parents = {-1, 0, 0, 1, 1, 2};
  auto path = [&](std::vector<int32_t> draws) { return accepted_tree_path(tokens, parents, draws); };
  EXPECT_EQ(path({3, 5, 0, 0, 9, 0}), (std::vector<int64_t>{0, 1, 4}));  // a, then d: the draw after d is 9
  EXPECT_EQ(path({8, 0, 13, 0, 0, 0}), (std::vector<int64_t>{0, 2, 5}));  // the second child, then its own
  EXPECT_EQ(path({7, 5, 13, 0, 0, 0}), (std::vector<int64_t>{0}));        // no child holds 7: only the draw
  EXPECT_EQ(path({8, 21, 21, 0, 0, 0}), (std::vector<int64_t>{0, 2}));    // 21 is a's child, not b's
  // A chain is the tree whose every node has one child: the walk keeps what accepted_length does.
  const std::vector<int32_t> chain = {11, 5, 6, 7}, chain_parents = {-1, 0, 1, 2};
  EXPECT_EQ(accepted_tree_path(chain, chain_parents, std::vector<int32_t>{5, 6, 9, 0}).size(), 3u);
  EXPECT_EQ(accepted_length(std::vector<int32_t>{5, 6, 7}, std::vector<int32_t>{5, 6, 9, 0}), 3);
}

// A tree cut to depth 1 keeps the pending token's children, renumbered; depth 2 keeps all but e's child.
TEST(Speculative, TrimmedTreeKeepsTheNodesNoDeeperThanTheRoom) {
  //                           a  b  c (a)  d (b)  e (c)
  std::vector<int32_t> draft = {3, 8, 21, 5, 13}, parents = {0, 0, 1, 2, 3};
  std::vector<int32_t> d1 = draft, p1 = parents;
  trim_draft_tree(d1, p1, 1);
  EXPECT_EQ(d1, (std::vector<int32_t>{3, 8}));
  EXPECT_EQ(p1, (std::vector<int32_t>{0, 0}));
  std::vector<int32_t> d2 = draft, p2 = parents;
  trim_draft_tree(d2, p2, 2);
  EXPECT_EQ(d2, (std::vector<int32_t>{3, 8, 21, 5}));
  EXPECT_EQ(p2, (std::vector<int32_t>{0, 0, 1, 2}));
  trim_draft_tree(draft, parents, 0);
  EXPECT_TRUE(draft.empty());
}

TEST(Speculative, MtpExtendPairsEveryKeptPositionWithTheTokenAfterIt) {
  const ForwardBatch b = verify_batch();
  // The chunk keeps all 3 (its next prompt token is known), the decode its pending token and 1 draft (then 40 was
  // drawn), the last decode its one token (then 50).
  const std::vector<int64_t> kept{3, 2, 1};
  const std::vector<int32_t> after{13, 40, 50};
  const MtpBatch m = mtp_extend_batch(b, kept, after);
  EXPECT_EQ(m.batch.token_ids, (std::vector<int32_t>{11, 12, 13, 21, 40, 50}));
  EXPECT_EQ(m.batch.positions, (std::vector<int32_t>{0, 1, 2, 5, 6, 2}));
  EXPECT_EQ(m.hidden_rows, (std::vector<int64_t>{0, 1, 2, 3, 4, 6}));
  EXPECT_EQ(m.source, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(m.batch.seqs[1].page_table, (std::vector<int32_t>{1, 2}));
  // A chunk whose next token is unknown leaves its last position for later; one with nothing left is skipped.
  const std::vector<int32_t> unknown{-1, 40, 50};
  const std::vector<int64_t> none{1, 2, 1};
  const MtpBatch w = mtp_extend_batch(b, none, unknown);
  EXPECT_EQ(w.source, (std::vector<int>{1, 2}));
  const std::vector<int64_t> too_many{4, 2, 1};
  EXPECT_THROW(mtp_extend_batch(b, too_many, after), Error);
}

TEST(Speculative, ChainStepFeedsEachDraftAtTheNextPosition) {
  ForwardBatch last;
  last.add_sequence({11, 12}, 0, {0});  // next position 2
  last.add_sequence({21}, 7, {1, 2, 3});  // next position 8
  const std::vector<int32_t> drafts{90, 91};
  const ForwardBatch next = mtp_chain_batch(last, drafts, {true, true}, 4, 100);
  EXPECT_EQ(next.token_ids, (std::vector<int32_t>{90, 91}));
  EXPECT_EQ(next.positions, (std::vector<int32_t>{2, 8}));
  EXPECT_EQ(mtp_chain_batch(last, drafts, {false, true}, 4, 100).token_ids, (std::vector<int32_t>{91}));
  EXPECT_THROW(mtp_chain_batch(last, drafts, {true, true}, 2, 100), Error) << "position 2 is past one page of 2";
  EXPECT_THROW(mtp_chain_batch(last, drafts, {false, true}, 4, 8), Error) << "position 8 reaches the context";
}

std::vector<SampledToken> tokens(std::vector<int32_t> ids) {
  std::vector<SampledToken> out;
  for (int32_t id : ids) out.emplace_back().token = id;
  return out;
}

// The decode with drafts {21, 22} draws 21, 99, 7: it keeps one draft and takes 99; the other decode takes 31.
TEST(Speculative, AcceptDraftsTakesEachRequestsMatchingDraftsAndSetsTheDraftModelsPositions) {
  const ForwardBatch b = verify_batch();
  SamplingParams greedy;
  greedy.temperature = 0;
  const std::vector<SampleRequest> samples{{1, &greedy}, {2, &greedy}};
  const std::vector<SampleRequest> rows = verify_samples(b, samples, verify_rows(b, samples));
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[1].row, 1);
  EXPECT_EQ(rows[1].position, 1);
  EXPECT_EQ(rows[3].row, 3);
  const VerifyOutcome out = accept_drafts(b, samples, tokens({21, 99, 7, 31}));
  EXPECT_EQ(out.accepted, (std::vector<int32_t>{2, 1}));
  ASSERT_EQ(out.sampled.size(), 3u);
  EXPECT_EQ(out.sampled[1].token, 99);
  EXPECT_EQ(out.sampled[2].token, 31);
  EXPECT_EQ(out.kept, (std::vector<int64_t>{3, 2, 1}));
  EXPECT_EQ(out.after, (std::vector<int32_t>{13, 99, 31}));
  EXPECT_THROW(accept_drafts(b, samples, tokens({21, 99})), Error);
  const std::vector<int32_t> stops{1};
  std::vector<SampleRequest> masked{{1, &greedy}};
  masked[0].masked = &stops;
  const std::vector<SampleRequest> masked_rows = verify_samples(b, masked, verify_rows(b, masked));
  EXPECT_EQ(masked_rows[0].masked, &stops) << "the pending token's row keeps the min_new_tokens mask";
  EXPECT_EQ(masked_rows[1].masked, nullptr) << "draft rows are past it";
}

// The extend round drafts after every sequence's last kept position, then each request's chain goes on until it has
// max_draft drafts (or num_steps), its pages end, or the context does; rounds take the last round's last rows.
TEST(Speculative, DraftChainRoundsStopAtEachRequestsLimits) {
  ForwardBatch b;
  b.add_sequence({20, 21, 22}, 5, {1, 2}, 2);  // keeps 2 (accepted 2): positions 5, 6; pages end at 8
  b.add_sequence({30}, 2, {3});                // keeps 1: position 2
  SamplingParams greedy;
  greedy.temperature = 0;
  std::vector<SampleRequest> samples{{0, &greedy}, {1, &greedy}};
  samples[0].max_draft = 3;
  samples[1].max_draft = 1;
  VerifyOutcome outcome;
  outcome.kept = {2, 1};
  outcome.after = {40, 50};
  DraftChain chain(b, samples, outcome, 3, 4, 100);
  ASSERT_FALSE(chain.done());
  EXPECT_EQ(chain.batch().token_ids, (std::vector<int32_t>{21, 40, 50}));
  EXPECT_EQ(chain.hidden_rows(), (std::vector<int64_t>{0, 1, 3}));
  chain.advance(std::vector<int32_t>{60, 70});  // sequence 1 has its one draft
  ASSERT_FALSE(chain.done());
  EXPECT_EQ(chain.batch().token_ids, (std::vector<int32_t>{60}));
  EXPECT_EQ(chain.batch().positions, (std::vector<int32_t>{7}));
  EXPECT_EQ(chain.hidden_rows(), (std::vector<int64_t>{1}));
  chain.advance(std::vector<int32_t>{61});  // position 8 is past its pages
  EXPECT_TRUE(chain.done());
  EXPECT_EQ(chain.take_drafts(), (std::vector<std::vector<int32_t>>{{60, 61}, {70}}));
  // DP attention runs every round, even with nothing to run.
  DraftChain idle(ForwardBatch{}, {}, VerifyOutcome{}, 2, 4, 100, true);
  ASSERT_FALSE(idle.done());
  idle.advance({});
  EXPECT_FALSE(idle.done());
  EXPECT_TRUE(idle.batch().seqs.empty());
  idle.advance({});
  EXPECT_TRUE(idle.done());
}

// The speculative graphs run every round for every sequence and keep chain_draft_count of its drafts: the count
// DraftChain's rounds give, for every place the pages, the context, max_draft and num_steps can stop it.
TEST(Speculative, ChainDraftCountIsTheDraftChainsCount) {
  SamplingParams greedy;
  greedy.temperature = 0;
  for (int steps = 1; steps <= 3; ++steps)
    for (int max_draft = 0; max_draft <= 4; ++max_draft)
      for (int64_t kept = 1; kept <= steps + 1; ++kept)
        for (int64_t pages = 2; pages <= 3; ++pages)
          for (int64_t max_position : {9, 10, 12, 100}) {
            std::vector<int32_t> fed(static_cast<size_t>(steps + 1), 5);
            ForwardBatch b;
            b.add_sequence(fed, 3, std::vector<int32_t>(static_cast<size_t>(pages), 0), steps);
            std::vector<SampleRequest> samples{{0, &greedy}};
            samples[0].max_draft = max_draft;
            VerifyOutcome outcome;
            outcome.kept = {kept};
            outcome.after = {6};
            DraftChain chain(b, samples, outcome, steps, 4, max_position);
            while (!chain.done()) chain.advance(std::vector<int32_t>(chain.batch().seqs.size(), 7));
            const int64_t limit = std::min<int64_t>(pages * 4, max_position);
            EXPECT_EQ(static_cast<int64_t>(chain.take_drafts()[0].size()),
                      chain_draft_count(3 + kept, limit, max_draft, steps))
                << "steps " << steps << " max_draft " << max_draft << " kept " << kept << " pages " << pages
                << " max_position " << max_position;
          }
}

// Temperature sampling keeps the target's distribution (speculative sampling's rejection rule with a one-hot draft
// d: accept d when the draw y ~ p(. | context) is d, else emit y). Over 40000 sequences with their own seeds, each
// verifying one draft d: the first emitted token follows the first row's p exactly (chi-square), whatever d is (the
// likeliest token, a rare one, one p never draws); d is kept at rate p(d); after a kept d the next token follows the
// second row's distribution.
TEST(Speculative, SampledVerifyKeepsTheTargetDistribution) {
  const std::vector<double> first = {0.30, 0.20, 0.15, 0.12, 0.10, 0.07, 0.06, 0.0};
  const std::vector<double> second = {0.05, 0.05, 0.10, 0.40, 0.20, 0.10, 0.10, 0.0};
  constexpr int kSeqs = 40000;
  const int64_t vocab = static_cast<int64_t>(first.size());
  SamplingParams params;
  params.temperature = 1.0;
  const TokenCounts none;
  for (int32_t draft : {0, 5, 7}) {
    ForwardBatch b;
    std::vector<SampleRequest> samples;
    for (int s = 0; s < kSeqs; ++s) {
      b.add_sequence({3, draft}, 10, {s}, 1);
      SampleRequest r{s, &params, &none};
      r.seed = static_cast<uint64_t>(s) * 7919 + 11;
      r.position = 4;
      samples.push_back(r);
    }
    const VerifyRows rows = verify_rows(b, samples);
    Tensor logits = Tensor::zeros(DType::kF32, {2 * kSeqs, vocab});
    for (int64_t r = 0; r < 2 * kSeqs; ++r)
      for (int64_t v = 0; v < vocab; ++v) {
        const double p = (r % 2 == 0 ? first : second)[static_cast<size_t>(v)];
        logits.f32()[r * vocab + v] = p > 0 ? static_cast<float>(std::log(p)) : -INFINITY;
      }
    const std::vector<SampleRequest> draws = verify_samples(b, samples, rows);
    std::vector<SampledToken> drawn(draws.size());
    Sampler(vocab).sample(logits, draws, drawn);
    const VerifyOutcome out = accept_drafts(b, samples, drawn);
    std::vector<int64_t> firsts(static_cast<size_t>(vocab), 0), seconds(static_cast<size_t>(vocab), 0);
    int64_t kept = 0;
    for (size_t i = 0, at = 0; i < samples.size(); at += static_cast<size_t>(out.accepted[i]), ++i) {
      ++firsts[static_cast<size_t>(out.sampled[at].token)];
      if (out.accepted[i] == 2) {
        ++kept;
        EXPECT_EQ(out.sampled[at].token, draft);
        ++seconds[static_cast<size_t>(out.sampled[at + 1].token)];
      }
    }
    const std::string what = "draft " + std::to_string(draft);
    testing::expect_distribution(firsts, first, what + ", first token");
    const double rate = static_cast<double>(kept) / kSeqs, want = first[static_cast<size_t>(draft)];
    EXPECT_NEAR(rate, want, 5.0 * std::sqrt(want * (1 - want) / kSeqs) + 1e-9) << what << ": kept rate";
    if (kept >= 2000) testing::expect_distribution(seconds, second, what + ", token after the kept draft");
  }
}

}  // namespace
}  // namespace narwhal
