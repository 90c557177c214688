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
#include "model/weights.h"
#include "ops/cuda/mla.h"
#include "runtime/cuda_speculative_graphs.h"
#include "runtime/kv_pool.h"

namespace narwhal {

// Pinned host mirrors of the step buffers: the copies run asynchronously, and nothing is rewritten before the
// previous step's copies finished (every step ends with a stream sync).
// cu_q and cu_k hold two arrays of seqs + 1: the step's, then a mixed step's second part's (from 0); `last` holds up
// to one row per token (a verify's logits rows); valid: a graph step's real rows per DP group.
struct CudaModelRunner::HostStaging {
  std::shared_ptr<void> block;
  int32_t *ids, *positions, *parents, *lens, *cu_q, *cu_k, *last, *table, *valid;
  int64_t* slots;

  HostStaging(int64_t tokens, int64_t seqs, int64_t max_pages, int groups) {
    const size_t words = static_cast<size_t>(tokens * 6 + seqs * 5 + 4 + seqs * max_pages + groups);
    void* p = nullptr;
    NW_CUDA_CHECK(cudaMallocHost(&p, words * 4));
    block = std::shared_ptr<void>(p, [](void* q) { cudaFreeHost(q); });
    slots = static_cast<int64_t*>(p);  // 8-byte aligned first
    ids = reinterpret_cast<int32_t*>(slots + tokens);
    positions = ids + tokens;
    parents = positions + tokens;
    lens = parents + tokens;
    cu_q = lens + seqs;
    cu_k = cu_q + 2 * (seqs + 1);
    last = cu_k + 2 * (seqs + 1);
    table = last + tokens;
    valid = table + seqs * max_pages;
  }
};

CudaModelRunner::CudaModelRunner(ModelConfig config, CudaModelWeights weights, const CudaRunnerOptions& options)
    : tp_(options.tp), page_size_(options.page_size), draws_(std::make_unique<Draws>()),
      speculative_(options.speculative) {
  NW_CHECK(options.page_size >= 1, "--page-size must be positive");
  if (speculative_.enabled()) {
    NW_CHECK(weights.mtp, "--speculative-algorithm NEXTN drafts with the checkpoint's MTP layer, and this one has "
             "none (config.json field 'num_nextn_predict_layers' is 0, or its layer weights are missing)");
    const int64_t most = ops::cuda::kMlaDecodeMaxQLen;
    NW_CHECK(speculative_.num_steps + 1 <= most, "--speculative-num-steps ", speculative_.num_steps, " on --device "
             "cuda: a verify checks the pending token and its drafts in one decode-kernel call, which takes at most ",
             most, " tokens per sequence, so at most ", most - 1, " steps");
    NW_CHECK(!speculative_.tree() || (speculative_.num_draft_tokens <= most &&
                                      (speculative_.num_steps - 1) * speculative_.topk <= most),
             "--speculative-num-draft-tokens ", speculative_.num_draft_tokens, " with --speculative-eagle-topk ",
             speculative_.topk, " and ", speculative_.num_steps, " steps on --device cuda: the decode kernel takes at "
             "most ", most, " tokens per sequence, both in the verify (the draft tokens) and in a draft round (topk x "
             "(steps - 1) candidates)");
  }
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
  // Speculating, the MTP layer's latents are cached too, as one more layer.
  const int cache_layers = c.num_hidden_layers + (speculative_.enabled() ? 1 : 0);
  const int64_t width = c.kv_cache_dim(), bytes_per_token = cache_layers * width * 2;
  const int64_t budget = kv_budget_from_mem_fraction(static_cast<int64_t>(total_bytes),
                                                     static_cast<int64_t>(free_bytes), options.mem_fraction_static) /
                         std::max(1, options.ranks_per_device);
  num_pages_ = kv_pool_pages(budget, bytes_per_token, page_size_, options.max_total_tokens);
  if (options.tp) num_pages_ = fewest(*options.tp, num_pages_);
  const int64_t context = c.max_position_embeddings > 0 ? c.max_position_embeddings : num_pages_ * page_size_;
  max_pages_per_seq_ = (std::min(context, num_pages_ * page_size_) + page_size_ - 1) / page_size_;
  // A verify's fillers may pass a sequence's pages (near the cache's end or the context's): their table entries
  // name one page past the pool's, which nothing writes (fillers store nothing), so it stays zeros.
  int64_t pages_per_layer = num_pages_;
  if (speculative_.enabled()) {
    scratch_page_ = pages_per_layer++;
    max_pages_per_seq_ += (speculative_.num_steps + page_size_ - 1) / page_size_ + 1;
  }
  const int64_t layer_elems = pages_per_layer * page_size_ * width;
  cache_storage_ = Tensor::empty(DType::kBF16, {cache_layers, layer_elems}, Device::kCUDA);
  NW_CUDA_CHECK(cudaMemset(cache_storage_.data, 0, cache_storage_.nbytes()));
  for (int layer = 0; layer < cache_layers; ++layer)
    cache_.push_back(cache_storage_.rows(layer, layer + 1).reshape({pages_per_layer, page_size_, width}));
  const std::string dp = model_->dp_size() > 1 ? cat(" (DP group ", model_->dp_rank(), ")") : std::string();
  NW_LOG(Info) << (options.tp ? cat("cuda, TP rank ", options.tp->rank(), dp, ": ") : std::string("cuda: "))
               << "weights " << model_->weights().bytes / (1 << 20) << " MiB, KV cache " << num_pages_ << " pages x "
               << page_size_ << " tokens (" << cache_storage_.nbytes() / (1 << 20) << " MiB, --mem-fraction-static "
               << options.mem_fraction_static << ")";

  token_ids_ = Tensor::empty(DType::kI32, {max_tokens}, Device::kCUDA);
  positions_ = Tensor::empty(DType::kI32, {max_tokens}, Device::kCUDA);
  tree_parents_ = Tensor::empty(DType::kI32, {max_tokens}, Device::kCUDA);
  slots_ = Tensor::empty(DType::kI64, {max_tokens}, Device::kCUDA);
  page_table_ = Tensor::empty(DType::kI32, {max_seqs_, max_pages_per_seq_}, Device::kCUDA);
  seq_lens_ = Tensor::empty(DType::kI32, {max_seqs_}, Device::kCUDA);
  cu_seqlens_q_ = Tensor::empty(DType::kI32, {2 * (max_seqs_ + 1)}, Device::kCUDA);  // HostStaging's two arrays
  cu_seqlens_k_ = Tensor::empty(DType::kI32, {2 * (max_seqs_ + 1)}, Device::kCUDA);
  last_rows_ = Tensor::empty(DType::kI32, {max_tokens}, Device::kCUDA);
  valid_rows_ = Tensor::empty(DType::kI32, {model_->dp_size()}, Device::kCUDA);
  host_ = std::make_unique<HostStaging>(max_tokens, max_seqs_, max_pages_per_seq_, model_->dp_size());
  if (model_->expert_counts().defined())
    expert_counts_ = std::make_unique<CudaCountsReader>(model_->expert_counts(), stream_);
  greedy_ids_ = Tensor::empty(DType::kI32, {max_tokens}, Device::kCUDA);
  // Graphs capture the collectives, so every TP rank captures the same sizes: up to the smallest any of them can.
  int64_t graph_bs = options.disable_cuda_graph || !model_->decode_capturable()
                         ? 0 : std::min<int64_t>(options.cuda_graph_max_bs, max_seqs_);
  if (options.tp) graph_bs = fewest(*options.tp, graph_bs);
  if (graph_bs > 0) capture_graphs(static_cast<int>(graph_bs));
  // Speculative graphs return the logits of every verify row (bs x (1 + N) of the vocabulary, F32): up to 1024 rows,
  // 0.5 GB at V3's vocabulary; larger batches verify eagerly.
  const int64_t spec_bs = std::min(graph_bs, std::min<int64_t>(1024, max_tokens) / (1 + speculative_.num_steps));
  if (speculative_.enabled() && !speculative_.tree() && spec_bs > 0 && model_->dp_size() == 1)
    capture_speculative_graphs(static_cast<int>(spec_bs));
  if (speculative_.tree() && (!options.tp || options.tp->rank() == 0)) {
    NW_LOG(Warning) << "--speculative-eagle-topk " << speculative_.topk << ": tree drafting runs eager on the GPU (no "
                    << "CUDA graphs yet, a host sync a draft round), so at small batches it is slower than chain "
                    << "drafting (--speculative-eagle-topk 1) and than no speculation (docs/speculative.md)";
  }
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

std::vector<int64_t> CudaModelRunner::gathered(Communicator& tp, int64_t value) {
  const int32_t mine = static_cast<int32_t>(std::min<int64_t>(value, INT32_MAX));
  Tensor sent = Tensor::empty(DType::kI32, {1}, Device::kCUDA);
  Tensor all = Tensor::empty(DType::kI32, {tp.size()}, Device::kCUDA);
  NW_CUDA_CHECK(cudaMemcpyAsync(sent.data, &mine, 4, cudaMemcpyHostToDevice, stream_));
  tp.all_gather(sent, all, stream_);
  std::vector<int32_t> counts(static_cast<size_t>(tp.size()));
  NW_CUDA_CHECK(cudaMemcpyAsync(counts.data(), all.data, counts.size() * 4, cudaMemcpyDeviceToHost, stream_));
  NW_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return {counts.begin(), counts.end()};
}

int64_t CudaModelRunner::fewest(Communicator& tp, int64_t value) {
  const std::vector<int64_t> all = gathered(tp, value);
  return *std::min_element(all.begin(), all.end());
}

std::vector<int64_t> CudaModelRunner::dp_counts(int64_t tokens) {
  NW_CHECK(tp_ && model_->dp_size() > 1, "dp_counts: the runner has no DP attention");
  const std::vector<int64_t> all = gathered(*tp_, tokens);
  const int64_t per_group = tp_->size() / model_->dp_size();
  std::vector<int64_t> counts;
  for (int g = 0; g < model_->dp_size(); ++g) counts.push_back(all[static_cast<size_t>(g * per_group)]);
  return counts;
}

std::unique_ptr<CudaModelRunner> CudaModelRunner::load(const std::string& model_dir,
                                                       const CudaRunnerOptions& options) {
  const TpSlice slice = slice_of(options);
  ModelConfig config = gpu_config(model_dir, slice);
  const Checkpoint checkpoint = open_checkpoint(model_dir, options.speculative.draft_model_path, config);
  CudaModelWeights weights = load_cuda_weights(config, checkpoint, slice, options.progress,
                                               options.speculative.enabled());
  return std::make_unique<CudaModelRunner>(std::move(config), std::move(weights), options);
}

std::unique_ptr<CudaModelRunner> CudaModelRunner::dummy(const std::string& model_dir,
                                                        const CudaRunnerOptions& options, uint64_t seed) {
  const TpSlice slice = slice_of(options);
  ModelConfig config = gpu_config(model_dir, slice);
  if (slice.rank == 0) {
    NW_LOG(Info) << "cuda: random weights for " << model_dir << "/config.json (--load-format dummy)";
  }
  CudaModelWeights weights = dummy_cuda_weights(config, seed, slice, options.speculative.enabled());
  return std::make_unique<CudaModelRunner>(std::move(config), std::move(weights), options);
}

CudaStep CudaModelRunner::upload(const ForwardBatch& batch, bool absorbed, int64_t padded_seqs, bool split_mixed,
                                 int64_t verify_len, std::span<const int64_t> logit_rows) {
  const ModelConfig& c = model_->config();
  const int64_t real_seqs = static_cast<int64_t>(batch.seqs.size());
  const bool tree = std::any_of(batch.seqs.begin(), batch.seqs.end(),
                                [](const SequenceInfo& s) { return !s.draft_parents.empty(); });
  const int64_t b = std::max(real_seqs, padded_seqs);
  const int64_t padding_len = std::max<int64_t>(verify_len, 1);  // a padding sequence's rows (a verify graph's too)
  int64_t real_rows = 0;
  for (const SequenceInfo& s : batch.seqs) real_rows += s.step_rows(verify_len);
  const int64_t t = real_rows + (b - real_seqs) * padding_len;
  NW_CHECK(batch.positions.size() == batch.token_ids.size(), "run: positions and token_ids differ in length");
  NW_CHECK(t <= model_->max_tokens() && b <= max_seqs_, "run: ", t, " tokens in ", b,
           " sequences exceed the step buffers (", model_->max_tokens(), " tokens, ", max_seqs_, " sequences)");
  NW_CHECK(verify_len == 0 || scratch_page_ >= 0, "run: a verify step on a runner that does not speculate");
  HostStaging& h = *host_;
  CudaStep step;
  int64_t row = 0, from = 0, table_width = 1;  // row: of the step; from: of the batch
  h.cu_q[0] = h.cu_k[0] = 0;
  decode_part_.assign(static_cast<size_t>(b), 1);
  for (int64_t s = 0; s < b; ++s) {
    const SequenceInfo* seq = s < real_seqs ? &batch.seqs[s] : nullptr;
    const int64_t real_len = seq ? seq->new_len : 1;
    const int64_t new_len = seq ? seq->step_rows(verify_len) : padding_len;
    const int64_t keys = seq ? seq->prefix_len + new_len : 0;
    int32_t* table = h.table + s * max_pages_per_seq_;
    if (seq) {
      decode_part_[s] = seq->decodes();
      const int64_t pages = (keys + page_size_ - 1) / page_size_;
      const int64_t real_pages = (seq->prefix_len + real_len + page_size_ - 1) / page_size_;
      const int64_t held = static_cast<int64_t>(seq->page_table.size());
      NW_CHECK(real_len > 0 && real_len <= new_len && seq->prefix_len >= 0, "run: a sequence of ", real_len,
               " new tokens (at least one, at most the verify's ", verify_len, ")");
      NW_CHECK(pages <= max_pages_per_seq_ && held >= real_pages, "run: ", seq->prefix_len + real_len,
               " tokens need ", real_pages, " pages; the page table has ", held, ", the context at most ",
               max_pages_per_seq_);
      // A verify's table also names the held pages its draft rounds store into (verify_accept reads them there).
      const int64_t draft_keys = seq->pads_to(verify_len) ? keys + speculative_.num_steps - 1 : keys;
      const int64_t listed = std::max(pages, std::min({held, max_pages_per_seq_, (draft_keys + page_size_ - 1) /
                                                                                      page_size_}));
      for (int64_t p = 0; p < listed; ++p) {
        table[p] = p < held ? seq->page_table[p] : static_cast<int32_t>(scratch_page_);  // past them: fillers only
        NW_CHECK(p >= held || (table[p] >= 0 && table[p] < num_pages_), "run: page ", table[p],
                 " is outside the cache of ", num_pages_);
      }
      table_width = std::max(table_width, listed);
      for (int64_t i = 0; i < new_len; ++i) {
        const int64_t pos = seq->prefix_len + i;
        const bool filler = i >= real_len;
        const int32_t id = batch.token_ids[from + std::min(i, real_len - 1)];
        NW_CHECK(id >= 0 && id < c.vocab_size, "token id ", id, " is outside the vocabulary (size ", c.vocab_size, ")");
        h.ids[row + i] = id;
        // A tree's tokens see their ancestors; fillers and chains the tokens before them.
        h.parents[row + i] = filler || seq->draft_parents.empty() ? static_cast<int32_t>(i - 1)
                                                                  : seq->draft_parents[static_cast<size_t>(i)];
        h.positions[row + i] = filler ? static_cast<int32_t>(pos) : batch.positions[from + i];
        h.slots[row + i] = filler ? -1 : static_cast<int64_t>(table[pos / page_size_]) * page_size_ + pos % page_size_;
      }
    } else {  // padding: token 0 at position 0, stored nowhere, no keys
      for (int64_t i = 0; i < new_len; ++i) {
        h.ids[row + i] = 0;
        h.parents[row + i] = static_cast<int32_t>(i - 1);
        h.positions[row + i] = 0;
        h.slots[row + i] = -1;
      }
    }
    h.lens[s] = static_cast<int32_t>(keys);
    h.cu_q[s + 1] = static_cast<int32_t>(h.cu_q[s] + new_len);
    h.cu_k[s + 1] = static_cast<int32_t>(h.cu_k[s] + keys);
    row += new_len;
    from += seq ? real_len : 0;
    h.last[s] = static_cast<int32_t>(row - 1);
    step.max_seqlen_q = std::max(step.max_seqlen_q, new_len);
    step.max_seqlen_k = std::max(step.max_seqlen_k, keys);
  }
  NW_CHECK(row == t && from == batch.num_tokens(), "run: sequences cover ", from, " tokens, the batch has ",
           batch.num_tokens());
  for (size_t i = 0; i < logit_rows.size(); ++i) {
    NW_CHECK(logit_rows[i] >= 0 && logit_rows[i] < t, "run: logits row ", logit_rows[i], " outside the step's ", t);
    h.last[i] = static_cast<int32_t>(logit_rows[i]);
  }
  const int64_t r = logit_rows.empty() ? b : static_cast<int64_t>(logit_rows.size());
  auto put = [&](const Tensor& dst, const void* src, size_t bytes) {
    NW_CUDA_CHECK(cudaMemcpyAsync(dst.data, src, bytes, cudaMemcpyHostToDevice, stream_));
  };
  put(token_ids_, h.ids, t * 4);
  put(positions_, h.positions, t * 4);
  if (tree) put(tree_parents_, h.parents, t * 4);
  put(slots_, h.slots, t * 8);
  put(seq_lens_, h.lens, b * 4);
  put(cu_seqlens_q_, h.cu_q, (b + 1) * 4);
  put(cu_seqlens_k_, h.cu_k, (b + 1) * 4);
  put(last_rows_, h.last, r * 4);
  // Only the pages in use: kernels never read a table entry past a sequence's last page.
  const size_t pitch = static_cast<size_t>(max_pages_per_seq_) * 4;
  if (b > 0)
    NW_CUDA_CHECK(cudaMemcpy2DAsync(page_table_.data, pitch, h.table, pitch, table_width * 4, b,
                                    cudaMemcpyHostToDevice, stream_));
  step.token_ids = token_ids_.rows(0, t);
  step.positions = positions_.rows(0, t);
  if (tree) step.tree_parents = tree_parents_.rows(0, t);
  step.slots = slots_.rows(0, t);
  step.page_table = page_table_.rows(0, b);
  step.seq_lens = seq_lens_.rows(0, b);
  step.cu_seqlens_q = cu_seqlens_q_.rows(0, b + 1);
  step.cu_seqlens_k = cu_seqlens_k_.rows(0, b + 1);
  step.last_rows = last_rows_.rows(0, r);
  step.num_tokens = t;
  step.num_seqs = b;
  step.total_keys = h.cu_k[b];
  step.absorbed = absorbed;
  step.q_len = absorbed && verify_len > 0 ? verify_len : 1;
  if (padded_seqs > 0) {  // a graph's step: its padding rows route too, so the expert counts need the real ones
    const int groups = model_->dp_size();
    for (int g = 0; g < groups; ++g) {  // capture's all-padding steps name no group's tokens
      const int64_t real = groups == 1 ? real_rows : batch.dp_tokens.empty() ? 0 : batch.dp_tokens[g];
      h.valid[g] = static_cast<int32_t>(real);
    }
    put(valid_rows_, h.valid, groups * 4);
    step.valid_rows = valid_rows_;
  }
  if (split_mixed && padded_seqs == 0 && b > 1) split_into_parts(step, verify_len);
  return step;
}

// One run of decoding sequences (one token each, or a verify's padded ones) and one of longer ones, either way round
// (the engine plans decodes first, then the chunk): two parts, the decoding one absorbed. Anything else stays one
// decompressed step.
void CudaModelRunner::split_into_parts(CudaStep& step, int64_t verify_len) {
  HostStaging& h = *host_;
  const int64_t b = step.num_seqs;
  const auto one_token = [&](int64_t s) { return decode_part_[static_cast<size_t>(s)] != 0; };
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
    if (step.tree_parents.defined() && one_token(begin)) p.tree_parents = step.tree_parents.rows(t0, t1);
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
    p.q_len = p.absorbed && verify_len > 0 ? verify_len : 1;
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
  graphed_ = true;
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

namespace {

// Whether the draft model has work in a speculating runner's step: drafts to verify, a request that wants drafts, or
// a prompt chunk whose positions it takes. Steps without (only sampling requests, say) run as plain steps, decode
// graphs included; the MTP layer's cache then lacks their positions, which only makes later drafts worse.
bool needs_draft_model(const ForwardBatch& batch, std::span<const SampleRequest> samples) {
  return std::any_of(batch.seqs.begin(), batch.seqs.end(),
                     [](const SequenceInfo& s) { return s.draft_len > 0 || s.next_token >= 0; }) ||
         std::any_of(samples.begin(), samples.end(), [](const SampleRequest& r) { return r.max_draft > 0; });
}

}  // namespace

void CudaModelRunner::launch(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits) {
  // With DP attention every group speculates every step (eager), so that their verifies and draft rounds meet.
  if (speculative_.enabled() && (model_->dp_size() > 1 || needs_draft_model(batch, samples))) {
    bool sampled = false;
    const int bs = speculative_graph_size(batch, samples, return_logits, sampled);
    graphed_ = bs > 0;
    if (bs > 0) return launch_speculative_graph(batch, samples, bs, sampled);
    return launch_speculative(batch, samples, return_logits);
  }
  const int64_t b = static_cast<int64_t>(batch.seqs.size());
  graphed_ = false;  // forward() sets it when it replays a decode graph
  queue_draws(forward(batch, AttentionForm::kAuto).rows(0, b), samples, return_logits);
}

StepOutput CudaModelRunner::finish() {
  StepOutput out;
  if (spec_graphs_ && spec_graphs_->pending) {
    out = finish_speculative_graph();
  } else if (speculative_out_) {
    out = std::move(*speculative_out_);
    speculative_out_.reset();
  } else {
    out = read_draws();
  }
  out.cuda_graph = graphed_;
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
  for (const Tensor& layer : cache_) {  // the MTP layer's too when speculating
    const size_t page_bytes = layer.nbytes() / static_cast<size_t>(layer.size(0));
    char* base = static_cast<char*>(layer.data);
    NW_CUDA_CHECK(cudaMemcpyAsync(base + dst * page_bytes, base + src * page_bytes, page_bytes,
                                  cudaMemcpyDeviceToDevice, stream_));
  }
}

}  // namespace narwhal
