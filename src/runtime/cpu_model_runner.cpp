// CpuModelRunner: forwards on the host; with speculative decoding the MTP layer's cache joins and launch() verifies.
#include "runtime/cpu_model_runner.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace narwhal {

namespace {

int32_t argmax(const float* row, int64_t n) { return static_cast<int32_t>(std::max_element(row, row + n) - row); }

}  // namespace

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
// each request draws row after row while the drafts match, then the MTP layer drafts. Each row is drawn as plain
// decoding draws that output position (the request's params, uniform(seed, position)), so a kept token is the one
// decoding would have drawn: greedy and seeded sampling give decoding's tokens exactly. For sampling this is
// speculative sampling's rejection rule with a deterministic draft d (q = one-hot): accepting when the draw y ~ p
// equals d happens with probability p(d) = min(1, p(d) / q(d)), and a rejection's y is distributed as
// p(y) / (1 - p(d)) over y != d, the residual max(0, p - q) normalised, so the target distribution is kept.
void CpuModelRunner::launch_speculative(const ForwardBatch& batch, std::span<const SampleRequest> samples,
                                        bool return_logits) {
  const VerifyRows rows = verify_rows(batch, samples);
  ForwardOptions options;
  options.expert_tokens = &expert_tokens_;
  options.return_hidden = true;
  options.logit_rows = rows.token_rows;  // none when nothing draws: each sequence's last row, unread
  const ForwardOutput out = model_->forward(batch, cache_, options);

  std::vector<int64_t> ends(batch.seqs.size()), kept(batch.seqs.size());
  std::vector<int32_t> after(batch.seqs.size(), -1);
  for (size_t i = 0, end = 0; i < batch.seqs.size(); ++i) {
    ends[i] = static_cast<int64_t>(end += batch.seqs[i].new_len);
    kept[i] = batch.seqs[i].new_len - batch.seqs[i].draft_len;
    after[i] = batch.seqs[i].next_token;
  }
  StepOutput result;
  std::vector<bool> seen(batch.seqs.size(), false);
  for (const SampleRequest& request : samples) {
    const size_t seq = static_cast<size_t>(request.row);
    const int64_t drafts = batch.seqs[seq].draft_len;
    std::vector<SampledToken> drawn(static_cast<size_t>(drafts + 1));
    std::vector<int32_t> draws;
    for (int64_t j = 0; j <= drafts; ++j) {
      SampleRequest at = request;
      at.row = rows.first[seq] + j;
      at.position = request.position + j;
      if (j > 0) at.masked = nullptr;  // the engine drafts only when rows after the first are past min_new_tokens
      sampler_.sample(out.logits, {&at, 1}, {&drawn[static_cast<size_t>(j)], 1});
      draws.push_back(drawn[static_cast<size_t>(j)].token);
      if (j < drafts && draws.back() != batch.token_ids[static_cast<size_t>(ends[seq] - drafts + j)]) break;
    }
    const std::span<const int32_t> proposed(batch.token_ids.data() + ends[seq] - drafts, draws.size() - 1);
    const int64_t taken = accepted_length(proposed, draws);
    result.sampled.insert(result.sampled.end(), drawn.begin(), drawn.begin() + taken);
    result.accepted.push_back(static_cast<int32_t>(taken));
    if (!seen[seq]) {  // the first request of a row decides its MTP positions (forked choices draft later)
      seen[seq] = true;
      kept[seq] += taken - 1;
      after[seq] = draws[static_cast<size_t>(taken - 1)];
    }
  }
  result.drafts = draft(batch, out.hidden, samples, kept, after);
  if (return_logits) {  // each drawing sequence's logits at its pending token (requests that want them never draft)
    result.logits = Tensor::zeros(DType::kF32, {static_cast<int64_t>(batch.seqs.size()), config().vocab_size});
    for (size_t i = 0; i < batch.seqs.size(); ++i)
      if (rows.first[i] >= 0)
        std::memcpy(result.logits.f32() + i * config().vocab_size, out.logits.f32() + rows.first[i] * config().vocab_size,
                    static_cast<size_t>(config().vocab_size) * sizeof(float));
  }
  result_ = std::move(result);
}

std::vector<std::vector<int32_t>> CpuModelRunner::draft(const ForwardBatch& batch, const Tensor& hidden,
                                                        std::span<const SampleRequest> samples,
                                                        std::span<const int64_t> kept, std::span<const int32_t> after) {
  const int64_t h = config().hidden_size, vocab = config().vocab_size;
  MtpBatch mtp = mtp_extend_batch(batch, kept, after);
  std::vector<std::vector<int32_t>> drafts(samples.size());
  // With DP attention every group's draft-model forwards meet around the MoE: each sizes its batch by everyone's
  // counts, and every group runs the extend and num_steps - 1 chain rounds, empty where it has nothing to run.
  const bool dp = model_->dp_size() > 1;
  if (mtp.batch.seqs.empty() && !dp) return drafts;
  Tensor rows = Tensor::zeros(DType::kF32, {static_cast<int64_t>(mtp.hidden_rows.size()), h});
  for (size_t i = 0; i < mtp.hidden_rows.size(); ++i)
    std::memcpy(rows.f32() + i * h, hidden.f32() + mtp.hidden_rows[i] * h, static_cast<size_t>(h) * sizeof(float));
  // Per MTP sequence: the request that drafts from it (the first request of its row that wants drafts), or -1.
  std::vector<int> drafter(mtp.batch.seqs.size(), -1);
  for (size_t m = 0; m < mtp.batch.seqs.size(); ++m)
    for (size_t r = 0; r < samples.size() && drafter[m] < 0; ++r)
      if (samples[r].row == mtp.source[m] && samples[r].max_draft > 0) drafter[m] = static_cast<int>(r);
  ForwardOptions options;
  options.return_hidden = true;
  ForwardBatch step = std::move(mtp.batch);
  if (dp) step.dp_tokens = model_->dp_token_counts(step.num_tokens());
  ForwardOutput out = model_->forward_mtp(0, step, rows, cache_, options);
  for (int round = 1;; ++round) {
    // Each sequence of `step` drafts one token from its last row; those that want more go on.
    std::vector<int32_t> next(step.seqs.size());
    std::vector<bool> more(step.seqs.size(), false);
    Tensor last = Tensor::zeros(DType::kF32, {static_cast<int64_t>(step.seqs.size()), h});
    bool any = false;
    for (size_t m = 0, end = 0; m < step.seqs.size(); ++m) {
      end += static_cast<size_t>(step.seqs[m].new_len);
      next[m] = argmax(out.logits.f32() + m * vocab, vocab);
      std::memcpy(last.f32() + m * h, out.hidden.f32() + (end - 1) * h, static_cast<size_t>(h) * sizeof(float));
      if (drafter[m] < 0) continue;
      std::vector<int32_t>& d = drafts[static_cast<size_t>(drafter[m])];
      d.push_back(next[m]);
      const int64_t position = step.seqs[m].prefix_len + step.seqs[m].new_len;
      more[m] = static_cast<int>(d.size()) < std::min(speculative_.num_steps, samples[drafter[m]].max_draft) &&
                position < static_cast<int64_t>(step.seqs[m].page_table.size()) * page_size() &&
                position < config().max_position_embeddings;
      any = any || more[m];
    }
    if (dp ? round >= speculative_.num_steps : !any) return drafts;
    ForwardBatch chain = mtp_chain_batch(step, next, more, page_size(), config().max_position_embeddings);
    if (dp) chain.dp_tokens = model_->dp_token_counts(chain.num_tokens());
    Tensor chain_hidden = Tensor::zeros(DType::kF32, {chain.num_tokens(), h});
    std::vector<int> chain_drafter;
    for (size_t m = 0, at = 0; m < step.seqs.size(); ++m) {
      if (!more[m]) continue;
      std::memcpy(chain_hidden.f32() + at++ * h, last.f32() + m * h, static_cast<size_t>(h) * sizeof(float));
      chain_drafter.push_back(drafter[m]);
    }
    drafter = std::move(chain_drafter);
    step = std::move(chain);
    out = model_->forward_mtp(0, step, chain_hidden, cache_, options);
  }
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
