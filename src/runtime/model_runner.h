// ModelRunner: the engine's only way to the model and the storage of the paged latent cache.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "model/forward_batch.h"
#include "model/model_config.h"

namespace narwhal {

// The engine builds one ForwardBatch per step on the host and hands it over; a runner may copy it into
// persistent device buffers and replay a captured graph. The KvPool decides which pages each sequence
// uses; the runner only stores them, num_pages() of page_size() tokens.
class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const ModelConfig& config() const = 0;
  virtual int64_t num_pages() const = 0;
  virtual int64_t page_size() const = 0;
  // Runs one step: writes the new tokens' latents into the pages named by the batch and returns each
  // sequence's last-token logits as a host F32 tensor [num_seqs, vocab] (the sampler runs on the host).
  virtual Tensor run(const ForwardBatch& batch) = 0;
  // Copies page `src` to page `dst` in every layer: a forked sequence's own copy of a shared partial page.
  virtual void copy_page(int32_t src, int32_t dst) = 0;
};

}  // namespace narwhal
