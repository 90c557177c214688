// CudaModel: the DeepSeek-V2/V3 forward on one GPU (BF16 activations, FP32 residual stream and router), over
// one step's batch already in device buffers; tuned kernels at DeepSeek's dims, portable ones elsewhere.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <vector>

#include "model/cuda_weights.h"
#include "model/model_config.h"
#include "model/routing_trace.h"
#include "model/tensor_parallel.h"
#include "ops/cuda/elementwise.h"
#include "ops/cuda/gemm.h"
#include "ops/moe.h"
#include "parallel/communicator.h"

namespace narwhal {

// Throws an Error naming the config.json field and its value when the GPU forward cannot take the config (a dim
// that is not a multiple of 8, more experts than the router holds, ...), as TP rank `slice` holds it (a split that
// does not divide, or leaves a rank a dim the kernels cannot take, names the per-rank size; with DP attention,
// slice.dp_size > 1, the heads and vocabulary split over the DP group); CudaModel checks it, loaders call it first
// so that nothing is read for a model that will be refused.
void check_gpu_support(const ModelConfig& config, TpSlice slice = {});

// One step on the device: views of persistent buffers (the runner's), sized to this step. Sequence b's new
// tokens are rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]-1, its keys (cached prefix + new) number seq_lens[b].
struct CudaStep {
  Tensor token_ids;     // [T] I32
  Tensor positions;     // [T] I32
  Tensor slots;         // [T] I64: cache row of each new token (page * page_size + offset), -1 = padding
  Tensor page_table;    // [B, max_pages] I32
  Tensor seq_lens;      // [B] I32
  Tensor cu_seqlens_q;  // [B + 1] I32
  Tensor cu_seqlens_k;  // [B + 1] I32
  Tensor last_rows;     // [R] I32: the token rows whose logits forward returns (each sequence's last, or a verify's)
  int64_t num_tokens = 0, num_seqs = 0;
  int64_t max_seqlen_q = 0, max_seqlen_k = 0, total_keys = 0;  // host-known bounds (prefill grids)
  bool absorbed = false;  // absorbed MLA (decode form) instead of the decompressed (prefill) form
  // An absorbed step's tokens per sequence: 1 for a decode, 1 + drafts for a speculative verify (every sequence
  // padded to the same count, as the decode kernel takes them; at most ops::cuda::kMlaDecodeMaxQLen).
  int64_t q_len = 1;
  // A speculative draft tree's verify or draft round: per token its parent among its sequence's new tokens (-1 a
  // root; SequenceInfo::draft_parents), so that attention sees the prefix, its ancestors and itself. Absorbed steps
  // only. Undefined: causal.
  Tensor tree_parents;  // [T] I32
  // Speculative decoding: forward leaves every token's final-normed hidden state in hidden() (the MTP layer's input).
  bool keep_hidden = false;
  // A mixed step (decodes beside a prefill chunk), as the CPU reference runs it: two parts, sequences [0, k) and
  // [k, B), the one-token part absorbed and the other decompressed, so that the decodes' keys are never
  // decompressed (at 256 decodes of 1k tokens beside an 8k chunk that would be 2 GB per layer for V2-Lite).
  // Each part's views start at its own first token and sequence (its cu_seqlens from 0); attention runs per
  // part, everything else on the whole step. Empty: the whole step in one form.
  std::vector<CudaStep> parts;
  int64_t first_token = 0;  // a part's first row in the whole step
  // DP attention: every DP group's rows this step, in group order (this group's is num_tokens), the same on every
  // rank of the TP group: ForwardBatch::dp_tokens for an eager step, a decode graph's size for each group in a
  // graph. Empty without DP attention.
  std::vector<int64_t> dp_rows;
  // A decode graph's step (device I32 [G], G = DP groups or 1): the FFN's rows are G equal blocks, a group's each,
  // whose first valid_rows[g] are real and the rest padding, which routes too but must not be counted. Undefined:
  // every row is real (eager steps).
  Tensor valid_rows;
  // Every rank of the TP group runs a decode this step (a decode graph, or every_rank_decodes of the batch): deepep's
  // auto mode then dispatches in low-latency mode.
  bool decode_only = false;
};

// Which kernels run: kAuto picks the tuned ones where the shapes allow; kPortable forces the shape-generic
// ones (tests compare the two).
enum class KernelChoice { kAuto, kPortable };

// With a TP communicator `tp` (NCCL or device-local, size > 1) the model is that rank's part, as DeepSeekModel's:
// `weights` were made for TpSlice{tp->rank(), tp->size(), ep_size, dp_size}, the code runs on local_config's
// counts, and the ranks meet on the stream at the embedding (all_reduce of the F32 residual rows), after o_proj and
// after the MLP / MoE (all_reduce of the BF16 delta; the shared experts are folded into the routed ones, so one
// sum), and at the lm_head (its F32 shards all_gather'ed and joined, so every rank holds the whole logits).
// DP attention (dp_size > 1, SGLang's --enable-dp-attention): `dp_group` is this rank's DP group of
// tp->size() / dp_size consecutive ranks (null when that is one rank). Each group runs its own step through the
// embedding, attention and lm_head, meeting in the group; before every MLP / MoE the F32 normed rows of all groups
// are all_gather'ed over `tp` (each padded to the largest group's, the padding dropped), the FFN runs split over
// every rank on all of them, its delta is all_reduce'd over `tp`, and each group keeps its own rows. A group with
// nothing to run (a step of 0 tokens and 0 sequences) still meets the others there; its ranks skip the group's own
// meetings together, since they run the same step. Every rank of `tp` calls forward together.
// With --moe-a2a-backend deepep (moe_a2a, ep_size == tp->size()) the MoE layers follow DeepEP's pattern instead
// (model/moe_a2a.h, cuda_moe_a2a.cpp): no gather of the DP groups and no all_reduce around them.
class CudaModel {
 public:
  // max_tokens: the most tokens one step may carry (token-indexed buffers are reserved for it up front).
  CudaModel(ModelConfig config, CudaModelWeights weights, int64_t max_tokens, int64_t page_size,
            KernelChoice kernels = KernelChoice::kAuto, Communicator* tp = nullptr, int ep_size = 1,
            Communicator* dp_group = nullptr, int dp_size = 1, MoeA2aBackend moe_a2a = MoeA2aBackend::kNone,
            DeepEpMode deepep_mode = DeepEpMode::kAuto);

  const ModelConfig& config() const { return config_; }
  const TpDims& tp_dims() const { return tp_dims_; }
  const CudaModelWeights& weights() const { return weights_; }
  int64_t max_tokens() const { return max_tokens_; }
  // DP attention's group count (1 without it) and this rank's group.
  int dp_size() const { return dp_size_; }
  int dp_rank() const { return tp_ ? tp_->rank() / tp_dims_.slice.attn_size() : 0; }
  // Whether decode steps (one token per sequence) run without host-known key counts, and their collectives can be
  // captured too, i.e. may be captured (not with deepep's normal mode, which reads its counts on the host).
  bool decode_capturable() const {
    const bool host_counts = tp_dims_.slice.deepep() && tp_dims_.slice.deepep_mode == DeepEpMode::kNormal;
    return fast_attention_ && fast_moe_ && !host_counts && (!tp_ || tp_->graph_capturable()) &&
           (!attn_ || attn_->graph_capturable());
  }

  // Runs the step on `stream` (no host sync): writes the new tokens' latents into `cache` (per layer
  // [pages, page_size, kv_lora + rope] BF16) and returns each sequence's last-token logits [B, vocab] F32,
  // a view of an internal buffer valid until the next forward ([0, vocab] for an idle DP group).
  Tensor forward(const CudaStep& step, const std::vector<Tensor>& cache, cudaStream_t stream);
  // Speculative decoding's draft model, the weights' first MTP layer (DeepSeekModel::forward_mtp): each token's
  // embedding (enorm) beside `hidden` [T, H] BF16 (hnorm), the hidden state of the position before it, through
  // eh_proj and the MTP decoder layer on cache layer num_hidden_layers, then its head norm and head: the logits of
  // step.last_rows, as forward's; its head-normed states of every token are left in hidden(). `hidden` may be (rows
  // of) hidden() itself: it is read by the first kernels, before the head rewrites hidden().
  Tensor forward_mtp(const CudaStep& step, const Tensor& hidden, const std::vector<Tensor>& cache,
                     cudaStream_t stream);
  bool has_mtp() const { return weights_.mtp.has_value(); }
  // [T, H] BF16: the last forward's final-normed (forward_mtp's head-normed) states, when step.keep_hidden asked.
  Tensor hidden() const { return hidden_; }
  // [n_routed_experts] I64 on the device: the router's (token, expert) choices of every forward so far, over all MoE
  // layers, padding rows left out (CudaStep::valid_rows); counted inside captured graphs too (a fixed address). Only
  // TP rank 0 counts, since every rank routes the same rows (with DP attention every group's, gathered): undefined
  // on the others, for a model without MoE, and with deepep (each rank routes its own slice; not summed yet).
  const Tensor& expert_counts() const { return expert_counts_; }
  // Tests, eager steps only (both copy synchronously; never while a graph is captured). While a trace is set, every
  // MoE layer's router logits and the GPU's own choices are copied to it. While an override is set, the experts
  // run with the override's choices and weights instead (its layers in forward order, one forward's worth):
  // the differential test makes the GPU route exactly as the CPU reference did.
  void set_routing_trace(RoutingTrace* trace) { routing_trace_ = trace; }
  void set_routing_override(const RoutingTrace* routing) { routing_override_ = routing; }

 private:
  enum Buffer {
    kResidual, kNormed, kNormedF32, kDelta, kQ, kQa, kLatent, kQAbsorbed, kAttnLatent, kAttnOut, kGateUp, kAct,
    kRouterLogits, kTopkIds, kTopkWeights, kMoeWorkspace, kDecodeWorkspace, kLastRows, kLogitsBf16, kLogits,
    kGathered, kLatentRows, kKv, kExpertOut, kLogitsShard, kGatheredLogits, kDpGathered, kDpRows, kDpNormed,
    kDpDelta, kHidden, kMtpJoined, kA2aCounts, kA2aSlot, kA2aToken, kA2aSendX, kA2aSendIds, kA2aSendWeights,
    kA2aRecvX, kA2aRecvIds, kA2aRecvWeights, kA2aPartial, kA2aReturned, kA2aSlice, kA2aGathered, kBufferCount
  };
  // A typed view of buffer `id`, grown when too small (into new storage: graphs keep the old).
  Tensor buffer(Buffer id, DType dtype, std::vector<int64_t> shape);

  void linear(const Tensor& x, const CudaLinear& w, Tensor& y, cudaStream_t stream);
  // The token embedding of `table` into `residual` [T, H] F32 (nothing for an idle DP group).
  void embed(const CudaStep& step, const Tensor& table, Tensor& residual, bool idle, cudaStream_t stream);
  // One decoder layer on cache layer `cache`: the residual stream takes the last FFN's delta `ffn_out` (none before
  // the first layer) and attention's; returns this layer's FFN delta.
  Tensor decoder_layer(const CudaLayerWeights& w, const CudaStep& step, const Tensor& cache, Tensor& residual,
                       const Tensor& ffn_out, bool idle, cudaStream_t stream);
  // The last norm and the head: logits of step.last_rows (gathered over the attention group's vocabulary shards).
  Tensor head(const CudaStep& step, Tensor& residual, const Tensor& ffn_out, const Tensor& norm, const Tensor& lm_head,
              bool idle, cudaStream_t stream);
  void attention(const CudaLayerWeights& w, const CudaStep& step, const Tensor& cache, cudaStream_t stream);
  // RoPE, the latent store and attention of one form over the step's (or part's) rows of q, latent and out.
  void attend(const CudaAttentionWeights& w, const CudaStep& step, const Tensor& cache, Tensor q, const Tensor& latent,
              Tensor out, cudaStream_t stream);
  void attend_absorbed(const CudaAttentionWeights& w, const CudaStep& step, const Tensor& cache, const Tensor& q,
                       Tensor& q_abs, Tensor& out, cudaStream_t stream);
  void attend_decompressed(const CudaAttentionWeights& w, const CudaStep& step, const Tensor& cache,
                           const Tensor& q, Tensor& out, cudaStream_t stream);
  Tensor gather_keys(const CudaStep& step, const Tensor& cache, cudaStream_t stream);
  // The post-attention norm and the MLP / MoE; returns the FFN's delta for this rank's rows (its group's with DP).
  Tensor feed_forward(const CudaLayerWeights& w, const CudaStep& step, Tensor& residual, const Tensor& attn_out,
                      cudaStream_t stream);
  void mlp(const CudaMlpWeights& w, const Tensor& x, Tensor& out, cudaStream_t stream);
  // x: the normed input in BF16 for the experts, x_f32 the same unrounded for the router.
  void moe(const CudaMoeWeights& w, const Tensor& x, const Tensor& x_f32, Tensor& out, cudaStream_t stream);
  // Adds this layer's choices (the first `rows` of kTopkIds, which every MoE path leaves there) to expert_counts_.
  void count_experts(const CudaStep& step, int64_t rows, cudaStream_t stream);
  // deepep: the same over this rank's attention group's rows, by all_to_all; returns the group's BF16 delta.
  Tensor moe_a2a(const CudaMoeWeights& w, const CudaStep& step, const Tensor& x, const Tensor& x_f32,
                 cudaStream_t stream);
  void trace_routing(const Tensor& logits, const Tensor& ids, const Tensor& weights, cudaStream_t stream);
  // The override's next layer: its rows [first_row, first_row + ids rows) of `rows` (deepep routes a slice).
  void override_routing(Tensor& ids, Tensor& weights, int64_t first_row, int64_t rows, cudaStream_t stream);
  // The meeting points (nothing without TP): the FFN's in the TP group, the embedding's, attention's and the
  // lm_head's in the attention group (the TP group, or with DP attention the DP group).
  void all_reduce(Tensor& t, cudaStream_t stream);
  void attention_all_reduce(Tensor& t, cudaStream_t stream);
  Tensor gather_dp_groups(const Tensor& x, const std::vector<int64_t>& rows, cudaStream_t stream);
  Tensor own_dp_rows(const Tensor& all, const std::vector<int64_t>& rows) const;

  ModelConfig config_;
  Communicator* tp_;
  Communicator* attn_;  // where attention meets: tp_, or the DP group with DP attention (null at one rank)
  int dp_size_;
  TpDims tp_dims_;
  ModelConfig local_;  // the counts this rank's code runs on
  CudaModelWeights weights_;
  int64_t max_tokens_;
  int64_t page_size_;
  bool fast_attention_ = false;
  bool fast_moe_ = false;
  int num_sms_ = 0;
  ops::RouterParams router_;
  ops::cuda::RopeTable rope_;
  ops::cuda::GemmRunner gemm_;
  std::array<Tensor, kBufferCount> buffers_;
  std::vector<Tensor> retired_;  // outgrown buffers, kept for the graphs captured over them
  Tensor hidden_;                // hidden(): a view of kHidden
  Tensor expert_counts_;
  bool drafting_ = false;  // in forward_mtp's layer: its choices are not counted
  RoutingTrace* routing_trace_ = nullptr;
  const RoutingTrace* routing_override_ = nullptr;
  size_t override_layer_ = 0;  // the override's next layer in this forward
  Tensor expert_rank_;         // deepep: TpDims::expert_rank on the device, for the dispatch kernels
};

}  // namespace narwhal
