// CudaModelRunner's speculative CUDA graphs: per batch size a graph of the verify forward (every sequence padded to
// 1 + N rows), its draws, ops::cuda::verify_accept and every draft round (the MTP layer's extend over the verify's
// rows, then N - 1 chain rounds fed by the last round's ids), so that a speculative step costs one launch and one host
// sync, as a plain decode step does. Two graphs a size: greedy steps draw with the argmax, sampled ones (temperature,
// top-k / top-p / min-p, seeds) with the GPU sampler from rows uploaded before the launch, as the eager step draws
// them. The host then accepts the same drafts from the same draws (accept_drafts) and keeps chain_draft_count of
// each sequence's drafts.
#include <algorithm>
#include <chrono>
#include <numeric>

#include "core/cuda_check.h"
#include "core/error.h"
#include "core/logging.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/sampling.h"
#include "ops/cuda/verify_accept.h"
#include "runtime/cuda_model_runner.h"
#include "runtime/cuda_speculative_graphs.h"

namespace narwhal {

void CudaModelRunner::capture_speculative_graphs(int max_bs) {
  auto g = std::make_unique<SpeculativeGraphs>();
  const int64_t rows = 1 + speculative_.num_steps, rounds = speculative_.num_steps - 1;
  const int64_t h = model_->config().hidden_size;
  g->rows = rows;
  g->seq_info = Tensor::empty(DType::kI32, {max_bs, 3}, Device::kCUDA);
  g->ext_ids = Tensor::empty(DType::kI32, {max_bs * rows}, Device::kCUDA);
  g->ext_slots = Tensor::empty(DType::kI64, {max_bs * rows}, Device::kCUDA);
  g->ext_last = Tensor::empty(DType::kI32, {max_bs}, Device::kCUDA);
  const int64_t chain_rows = std::max<int64_t>(rounds, 1) * max_bs;  // none at N = 1: views of 0 rows
  g->chain_positions = Tensor::empty(DType::kI32, {chain_rows}, Device::kCUDA);
  g->chain_slots = Tensor::empty(DType::kI64, {chain_rows}, Device::kCUDA);
  g->chain_lens = Tensor::empty(DType::kI32, {chain_rows}, Device::kCUDA);
  g->draft_ids = Tensor::empty(DType::kI32, {speculative_.num_steps * max_bs}, Device::kCUDA);
  g->hidden = Tensor::empty(DType::kBF16, {max_bs, h}, Device::kCUDA);
  std::vector<int32_t> identity(static_cast<size_t>(max_bs));
  std::iota(identity.begin(), identity.end(), 0);
  g->identity = Tensor::empty(DType::kI32, {max_bs}, Device::kCUDA);
  NW_CUDA_CHECK(cudaMemcpy(g->identity.data, identity.data(), identity.size() * 4, cudaMemcpyHostToDevice));
  g->logit_rows.resize(static_cast<size_t>(max_bs * rows));
  std::iota(g->logit_rows.begin(), g->logit_rows.end(), 0);
  const int64_t vocab = model_->config().vocab_size;
  g->sampling_rows = Tensor::empty(DType::kI32, {static_cast<int64_t>(max_bs * rows * sizeof(ops::SamplingRow) / 4)},
                                   Device::kCUDA);
  g->sampling_workspace = Tensor::empty(
      DType::kI32, {static_cast<int64_t>(ops::cuda::sampling_workspace_bytes(max_bs * rows, vocab) / 4 + 1)},
      Device::kCUDA);
  g->sampled = ops::SampledRows::allocate(max_bs * rows, Device::kCUDA);
  g->sampling_rows_host.reserve(static_cast<size_t>(max_bs * rows) * sizeof(ops::SamplingRow));  // never regrown
  NW_CUDA_CHECK(cudaEventCreateWithFlags(&g->done, cudaEventDisableTiming));
  spec_graphs_ = std::move(g);
  SpeculativeGraphs& s = *spec_graphs_;
  const auto started = std::chrono::steady_clock::now();
  for (int bs : cuda_graph_batch_sizes(max_bs)) {
    ForwardBatch none;  // every sequence is padding: no keys, nothing stored, limit 0
    const CudaStep verify = upload(none, true, bs, false, rows, {s.logit_rows.data(), static_cast<size_t>(bs * rows)});
    NW_CUDA_CHECK(cudaMemsetAsync(s.seq_info.data, 0, s.seq_info.nbytes(), stream_));
    upload_sampling_rows(none, {}, bs);  // greedy rows: the warm-up draws something valid
    for (bool sampled : {false, true}) {
      speculative_graph_body(verify, bs, sampled);  // warm-up: GEMM plans, kernel attributes, buffers at this size
      NW_CUDA_CHECK(cudaStreamSynchronize(stream_));
      cudaGraph_t graph = nullptr;
      NW_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
      speculative_graph_body(verify, bs, sampled);
      NW_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
      cudaGraphExec_t exec = nullptr;
      NW_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      NW_CUDA_CHECK(cudaGraphDestroy(graph));
      (sampled ? s.sampled_execs : s.execs)[bs] = exec;
    }
  }
  NW_LOG(Info) << "cuda: captured speculative graphs, greedy and sampled (verify " << rows << " tokens a sequence, "
               << speculative_.num_steps << " draft rounds) for " << s.execs.size() << " batch sizes up to " << max_bs
               << " in "
               << std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() << " s";
}

// What a graph runs: the verify (its step uploaded, every row's logits), the draws (argmax, or the sampler's from the
// uploaded rows), the acceptance, the extend and the chain rounds, the i-th round's argmax ids written where round
// i + 1 reads its tokens.
void CudaModelRunner::speculative_graph_body(const CudaStep& verify, int64_t bs, bool sampled) {
  SpeculativeGraphs& g = *spec_graphs_;
  const int64_t t = bs * g.rows, rounds = speculative_.num_steps - 1;
  CudaStep step = verify;
  step.keep_hidden = true;
  const Tensor logits = model_->forward(step, cache_, stream_);
  Tensor draws = greedy_ids_.rows(0, t);
  if (sampled) {
    const ops::SamplingBatch rows{static_cast<const ops::SamplingRow*>(g.sampling_rows.data), t, nullptr, 0};
    ops::SampledRows out{draws, g.sampled.logprobs.rows(0, t), g.sampled.top_ids.rows(0, t),
                         g.sampled.top_logprobs.rows(0, t)};
    ops::cuda::sample_tokens(logits.rows(0, t), rows, out, g.sampling_workspace.data, g.sampling_workspace.nbytes(),
                             stream_);
  } else {
    ops::cuda::argmax(logits, draws, stream_);
  }
  Tensor ext_ids = g.ext_ids.rows(0, t), ext_slots = g.ext_slots.rows(0, t), ext_last = g.ext_last.rows(0, bs);
  Tensor chain_positions = g.chain_positions.rows(0, rounds * bs).reshape({rounds, bs});
  Tensor chain_slots = g.chain_slots.rows(0, rounds * bs).reshape({rounds, bs});
  Tensor chain_lens = g.chain_lens.rows(0, rounds * bs).reshape({rounds, bs});
  ops::cuda::verify_accept(step.token_ids, draws, step.slots, g.seq_info.rows(0, bs), step.page_table, page_size_,
                           ext_ids, ext_slots, ext_last, chain_positions, chain_slots, chain_lens, stream_);
  // The extend: the verify's rows again, each with the token drawn after it; rows past a sequence's kept ones store
  // nothing.
  CudaStep ext = step;
  ext.token_ids = ext_ids;
  ext.slots = ext_slots;
  ext.last_rows = ext_last;
  ext.valid_rows = Tensor();
  Tensor ids = g.draft_ids.rows(0, bs);
  ops::cuda::argmax(model_->forward_mtp(ext, model_->hidden(), cache_, stream_), ids, stream_);
  // Chain rounds: one token a sequence, fed the last round's draft with the layer's own state of the row before.
  CudaStep chain = step;
  chain.num_tokens = bs;
  chain.q_len = 1;
  chain.last_rows = g.identity.rows(0, bs);
  chain.cu_seqlens_q = step.cu_seqlens_q;  // unread: graphs run the tuned decode kernel
  for (int64_t r = 0; r < rounds; ++r) {
    // The extend's rows the sequences draft after; a chain round's output is already one row a sequence.
    Tensor from = model_->hidden();
    if (r == 0) {
      from = g.hidden.rows(0, bs);
      ops::cuda::gather_rows(model_->hidden(), ext_last, from, stream_);
    }
    chain.token_ids = ids;
    chain.positions = chain_positions.rows(r, r + 1).reshape({bs});
    chain.slots = chain_slots.rows(r, r + 1).reshape({bs});
    chain.seq_lens = chain_lens.rows(r, r + 1).reshape({bs});
    ids = g.draft_ids.rows((r + 1) * bs, (r + 2) * bs);
    ops::cuda::argmax(model_->forward_mtp(chain, from, cache_, stream_), ids, stream_);
  }
}

int CudaModelRunner::speculative_graph_size(const ForwardBatch& batch, std::span<const SampleRequest> samples,
                                            bool return_logits, bool& sampled) const {
  if (!spec_graphs_ || return_logits || samples.size() != batch.seqs.size()) return 0;
  sampled = false;
  for (size_t i = 0; i < samples.size(); ++i) {
    const SequenceInfo& s = batch.seqs[i];
    if (samples[i].row != static_cast<int64_t>(i) || !drawn_from_row_alone(samples[i]) || !s.decodes() ||
        s.new_len > spec_graphs_->rows)
      return 0;
    sampled = sampled || !samples[i].params->greedy();
  }
  const auto graph = spec_graphs_->execs.lower_bound(static_cast<int>(batch.seqs.size()));
  return graph == spec_graphs_->execs.end() ? 0 : graph->first;
}

void CudaModelRunner::upload_sampling_rows(const ForwardBatch& batch, std::span<const SampleRequest> samples,
                                           int bs) {
  SpeculativeGraphs& g = *spec_graphs_;
  const int64_t rows = g.rows, n = static_cast<int64_t>(bs) * rows;
  auto* host = static_cast<ops::SamplingRow*>(g.sampling_rows_host.reserve(static_cast<size_t>(n) *
                                                                           sizeof(ops::SamplingRow)));
  for (int64_t r = 0; r < n; ++r) {
    host[r] = ops::SamplingRow{};
    host[r].temperature = 0.0;
    host[r].logits_row = static_cast<int32_t>(r);
  }
  VerifyRows layout;  // the graph's verify returns every padded row: sequence i's first at i * rows
  for (size_t i = 0; i < batch.seqs.size(); ++i) layout.first.push_back(static_cast<int64_t>(i) * rows);
  const std::vector<SampleRequest> draws = verify_samples(batch, samples, layout);
  const ops::SamplingBatchHost built = build_sampling_batch(draws, model_->config().vocab_size);
  NW_CHECK(built.adjustments.empty(), "speculative graph: a sampled row with adjustments");
  for (const ops::SamplingRow& row : built.rows) host[row.logits_row] = row;
  NW_CUDA_CHECK(cudaMemcpyAsync(g.sampling_rows.data, host, static_cast<size_t>(n) * sizeof(ops::SamplingRow),
                                cudaMemcpyHostToDevice, stream_));
}

void CudaModelRunner::launch_speculative_graph(const ForwardBatch& batch, std::span<const SampleRequest> samples,
                                               int bs, bool sampled) {
  SpeculativeGraphs& g = *spec_graphs_;
  const int64_t rows = g.rows, n = static_cast<int64_t>(batch.seqs.size());
  const int64_t max_position = model_->config().max_position_embeddings;
  upload(batch, true, bs, false, rows, {g.logit_rows.data(), static_cast<size_t>(bs * rows)});
  auto* info = static_cast<int32_t*>(g.seq_info_host.reserve(static_cast<size_t>(bs) * 12));
  g.limits.assign(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < bs; ++i) {
    const SequenceInfo* s = i < n ? &batch.seqs[static_cast<size_t>(i)] : nullptr;
    if (s) {
      const int64_t pages_end = static_cast<int64_t>(s->page_table.size()) * page_size_;
      g.limits[static_cast<size_t>(i)] = max_position > 0 ? std::min(pages_end, max_position) : pages_end;
    }
    info[i * 3] = s ? static_cast<int32_t>(s->prefix_len) : 0;
    info[i * 3 + 1] = s ? static_cast<int32_t>(s->draft_len) : 0;
    info[i * 3 + 2] = s ? static_cast<int32_t>(g.limits[static_cast<size_t>(i)]) : 0;
  }
  NW_CUDA_CHECK(cudaMemcpyAsync(g.seq_info.data, info, static_cast<size_t>(bs) * 12, cudaMemcpyHostToDevice, stream_));
  if (sampled) upload_sampling_rows(batch, samples, bs);
  NW_CUDA_CHECK(cudaGraphLaunch((sampled ? g.sampled_execs : g.execs).at(bs), stream_));
  // Down: every verify row's draw, then each round's drafts ([N, bs]).
  const size_t draw_bytes = static_cast<size_t>(bs * rows) * 4, draft_bytes = static_cast<size_t>(bs) * 4 *
                                                                              speculative_.num_steps;
  char* down = static_cast<char*>(g.results.reserve(draw_bytes + draft_bytes));
  NW_CUDA_CHECK(cudaMemcpyAsync(down, greedy_ids_.data, draw_bytes, cudaMemcpyDeviceToHost, stream_));
  NW_CUDA_CHECK(cudaMemcpyAsync(down + draw_bytes, g.draft_ids.data, draft_bytes, cudaMemcpyDeviceToHost, stream_));
  NW_CUDA_CHECK(cudaEventRecord(g.done, stream_));
  g.pending = true;
  g.bs = bs;
  g.batch = batch;
  g.samples.assign(samples.begin(), samples.end());
}

StepOutput CudaModelRunner::finish_speculative_graph() {
  SpeculativeGraphs& g = *spec_graphs_;
  NW_CUDA_CHECK(cudaEventSynchronize(g.done));
  g.pending = false;
  const auto* draws = static_cast<const int32_t*>(g.results.data.get());
  const int32_t* drafts = draws + g.bs * g.rows;
  std::vector<SampledToken> drawn;  // verify_samples' order: each request's pending row, then its drafts'
  for (const SampleRequest& r : g.samples)
    for (int64_t j = 0; j <= g.batch.seqs[static_cast<size_t>(r.row)].draft_len; ++j)
      drawn.emplace_back().token = draws[r.row * g.rows + j];
  VerifyOutcome outcome = accept_drafts(g.batch, g.samples, drawn);
  StepOutput out;
  out.drafts.resize(g.samples.size());
  for (size_t k = 0; k < g.samples.size(); ++k) {
    const int64_t seq = g.samples[k].row;
    const int64_t next = g.batch.seqs[static_cast<size_t>(seq)].prefix_len + outcome.kept[static_cast<size_t>(seq)];
    const int64_t count = chain_draft_count(next, g.limits[static_cast<size_t>(seq)], g.samples[k].max_draft,
                                            speculative_.num_steps);
    for (int64_t r = 0; r < count; ++r) out.drafts[k].push_back(drafts[r * g.bs + seq]);
  }
  out.sampled = std::move(outcome.sampled);
  out.accepted = std::move(outcome.accepted);
  return out;
}

}  // namespace narwhal
