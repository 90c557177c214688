// CpuModelRunner: forwards on the host; with speculative decoding the MTP layer's cache joins and launch() verifies.
#include "runtime/cpu_model_runner.h"

#include <cstring>

#include "core/error.h"
#include "ops/sampling.h"

namespace narwhal {

CpuModelRunner::CpuModelRunner(std::shared_ptr<const DeepSeekModel> model, int64_t num_pages, int64_t page_size,
                               SpeculativeConfig speculative)
    : HostSamplingRunner(model->config().vocab_size),
      model_(std::move(model)),
      speculative_(speculative),
      cache_(model_->config(), model_->config().num_hidden_layers + (speculative.enabled() ? 1 : 0), num_pages,
             page_size),
      expert_tokens_(static_cast<size_t>(model_->config().n_routed_experts), 0) {
  NW_CHECK(!speculative.enabled() || model_->num_mtp_layers() > 0, "--speculative-algorithm NEXTN drafts with the "
           "checkpoint's MTP layer, and this one has none (config.json field 'num_nextn_predict_layers' is 0, or its "
           "layer weights are missing)");
}

int64_t CpuModelRunner::cache_bytes_per_token(const ModelConfig& config, bool speculative) {
  return config.kv_cache_dim() * (config.num_hidden_layers + (speculative ? 1 : 0)) *
         static_cast<int64_t>(sizeof(float));
}

void CpuModelRunner::launch(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits) {
  if (speculative_.enabled()) return launch_speculative(batch, samples, return_logits);
  HostSamplingRunner::launch(batch, samples, return_logits);
}

Tensor CpuModelRunner::run(const ForwardBatch& batch) {
  ForwardOptions options;
  options.expert_tokens = &expert_tokens_;
  return model_->forward(batch, cache_, options).logits;
}

// One forward gives the logits of every drawing row (pending token and drafts) and the hidden states of every token;
// each request takes its rows' draws while the drafts match (accept_drafts), then the MTP layer drafts. Each row is
// drawn as plain decoding draws that output position (verify_samples: the request's params, uniform(seed,
// position)), so a kept token is the one decoding would have drawn: greedy and seeded sampling give decoding's
// tokens exactly. For sampling this is speculative sampling's rejection rule with a deterministic draft d (q =
// one-hot): accepting when the draw y ~ p equals d happens with probability p(d) = min(1, p(d) / q(d)), and a
// rejection's y is distributed as p(y) / (1 - p(d)) over y != d, the residual max(0, p - q) normalised, so the
// target distribution is kept.
void CpuModelRunner::launch_speculative(const ForwardBatch& batch, std::span<const SampleRequest> samples,
                                        bool return_logits) {
  const VerifyRows rows = verify_rows(batch, samples);
  ForwardOptions options;
  options.expert_tokens = &expert_tokens_;
  options.return_hidden = true;
  options.logit_rows = rows.token_rows;  // none when nothing draws: each sequence's last row, unread
  const ForwardOutput out = model_->forward(batch, cache_, options);
  const std::vector<SampleRequest> draws = verify_samples(batch, samples, rows);
  std::vector<SampledToken> drawn(draws.size());
  sampler_.sample(out.logits, draws, drawn);
  StepOutput result;
  if (return_logits) result.logits = pending_token_logits(rows, out.logits);
  if (speculative_.tree()) {
    verify_trees(batch, out.hidden, samples, drawn, result);
    result_ = std::move(result);
    return;
  }
  VerifyOutcome outcome = accept_drafts(batch, samples, drawn);
  result.drafts = draft(batch, out.hidden, samples, outcome);
  result.sampled = std::move(outcome.sampled);
  result.accepted = std::move(outcome.accepted);
  result_ = std::move(result);
}

// With DP attention every group's draft-model forwards meet around the MoE: each sizes its batch by everyone's
// counts, and every group runs every round, empty where it has nothing to run.
std::vector<std::vector<int32_t>> CpuModelRunner::draft(const ForwardBatch& batch, const Tensor& hidden,
                                                        std::span<const SampleRequest> samples,
                                                        const VerifyOutcome& outcome) {
  const int64_t h = config().hidden_size, vocab = config().vocab_size;
  const bool dp = model_->dp_size() > 1;
  DraftChain chain(batch, samples, outcome, speculative_.num_steps, page_size(), config().max_position_embeddings, dp);
  ForwardOptions options;
  options.return_hidden = true;
  Tensor source = hidden;  // what chain.hidden_rows() index: the target's states, then the MTP layer's own
  while (!chain.done()) {
    ForwardBatch& step = chain.batch();
    if (dp) step.dp_tokens = model_->dp_token_counts(step.num_tokens());
    const std::vector<int64_t>& from = chain.hidden_rows();
    Tensor rows = Tensor::zeros(DType::kF32, {static_cast<int64_t>(from.size()), h});
    for (size_t i = 0; i < from.size(); ++i)
      std::memcpy(rows.f32() + i * h, source.f32() + from[i] * h, static_cast<size_t>(h) * sizeof(float));
    const ForwardOutput out = model_->forward_mtp(0, step, rows, cache_, options);
    std::vector<int32_t> next(step.seqs.size());
    for (size_t m = 0; m < next.size(); ++m) next[m] = ops::argmax(out.logits.f32() + m * vocab, vocab);  // as the GPU's
    source = out.hidden;
    chain.advance(next);
  }
  return chain.take_drafts();
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
