// DeepSeekModel forward: embedding -> decoder layers (MLA, dense MLP or MoE) -> final norm -> lm_head.
#include "model/deepseek_model.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/logging.h"
#include "model/moe_a2a.h"
#include "model/safetensors.h"
#include "ops/activation.h"
#include "ops/embed.h"
#include "ops/linear.h"
#include "ops/moe.h"
#include "ops/norm.h"
#include "ops/rope.h"

namespace narwhal {

namespace {

Tensor empty(int64_t rows, int64_t cols) { return Tensor::zeros(DType::kF32, {rows, cols}); }

Tensor linear(const Tensor& x, const Tensor& w) {
  Tensor y = empty(x.size(0), w.size(0));
  ops::linear(x, w, y);
  return y;
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  Tensor y = empty(x.size(0), x.size(1));
  ops::rms_norm(x, weight, static_cast<float>(eps), y);
  return y;
}

Tensor mlp(const MlpWeights& w, const Tensor& x) {
  Tensor gate_up = linear(x, w.gate_up.weight);
  Tensor act = empty(x.size(0), gate_up.size(1) / 2);
  ops::silu_and_mul(gate_up, act);
  return linear(act, w.down.weight);
}

void add_into(Tensor& acc, const Tensor& x) {
  float* a = acc.f32();
  const float* b = x.f32();
  const int64_t n = acc.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}

}  // namespace

ops::RouterParams router_params(const ModelConfig& c) {
  ops::RouterParams p;
  p.num_experts = c.n_routed_experts;
  p.top_k = c.num_experts_per_tok;
  p.n_group = c.n_group;
  p.topk_group = c.topk_group;
  p.scoring = c.scoring_func == ScoringFunc::kSigmoid ? ops::MoeScoring::kSigmoid : ops::MoeScoring::kSoftmax;
  p.selection = c.topk_method == TopkMethod::kNoauxTc             ? ops::MoeSelection::kNoauxTc
                : c.topk_method == TopkMethod::kGroupLimitedGreedy ? ops::MoeSelection::kGroupLimitedGreedy
                                                                   : ops::MoeSelection::kGreedy;
  p.renormalize = c.renormalize_topk();
  p.routed_scaling_factor = static_cast<float>(c.routed_scaling_factor);
  return p;
}

DeepSeekModel::DeepSeekModel(ModelConfig config, ModelWeights weights, Communicator* tp, int ep_size,
                             Communicator* dp_group, int dp_size, MoeA2aBackend moe_a2a, DeepEpMode deepep_mode)
    : config_(std::move(config)),
      tp_(tp && tp->size() > 1 ? tp : nullptr),
      attn_(dp_size > 1 ? (dp_group && dp_group->size() > 1 ? dp_group : nullptr) : tp_),
      dp_size_(tp_ ? dp_size : 1),
      tp_dims_(narwhal::tp_dims(
          config_, tp_ ? TpSlice{tp_->rank(), tp_->size(), ep_size, dp_size, moe_a2a, deepep_mode} : TpSlice{})),
      local_(local_config(config_, tp_dims_)),
      weights_(std::move(weights)) {
  NW_CHECK(!tp_ || tp_->device() == Device::kCPU, "DeepSeekModel runs on the host: its TP group needs the host "
           "backend");
  NW_CHECK(dp_size_ == 1 || (dp_group ? dp_group->size() : 1) == tp_dims_.slice.attn_size(),
           "DeepSeekModel: DP attention's group has ", dp_group ? dp_group->size() : 1, " ranks, not ",
           tp_dims_.slice.attn_size());
  const int64_t kv_b_rows = local_.num_attention_heads * (local_.qk_nope_head_dim + local_.v_head_dim);
  const bool heads_fit = weights_.layers.empty() || weights_.layers[0].attn.kv_b_proj.weight.size(0) == kv_b_rows;
  bool experts_fit = true;
  for (const DecoderLayerWeights& l : weights_.layers)
    if (l.moe)
      experts_fit = experts_fit && l.moe->experts_gate_up.weight.size(0) ==
                                       static_cast<int64_t>(tp_dims_.routed_experts.size());
  NW_CHECK(heads_fit && experts_fit && weights_.embed.size(0) == tp_dims_.vocab.size, "DeepSeekModel: the weights ",
           "were not loaded for TP rank ", tp_dims_.slice.rank, " of ", tp_dims_.slice.size, " at --ep-size ",
           tp_dims_.slice.ep_size);
  rope_.inv_freq = config_.rope_inv_freq();
  rope_.scaling = config_.rope_attention_scaling();
  rope_.interleave = config_.rope.interleave;
  router_ = router_params(config_);
  mla_ = {local_.num_attention_heads, local_.qk_nope_head_dim, local_.qk_rope_head_dim, local_.v_head_dim,
          local_.kv_lora_rank, static_cast<float>(local_.softmax_scale())};
  if (tp_dims_.slice.deepep()) expert_rank_ = expert_rank_tensor(tp_dims_);
}

DeepSeekModel DeepSeekModel::load(const std::string& model_dir, const std::string& draft_dir) {
  const std::string config_path = (std::filesystem::path(model_dir) / "config.json").string();
  NW_CHECK(std::filesystem::exists(config_path), model_dir, ": no config.json (is --model-path a model directory?)");
  ModelConfig config = ModelConfig::from_file(config_path);
  const Checkpoint checkpoint = open_checkpoint(model_dir, draft_dir, config);
  NW_LOG(Info) << "Checkpoint " << model_dir << ": " << checkpoint.num_tensors() << " tensors in "
               << checkpoint.num_files() << " file(s)" << (config.fp8 ? ", FP8 block-quantized" : "");
  ModelWeights weights = load_weights(config, checkpoint);
  return DeepSeekModel(std::move(config), std::move(weights));
}

void DeepSeekModel::check_batch(const ForwardBatch& batch, const KvCache& cache) const {
  NW_CHECK(batch.positions.size() == batch.token_ids.size(), "forward: positions and token_ids differ in length");
  for (int32_t id : batch.token_ids)
    NW_CHECK(id >= 0 && id < config_.vocab_size, "token id ", id, " is outside the vocabulary (size ",
             config_.vocab_size, ")");
  int64_t offset = 0;
  for (const SequenceInfo& s : batch.seqs) {
    const int64_t end = s.prefix_len + s.new_len;
    NW_CHECK(s.new_len > 0 && s.prefix_len >= 0, "forward: a sequence needs at least one new token");
    NW_CHECK(static_cast<int64_t>(s.page_table.size()) * cache.page_size() >= end, "forward: page table of ",
             s.page_table.size(), " pages cannot hold ", end, " tokens");
    for (int64_t p = 0; p < (end + cache.page_size() - 1) / cache.page_size(); ++p)
      NW_CHECK(s.page_table[p] >= 0 && s.page_table[p] < cache.num_pages(), "forward: page ", s.page_table[p],
               " is outside the cache");
    offset += s.new_len;
  }
  NW_CHECK(offset == batch.num_tokens(), "forward: sequences cover ", offset, " tokens, batch has ",
           batch.num_tokens());
}

Tensor DeepSeekModel::attention(const AttentionWeights& w, int cache_layer, const ForwardBatch& batch,
                                const KvCache& cache, AttentionForm form, const Tensor& x) const {
  const int64_t t = x.size(0), heads = local_.num_attention_heads, qk = config_.qk_head_dim();
  const int64_t nope = config_.qk_nope_head_dim, kv_lora = config_.kv_lora_rank, width = config_.kv_cache_dim();
  Tensor q;
  if (config_.q_lora_rank) {
    Tensor q_a = linear(x, w.q_a_proj.weight);
    ops::rms_norm(q_a, w.q_a_norm, static_cast<float>(config_.rms_norm_eps), q_a);
    q = linear(q_a, w.q_b_proj.weight);
  } else {
    q = linear(x, w.q_proj.weight);
  }
  // kv_a's output is [compressed kv | k_pe]: normalise the first part, rotate the second, cache both.
  Tensor latent = linear(x, w.kv_a_proj.weight);
  ops::rms_norm_strided(latent.f32(), t, kv_lora, width, w.kv_a_norm.f32(), static_cast<float>(config_.rms_norm_eps));
  ops::apply_rope(q.f32() + nope, t, heads, heads * qk, qk, batch.positions.data(), rope_);
  ops::apply_rope(latent.f32() + kv_lora, t, 1, width, 0, batch.positions.data(), rope_);

  std::vector<ops::MlaSequence> decompressed, absorbed;
  int64_t offset = 0;
  for (const SequenceInfo& s : batch.seqs) {
    ops::MlaSequence seq{offset, s.prefix_len, s.new_len, s.page_table.data(),
                         s.draft_parents.empty() ? nullptr : s.draft_parents.data()};
    // A speculative verify is a decode of several causal tokens: the decode's form, so verified ids equal decoded.
    bool absorb = form == AttentionForm::kAbsorbed || (form == AttentionForm::kAuto && s.decodes());
    (absorb ? absorbed : decompressed).push_back(seq);
    offset += s.new_len;
  }
  const ops::LatentCache layer_cache = cache.layer(cache_layer);
  for (const auto* group : {&decompressed, &absorbed})
    ops::mla_store_latents(latent, group->data(), static_cast<int64_t>(group->size()), layer_cache);

  Tensor q3 = q.reshape({t, heads, qk});
  Tensor out = Tensor::zeros(DType::kF32, {t, heads, config_.v_head_dim});
  ops::mla_attention_decompressed(q3, w.kv_b_proj.weight, layer_cache, decompressed.data(),
                                  static_cast<int64_t>(decompressed.size()), mla_, out);
  ops::mla_attention_absorbed(q3, w.kv_b_proj.weight, layer_cache, absorbed.data(), static_cast<int64_t>(absorbed.size()),
                              mla_, out);
  return linear(out.reshape({t, heads * config_.v_head_dim}), w.o_proj.weight);
}

void DeepSeekModel::route(const MoeWeights& w, const Tensor& x, const ForwardOptions& options, Tensor& ids,
                          Tensor& weights) const {
  const int64_t t = x.size(0);
  Tensor router_logits = linear(x, w.router);
  ops::moe_route(router_logits, w.correction_bias, router_, ids, weights);
  if (std::vector<int64_t>* experts = options.expert_tokens) {
    Tensor counts = Tensor::view(experts->data(), DType::kI64, {static_cast<int64_t>(experts->size())});
    ops::moe_count_experts(ids, Tensor(), Tensor(), counts);
  }
  if (RoutingTrace* trace = options.routing_trace)
    trace->layers.push_back({t, router_.num_experts, router_.top_k,
                             {router_logits.f32(), router_logits.f32() + router_logits.numel()},
                             {ids.ptr<int32_t>(), ids.ptr<int32_t>() + ids.numel()},
                             {weights.f32(), weights.f32() + weights.numel()}});
}

Tensor DeepSeekModel::moe(const MoeWeights& w, const Tensor& x, const ForwardOptions& options) const {
  const int64_t t = x.size(0);
  Tensor ids = Tensor::zeros(DType::kI32, {t, int64_t{router_.top_k}});
  Tensor weights = empty(t, router_.top_k);
  route(w, x, options, ids, weights);
  Tensor out = w.shared ? shared_experts(*w.shared, x) : empty(t, x.size(1));
  ops::moe_experts(x, ids, weights, w.experts_gate_up.weight, w.experts_down.weight, out,
                   tp_dims_.slice.ep_size > 1 ? &tp_dims_.expert_index : nullptr);
  return out;
}

// The shared experts of the tokens this rank runs them for (TpDims' shared_token_*: all of them without EP);
// the other rows stay zero.
Tensor DeepSeekModel::shared_experts(const MlpWeights& w, const Tensor& x) const {
  const int64_t stride = tp_dims_.shared_token_stride, offset = tp_dims_.shared_token_offset, hidden = x.size(1);
  if (stride == 1) return mlp(w, x);
  const int64_t t = x.size(0), mine = t > offset ? (t - offset + stride - 1) / stride : 0;
  Tensor out = empty(t, hidden);
  if (mine == 0) return out;
  Tensor rows = empty(mine, hidden);
  for (int64_t i = 0; i < mine; ++i)
    std::memcpy(rows.f32() + i * hidden, x.f32() + (offset + i * stride) * hidden, hidden * sizeof(float));
  const Tensor y = mlp(w, rows);
  for (int64_t i = 0; i < mine; ++i)
    std::memcpy(out.f32() + (offset + i * stride) * hidden, y.f32() + i * hidden, hidden * sizeof(float));
  return out;
}

void DeepSeekModel::decoder_layer(const DecoderLayerWeights& w, int cache_layer, const ForwardBatch& batch,
                                  const KvCache& cache, const ForwardOptions& options, Tensor& h) const {
  const double eps = config_.rms_norm_eps;
  // Each rank's heads and intermediate slice give a partial sum of the output projection: summed once per block.
  Tensor attn = h.size(0) == 0 ? empty(0, h.size(1))  // an idle DP group still meets the others around the FFN
                               : attention(w.attn, cache_layer, batch, cache, options.attention,
                                           rms_norm(h, w.input_norm, eps));
  attention_all_reduce(attn);
  add_into(h, attn);
  Tensor x = rms_norm(h, w.post_attention_norm, eps);
  if (w.moe && tp_dims_.slice.deepep()) {  // DeepEP's pattern: each row comes back whole, nothing to all_reduce
    add_into(h, moe_a2a(*w.moe, x, batch, options));
    return;
  }
  // DP attention: the FFN runs, split over every rank, on all DP groups' tokens; each group keeps its own rows.
  const Tensor all = dp_size_ > 1 ? gather_dp_groups(x, batch.dp_tokens) : x;
  Tensor ffn = w.moe ? moe(*w.moe, all, options) : mlp(*w.mlp, all);
  all_reduce(ffn);
  add_into(h, dp_size_ > 1 ? own_dp_rows(ffn, batch.dp_tokens) : ffn);
}

// Every DP group's rows of `x` (each group's ranks hold the same ones), in group order; counts[g] is group g's
// (ForwardBatch::dp_tokens). One all_gather of the rows, padded to the largest group's.
Tensor DeepSeekModel::gather_dp_groups(const Tensor& x, const std::vector<int64_t>& counts) const {
  const int n = tp_->size(), per_group = tp_dims_.slice.attn_size();
  NW_CHECK(static_cast<int>(counts.size()) == dp_size_, "DP attention: the batch gives ", counts.size(),
           " DP groups' token counts, not ", dp_size_);
  NW_CHECK(counts[static_cast<size_t>(tp_->rank() / per_group)] == x.size(0), "DP attention: this group runs ",
           x.size(0), " tokens, not the ", counts[static_cast<size_t>(tp_->rank() / per_group)], " its batch names");
  const int64_t hidden = x.size(1);
  const int64_t most = *std::max_element(counts.begin(), counts.end());
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  Tensor padded = empty(most, hidden);
  if (x.size(0) > 0) std::memcpy(padded.f32(), x.f32(), x.nbytes());
  Tensor rows = empty(n * most, hidden);
  tp_->all_gather(padded, rows);
  Tensor out = empty(total, hidden);
  int64_t at = 0;
  for (int g = 0; g < dp_size_; ++g) {
    const float* from = rows.f32() + static_cast<int64_t>(g) * per_group * most * hidden;  // the group's first rank
    std::memcpy(out.f32() + at * hidden, from, static_cast<size_t>(counts[g] * hidden) * sizeof(float));
    at += counts[g];
  }
  return out;
}

// This rank's DP group's rows of `all` (gather_dp_groups' order).
Tensor DeepSeekModel::own_dp_rows(const Tensor& all, const std::vector<int64_t>& counts) const {
  const int group = tp_->rank() / tp_dims_.slice.attn_size();
  int64_t begin = 0;
  for (int g = 0; g < group; ++g) begin += counts[g];
  Tensor out = empty(counts[group], all.size(1));
  if (counts[group] > 0) std::memcpy(out.f32(), all.f32() + begin * all.size(1), out.nbytes());
  return out;
}

std::vector<int64_t> DeepSeekModel::dp_token_counts(int64_t tokens) const {
  NW_CHECK(dp_size_ > 1, "dp_token_counts: the model runs without DP attention");
  const int per_group = tp_dims_.slice.attn_size();
  Tensor mine = Tensor::zeros(DType::kI32, {1});
  mine.ptr<int32_t>()[0] = static_cast<int32_t>(tokens);
  Tensor all = Tensor::zeros(DType::kI32, {tp_->size()});
  tp_->all_gather(mine, all);
  std::vector<int64_t> counts;
  for (int g = 0; g < dp_size_; ++g) counts.push_back(all.ptr<int32_t>()[g * per_group]);  // the group's first rank
  return counts;
}

Tensor DeepSeekModel::embed(const std::vector<int32_t>& ids, const Tensor& table) const {
  Tensor h = empty(static_cast<int64_t>(ids.size()), config_.hidden_size);
  ops::embedding(ids, table, h, tp_dims_.vocab.begin);  // ids of other ranks' rows give zeros
  attention_all_reduce(h);
  return h;
}

void DeepSeekModel::all_reduce(Tensor& t) const {
  if (tp_) tp_->all_reduce(t, t);
}

void DeepSeekModel::attention_all_reduce(Tensor& t) const {
  if (attn_) attn_->all_reduce(t, t);
}

Tensor DeepSeekModel::join_logits(const Tensor& local) const {
  if (!attn_) return local;
  const int64_t rows = local.size(0);
  Tensor shards = empty(attn_->size() * rows, local.size(1));
  attn_->all_gather(local, shards);
  Tensor logits = empty(rows, config_.vocab_size);
  ops::join_vocab_shards(shards, attn_->size(), logits);
  return logits;
}

ForwardOutput DeepSeekModel::head(const Tensor& h, const Tensor& norm, const Tensor& lm_head,
                                  const ForwardBatch& batch, const ForwardOptions& options) const {
  ForwardOutput result;
  Tensor normed = rms_norm(h, norm, config_.rms_norm_eps);
  // MTP consumes the final-normed states, as transformers' MTP candidate generator and SGLang's nextn do.
  if (options.return_hidden) result.hidden = normed;
  Tensor rows = normed;
  if (!options.logit_rows.empty()) {
    rows = empty(static_cast<int64_t>(options.logit_rows.size()), h.size(1));
    for (size_t i = 0; i < options.logit_rows.size(); ++i) {
      const int64_t r = options.logit_rows[i];
      NW_CHECK(r >= 0 && r < h.size(0), "forward: logit row ", r, " is outside the batch's ", h.size(0), " tokens");
      std::memcpy(rows.f32() + i * h.size(1), normed.f32() + r * h.size(1), h.size(1) * sizeof(float));
    }
  } else if (!options.all_logits) {  // only each sequence's last token feeds the sampler
    rows = empty(static_cast<int64_t>(batch.seqs.size()), h.size(1));
    int64_t end = 0;
    for (size_t i = 0; i < batch.seqs.size(); ++i) {
      end += batch.seqs[i].new_len;
      std::memcpy(rows.f32() + i * h.size(1), normed.f32() + (end - 1) * h.size(1), h.size(1) * sizeof(float));
    }
  }
  result.logits = join_logits(linear(rows, lm_head));
  return result;
}

ForwardOutput DeepSeekModel::forward(const ForwardBatch& batch, const KvCache& cache,
                                     const ForwardOptions& options) const {
  check_batch(batch, cache);
  std::vector<int64_t> counted;
  const ForwardOptions mine = own_expert_counts(options, counted);
  Tensor h = embed(batch.token_ids, weights_.embed);
  for (int layer = 0; layer < config_.num_hidden_layers; ++layer)
    decoder_layer(weights_.layers[layer], layer, batch, cache, mine, h);
  sum_expert_counts(counted, options);
  return head(h, weights_.final_norm, weights_.lm_head, batch, options);
}

ForwardOutput DeepSeekModel::forward_mtp(int k, const ForwardBatch& batch, const Tensor& hidden, const KvCache& cache,
                                         const ForwardOptions& options) const {
  NW_CHECK(k >= 0 && k < num_mtp_layers(), "forward_mtp: the checkpoint has ", num_mtp_layers(), " MTP layer(s)");
  NW_CHECK(hidden.ndim() == 2 && hidden.size(0) == batch.num_tokens() && hidden.size(1) == config_.hidden_size,
           "forward_mtp: hidden", hidden.shape_string(), " does not match the batch");
  check_batch(batch, cache);
  const MtpWeights& w = weights_.mtp[k];
  const int64_t t = batch.num_tokens(), hs = config_.hidden_size;
  const double eps = config_.rms_norm_eps;
  Tensor embedded = embed(batch.token_ids, w.embed);
  Tensor e = rms_norm(embedded, w.enorm, eps), hn = rms_norm(hidden, w.hnorm, eps);
  Tensor joined = empty(t, 2 * hs);  // [enorm(embedding) ; hnorm(hidden)], the order of eh_proj's columns
  for (int64_t i = 0; i < t; ++i) {
    std::memcpy(joined.f32() + i * 2 * hs, e.f32() + i * hs, hs * sizeof(float));
    std::memcpy(joined.f32() + i * 2 * hs + hs, hn.f32() + i * hs, hs * sizeof(float));
  }
  Tensor h = linear(joined, w.eh_proj.weight);
  std::vector<int64_t> counted;
  decoder_layer(w.layer, config_.num_hidden_layers + k, batch, cache, own_expert_counts(options, counted), h);
  sum_expert_counts(counted, options);
  return head(h, w.head_norm, w.head, batch, options);
}

}  // namespace narwhal
