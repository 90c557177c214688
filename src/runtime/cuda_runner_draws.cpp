// CudaModelRunner's draws on the GPU: the argmax kernel when every sample is plain greedy, ops::cuda::sample_tokens
// otherwise (its rows and adjustments up in one copy), and the tokens, logprobs and asked-for logits back to pinned
// host memory.
#include <algorithm>
#include <cstring>

#include "core/cuda_check.h"
#include "core/error.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/sampling.h"
#include "runtime/cuda_model_runner.h"

namespace narwhal {

void CudaModelRunner::queue_draws(const Tensor& logits, std::span<const SampleRequest> samples, bool return_logits) {
  Draws& d = *draws_;
  d.samples.assign(samples.begin(), samples.end());
  d.rows = logits.size(0);
  d.want_logits = return_logits;
  if (!samples.empty()) launch_draws(logits, samples);
  if (return_logits && d.rows > 0)
    NW_CUDA_CHECK(cudaMemcpyAsync(d.logits.reserve(logits.nbytes()), logits.data, logits.nbytes(),
                                  cudaMemcpyDeviceToHost, stream_));
  NW_CUDA_CHECK(cudaEventRecord(d.done, stream_));
}

void CudaModelRunner::launch_draws(const Tensor& logits, std::span<const SampleRequest> samples) {
  Draws& d = *draws_;
  const int64_t n = static_cast<int64_t>(samples.size()), vocab = logits.size(1);
  d.argmax_only = std::all_of(samples.begin(), samples.end(), drawn_by_argmax);
  if (d.argmax_only) {  // one id per sequence row; samples pick theirs in finish()
    Tensor ids = greedy_ids_.rows(0, d.rows);
    ops::cuda::argmax(logits, ids, stream_);
    NW_CUDA_CHECK(cudaMemcpyAsync(d.results.reserve(d.rows * 4), ids.data, d.rows * 4, cudaMemcpyDeviceToHost,
                                  stream_));
    return;
  }
  // Rows and adjustments go up in one copy through pinned memory, into one device buffer.
  const ops::SamplingBatchHost host = build_sampling_batch(samples, vocab);
  const size_t row_bytes = host.rows.size() * sizeof(ops::SamplingRow);
  const size_t adjust_bytes = host.adjustments.size() * sizeof(ops::TokenAdjustment);
  const size_t adjust_at = (row_bytes + 15) / 16 * 16;
  char* up = static_cast<char*>(d.upload.reserve(adjust_at + adjust_bytes + 16));
  std::memcpy(up, host.rows.data(), row_bytes);
  std::memcpy(up + adjust_at, host.adjustments.data(), adjust_bytes);
  char* dev = static_cast<char*>(reserve_device(d.device_batch, adjust_at + adjust_bytes + 16));
  NW_CUDA_CHECK(cudaMemcpyAsync(dev, up, adjust_at + adjust_bytes, cudaMemcpyHostToDevice, stream_));
  const ops::SamplingBatch batch{reinterpret_cast<const ops::SamplingRow*>(dev), n,
                                 reinterpret_cast<const ops::TokenAdjustment*>(dev + adjust_at),
                                 static_cast<int64_t>(host.adjustments.size())};
  if (d.out_rows < n) {
    d.device_out = ops::SampledRows::allocate(n, Device::kCUDA);
    d.out_rows = n;
  }
  const size_t ws = ops::cuda::sampling_workspace_bytes(n, vocab);
  // The buffers keep the most rows any step drew; this step's draws fill their first n.
  ops::SampledRows out{d.device_out.tokens.rows(0, n), d.device_out.logprobs.rows(0, n),
                       d.device_out.top_ids.rows(0, n), d.device_out.top_logprobs.rows(0, n)};
  ops::cuda::sample_tokens(logits, batch, out, reserve_device(d.workspace, ws), ws, stream_);
  // Down: tokens and logprobs for every sample, the top lists only when some sample asked for them.
  const bool tops = std::any_of(samples.begin(), samples.end(), [](const SampleRequest& r) { return r.top_logprobs > 0; });
  const size_t k = ops::kMaxTopLogprobs, head = static_cast<size_t>(n) * 8, top_bytes = static_cast<size_t>(n) * k * 8;
  char* down = static_cast<char*>(d.results.reserve(head + (tops ? top_bytes : 0)));
  NW_CUDA_CHECK(cudaMemcpyAsync(down, d.device_out.tokens.data, n * 4, cudaMemcpyDeviceToHost, stream_));
  NW_CUDA_CHECK(cudaMemcpyAsync(down + n * 4, d.device_out.logprobs.data, n * 4, cudaMemcpyDeviceToHost, stream_));
  if (tops) {
    NW_CUDA_CHECK(cudaMemcpyAsync(down + head, d.device_out.top_ids.data, n * k * 4, cudaMemcpyDeviceToHost, stream_));
    NW_CUDA_CHECK(cudaMemcpyAsync(down + head + n * k * 4, d.device_out.top_logprobs.data, n * k * 4,
                                  cudaMemcpyDeviceToHost, stream_));
  }
}

StepOutput CudaModelRunner::read_draws() {
  Draws& d = *draws_;
  NW_CUDA_CHECK(cudaEventSynchronize(d.done));
  StepOutput out;
  const int64_t n = static_cast<int64_t>(d.samples.size()), k = ops::kMaxTopLogprobs;
  out.sampled.resize(d.samples.size());
  const char* down = static_cast<const char*>(d.results.data.get());
  for (int64_t i = 0; i < n; ++i) {
    const SampleRequest& r = d.samples[i];
    SampledToken& t = out.sampled[i];
    if (d.argmax_only) {
      t.token = reinterpret_cast<const int32_t*>(down)[r.row];
      continue;
    }
    t.token = reinterpret_cast<const int32_t*>(down)[i];
    NW_CHECK(t.token >= 0, "the GPU sampler refused sample ", i, " (a parameter outside its range)");
    if (r.logprob || r.top_logprobs > 0) t.logprob = reinterpret_cast<const float*>(down + n * 4)[i];
    const int32_t* top_ids = reinterpret_cast<const int32_t*>(down + n * 8);
    const float* top_lp = reinterpret_cast<const float*>(down + n * 8 + n * k * 4);
    for (int j = 0; j < r.top_logprobs; ++j) t.top.push_back({top_ids[i * k + j], top_lp[i * k + j]});
  }
  if (d.want_logits) {
    out.logits = Tensor::zeros(DType::kF32, {d.rows, model_->config().vocab_size});
    if (d.rows > 0) std::memcpy(out.logits.data, d.logits.data.get(), out.logits.nbytes());
  }
  return out;
}

}  // namespace narwhal
