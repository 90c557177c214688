// ModelRunner: the engine's only way to the model and the storage of the paged latent cache.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/forward_batch.h"
#include "model/model_config.h"
#include "runtime/sampler.h"

namespace narwhal {

// The engine builds one ForwardBatch per step on the host and hands it over; a runner may copy it into
// persistent device buffers and replay a captured graph. The KvPool decides which pages each sequence
// uses; the runner only stores them, num_pages() of page_size() tokens.
// What one step gives back: a drawn token (and the asked-for logprobs) per sample request, in request order,
// and, when launch() was asked for them, the logits rows of the batch (host F32 [num_seqs, vocab]).
// With speculative decoding a request may take several tokens: `sampled` holds them all, request after request,
// `accepted[i]` how many are request i's (the verified drafts, then the token drawn after them), and `drafts[i]` the
// tokens the draft model proposes to follow its last one. Both are empty when the runner does not speculate (one
// token each, no drafts).
struct StepOutput {
  std::vector<SampledToken> sampled;
  Tensor logits;
  std::vector<int32_t> accepted;
  std::vector<std::vector<int32_t>> drafts;
  // Tree drafting: per request, each draft's parent in its verify tree (Sequence::draft_parents); empty for chains.
  std::vector<std::vector<int32_t>> draft_parents;
  bool cuda_graph = false;  // the step replayed a CUDA graph (the decode log's "cuda graph", as SGLang's)
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const ModelConfig& config() const = 0;
  virtual int64_t num_pages() const = 0;
  virtual int64_t page_size() const = 0;
  // Starts one step: writes the new tokens' latents into the pages named by the batch, and draws a token for each
  // sample request (its `row` names a sequence of the batch; several may share one) on the device that ran the
  // forward. A device runner returns as soon as the work is queued, so the caller can do host work meanwhile;
  // finish() waits for it. `samples` and what it points to must stay valid until finish() returns. The logits
  // cross to the host only when `return_logits` (debugging: generate --return-logits).
  virtual void launch(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits) = 0;
  virtual StepOutput finish() = 0;
  // Runs one step and returns each sequence's last-token logits as a host F32 tensor [num_seqs, vocab], drawing
  // nothing: for tests and tools that look at logits.
  virtual Tensor run(const ForwardBatch& batch) = 0;
  // Copies page `src` to page `dst` in every layer: a forked sequence's own copy of a shared partial page. Ordered
  // after the steps launched before it.
  virtual void copy_page(int32_t src, int32_t dst) = 0;
  // "" while the runner can run steps; else why it never will again (a tensor-parallel rank or node was lost, so
  // its world is broken). Thread-safe. The engine stops its loop on it, and checks it while idle too.
  virtual std::string failure() const { return ""; }
  // Tokens the router sent to each routed expert since start, over all MoE layers ([n_routed_experts]; empty where
  // the runner does not count). Between steps only.
  virtual std::vector<int64_t> expert_tokens() const { return {}; }
  // Whether launch() verifies drafts and drafts more (speculative.h): then every tensor-parallel rank draws, since
  // what the draft model runs next depends on what was accepted.
  virtual bool speculative() const { return false; }
};

// A runner whose forward gives host logits (the CPU reference, test runners): launch() runs run() and the host
// sampler at once, finish() hands the result over; there is nothing to overlap.
class HostSamplingRunner : public ModelRunner {
 public:
  explicit HostSamplingRunner(int64_t vocab) : sampler_(vocab) {}
  void launch(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits) override;
  StepOutput finish() override;

 protected:
  Sampler sampler_;
  StepOutput result_;
};

}  // namespace narwhal
