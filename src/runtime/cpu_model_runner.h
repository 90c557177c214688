// CpuModelRunner: the reference DeepSeekModel forward and a host KvCache behind the ModelRunner interface.
#pragma once

#include <memory>

#include "model/deepseek_model.h"
#include "runtime/model_runner.h"
#include "runtime/speculative.h"

namespace narwhal {

class CpuModelRunner : public HostSamplingRunner {
 public:
  // The model is shared so that several engines (tests, benchmarks) can run one set of weights. With `speculative`
  // on, the cache also holds the MTP layer's latents and launch() verifies drafts and drafts more (speculative.h).
  CpuModelRunner(std::shared_ptr<const DeepSeekModel> model, int64_t num_pages, int64_t page_size,
                 SpeculativeConfig speculative = {});

  // Host bytes one token's latents take in every cached layer (F32), for sizing the pool from a byte budget: the
  // main layers, and the first MTP layer too when speculating.
  static int64_t cache_bytes_per_token(const ModelConfig& config, bool speculative = false);

  const ModelConfig& config() const override { return model_->config(); }
  int64_t num_pages() const override { return cache_.num_pages(); }
  int64_t page_size() const override { return cache_.page_size(); }
  void launch(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits) override;
  Tensor run(const ForwardBatch& batch) override;
  void copy_page(int32_t src, int32_t dst) override;
  std::vector<int64_t> expert_tokens() const override { return expert_tokens_; }
  bool speculative() const override { return speculative_.enabled(); }

 private:
  void launch_speculative(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits);
  // The MTP layer over the positions the target kept, then chain steps: each request's drafts (at most max_draft).
  std::vector<std::vector<int32_t>> draft(const ForwardBatch& batch, const Tensor& hidden,
                                          std::span<const SampleRequest> samples, const VerifyOutcome& outcome);
  // Tree drafting (cpu_draft_tree.cpp): the verify's acceptance along each tree's kept path (its latents moved into
  // place), the MTP layer over the kept positions, then DraftTree's rounds; fills the result's drafts and parents.
  void verify_trees(const ForwardBatch& batch, const Tensor& hidden, std::span<const SampleRequest> samples,
                    std::span<const SampledToken> drawn, StepOutput& result);
  // TreeRounds after the MTP layer's extend `mtp` (its logits and head-normed states out): per request (of
  // `requests`) that wants drafts, the verify tree's drafts and their parents.
  void draft_trees(const MtpBatch& mtp, const ForwardOutput& out, std::span<const int> drafter, size_t requests,
                   StepOutput& result);

  std::shared_ptr<const DeepSeekModel> model_;
  SpeculativeConfig speculative_;
  KvCache cache_;
  std::vector<int64_t> expert_tokens_;
};

}  // namespace narwhal
