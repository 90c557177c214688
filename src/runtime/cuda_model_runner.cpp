// CudaModelRunner: device buffers, cache sizing, batch upload, decode-graph capture and replay.
#include "runtime/cuda_model_runner.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/cuda_check.h"
#include "core/error.h"
#include "core/logging.h"
#include "model/moe_a2a.h"
#include "model/safetensors.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/sampling.h"
#include "runtime/kv_pool.h"

namespace narwhal {

// Pinned host mirrors of the step buffers: the copies run asynchronously, and nothing is rewritten before the
// previous step's copies finished (every step ends with a stream sync).
// cu_q and cu_k hold two arrays of seqs + 1: the step's, then a mixed step's second part's (from 0); valid: a graph
// step's real rows per DP group.
struct CudaModelRunner::HostStaging {
  std::shared_ptr<void> block;
  int32_t *ids, *positions, *lens, *cu_q, *cu_k, *last, *table, *valid;
  int64_t* slots;

  HostStaging(int64_t tokens, int64_t seqs, int64_t max_pages, int groups) {
    const size_t words = static_cast<size_t>(tokens * 4 + seqs * 6 + 4 + seqs * max_pages + groups);
    void* p = nullptr;
    NW_CUDA_CHECK(cudaMallocHost(&p, words * 4));
    block = std::shared_ptr<void>(p, [](void* q) { cudaFreeHost(q); });
    slots = static_cast<int64_t*>(p);  // 8-byte aligned first
    ids = reinterpret_cast<int32_t*>(slots + tokens);
    positions = ids + tokens;
    lens = positions + tokens;
    cu_q = lens + seqs;
    cu_k = cu_q + 2 * (seqs + 1);
    last = cu_k + 2 * (seqs + 1);
    table = last + seqs;
    valid = table + seqs * max_pages;
  }
};

namespace {

// Whether the GPU's argmax draws this sample: greedy, with nothing that changes the logits first or needs their
// distribution (penalties over the output so far, a bias, masked stop ids, logprobs).
bool drawn_by_argmax(const SampleRequest& r) {
  const SamplingParams& p = *r.params;
  const bool penalized = !r.counts->empty() && (p.repetition_penalty != 1.0 || p.frequency_penalty != 0.0 ||
                                                p.presence_penalty != 0.0);
  return p.greedy() && !penalized && p.logit_bias.empty() && !r.masked && !r.logprob && r.top_logprobs == 0;
}

// Pinned host memory of `bytes`, grown (never shrunk) as steps need more.
struct PinnedBuffer {
  std::shared_ptr<void> data;
  size_t bytes = 0;
  void* reserve(size_t need) {
    if (need > bytes) {
      void* p = nullptr;
      NW_CUDA_CHECK(cudaMallocHost(&p, need));
      data = std::shared_ptr<void>(p, [](void* q) { cudaFreeHost(q); });
      bytes = need;
    }
    return data.get();
  }
};

// A device buffer of `bytes`, grown as steps need more (only between steps: nothing captured reads it).
void* reserve_device(Tensor& t, size_t need) {
  if (!t.defined() || t.nbytes() < need)
    t = Tensor::empty(DType::kI32, {static_cast<int64_t>((need + 3) / 4)}, Device::kCUDA);
  return t.data;
}

}  // namespace

// One step's draws: the requests, the rows uploaded for the GPU sampler, and where its results come back.
struct CudaModelRunner::Draws {
  std::vector<SampleRequest> samples;
  bool argmax_only = false, want_logits = false;
  int64_t rows = 0;
  PinnedBuffer upload, results, logits;  // sampler rows + adjustments up; tokens, logprobs, tops down
  Tensor device_batch, workspace;
  ops::SampledRows device_out;
  int64_t out_rows = 0;
  cudaEvent_t done = nullptr;
};

CudaModelRunner::CudaModelRunner(ModelConfig config, CudaModelWeights weights, const CudaRunnerOptions& options)
    : page_size_(options.page_size), draws_(std::make_unique<Draws>()) {
  NW_CHECK(options.page_size >= 1, "--page-size must be positive");
  NW_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  NW_CUDA_CHECK(cudaEventCreateWithFlags(&draws_->done, cudaEventDisableTiming));
  const int64_t max_tokens = std::max<int64_t>(options.max_tokens_per_step, options.cuda_graph_max_bs);
  model_ = std::make_unique<CudaModel>(std::move(config), std::move(weights), max_tokens, page_size_,
                                       options.kernels, options.tp, options.ep_size, options.dp_group,
                                       options.dp_size, options.moe_a2a, options.deepep_mode);
  const ModelConfig& c = model_->config();
  max_seqs_ = std::min<int64_t>(max_tokens, 4096);

  // The cache gets what the weights and buffers leave of mem_fraction_static x device memory (a TP rank's share of
  // it when ranks share the GPU). TP ranks measure once all of them have allocated, and take the fewest pages.
  if (options.tp) options.tp->barrier();
  size_t free_bytes = 0, total_bytes = 0;
  NW_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const int64_t width = c.kv_cache_dim(), bytes_per_token = c.num_hidden_layers * width * 2;
  const int64_t budget = kv_budget_from_mem_fraction(static_cast<int64_t>(total_bytes),
                                                     static_cast<int64_t>(free_bytes), options.mem_fraction_static) /
                         std::max(1, options.ranks_per_device);
  num_pages_ = kv_pool_pages(budget, bytes_per_token, page_size_, options.max_total_tokens);
  if (options.tp) num_pages_ = fewest(*options.tp, num_pages_);
  const int64_t context = c.max_position_embeddings > 0 ? c.max_position_embeddings : num_pages_ * page_size_;
  max_pages_per_seq_ = (std::min(context, num_pages_ * page_size_) + page_size_ - 1) / page_size_;
  const int64_t layer_elems = num_pages_ * page_size_ * width;
  cache_storage_ = Tensor::empty(DType::kBF16, {c.num_hidden_layers, layer_elems}, Device::kCUDA);
  NW_CUDA_CHECK(cudaMemset(cache_storage_.data, 0, cache_storage_.nbytes()));
  for (int layer = 0; layer < c.num_hidden_layers; ++layer)
    cache_.push_back(cache_storage_.rows(layer, layer + 1).reshape({num_pages_, page_size_, width}));
  const std::string dp = model_->dp_size() > 1 ? cat(" (DP group ", model_->dp_rank(), ")") : std::string();
  NW_LOG(Info) << (options.tp ? cat("cuda, TP rank ", options.tp->rank(), dp, ": ") : std::string("cuda: "))
               << "weights " << model_->weights().bytes / (1 << 20) << " MiB, KV cache " << num_pages_ << " pages x "
               << page_size_ << " tokens (" << cache_storage_.nbytes() / (1 << 20) << " MiB, --mem-fraction-static "
               << options.mem_fraction_static << ")";

  token_ids_ = Tensor::empty(DType::kI32, {max_tokens}, Device::kCUDA);
  positions_ = Tensor::empty(DType::kI32, {max_tokens}, Device::kCUDA);
  slots_ = Tensor::empty(DType::kI64, {max_tokens}, Device::kCUDA);
  page_table_ = Tensor::empty(DType::kI32, {max_seqs_, max_pages_per_seq_}, Device::kCUDA);
  seq_lens_ = Tensor::empty(DType::kI32, {max_seqs_}, Device::kCUDA);
  cu_seqlens_q_ = Tensor::empty(DType::kI32, {2 * (max_seqs_ + 1)}, Device::kCUDA);  // HostStaging's two arrays
  cu_seqlens_k_ = Tensor::empty(DType::kI32, {2 * (max_seqs_ + 1)}, Device::kCUDA);
  last_rows_ = Tensor::empty(DType::kI32, {max_seqs_}, Device::kCUDA);
  valid_rows_ = Tensor::empty(DType::kI32, {model_->dp_size()}, Device::kCUDA);
  host_ = std::make_unique<HostStaging>(max_tokens, max_seqs_, max_pages_per_seq_, model_->dp_size());
  if (model_->expert_counts().defined())
    expert_counts_ = std::make_unique<CudaCountsReader>(model_->expert_counts(), stream_);
  greedy_ids_ = Tensor::empty(DType::kI32, {max_seqs_}, Device::kCUDA);
  // Graphs capture the collectives, so every TP rank captures the same sizes: up to the smallest any of them can.
  int64_t graph_bs = options.disable_cuda_graph || !model_->decode_capturable()
                         ? 0 : std::min<int64_t>(options.cuda_graph_max_bs, max_seqs_);
  if (options.tp) graph_bs = fewest(*options.tp, graph_bs);
  if (graph_bs > 0) capture_graphs(static_cast<int>(graph_bs));
}

CudaModelRunner::~CudaModelRunner() {
  for (auto& [bs, exec] : graphs_) cudaGraphExecDestroy(exec);
  if (draws_->done) cudaEventDestroy(draws_->done);
  if (stream_) cudaStreamDestroy(stream_);
}

namespace {

TpSlice slice_of(const CudaRunnerOptions& options) {
  if (!options.tp) return {};
  const Communicator& tp = *options.tp;
  return {tp.rank(), tp.size(), options.ep_size, options.dp_size, options.moe_a2a, options.deepep_mode};
}

ModelConfig gpu_config(const std::string& model_dir, TpSlice slice) {
  const std::string config_path = (std::filesystem::path(model_dir) / "config.json").string();
  NW_CHECK(std::filesystem::exists(config_path), model_dir, ": no config.json (is --model-path a model directory?)");
  ModelConfig config = ModelConfig::from_file(config_path);
  check_gpu_support(config, slice);
  return config;
}

}  // namespace

int64_t CudaModelRunner::fewest(Communicator& tp, int64_t value) {
  const int32_t mine = static_cast<int32_t>(std::min<int64_t>(value, INT32_MAX));
  Tensor sent = Tensor::empty(DType::kI32, {1}, Device::kCUDA);
  Tensor all = Tensor::empty(DType::kI32, {tp.size()}, Device::kCUDA);
  NW_CUDA_CHECK(cudaMemcpyAsync(sent.data, &mine, 4, cudaMemcpyHostToDevice, stream_));
  tp.all_gather(sent, all, stream_);
  std::vector<int32_t> counts(static_cast<size_t>(tp.size()));
  NW_CUDA_CHECK(cudaMemcpyAsync(counts.data(), all.data, counts.size() * 4, cudaMemcpyDeviceToHost, stream_));
  NW_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return *std::min_element(counts.begin(), counts.end());
}

std::unique_ptr<CudaModelRunner> CudaModelRunner::load(const std::string& model_dir,
                                                       const CudaRunnerOptions& options) {
  const TpSlice slice = slice_of(options);
  ModelConfig config = gpu_config(model_dir, slice);
  CudaModelWeights weights = load_cuda_weights(config, Checkpoint(model_dir), slice, options.progress);
  return std::make_unique<CudaModelRunner>(std::move(config), std::move(weights), options);
}

std::unique_ptr<CudaModelRunner> CudaModelRunner::dummy(const std::string& model_dir,
                                                        const CudaRunnerOptions& options, uint64_t seed) {
  const TpSlice slice = slice_of(options);
  ModelConfig config = gpu_config(model_dir, slice);
  if (slice.rank == 0) {
    NW_LOG(Info) << "cuda: random weights for " << model_dir << "/config.json (--load-format dummy)";
  }
  CudaModelWeights weights = dummy_cuda_weights(config, seed, slice);
  return std::make_unique<CudaModelRunner>(std::move(config), std::move(weights), options);
}

CudaStep CudaModelRunner::upload(const ForwardBatch& batch, bool absorbed, int64_t padded_seqs, bool split_mixed) {
  const ModelConfig& c = model_->config();
  const int64_t real_seqs = static_cast<int64_t>(batch.seqs.size());
  const int64_t b = std::max(real_seqs, padded_seqs), t = batch.num_tokens() + (b - real_seqs);
  NW_CHECK(batch.positions.size() == batch.token_ids.size(), "run: positions and token_ids differ in length");
  NW_CHECK(t <= model_->max_tokens() && b <= max_seqs_, "run: ", t, " tokens in ", b,
           " sequences exceed the step buffers (", model_->max_tokens(), " tokens, ", max_seqs_, " sequences)");
  HostStaging& h = *host_;
  CudaStep step;
  int64_t row = 0, table_width = 1;
  h.cu_q[0] = h.cu_k[0] = 0;
  for (int64_t s = 0; s < b; ++s) {
    const SequenceInfo* seq = s < real_seqs ? &batch.seqs[s] : nullptr;
    const int64_t new_len = seq ? seq->new_len : 1, keys = seq ? seq->prefix_len + seq->new_len : 0;
    int32_t* table = h.table + s * max_pages_per_seq_;
    if (seq) {
      const int64_t pages = (keys + page_size_ - 1) / page_size_;
      NW_CHECK(new_len > 0 && seq->prefix_len >= 0, "run: a sequence needs at least one new token");
      NW_CHECK(pages <= max_pages_per_seq_ && static_cast<int64_t>(seq->page_table.size()) >= pages, "run: ",
               keys, " tokens need ", pages, " pages; the page table has ", seq->page_table.size(),
               ", the context at most ", max_pages_per_seq_);
      for (int64_t p = 0; p < pages; ++p) {
        table[p] = seq->page_table[p];
        NW_CHECK(table[p] >= 0 && table[p] < num_pages_, "run: page ", table[p], " is outside the cache of ",
                 num_pages_);
      }
      table_width = std::max(table_width, pages);
      for (int64_t i = 0; i < new_len; ++i) {
        const int64_t pos = seq->prefix_len + i;
        const int32_t id = batch.token_ids[row + i];
        NW_CHECK(id >= 0 && id < c.vocab_size, "token id ", id, " is outside the vocabulary (size ", c.vocab_size, ")");
        h.ids[row + i] = id;
        h.positions[row + i] = batch.positions[row + i];
        h.slots[row + i] = static_cast<int64_t>(table[pos / page_size_]) * page_size_ + pos % page_size_;
      }
    } else {  // padding: token 0 at position 0, stored nowhere, no keys
      h.ids[row] = 0;
      h.positions[row] = 0;
      h.slots[row] = -1;
    }
    h.lens[s] = static_cast<int32_t>(keys);
    h.cu_q[s + 1] = static_cast<int32_t>(h.cu_q[s] + new_len);
    h.cu_k[s + 1] = static_cast<int32_t>(h.cu_k[s] + keys);
    row += new_len;
    h.last[s] = static_cast<int32_t>(row - 1);
    step.max_seqlen_q = std::max(step.max_seqlen_q, new_len);
    step.max_seqlen_k = std::max(step.max_seqlen_k, keys);
  }
  NW_CHECK(row == t, "run: sequences cover ", row, " tokens, the batch has ", t);
  auto put = [&](const Tensor& dst, const void* src, size_t bytes) {
    NW_CUDA_CHECK(cudaMemcpyAsync(dst.data, src, bytes, cudaMemcpyHostToDevice, stream_));
  };
  put(token_ids_, h.ids, t * 4);
  put(positions_, h.positions, t * 4);
  put(slots_, h.slots, t * 8);
  put(seq_lens_, h.lens, b * 4);
  put(cu_seqlens_q_, h.cu_q, (b + 1) * 4);
  put(cu_seqlens_k_, h.cu_k, (b + 1) * 4);
  put(last_rows_, h.last, b * 4);
  // Only the pages in use: kernels never read a table entry past a sequence's last page.
  const size_t pitch = static_cast<size_t>(max_pages_per_seq_) * 4;
  if (b > 0)
    NW_CUDA_CHECK(cudaMemcpy2DAsync(page_table_.data, pitch, h.table, pitch, table_width * 4, b,
                                    cudaMemcpyHostToDevice, stream_));
  step.token_ids = token_ids_.rows(0, t);
  step.positions = positions_.rows(0, t);
  step.slots = slots_.rows(0, t);
  step.page_table = page_table_.rows(0, b);
  step.seq_lens = seq_lens_.rows(0, b);
  step.cu_seqlens_q = cu_seqlens_q_.rows(0, b + 1);
  step.cu_seqlens_k = cu_seqlens_k_.rows(0, b + 1);
  step.last_rows = last_rows_.rows(0, b);
  step.num_tokens = t;
  step.num_seqs = b;
  step.total_keys = h.cu_k[b];
  step.absorbed = absorbed;
  if (padded_seqs > 0) {  // a graph's step: its padding rows route too, so the expert counts need the real ones
    const int groups = model_->dp_size();
    for (int g = 0; g < groups; ++g) {  // capture's all-padding steps name no group's tokens
      const int64_t real = groups == 1 ? batch.num_tokens() : batch.dp_tokens.empty() ? 0 : batch.dp_tokens[g];
      h.valid[g] = static_cast<int32_t>(real);
    }
    put(valid_rows_, h.valid, groups * 4);
    step.valid_rows = valid_rows_;
  }
  if (split_mixed && padded_seqs == 0 && b > 1) split_into_parts(step);
  return step;
}

// One run of one-token sequences and one of longer ones, either way round (the engine plans decodes first, then
// the chunk): two parts, the one-token one absorbed. Anything else stays one decompressed step.
void CudaModelRunner::split_into_parts(CudaStep& step) {
  HostStaging& h = *host_;
  const int64_t b = step.num_seqs;
  const auto one_token = [&](int64_t s) { return h.cu_q[s + 1] - h.cu_q[s] == 1; };
  int64_t k = 1;
  while (k < b && one_token(k) == one_token(0)) ++k;
  if (k == b) return;  // one form throughout
  for (int64_t s = k + 1; s < b; ++s)
    if (one_token(s) != one_token(k)) return;  // three runs or more
  const auto part = [&](int64_t begin, int64_t end) {
    CudaStep p;
    const int64_t t0 = h.cu_q[begin], t1 = h.cu_q[end];
    p.token_ids = step.token_ids.rows(t0, t1);
    p.positions = step.positions.rows(t0, t1);
    p.slots = step.slots.rows(t0, t1);
    p.page_table = step.page_table.rows(begin, end);
    p.seq_lens = step.seq_lens.rows(begin, end);
    const int64_t n = end - begin;
    if (begin == 0) {
      p.cu_seqlens_q = step.cu_seqlens_q.rows(0, n + 1);
      p.cu_seqlens_k = step.cu_seqlens_k.rows(0, n + 1);
    } else {  // the second arrays, from 0
      const int64_t at = max_seqs_ + 1;
      for (int64_t i = 0; i <= n; ++i) {
        h.cu_q[at + i] = h.cu_q[begin + i] - h.cu_q[begin];
        h.cu_k[at + i] = h.cu_k[begin + i] - h.cu_k[begin];
      }
      for (const auto& [device, host] : {std::pair{&cu_seqlens_q_, h.cu_q}, std::pair{&cu_seqlens_k_, h.cu_k}})
        NW_CUDA_CHECK(cudaMemcpyAsync(static_cast<int32_t*>(device->data) + at, host + at, (n + 1) * 4,
                                      cudaMemcpyHostToDevice, stream_));
      p.cu_seqlens_q = cu_seqlens_q_.rows(at, at + n + 1);
      p.cu_seqlens_k = cu_seqlens_k_.rows(at, at + n + 1);
    }
    for (int64_t s = begin; s < end; ++s) {
      p.max_seqlen_q = std::max<int64_t>(p.max_seqlen_q, h.cu_q[s + 1] - h.cu_q[s]);
      p.max_seqlen_k = std::max<int64_t>(p.max_seqlen_k, h.cu_k[s + 1] - h.cu_k[s]);
    }
    p.num_tokens = t1 - t0;
    p.num_seqs = n;
    p.total_keys = h.cu_k[end] - h.cu_k[begin];
    p.absorbed = one_token(begin);
    p.first_token = t0;
    return p;
  };
  step.parts = {part(0, k), part(k, b)};
}

void CudaModelRunner::capture_graphs(int max_bs) {
  const auto started = std::chrono::steady_clock::now();
  size_t free_before = 0, free_after = 0, total = 0;
  NW_CUDA_CHECK(cudaMemGetInfo(&free_before, &total));
  for (int bs : cuda_graph_batch_sizes(max_bs)) {
    ForwardBatch none;  // every sequence is padding: length 0, writes nothing to the cache
    CudaStep step = upload(none, true, bs);
    if (model_->dp_size() > 1) step.dp_rows.assign(model_->dp_size(), bs);  // every group replays it at once
    step.decode_only = true;
    model_->forward(step, cache_, stream_);  // warm-up: GEMM plans, kernel attributes
    NW_CUDA_CHECK(cudaStreamSynchronize(stream_));
    cudaGraph_t graph = nullptr;
    NW_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
    graph_logits_ = model_->forward(step, cache_, stream_);
    NW_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec = nullptr;
    NW_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    NW_CUDA_CHECK(cudaGraphDestroy(graph));
    graphs_[bs] = exec;
  }
  NW_CUDA_CHECK(cudaMemGetInfo(&free_after, &total));
  NW_LOG(Info) << "cuda: captured decode graphs for " << graphs_.size() << " batch sizes up to " << max_bs << " in "
               << std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() << " s, "
               << (static_cast<int64_t>(free_before) - static_cast<int64_t>(free_after)) / (1 << 20)
               << " MiB of graph memory";
}

std::vector<int> CudaModelRunner::graph_batch_sizes() const {
  std::vector<int> sizes;
  for (const auto& [bs, exec] : graphs_) sizes.push_back(bs);
  return sizes;
}

Tensor CudaModelRunner::run(const ForwardBatch& batch) { return run(batch, AttentionForm::kAuto); }

Tensor CudaModelRunner::forward(const ForwardBatch& batch, AttentionForm form) {
  check_dp_tokens(batch);
  const bool dp = model_->dp_size() > 1;
  NW_CHECK(!batch.seqs.empty() || dp, "run: the batch has no sequence");
  const bool decode = std::all_of(batch.seqs.begin(), batch.seqs.end(), [](const SequenceInfo& s) {
    return s.new_len == 1;
  });
  const bool absorbed = form == AttentionForm::kAbsorbed || (form == AttentionForm::kAuto && decode);
  int graph_bs = 0;
  if (dp) {
    graph_bs = dp_graph_size(batch, graph_batch_sizes());
    NW_CHECK(graph_bs == 0 || (decode && form != AttentionForm::kDecompressed), "run: dp_decode says every DP ",
             "group decodes, so every rank replays decode graphs, but DP group ", model_->dp_rank(), "'s batch ",
             decode ? "forces the decompressed form" : "has a sequence of several new tokens");
  } else if (decode && absorbed) {
    const auto graph = graphs_.lower_bound(static_cast<int>(batch.seqs.size()));
    if (graph != graphs_.end()) graph_bs = graph->first;
  }
  if (graph_bs == 0) {
    CudaStep step = upload(batch, absorbed, 0, form == AttentionForm::kAuto && !absorbed);
    if (dp) step.dp_rows = batch.dp_tokens;
    step.decode_only = every_rank_decodes(batch, dp);
    return model_->forward(step, cache_, stream_);
  }
  upload(batch, true, graph_bs);
  NW_CUDA_CHECK(cudaGraphLaunch(graphs_.at(graph_bs), stream_));
  return graph_logits_;
}

void CudaModelRunner::check_dp_tokens(const ForwardBatch& batch) const {
  if (model_->dp_size() == 1) return;
  const int group = model_->dp_rank();
  NW_CHECK(static_cast<int>(batch.dp_tokens.size()) == model_->dp_size(), "run: DP attention needs every group's ",
           "token count (ForwardBatch::dp_tokens): ", batch.dp_tokens.size(), " for ", model_->dp_size(), " groups");
  NW_CHECK(batch.dp_tokens[group] == batch.num_tokens(), "run: DP group ", group, "'s batch has ", batch.num_tokens(),
           " tokens, dp_tokens says ", batch.dp_tokens[group]);
}

void CudaModelRunner::launch(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits) {
  Draws& d = *draws_;
  const int64_t b = static_cast<int64_t>(batch.seqs.size());
  d.samples.assign(samples.begin(), samples.end());
  d.rows = b;
  d.want_logits = return_logits;
  Tensor logits = forward(batch, AttentionForm::kAuto).rows(0, b);
  if (!samples.empty()) launch_draws(logits, samples);
  if (return_logits && b > 0)
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
  ops::cuda::sample_tokens(logits, batch, d.device_out, reserve_device(d.workspace, ws), ws, stream_);
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

StepOutput CudaModelRunner::finish() {
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

Tensor CudaModelRunner::run(const ForwardBatch& batch, AttentionForm form) {
  const int64_t b = static_cast<int64_t>(batch.seqs.size()), vocab = model_->config().vocab_size;
  const Tensor logits = forward(batch, form);
  Tensor host = Tensor::zeros(DType::kF32, {b, vocab});
  if (b > 0) NW_CUDA_CHECK(cudaMemcpyAsync(host.data, logits.data, host.nbytes(), cudaMemcpyDeviceToHost, stream_));
  NW_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return host;
}

void CudaModelRunner::copy_page(int32_t src, int32_t dst) {
  NW_CHECK(src >= 0 && src < num_pages_ && dst >= 0 && dst < num_pages_, "copy_page: page ", src, " -> ", dst,
           " outside the cache of ", num_pages_);
  for (const Tensor& layer : cache_) {
    const size_t page_bytes = layer.nbytes() / static_cast<size_t>(num_pages_);
    char* base = static_cast<char*>(layer.data);
    NW_CUDA_CHECK(cudaMemcpyAsync(base + dst * page_bytes, base + src * page_bytes, page_bytes,
                                  cudaMemcpyDeviceToDevice, stream_));
  }
}

}  // namespace narwhal
