// Runtime test helpers: a fast ModelRunner whose logits depend on the whole context as read back through the page table.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "runtime/model_runner.h"
#include "runtime/sampler.h"

namespace narwhal::testing {

// The "KV cache" of this runner stores each position's token id in its page; a sequence's logits are a
// hash of every token read back through its page table. A wrong page table, a page shared while it is
// still written, a stale page reused, or a lost token all change the logits, so greedy outputs equal
// `oracle_greedy` only if the engine's paging is right. Thousands of steps run in milliseconds.
class ContextHashRunner : public HostSamplingRunner {
 public:
  ContextHashRunner(int64_t vocab, int64_t num_pages, int64_t page_size, int64_t max_positions = 1 << 20,
                    std::vector<int> eos = {})
      : HostSamplingRunner(vocab),
        pages_(static_cast<size_t>(num_pages * page_size), -1),
        num_pages_(num_pages),
        page_size_(page_size) {
    config_.vocab_size = vocab;
    config_.max_position_embeddings = max_positions;
    config_.eos_token_ids = std::move(eos);
  }

  // The logits row a context leads to: smooth enough for sampling tests, random per context.
  static void logits_for(const std::vector<int32_t>& context, int64_t vocab, float* row) {
    uint64_t h = 0x12345;
    for (int32_t t : context) h = ops::mix_bits(h ^ static_cast<uint64_t>(t));
    for (int64_t v = 0; v < vocab; ++v)
      row[v] = static_cast<float>(ops::mix_bits(h + static_cast<uint64_t>(v)) >> 40) * 0x1.0p-24f * 8.0f;
  }
  // Greedy continuation of `prompt` by `steps` tokens, computed without any cache.
  static std::vector<int32_t> oracle_greedy(std::vector<int32_t> context, int64_t vocab, int64_t steps) {
    std::vector<float> row(static_cast<size_t>(vocab));
    std::vector<int32_t> out;
    for (int64_t i = 0; i < steps; ++i) {
      logits_for(context, vocab, row.data());
      int32_t best = 0;
      for (int64_t v = 1; v < vocab; ++v)
        if (row[v] > row[best]) best = static_cast<int32_t>(v);
      out.push_back(best);
      context.push_back(best);
    }
    return out;
  }

  const ModelConfig& config() const override { return config_; }
  int64_t num_pages() const override { return num_pages_; }
  int64_t page_size() const override { return page_size_; }

  Tensor run(const ForwardBatch& batch) override {
    ++steps_;
    Tensor logits = Tensor::zeros(DType::kF32, {static_cast<int64_t>(batch.seqs.size()), config_.vocab_size});
    int64_t offset = 0;
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const SequenceInfo& seq = batch.seqs[s];
      const int64_t total = seq.prefix_len + seq.new_len;
      NW_CHECK(static_cast<int64_t>(seq.page_table.size()) * page_size_ >= total, "page table too short");
      for (int64_t i = 0; i < seq.new_len; ++i) slot(seq, seq.prefix_len + i) = batch.token_ids[offset + i];
      std::vector<int32_t> context;
      for (int64_t pos = 0; pos < total; ++pos) context.push_back(slot(seq, pos));
      logits_for(context, config_.vocab_size, logits.f32() + s * config_.vocab_size);
      offset += seq.new_len;
    }
    return logits;
  }

  void copy_page(int32_t src, int32_t dst) override {
    std::memcpy(&pages_[dst * page_size_], &pages_[src * page_size_], page_size_ * sizeof(int32_t));
  }

  int64_t steps() const { return steps_; }

 private:
  int32_t& slot(const SequenceInfo& seq, int64_t pos) {
    const int32_t page = seq.page_table[pos / page_size_];
    NW_CHECK(page >= 0 && page < num_pages_, "page ", page, " outside the cache");
    return pages_[page * page_size_ + pos % page_size_];
  }

  ModelConfig config_;
  std::vector<int32_t> pages_;
  int64_t num_pages_, page_size_;
  int64_t steps_ = 0;
};

}  // namespace narwhal::testing
