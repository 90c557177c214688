// Speculative decoding's host arithmetic: verify rows, greedy acceptance, the MTP layer's extend and chain batches.
#include "runtime/speculative.h"

#include "core/error.h"

namespace narwhal {

VerifyRows verify_rows(const ForwardBatch& batch, std::span<const SampleRequest> samples) {
  VerifyRows rows;
  rows.first.assign(batch.seqs.size(), -1);
  std::vector<bool> draws(batch.seqs.size(), false);
  for (const SampleRequest& r : samples) {
    NW_CHECK(r.row >= 0 && r.row < static_cast<int64_t>(batch.seqs.size()), "speculative step: sample row ", r.row,
             " is outside the batch of ", batch.seqs.size(), " sequences");
    draws[static_cast<size_t>(r.row)] = true;
  }
  int64_t end = 0;
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    const SequenceInfo& s = batch.seqs[i];
    end += s.new_len;
    NW_CHECK(s.draft_len >= 0 && s.draft_len < s.new_len, "speculative step: sequence ", i, " has ", s.draft_len,
             " drafts among ", s.new_len, " new tokens");
    if (!draws[i]) continue;
    rows.first[i] = static_cast<int64_t>(rows.token_rows.size());
    for (int64_t t = end - s.draft_len - 1; t < end; ++t) rows.token_rows.push_back(t);
  }
  return rows;
}

int64_t accepted_length(std::span<const int32_t> drafts, std::span<const int32_t> draws) {
  NW_CHECK(draws.size() == drafts.size() + 1, "accepted_length: ", draws.size(), " draws for ", drafts.size(),
           " drafts");
  size_t n = 0;
  while (n < drafts.size() && drafts[n] == draws[n]) ++n;
  return static_cast<int64_t>(n) + 1;
}

MtpBatch mtp_extend_batch(const ForwardBatch& verify, std::span<const int64_t> kept, std::span<const int32_t> after) {
  NW_CHECK(kept.size() == verify.seqs.size() && after.size() == verify.seqs.size(),
           "mtp_extend_batch: one kept count and one next token per sequence");
  MtpBatch out;
  int64_t offset = 0;
  for (size_t i = 0; i < verify.seqs.size(); ++i) {
    const SequenceInfo& s = verify.seqs[i];
    int64_t n = kept[i];
    NW_CHECK(n >= 0 && n <= s.new_len, "mtp_extend_batch: sequence ", i, " keeps ", n, " of ", s.new_len, " tokens");
    if (after[i] < 0) --n;  // the last kept position's next token is not known yet
    if (n > 0) {
      std::vector<int32_t> next(verify.token_ids.begin() + offset + 1, verify.token_ids.begin() + offset + n);
      next.push_back(after[i] < 0 ? verify.token_ids[static_cast<size_t>(offset + n)] : after[i]);
      for (int64_t t = 0; t < n; ++t) out.hidden_rows.push_back(offset + t);
      out.batch.add_sequence(next, s.prefix_len, s.page_table);
      out.source.push_back(static_cast<int>(i));
    }
    offset += s.new_len;
  }
  return out;
}

ForwardBatch mtp_chain_batch(const ForwardBatch& last, std::span<const int32_t> drafts, const std::vector<bool>& keep,
                             int64_t page_size, int64_t max_position) {
  NW_CHECK(drafts.size() == last.seqs.size() && keep.size() == last.seqs.size(),
           "mtp_chain_batch: one draft and one keep flag per sequence");
  ForwardBatch next;
  for (size_t i = 0; i < last.seqs.size(); ++i) {
    if (!keep[i]) continue;
    const SequenceInfo& s = last.seqs[i];
    const int64_t position = s.prefix_len + s.new_len;
    NW_CHECK(position < static_cast<int64_t>(s.page_table.size()) * page_size && position < max_position,
             "mtp_chain_batch: sequence ", i, " cannot take position ", position);
    next.add_sequence({drafts[i]}, position, s.page_table);
  }
  return next;
}

}  // namespace narwhal
