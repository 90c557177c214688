// HostSamplingRunner: the forward's host logits through the host sampler.
#include "runtime/model_runner.h"

namespace narwhal {

void HostSamplingRunner::launch(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits) {
  Tensor logits = run(batch);
  result_.sampled.resize(samples.size());
  sampler_.sample(logits, samples, result_.sampled);
  result_.logits = return_logits ? std::move(logits) : Tensor();
}

StepOutput HostSamplingRunner::finish() { return std::move(result_); }

}  // namespace narwhal
