// DeepSeekModel: the DeepSeek-V2/V3 forward pass (MLA + DeepSeekMoE) over a ForwardBatch, and its MTP module.
#pragma once

#include <string>

#include "model/forward_batch.h"
#include "model/model_config.h"
#include "model/routing_trace.h"
#include "model/weights.h"
#include "ops/moe.h"
#include "ops/rope.h"

namespace narwhal {

// Which MLA form runs: kAuto = decompressed for sequences with several new tokens (prefill),
// absorbed for one new token (decode). The forced forms exist so tests can prove them equal.
enum class AttentionForm { kAuto, kDecompressed, kAbsorbed };

struct ForwardOptions {
  AttentionForm attention = AttentionForm::kAuto;
  bool all_logits = false;     // logits for every token instead of each sequence's last one
  bool return_hidden = false;  // keep the final-normed hidden states of every token, for MTP
  RoutingTrace* routing_trace = nullptr;  // tests: every MoE layer's router logits and choices are appended
};

struct ForwardOutput {
  Tensor logits;  // [num_seqs or num_tokens, vocab]
  Tensor hidden;  // [num_tokens, hidden] when return_hidden
};

// The router settings of a config's MoE layers (scoring, selection, renormalisation, scaling).
ops::RouterParams router_params(const ModelConfig& config);

class DeepSeekModel {
 public:
  DeepSeekModel(ModelConfig config, ModelWeights weights);
  // Reads config.json and the safetensors of a model directory.
  static DeepSeekModel load(const std::string& model_dir);

  const ModelConfig& config() const { return config_; }
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

 private:
  void check_batch(const ForwardBatch& batch, const KvCache& cache) const;
  void decoder_layer(const DecoderLayerWeights& w, int cache_layer, const ForwardBatch& batch, const KvCache& cache,
                     const ForwardOptions& options, Tensor& h) const;
  Tensor attention(const AttentionWeights& w, int cache_layer, const ForwardBatch& batch, const KvCache& cache,
                   AttentionForm form, const Tensor& x) const;
  Tensor moe(const MoeWeights& w, const Tensor& x, RoutingTrace* trace) const;
  ForwardOutput head(const Tensor& h, const Tensor& norm, const Tensor& lm_head, const ForwardBatch& batch,
                     const ForwardOptions& options) const;

  ModelConfig config_;
  ModelWeights weights_;
  ops::RopeParams rope_;
  ops::RouterParams router_;
  ops::MlaShape mla_;
};

}  // namespace narwhal
