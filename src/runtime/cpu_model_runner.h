// CpuModelRunner: the reference DeepSeekModel forward and a host KvCache behind the ModelRunner interface.
#pragma once

#include <memory>

#include "model/deepseek_model.h"
#include "runtime/model_runner.h"

namespace narwhal {

class CpuModelRunner : public HostSamplingRunner {
 public:
  // The model is shared so that several engines (tests, benchmarks) can run one set of weights.
  CpuModelRunner(std::shared_ptr<const DeepSeekModel> model, int64_t num_pages, int64_t page_size);

  // Host bytes one token's latents take in every main layer (F32), for sizing the pool from a byte budget.
  static int64_t cache_bytes_per_token(const ModelConfig& config);

  const ModelConfig& config() const override { return model_->config(); }
  int64_t num_pages() const override { return cache_.num_pages(); }
  int64_t page_size() const override { return cache_.page_size(); }
  Tensor run(const ForwardBatch& batch) override;
  void copy_page(int32_t src, int32_t dst) override;
  std::vector<int64_t> expert_tokens() const override { return expert_tokens_; }

 private:
  std::shared_ptr<const DeepSeekModel> model_;
  KvCache cache_;
  std::vector<int64_t> expert_tokens_;
};

}  // namespace narwhal
