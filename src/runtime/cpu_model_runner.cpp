// CpuModelRunner: forwards on the host; the latent cache covers the main layers (MTP layers join with speculative decoding).
#include "runtime/cpu_model_runner.h"

#include <cstring>

#include "core/error.h"

namespace narwhal {

CpuModelRunner::CpuModelRunner(std::shared_ptr<const DeepSeekModel> model, int64_t num_pages, int64_t page_size)
    : HostSamplingRunner(model->config().vocab_size),
      model_(std::move(model)),
      cache_(model_->config(), model_->config().num_hidden_layers, num_pages, page_size),
      expert_tokens_(static_cast<size_t>(model_->config().n_routed_experts), 0) {}

int64_t CpuModelRunner::cache_bytes_per_token(const ModelConfig& config) {
  return config.kv_cache_dim() * config.num_hidden_layers * static_cast<int64_t>(sizeof(float));
}

Tensor CpuModelRunner::run(const ForwardBatch& batch) {
  ForwardOptions options;
  options.expert_tokens = &expert_tokens_;
  return model_->forward(batch, cache_, options).logits;
}

void CpuModelRunner::copy_page(int32_t src, int32_t dst) {
  NW_CHECK(src >= 0 && src < num_pages() && dst >= 0 && dst < num_pages(), "copy_page: page ", src, " -> ", dst,
           " outside the cache of ", num_pages());
  for (int layer = 0; layer < cache_.num_layers(); ++layer) {
    const Tensor pages = cache_.layer(layer).pages;
    const size_t page_bytes = pages.nbytes() / static_cast<size_t>(pages.size(0));
    char* base = static_cast<char*>(pages.data);
    std::memcpy(base + dst * page_bytes, base + src * page_bytes, page_bytes);
  }
}

}  // namespace narwhal
