// CudaModelRunner: the GPU forward behind the ModelRunner interface: weights uploaded once, the paged latent
// cache sized from --mem-fraction-static, persistent step buffers, CUDA graphs for decode batch sizes.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/cuda_model.h"
#include "model/deepseek_model.h"
#include "ops/sampling.h"
#include "runtime/cuda_buffers.h"
#include "runtime/cuda_counts_reader.h"
#include "runtime/cuda_graph_sizes.h"
#include "runtime/draft_tree.h"
#include "runtime/model_runner.h"
#include "runtime/speculative.h"

namespace narwhal {

struct CudaRunnerOptions {
  int64_t page_size = 64;
  int64_t max_total_tokens = 0;       // > 0: the cache holds at most this many tokens
  double mem_fraction_static = 0.85;  // weights + cache share of device memory (SGLang's rule)
  int cuda_graph_max_bs = 160;        // decode batches up to this size replay captured graphs
  bool disable_cuda_graph = false;
  int64_t max_tokens_per_step = 16384;
  KernelChoice kernels = KernelChoice::kAuto;
  // Tensor parallelism: this rank's TP group (NCCL, or device-local for tests; null without TP). Every rank of it
  // builds its runner at the same time: they agree on the cache size (the fewest pages any rank can hold) and
  // capture the same graphs, whose collectives only NCCL can capture.
  Communicator* tp = nullptr;
  int ep_size = 1;                  // with tp: the EP groups its ranks split the routed experts over (--ep-size)
  MoeA2aBackend moe_a2a = MoeA2aBackend::kNone;  // with tp: --moe-a2a-backend (deepep: ep_size == tp's size)
  DeepEpMode deepep_mode = DeepEpMode::kAuto;    // --deepep-mode
  // DP attention (--enable-dp-attention --dp-size), with tp: tp's ranks form dp_size groups of tp->size() / dp_size
  // consecutive ranks, each with its own batches; dp_group is this rank's (ParallelGroups::attn_tp, null where a
  // group is one rank). Every batch names every group's token count (ForwardBatch::dp_tokens); an idle group runs
  // empty batches, which still meet the other groups' (CudaModel). Decode graphs replay only as dp_graph_size says.
  Communicator* dp_group = nullptr;
  int dp_size = 1;
  int ranks_per_device = 1;         // TP ranks sharing this GPU (device-local): each sizes its cache from its share
  ProgressBar* progress = nullptr;  // load(): a progress bar the ranks of this process share
  // NEXTN speculative decoding: the MTP layer is loaded (each TP rank its slice), the cache holds its latents too,
  // and launch() verifies drafts and drafts more (cuda_speculative_graphs.cpp, and cuda_speculative.cpp eager; with
  // DP attention every step, eager, each group running every draft round; draft trees eager, cuda_draft_tree.cpp). Every TP rank gets the sample requests (TpRanks) and draws the same tokens from the
  // same logits, so their draft rounds, and the collectives in them, meet.
  SpeculativeConfig speculative = {};
};

class CudaModelRunner : public ModelRunner {
 public:
  CudaModelRunner(ModelConfig config, CudaModelWeights weights, const CudaRunnerOptions& options);
  ~CudaModelRunner() override;
  // Loads a checkpoint directory's config.json and weights onto the current GPU (with options.tp, that TP rank's
  // part of the weights).
  static std::unique_ptr<CudaModelRunner> load(const std::string& model_dir, const CudaRunnerOptions& options);
  // The same with random weights made on the GPU from the directory's config.json alone (--load-format dummy).
  static std::unique_ptr<CudaModelRunner> dummy(const std::string& model_dir, const CudaRunnerOptions& options,
                                                uint64_t seed = 0);

  const ModelConfig& config() const override { return model_->config(); }
  int64_t num_pages() const override { return num_pages_; }
  int64_t page_size() const override { return page_size_; }
  // launch() queues the step, the draw of every sample on the GPU (the argmax kernel when all are plain greedy,
  // ops::cuda::sample_tokens otherwise) and the copy of the tokens and asked-for logprobs to pinned host memory,
  // on the runner's stream; finish() waits on an event. Logits cross to the host only for return_logits.
  void launch(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits) override;
  StepOutput finish() override;
  Tensor run(const ForwardBatch& batch) override;
  void copy_page(int32_t src, int32_t dst) override;
  // CudaModel::expert_counts as CudaCountsReader::read gives them: never waiting for a step, exact once nothing is
  // left to run (after finish()). Empty on TP ranks other than 0.
  std::vector<int64_t> expert_tokens() const override {
    return expert_counts_ ? expert_counts_->read() : std::vector<int64_t>();
  }
  bool speculative() const override { return speculative_.enabled(); }

  // Runs with a forced MLA form (tests prove the forms equal); kAuto is what run() does. With DP attention a step
  // that dp_graph_size gives a graph replays it whatever the form, and refuses kDecompressed.
  Tensor run(const ForwardBatch& batch, AttentionForm form);
  // Tests: the MTP layer alone over `batch` (DeepSeekModel::forward_mtp's batch), `hidden` [T, H] host F32 the
  // states it takes (rounded to BF16 as the GPU's own are): host logits of each sequence's last token.
  Tensor run_mtp(const ForwardBatch& batch, const Tensor& hidden);
  // Decode batch sizes with a captured graph, ascending (empty when graphs are off or the model's shapes rule them
  // out on some TP rank).
  std::vector<int> graph_batch_sizes() const;
  const CudaModel& model() const { return *model_; }
  // Tests: every eager step's MoE routing goes to `trace`, or follows `routing` (CudaModel::set_routing_trace and
  // set_routing_override); null stops it.
  void set_routing_trace(RoutingTrace* trace) { model_->set_routing_trace(trace); }
  void set_routing_override(const RoutingTrace* routing) { model_->set_routing_override(routing); }
  cudaStream_t stream() const { return stream_; }

 private:
  // Copies the batch into the persistent device buffers, padded to `padded_seqs` one-token sequences
  // (decode graphs); returns the step's views, a mixed step in parts when `split_mixed`. A speculative verify
  // (verify_len > 0) pads every decoding sequence (SequenceInfo::decodes) with filler tokens to verify_len new
  // tokens, as the decode kernel takes them: fillers repeat its last token, store no latents, and read the scratch
  // page where they pass the sequence's pages (their draws are never read; real tokens never see them). The step
  // then returns the logits of `logit_rows` (rows of the padded step; empty: each sequence's last).
  CudaStep upload(const ForwardBatch& batch, bool absorbed, int64_t padded_seqs, bool split_mixed = false,
                  int64_t verify_len = 0, std::span<const int64_t> logit_rows = {});
  void split_into_parts(CudaStep& step, int64_t verify_len);
  void capture_graphs(int max_bs);
  // Every TP rank's `value`, in rank order (a collective; a host sync).
  std::vector<int64_t> gathered(Communicator& tp, int64_t value);
  // The fewest of every TP rank's `value`: the cache size, or the largest graph, all of them hold.
  int64_t fewest(Communicator& tp, int64_t value);
  // DP attention: every group's token count for a step of this group's `tokens` (its first rank's).
  std::vector<int64_t> dp_counts(int64_t tokens);
  // Runs the step (graph or eager) and returns the device logits [>= B, vocab], not yet synchronized.
  Tensor forward(const ForwardBatch& batch, AttentionForm form);
  // DP attention: the batch must name every group's token count, its own group's its own.
  void check_dp_tokens(const ForwardBatch& batch) const;

  std::unique_ptr<CudaModel> model_;
  Communicator* tp_ = nullptr;  // CudaRunnerOptions::tp
  cudaStream_t stream_ = nullptr;
  int64_t page_size_ = 0, num_pages_ = 0, max_pages_per_seq_ = 0, max_seqs_ = 0;
  Tensor cache_storage_;
  std::vector<Tensor> cache_;  // per layer [num_pages, page_size, kv_lora + rope] BF16 views of cache_storage_
  // Persistent step buffers: fixed addresses for captured graphs.
  Tensor token_ids_, positions_, slots_, page_table_, seq_lens_, cu_seqlens_q_, cu_seqlens_k_, last_rows_;
  Tensor tree_parents_;  // CudaStep::tree_parents of steps with a draft tree
  Tensor valid_rows_;  // [dp_size] I32: CudaStep::valid_rows of graph steps
  std::map<int, cudaGraphExec_t> graphs_;  // batch size -> decode graph
  Tensor graph_logits_;                    // where every graph writes its logits
  Tensor greedy_ids_;                      // [max_tokens] I32: argmax ids, one per logits row
  struct HostStaging;
  std::unique_ptr<HostStaging> host_;
  // The launched step: its sample requests, where its results land (pinned) and the event that says they did.
  struct Draws {
    std::vector<SampleRequest> samples;
    bool argmax_only = false, want_logits = false;
    int64_t rows = 0;
    PinnedBuffer upload, results, logits;  // sampler rows + adjustments up; tokens, logprobs, tops down
    Tensor device_batch, workspace;
    ops::SampledRows device_out;
    int64_t out_rows = 0;
    cudaEvent_t done = nullptr;
  };
  std::unique_ptr<Draws> draws_;
  std::unique_ptr<CudaCountsReader> expert_counts_;  // null where the model does not count
  // Queues the draws of `samples` from `logits` (and the logits' copy to the host when asked); read_draws() waits
  // for them and gives them back.
  void queue_draws(const Tensor& logits, std::span<const SampleRequest> samples, bool return_logits);
  void launch_draws(const Tensor& logits, std::span<const SampleRequest> samples);
  StepOutput read_draws();

  // Speculative decoding (cuda_speculative.cpp): a verify forward, its draws and acceptance, then the draft
  // model's rounds; the result waits in speculative_out_ for finish().
  void launch_speculative(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits);
  std::vector<std::vector<int32_t>> draft(const ForwardBatch& verify, std::span<const int64_t> verify_rows,
                                          std::span<const SampleRequest> samples, const VerifyOutcome& outcome);
  // The speculative graphs (cuda_speculative_graphs.cpp): a step of decoding sequences, at most max_bs of them,
  // replays one graph of its verify, draws, acceptance and draft rounds; finish() reads what it left. Two graphs a
  // batch size: one draws with the argmax (greedy), one with the GPU sampler from rows uploaded before the launch.
  struct SpeculativeGraphs;
  void capture_speculative_graphs(int max_bs);
  void speculative_graph_body(const CudaStep& verify, int64_t bs, bool sampled);
  // The graph's batch size for this step (0: it runs eager): every sequence decodes, one request each, drawn from its
  // row alone (drawn_from_row_alone); `sampled` says whether any is not plain greedy.
  int speculative_graph_size(const ForwardBatch& batch, std::span<const SampleRequest> samples, bool return_logits,
                             bool& sampled) const;
  void launch_speculative_graph(const ForwardBatch& batch, std::span<const SampleRequest> samples, int bs,
                                bool sampled);
  // The sampled graph's rows for this step: each request's verify rows as verify_samples draws them, greedy rows
  // elsewhere (fillers, padding sequences), copied up before the launch.
  void upload_sampling_rows(const ForwardBatch& batch, std::span<const SampleRequest> samples, int bs);
  StepOutput finish_speculative_graph();
  std::unique_ptr<SpeculativeGraphs> spec_graphs_;
  // Rows `rows` of `source` into `dest`'s first rows, the indices sent through step_lists_ (eager rounds only).
  void gather_step_rows(const Tensor& source, std::span<const int64_t> rows, Tensor dest);
  // mtp_hidden_'s first n rows, grown to hold them (between steps only: nothing captured reads it then).
  Tensor mtp_inputs(int64_t n);
  // Tree drafting (cuda_draft_tree.cpp), eager: after a verify's acceptance, the kept paths' latents moved into place
  // in every layer (ops::cuda::move_rows), the MTP extend over them and TreeRounds' rounds; fills out.drafts and
  // out.draft_parents. verify_rows: each verify batch row's row of the padded step.
  void draft_trees(const ForwardBatch& verify, std::span<const int64_t> verify_rows,
                   std::span<const SampleRequest> samples, const VerifyOutcome& outcome, StepOutput& out);
  void keep_tree_paths(const ForwardBatch& verify, const VerifyOutcome& outcome);
  // The speculative_.topk most likely tokens of each of the first `rows` rows of `logits`, with their log-probabilities
  // (the GPU sampler's top logprobs); waits for them.
  std::vector<std::vector<DraftChoice>> top_choices(const Tensor& logits, int64_t rows);
  Tensor tree_states_;      // [slots, hidden] BF16: TreeRounds' store of MTP states
  SpeculativeConfig speculative_;
  int64_t scratch_page_ = -1;        // speculating: a cache page beyond the pool's, for fillers past a sequence's pages
  std::vector<char> decode_part_;    // per sequence of the last upload: whether it belongs to the absorbed part
  std::optional<StepOutput> speculative_out_;
  bool graphed_ = false;  // the launched step replays a graph: finish() says so in StepOutput::cuda_graph
  Tensor mtp_hidden_;
  StagedLists step_lists_;  // an eager speculative step's moves and gathers' rows, restarted after each sync
};

}  // namespace narwhal
