// DeepSeekModel: the DeepSeek-V2/V3 forward pass (MLA + DeepSeekMoE) over a ForwardBatch, and its MTP module.
#pragma once

#include <string>

#include "model/forward_batch.h"
#include "model/model_config.h"
#include "model/routing_trace.h"
#include "model/tensor_parallel.h"
#include "model/weights.h"
#include "ops/moe.h"
#include "ops/rope.h"
#include "parallel/communicator.h"

namespace narwhal {

// Which MLA form runs: kAuto = decompressed for sequences with several new tokens (prefill),
// absorbed for one new token (decode). The forced forms exist so tests can prove them equal.
enum class AttentionForm { kAuto, kDecompressed, kAbsorbed };

struct ForwardOptions {
  AttentionForm attention = AttentionForm::kAuto;
  bool all_logits = false;     // logits for every token instead of each sequence's last one
  bool return_hidden = false;  // keep the final-normed hidden states of every token, for MTP
  // Logits of these token rows, in this order, instead (speculative decoding: every row a verify or a draft reads).
  std::vector<int64_t> logit_rows;
  // Tests: every MoE layer's router logits and choices are appended (with deepep, this rank's slice's).
  RoutingTrace* routing_trace = nullptr;
  // [n_routed_experts]: each routed (token, expert) choice of every MoE layer adds 1 to its expert (/metrics'
  // expert load, what a load balancer would rebalance the placement from). With deepep each rank routes its own slice
  // and the TP group sums the counts at the end of the forward (one all_reduce), so every rank adds every choice
  // once: then all ranks must pass counts, or none.
  std::vector<int64_t>* expert_tokens = nullptr;
};

struct ForwardOutput {
  Tensor logits;  // [num_seqs or num_tokens, vocab]
  Tensor hidden;  // [num_tokens, hidden] when return_hidden
};

// The router settings of a config's MoE layers (scoring, selection, renormalisation, scaling).
ops::RouterParams router_params(const ModelConfig& config);

// With a TP communicator `tp` (a host one, size > 1), the model is that rank's part: `weights` were loaded for
// TpSlice{tp->rank(), tp->size(), ep_size}, the code runs on local_config's counts, and the ranks meet at four
// points: the vocab-parallel embedding (all_reduce), after o_proj and after the MLP / MoE (routed + shared summed
// first; one all_reduce each), and the lm_head shards, all_gather'ed so that every rank returns the whole logits.
// With expert parallelism (ep_size > 1) a rank runs only the choices of the experts it holds: every rank has
// every token (attention is TP), so the same all_reduce after the MoE gathers each token's experts from their
// ranks, and no all-to-all is needed. The host backend adds in rank order, so every rank gets the same bits.
// With --moe-a2a-backend deepep (ep_size == TP size) the MoE layers follow DeepEP's pattern instead
// (model/moe_a2a.h): each rank routes its slice of the rows, all_to_alls them to their experts' ranks and back,
// and the slices are all_gather'ed; no all_reduce. Null (or size 1): no TP.
class DeepSeekModel {
 public:
  // DP attention (dp_size > 1, SGLang's --enable-dp-attention): `tp` is the whole TP group and `dp_group` this
  // rank's DP group of tp->size() / dp_size ranks. Each DP group runs its own batch (possibly empty) through
  // attention, TP over its ranks; before each MLP / MoE the groups' tokens are gathered, the FFN runs split over
  // every rank as without DP, and each group keeps its rows. Every rank of the TP group calls forward together.
  DeepSeekModel(ModelConfig config, ModelWeights weights, Communicator* tp = nullptr, int ep_size = 1,
                Communicator* dp_group = nullptr, int dp_size = 1, MoeA2aBackend moe_a2a = MoeA2aBackend::kNone,
                DeepEpMode deepep_mode = DeepEpMode::kAuto);
  // Reads config.json and the safetensors of a model directory.
  static DeepSeekModel load(const std::string& model_dir, const std::string& draft_dir = "");

  const ModelConfig& config() const { return config_; }
  const TpDims& tp_dims() const { return tp_dims_; }
  const ModelWeights& weights() const { return weights_; }
  int num_mtp_layers() const { return static_cast<int>(weights_.mtp.size()); }
  // Layers that need a latent cache: the main ones, then the MTP ones.
  int num_cache_layers() const { return config_.num_hidden_layers + num_mtp_layers(); }

  // Runs the model on the batch: writes the new tokens' latents into `cache`, returns logits.
  ForwardOutput forward(const ForwardBatch& batch, const KvCache& cache, const ForwardOptions& options = {}) const;

  // MTP module `k` (DeepSeek-V3 sec. 2.2): batch.token_ids[i] is the token after the one whose main-model
  // hidden state is hidden[i]; positions and pages are the MTP sequence's own (cache layer
  // num_hidden_layers + k). Returns logits predicting the token after batch.token_ids[i].
  ForwardOutput forward_mtp(int k, const ForwardBatch& batch, const Tensor& hidden, const KvCache& cache,
                            const ForwardOptions& options = {}) const;

  int dp_size() const { return dp_size_; }
  // DP attention: every DP group's token count for a batch this group sizes itself (a batch the engine did not
  // plan, like the draft model's), in group order, for ForwardBatch::dp_tokens. A collective over the TP group:
  // every rank calls it, in the same order.
  std::vector<int64_t> dp_token_counts(int64_t tokens) const;

 private:
  void check_batch(const ForwardBatch& batch, const KvCache& cache) const;
  void decoder_layer(const DecoderLayerWeights& w, int cache_layer, const ForwardBatch& batch, const KvCache& cache,
                     const ForwardOptions& options, Tensor& h) const;
  Tensor attention(const AttentionWeights& w, int cache_layer, const ForwardBatch& batch, const KvCache& cache,
                   AttentionForm form, const Tensor& x) const;
  Tensor moe(const MoeWeights& w, const Tensor& x, const ForwardOptions& options) const;
  // The router's top-k of x's rows (counted and traced as the options say).
  void route(const MoeWeights& w, const Tensor& x, const ForwardOptions& options, Tensor& ids, Tensor& weights) const;
  // deepep (deepseek_moe_a2a.cpp): the MoE delta of x, this rank's attention group's rows, with no all_reduce to
  // follow; the options with this rank's own expert counts, and their sum over the TP group into the caller's.
  Tensor moe_a2a(const MoeWeights& w, const Tensor& x, const ForwardBatch& batch, const ForwardOptions& options) const;
  ForwardOptions own_expert_counts(const ForwardOptions& options, std::vector<int64_t>& mine) const;
  void sum_expert_counts(std::vector<int64_t>& mine, const ForwardOptions& options) const;
  Tensor shared_experts(const MlpWeights& w, const Tensor& x) const;
  ForwardOutput head(const Tensor& h, const Tensor& norm, const Tensor& lm_head, const ForwardBatch& batch,
                     const ForwardOptions& options) const;
  // The TP meeting points (no-ops without TP): the embedding, attention and lm_head meet in the attention group
  // (the TP group, or with DP attention the DP group), the FFN in the TP group.
  Tensor embed(const std::vector<int32_t>& ids, const Tensor& table) const;
  void all_reduce(Tensor& t) const;
  void attention_all_reduce(Tensor& t) const;
  Tensor join_logits(const Tensor& local) const;
  Tensor gather_dp_groups(const Tensor& x, const std::vector<int64_t>& counts) const;
  Tensor own_dp_rows(const Tensor& all, const std::vector<int64_t>& counts) const;

  ModelConfig config_;
  Communicator* tp_;
  Communicator* attn_;  // where attention meets: tp_, or the DP group with DP attention (null at one rank)
  int dp_size_;
  TpDims tp_dims_;
  ModelConfig local_;  // the counts this rank's code runs on
  ModelWeights weights_;
  ops::RopeParams rope_;
  ops::RouterParams router_;
  ops::MlaShape mla_;
  Tensor expert_rank_;  // deepep: TpDims::expert_rank as an I32 tensor, for the dispatch ops
};

}  // namespace narwhal
