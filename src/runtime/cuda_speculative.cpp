// CudaModelRunner's speculative step (NEXTN), eager: the verify forward and its draws on the GPU, the
// ids to the host (a sync), acceptance there, then each draft-model round (one more sync each).
#include "core/cuda_check.h"
#include "core/error.h"
#include "ops/cuda/elementwise.h"
#include "runtime/cuda_model_runner.h"

namespace narwhal {

// One verify forward over [pending, drafts..., fillers...] of every decoding sequence (and any prompt chunks beside
// them, in their own part), every draw row's token on the GPU, then acceptance and drafting on the host. The result
// is ready when this returns; finish() hands it over.
void CudaModelRunner::launch_speculative(const ForwardBatch& batch, std::span<const SampleRequest> samples,
                                         bool return_logits) {
  const int64_t verify_len = speculative_.tree() ? speculative_.num_draft_tokens : 1 + speculative_.num_steps;
  const VerifyRows rows = verify_rows(batch, samples);
  const std::vector<int64_t> padded = batch.padded_rows(verify_len);
  std::vector<int64_t> logit_rows;
  for (int64_t r : rows.token_rows) logit_rows.push_back(padded[static_cast<size_t>(r)]);
  const bool decode = batch.all_decode();
  CudaStep step = upload(batch, decode, 0, !decode, verify_len, logit_rows);
  step.keep_hidden = true;
  if (model_->dp_size() > 1) step.dp_rows = dp_counts(step.num_tokens);  // padded: not the engine's dp_tokens
  const Tensor logits = model_->forward(step, cache_, stream_);
  const std::vector<SampleRequest> draws = verify_samples(batch, samples, rows);
  queue_draws(logits, draws, return_logits);
  StepOutput drawn = read_draws();  // waits for the ids: the host decides what the draft model runs
  VerifyOutcome outcome = accept_drafts(batch, samples, drawn.sampled);
  StepOutput out;
  if (speculative_.tree()) draft_trees(batch, padded, samples, outcome, out);
  else out.drafts = draft(batch, padded, samples, outcome);
  out.sampled = std::move(outcome.sampled);
  out.accepted = std::move(outcome.accepted);
  if (return_logits) out.logits = pending_token_logits(rows, drawn.logits);
  speculative_out_ = std::move(out);
}

// The draft model's rounds (DraftChain): each gathers the rows it continues from out of the last forward's hidden
// states, runs the MTP layer and brings its argmax ids back. With DP attention every group runs every round (empty
// where it has nothing), each sized by every group's count, since their MoE layers meet.
std::vector<std::vector<int32_t>> CudaModelRunner::draft(const ForwardBatch& verify,
                                                         std::span<const int64_t> verify_rows,
                                                         std::span<const SampleRequest> samples,
                                                         const VerifyOutcome& outcome) {
  const bool dp = model_->dp_size() > 1;
  DraftChain chain(verify, samples, outcome, speculative_.num_steps, page_size_,
                   model_->config().max_position_embeddings, dp);
  bool first = true;
  while (!chain.done()) {
    const ForwardBatch& batch = chain.batch();
    std::vector<int64_t> from = chain.hidden_rows();
    if (first)  // the verify's rows: its step was padded
      for (int64_t& r : from) r = verify_rows[static_cast<size_t>(r)];
    first = false;
    const Tensor hidden = mtp_inputs(static_cast<int64_t>(from.size()));
    gather_step_rows(model_->hidden(), from, hidden);
    const bool decode = batch.all_decode();
    CudaStep step = upload(batch, decode, 0, !decode);
    step.keep_hidden = true;
    if (dp) step.dp_rows = dp_counts(step.num_tokens);
    const Tensor logits = model_->forward_mtp(step, hidden, cache_, stream_);
    const int64_t n = logits.size(0);
    Tensor ids = greedy_ids_.rows(0, n);
    ops::cuda::argmax(logits, ids, stream_);
    std::vector<int32_t> next(static_cast<size_t>(n));
    if (n > 0)
      NW_CUDA_CHECK(cudaMemcpyAsync(next.data(), ids.data, static_cast<size_t>(n) * 4, cudaMemcpyDeviceToHost,
                                    stream_));
    NW_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the next round's batch is built from these ids
    step_lists_.restart();
    chain.advance(next);
  }
  return chain.take_drafts();
}

Tensor CudaModelRunner::run_mtp(const ForwardBatch& batch, const Tensor& hidden) {
  const int64_t t = batch.num_tokens(), h = model_->config().hidden_size;
  NW_CHECK(speculative_.enabled(), "run_mtp: the runner was made without speculative decoding (no MTP layer)");
  NW_CHECK(hidden.dtype == DType::kF32 && hidden.ndim() == 2 && hidden.size(0) == t && hidden.size(1) == h,
           "run_mtp: hidden", hidden.shape_string(), " must be [", t, ", ", h, "] F32 on the host");
  Tensor rounded = Tensor::zeros(DType::kBF16, {t, h});
  for (int64_t i = 0; i < t * h; ++i) rounded.ptr<uint16_t>()[i] = float_to_bf16(hidden.f32()[i]);
  const Tensor device = rounded.to(Device::kCUDA);
  const bool decode = batch.all_decode();
  CudaStep step = upload(batch, decode, 0, !decode);
  step.keep_hidden = true;
  const Tensor logits = model_->forward_mtp(step, device, cache_, stream_);
  Tensor out = Tensor::zeros(DType::kF32, logits.shape);
  NW_CUDA_CHECK(cudaMemcpyAsync(out.data, logits.data, out.nbytes(), cudaMemcpyDeviceToHost, stream_));
  NW_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

void CudaModelRunner::gather_step_rows(const Tensor& source, std::span<const int64_t> rows, Tensor dest) {
  if (rows.empty()) return;  // a DP group with nothing to draft this round
  std::vector<int32_t> index(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    NW_CHECK(rows[i] >= 0 && rows[i] < source.size(0), "speculative step: row ", rows[i], " outside the ",
             source.size(0), " of its source");
    index[i] = static_cast<int32_t>(rows[i]);
  }
  const Tensor list = step_lists_.send(index.data(), DType::kI32, {static_cast<int64_t>(index.size())}, stream_);
  ops::cuda::gather_rows(source, list, dest, stream_);
}

Tensor CudaModelRunner::mtp_inputs(int64_t n) {
  if (!mtp_hidden_.defined() || mtp_hidden_.size(0) < n)
    mtp_hidden_ = Tensor::empty(DType::kBF16, {std::max<int64_t>(n, 1), model_->config().hidden_size}, Device::kCUDA);
  return mtp_hidden_.rows(0, n);
}

}  // namespace narwhal
