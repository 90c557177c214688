// Speculative decoding's host arithmetic: which rows verify, how many draws are kept, the draft model's batches.
#include <gtest/gtest.h>

#include "core/error.h"
#include "runtime/speculative.h"

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

TEST(Speculative, AcceptedLengthKeepsTheMatchingDraftsAndOneDrawMore) {
  const std::vector<int32_t> drafts{5, 6, 7};
  EXPECT_EQ(accepted_length(drafts, std::vector<int32_t>{5, 6, 7, 8}), 4);
  EXPECT_EQ(accepted_length(drafts, std::vector<int32_t>{5, 9, 7, 8}), 2);
  EXPECT_EQ(accepted_length(drafts, std::vector<int32_t>{1, 6, 7, 8}), 1);
  EXPECT_EQ(accepted_length({}, std::vector<int32_t>{4}), 1);
  EXPECT_THROW(accepted_length(drafts, std::vector<int32_t>{5}), Error);
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

}  // namespace
}  // namespace narwhal
