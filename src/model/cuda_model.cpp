// CudaModel: buffers, the layer loop, dense MLP, MoE and lm_head of the GPU forward (attention in cuda_attention.cpp).
#include "model/cuda_model.h"

#include <algorithm>
#include <tuple>

#include "core/cuda_check.h"
#include "core/error.h"
#include "model/deepseek_model.h"
#include "model/moe_a2a.h"
#include "ops/cuda/mla.h"
#include "ops/cuda/moe.h"
#include "ops/cuda/mtp_input.h"
#include "ops/cuda/portable.h"

namespace narwhal {

namespace {

// ffn_tokens: the most rows an MLP runs on (with DP attention every group's tokens).
ops::cuda::GemmRunnerOptions gemm_options(const ModelConfig& c, int64_t max_tokens, int64_t ffn_tokens) {
  ops::cuda::GemmRunnerOptions o;
  const int64_t widest = std::max({c.hidden_size, c.intermediate_size, c.num_attention_heads * c.v_head_dim,
                                   c.q_lora_rank.value_or(0), c.num_attention_heads * c.kv_lora_rank});
  // Decompressing the keys of a prefill runs kv_b over every key, not only the new tokens.
  o.max_fp8_elements = std::max(std::max(max_tokens, int64_t{16384}) * widest,
                                ffn_tokens * std::max(c.hidden_size, c.intermediate_size));
  return o;
}

}  // namespace

// Dims that the kernels' 16-byte (8 x BF16) loads and cuBLASLt's aligned views walk must be multiples of 8 (every
// released checkpoint's are; --device cpu runs any); then the rope and router limits of elementwise.h and moe.h,
// and the portable attention's (portable.h). A TP rank's intermediate sizes are its slices.
void check_gpu_support(const ModelConfig& c, TpSlice slice) {
  const ops::RouterParams router = router_params(c);
  const ModelConfig local = local_config(c, tp_dims(c, slice));
  const std::tuple<const char*, int64_t, int64_t> dims[] = {  // field, config.json's value, this rank's
      {"hidden_size", c.hidden_size, c.hidden_size},
      {"q_lora_rank", c.q_lora_rank.value_or(8), c.q_lora_rank.value_or(8)},
      {"kv_lora_rank", c.kv_lora_rank, c.kv_lora_rank},
      {"qk_nope_head_dim", c.qk_nope_head_dim, c.qk_nope_head_dim},
      {"qk_rope_head_dim", c.qk_rope_head_dim, c.qk_rope_head_dim},
      {"v_head_dim", c.v_head_dim, c.v_head_dim},
      {"intermediate_size", c.intermediate_size, local.intermediate_size},
      {"moe_intermediate_size", c.n_routed_experts > 0 ? c.moe_intermediate_size : 8,
       c.n_routed_experts > 0 ? local.moe_intermediate_size : 8}};
  const std::string dp = slice.dp_size > 1 ? cat(" --dp-size ", slice.dp_size) : std::string();
  for (const auto& [field, value, per_rank] : dims)
    NW_CHECK(per_rank % 8 == 0, "config.json field '", field, "' is ", value,
             per_rank == value ? std::string() : cat(", ", per_rank, " per rank at --tp-size ", slice.size, dp),
             ": the GPU kernels need a multiple of 8 (--device cpu runs any size)");
  NW_CHECK(c.hidden_size <= 32768, "config.json field 'hidden_size' is ", c.hidden_size, ": the GPU norm takes at most 32768");
  NW_CHECK(c.qk_rope_head_dim <= 256, "config.json field 'qk_rope_head_dim' is ", c.qk_rope_head_dim,
           ": the GPU RoPE takes at most 256");
  NW_CHECK(c.kv_lora_rank <= 1024 && c.v_head_dim <= 1024 && c.qk_head_dim() <= 8192, "config.json fields ",
           "'kv_lora_rank' ", c.kv_lora_rank, " / 'v_head_dim' ", c.v_head_dim, ": the GPU attention takes at most 1024");
  if (c.n_routed_experts > 0) {
    const std::string unsupported = ops::cuda::moe_route_unsupported(router);
    NW_CHECK(unsupported.empty(), "config.json fields 'n_routed_experts' / 'num_experts_per_tok' / 'n_group': the GPU ",
             "router takes ", unsupported.empty() ? "" : "no " + unsupported);
  }
}

namespace {

bool fits_mla_kernels(const ModelConfig& c) {
  return c.kv_lora_rank == 512 && c.qk_rope_head_dim == 64 && c.qk_nope_head_dim == 128 && c.v_head_dim == 128;
}

// Every MoE layer, the MTP layer's included (a model whose main layers are all dense may still draft through
// an MoE), must fit the tuned kernels; all share the config's dims and the checkpoint's expert dtype.
bool fits_moe_kernels(const ModelConfig& c, const CudaModelWeights& w) {
  std::vector<const CudaLayerWeights*> layers;
  for (const CudaLayerWeights& l : w.layers) layers.push_back(&l);
  if (w.mtp) layers.push_back(&w.mtp->layer);
  for (const CudaLayerWeights* l : layers) {
    if (!l->moe) continue;
    const bool fp8 = l->moe->experts.gate_up.dtype == DType::kF8E4M3;
    if (c.hidden_size % 128 != 0 || c.moe_intermediate_size % (fp8 ? 128 : 64) != 0 ||
        c.num_experts_per_tok + l->moe->experts.num_shared > 32)
      return false;
  }
  return true;
}

}  // namespace

CudaModel::CudaModel(ModelConfig config, CudaModelWeights weights, int64_t max_tokens, int64_t page_size,
                     KernelChoice kernels, Communicator* tp, int ep_size, Communicator* dp_group, int dp_size,
                     MoeA2aBackend moe_a2a, DeepEpMode deepep_mode)
    : config_(std::move(config)),
      tp_(tp && tp->size() > 1 ? tp : nullptr),
      attn_(dp_size > 1 ? (dp_group && dp_group->size() > 1 ? dp_group : nullptr) : tp_),
      dp_size_(tp_ ? dp_size : 1),
      tp_dims_(narwhal::tp_dims(
          config_, tp_ ? TpSlice{tp_->rank(), tp_->size(), ep_size, dp_size_, moe_a2a, deepep_mode} : TpSlice{})),
      local_(local_config(config_, tp_dims_)),
      weights_(std::move(weights)),
      max_tokens_(max_tokens),
      page_size_(page_size),
      gemm_(gemm_options(local_, max_tokens, dp_size_ * max_tokens)) {
  NW_CHECK(max_tokens > 0, "CudaModel: max_tokens must be positive");
  NW_CHECK(dp_size_ == 1 || (dp_group ? dp_group->size() : 1) == tp_dims_.slice.attn_size(), "CudaModel: DP ",
           "attention's group has ", dp_group ? dp_group->size() : 1, " ranks, not ", tp_dims_.slice.attn_size());
  // The MoE kernels take a rank's experts as one range of ids from first_expert (ExpertPlacement's contiguous
  // default); a placement that scatters them would need the kernels to read its lookup row instead.
  const std::vector<int32_t>& mine = tp_dims_.routed_experts;
  for (size_t i = 1; i < mine.size(); ++i)
    NW_CHECK(mine[i] == mine[0] + static_cast<int32_t>(i), "CudaModel: the GPU's MoE kernels take a contiguous range ",
             "of experts per rank; this placement gives TP rank ", tp_dims_.slice.rank, " expert ", mine[i],
             " after ", mine[i - 1]);
  std::vector<CudaLayerWeights*> layers;  // every MoE layer this rank runs: the MTP layer's too
  for (CudaLayerWeights& l : weights_.layers) layers.push_back(&l);
  if (weights_.mtp) layers.push_back(&weights_.mtp->layer);
  for (CudaLayerWeights* l : layers) {
    if (!l->moe) continue;
    ops::cuda::MoeExpertWeights& e = l->moe->experts;
    NW_CHECK(e.gate_up.size(0) == static_cast<int64_t>(mine.size()) + e.num_shared, "CudaModel: the weights hold ",
             e.gate_up.size(0) - e.num_shared, " routed experts, TP rank ", tp_dims_.slice.rank, " at --ep-size ",
             tp_dims_.slice.ep_size, " holds ", mine.size());
    e.first_expert = mine.empty() ? 0 : mine[0];
    e.shared_token_stride = tp_dims_.shared_token_stride;
    e.shared_token_offset = tp_dims_.shared_token_offset;
  }
  NW_CHECK((!tp_ || tp_->device() == Device::kCUDA) && (!attn_ || attn_->device() == Device::kCUDA), "CudaModel: ",
           "its TP and DP groups need a device backend (NCCL or device-local)");
  NW_CHECK(weights_.embed.size(0) == tp_dims_.vocab.size, "CudaModel: the weights were not loaded for TP rank ",
           tp_dims_.slice.rank, " of ", tp_dims_.slice.size);
  check_gpu_support(config_, tp_dims_.slice);
  router_ = router_params(local_);
  int device = 0;
  NW_CUDA_CHECK(cudaGetDevice(&device));
  NW_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, device));
  const bool portable = kernels == KernelChoice::kPortable;
  fast_attention_ = !portable && fits_mla_kernels(local_) && page_size >= 16 && (page_size & (page_size - 1)) == 0;
  fast_moe_ = !portable && fits_moe_kernels(local_, weights_);
  NW_CHECK(fast_moe_ || tp_dims_.slice.ep_size == 1, "--ep-size ", tp_dims_.slice.ep_size, ": expert parallelism ",
           "on the GPU runs in the tuned MoE kernels, which these shapes (or --kernels portable) rule out");
  if (tp_dims_.slice.deepep()) expert_rank_ = expert_rank_tensor(tp_dims_).to(Device::kCUDA);
  rope_.inv_freq = Tensor::from_floats(local_.rope_inv_freq(), {local_.qk_rope_head_dim / 2}).to(Device::kCUDA);
  rope_.scaling = local_.rope_attention_scaling();
  rope_.interleave = local_.rope.interleave;
  // Reserve every token-indexed buffer for max_tokens now: graphs captured later keep valid addresses.
  const int64_t t = max_tokens, h = local_.hidden_size, heads = local_.num_attention_heads;
  buffer(kResidual, DType::kF32, {t, h});
  buffer(kNormed, DType::kBF16, {t, h});
  buffer(kDelta, DType::kBF16, {t, h});
  buffer(kQ, DType::kBF16, {t, heads * local_.qk_head_dim()});
  if (local_.q_lora_rank) buffer(kQa, DType::kBF16, {t, *local_.q_lora_rank});
  buffer(kLatent, DType::kBF16, {t, local_.kv_cache_dim()});
  // Decode-only and per-sequence buffers: sized for the decode batches (graphs); larger steps grow them.
  const int64_t seqs = std::min<int64_t>(t, 512);
  buffer(kQAbsorbed, DType::kBF16, {seqs, heads * local_.kv_cache_dim()});
  buffer(kAttnLatent, DType::kBF16, {seqs, heads * local_.kv_lora_rank});
  buffer(kAttnOut, DType::kBF16, {t, heads * local_.v_head_dim});
  buffer(kGateUp, DType::kBF16, {t, 2 * std::max(local_.intermediate_size, local_.moe_intermediate_size)});
  buffer(kAct, DType::kBF16, {t, std::max(local_.intermediate_size, local_.moe_intermediate_size)});
  // The router's input, and with DP attention the rows each rank sends (gather_dp_groups relies on this reserve).
  if (local_.n_routed_experts > 0 || dp_size_ > 1) buffer(kNormedF32, DType::kF32, {t, h});
  if (local_.n_routed_experts > 0) {
    buffer(kRouterLogits, DType::kF32, {t, local_.n_routed_experts});
    buffer(kTopkIds, DType::kI32, {t, local_.num_experts_per_tok});
    buffer(kTopkWeights, DType::kF32, {t, local_.num_experts_per_tok});
    // deepep routes a slice per rank, which rank 0's counter alone would undercount: not counted there yet.
    if (!tp_ || (tp_->rank() == 0 && !tp_dims_.slice.deepep())) {
      expert_counts_ = Tensor::empty(DType::kI64, {local_.n_routed_experts}, Device::kCUDA);
      NW_CUDA_CHECK(cudaMemset(expert_counts_.data, 0, expert_counts_.nbytes()));
    }
    for (const CudaLayerWeights& l : weights_.layers)
      if (l.moe && fast_moe_) {
        const size_t bytes = ops::cuda::moe_experts_workspace_bytes(t, local_.num_experts_per_tok, l.moe->experts);
        buffer(kMoeWorkspace, DType::kI32, {static_cast<int64_t>(bytes / 4 + 1)});
        break;
      }
  }
  if (fast_attention_) {
    ops::cuda::MlaDecodeParams p;
    p.heads = heads;
    const size_t bytes = ops::cuda::mla_decode_workspace_bytes(seqs, p, num_sms_);
    buffer(kDecodeWorkspace, DType::kI32, {static_cast<int64_t>(bytes / 4 + 1)});
  }
  buffer(kLastRows, DType::kBF16, {seqs, h});
  const int64_t vocab_rows = tp_dims_.vocab.size;  // this rank's lm_head rows
  buffer(kLogitsBf16, DType::kBF16, {seqs, vocab_rows});
  if (attn_) {
    buffer(kLogitsShard, DType::kF32, {seqs, vocab_rows});
    buffer(kGatheredLogits, DType::kF32, {attn_->size() * seqs, vocab_rows});
  }
  buffer(kLogits, DType::kF32, {seqs, local_.vocab_size});
}

Tensor CudaModel::buffer(Buffer id, DType dtype, std::vector<int64_t> shape) {
  Tensor view;
  view.dtype = dtype;
  view.device = Device::kCUDA;
  view.shape = std::move(shape);
  Tensor& storage = buffers_[id];
  if (!storage.defined() || storage.nbytes() < view.nbytes()) {
    // The old storage stays allocated: a captured graph may still use it.
    if (storage.defined()) retired_.push_back(storage);
    storage = Tensor::empty(DType::kI32, {static_cast<int64_t>((view.nbytes() + 3) / 4) + 1}, Device::kCUDA);
  }
  view.data = storage.data;
  view.storage = storage.storage;
  return view;
}

void CudaModel::linear(const Tensor& x, const CudaLinear& w, Tensor& y, cudaStream_t stream) {
  if (w.is_fp8()) gemm_.linear_fp8(x, w.fp8, y, stream);
  else gemm_.linear_bf16(x, w.bf16, y, stream);
}

Tensor CudaModel::feed_forward(const CudaLayerWeights& w, const CudaStep& step, Tensor& residual,
                               const Tensor& attn_out, cudaStream_t stream) {
  const int64_t t = step.num_tokens, h = local_.hidden_size;
  const bool dp = dp_size_ > 1;
  Tensor normed = buffer(kNormed, DType::kBF16, {t, h});
  // FP32 rows for the router, and with DP attention for the gather: each group rounds the rows it receives to
  // BF16 exactly as add_rms_norm rounds them, so its own `normed` goes unread.
  Tensor normed_f32 = w.moe || dp ? buffer(kNormedF32, DType::kF32, {t, h}) : Tensor();
  if (t > 0)
    ops::cuda::add_rms_norm(residual, attn_out, w.post_attention_norm, static_cast<float>(local_.rms_norm_eps),
                            normed, stream, normed_f32.defined() ? &normed_f32 : nullptr);
  if (w.moe && tp_dims_.slice.deepep()) return moe_a2a(*w.moe, step, normed, normed_f32, stream);
  Tensor x = normed, x_f32 = normed_f32;
  if (dp) {
    x_f32 = gather_dp_groups(normed_f32, step.dp_rows, stream);
    x = buffer(kDpNormed, DType::kBF16, x_f32.shape);
    ops::cuda::f32_to_bf16(x_f32, x, stream);
  }
  Tensor out = buffer(dp ? kDpDelta : kDelta, DType::kBF16, {x.size(0), h});
  if (x.size(0) > 0) {  // no rows only when every DP group is idle, which every rank knows from dp_rows
    if (w.moe) {
      moe(*w.moe, x, x_f32, out, stream);
      count_experts(step, x.size(0), stream);
    } else {
      mlp(*w.mlp, x, out, stream);
    }
    all_reduce(out, stream);  // each rank's slice of the intermediate dims (routed and shared experts together)
  }
  return dp ? own_dp_rows(out, step.dp_rows) : out;
}

// DP attention's meeting before the FFN. x: this group's rows, the first of buffer kNormedF32 (reserved for
// max_tokens rows). Every rank sends the rows of its buffer padded to the largest group's count (the rows past its
// own hold stale values, dropped below, so no router or expert ever reads them); of the all_gather, the first rank
// of each group gives that group's rows, stacked in group order. Returns them [sum(rows), H] F32.
Tensor CudaModel::gather_dp_groups(const Tensor& x, const std::vector<int64_t>& rows, cudaStream_t stream) {
  const int per_group = tp_dims_.slice.attn_size(), group = dp_rank();
  NW_CHECK(static_cast<int>(rows.size()) == dp_size_, "DP attention: the step gives ", rows.size(),
           " DP groups' rows, not ", dp_size_);
  NW_CHECK(rows[group] == x.size(0), "DP attention: group ", group, " runs ", x.size(0), " rows, not the ",
           rows[group], " its step names");
  const int64_t h = x.size(1), most = *std::max_element(rows.begin(), rows.end());
  int64_t total = 0;
  for (int64_t r : rows) total += r;
  NW_CHECK(most <= max_tokens_, "DP attention: a group's ", most, " rows exceed the ", max_tokens_,
           " tokens a step may carry");
  if (most == 0) return buffer(kDpRows, DType::kF32, {0, h});  // every group idle: nothing to gather, on every rank
  const Tensor padded = buffer(kNormedF32, DType::kF32, {most, h});
  NW_CHECK(padded.data == x.data, "DP attention: the gathered rows must be kNormedF32's");
  Tensor gathered = buffer(kDpGathered, DType::kF32, {tp_->size() * most, h});
  tp_->all_gather(padded, gathered, stream);
  const bool even = std::all_of(rows.begin(), rows.end(), [&](int64_t r) { return r == most; });
  if (per_group == 1 && even) return gathered;  // already each group's rows in group order (decode graphs)
  Tensor out = buffer(kDpRows, DType::kF32, {total, h});
  const size_t row_bytes = static_cast<size_t>(h) * sizeof(float);
  int64_t at = 0;
  for (int g = 0; g < dp_size_; ++g) {
    if (rows[g] > 0)
      NW_CUDA_CHECK(cudaMemcpyAsync(out.rows(at, at + rows[g]).data,
                                    gathered.rows(g * per_group * most, g * per_group * most + 1).data,
                                    rows[g] * row_bytes, cudaMemcpyDeviceToDevice, stream));
    at += rows[g];
  }
  return out;
}

// This rank's DP group's rows of the FFN's output over gather_dp_groups' rows.
Tensor CudaModel::own_dp_rows(const Tensor& all, const std::vector<int64_t>& rows) const {
  const int group = dp_rank();
  int64_t begin = 0;
  for (int g = 0; g < group; ++g) begin += rows[g];
  return all.rows(begin, begin + rows[group]);
}

void CudaModel::mlp(const CudaMlpWeights& w, const Tensor& x, Tensor& out, cudaStream_t stream) {
  const int64_t t = x.size(0), inter = w.gate_up.out_features() / 2;
  Tensor gate_up = buffer(kGateUp, DType::kBF16, {t, 2 * inter});
  Tensor act = buffer(kAct, DType::kBF16, {t, inter});
  linear(x, w.gate_up, gate_up, stream);
  ops::cuda::silu_and_mul(gate_up, act, stream);
  linear(act, w.down, out, stream);
}

void CudaModel::moe(const CudaMoeWeights& w, const Tensor& x, const Tensor& x_f32, Tensor& out,
                    cudaStream_t stream) {
  const int64_t t = x.size(0), k = local_.num_experts_per_tok;
  Tensor logits = buffer(kRouterLogits, DType::kF32, {t, local_.n_routed_experts});
  Tensor ids = buffer(kTopkIds, DType::kI32, {t, k});
  Tensor weights = buffer(kTopkWeights, DType::kF32, {t, k});
  ops::cuda::router_logits_f32(x_f32, w.router, logits, stream);
  const ops::cuda::MoeExpertWeights& e = w.experts;
  const size_t bytes = fast_moe_ ? ops::cuda::moe_experts_workspace_bytes(t, static_cast<int>(k), e) : 0;
  Tensor ws = fast_moe_ ? buffer(kMoeWorkspace, DType::kI32, {static_cast<int64_t>(bytes / 4 + 1)}) : Tensor();
  if (fast_moe_ && !routing_override_) {
    ops::cuda::moe_route_experts(x, logits, w.correction_bias, router_, ids, weights, e, out, ws.data, ws.nbytes(),
                                 stream);
    if (routing_trace_) trace_routing(logits, ids, weights, stream);
    return;
  }
  ops::cuda::moe_route(logits, w.correction_bias, router_, ids, weights, stream);
  if (routing_trace_) trace_routing(logits, ids, weights, stream);
  if (routing_override_) override_routing(ids, weights, 0, t, stream);
  if (fast_moe_) {
    ops::cuda::moe_experts(x, ids, weights, e, out, ws.data, ws.nbytes(), stream);
    return;
  }
  // Portable path: every expert over every token, then each token sums the ones it chose.
  NW_CHECK(e.gate_up.dtype == DType::kBF16, "CudaModel: the portable MoE path runs BF16 experts only");
  const int64_t experts = e.gate_up.size(0), inter = e.down.size(2), hidden = local_.hidden_size;
  Tensor expert_out = buffer(kExpertOut, DType::kBF16, {experts, t, hidden});
  Tensor gate_up = buffer(kGateUp, DType::kBF16, {t, 2 * inter});
  Tensor act = buffer(kAct, DType::kBF16, {t, inter});
  for (int64_t i = 0; i < experts; ++i) {
    Tensor y = expert_out.rows(i, i + 1).reshape({t, hidden});
    gemm_.linear_bf16(x, e.gate_up.rows(i, i + 1).reshape({2 * inter, hidden}), gate_up, stream);
    ops::cuda::silu_and_mul(gate_up, act, stream);
    gemm_.linear_bf16(act, e.down.rows(i, i + 1).reshape({hidden, inter}), y, stream);
  }
  ops::cuda::moe_combine_dense(expert_out, ids, weights, local_.n_routed_experts, e.num_shared, out, stream);
}

void CudaModel::count_experts(const CudaStep& step, int64_t rows, cudaStream_t stream) {
  if (!expert_counts_.defined() || drafting_) return;
  const Tensor ids = buffer(kTopkIds, DType::kI32, {rows, local_.num_experts_per_tok});
  // The rows' own KV slots mark a verify's fillers (-1) wherever the FFN's rows are the step's own (no DP
  // gathering); a DP step's padding is in valid_rows.
  const Tensor slots = step.slots.defined() && step.slots.numel() == rows ? step.slots : Tensor();
  ops::cuda::moe_count_experts(ids, step.valid_rows, slots, expert_counts_, stream);
}

void CudaModel::trace_routing(const Tensor& logits, const Tensor& ids, const Tensor& weights, cudaStream_t stream) {
  RoutingTrace::Layer layer{ids.size(0), logits.size(1), ids.size(1), std::vector<float>(logits.numel()),
                            std::vector<int32_t>(ids.numel()), std::vector<float>(weights.numel())};
  NW_CUDA_CHECK(cudaMemcpyAsync(layer.logits.data(), logits.data, logits.nbytes(), cudaMemcpyDeviceToHost, stream));
  NW_CUDA_CHECK(cudaMemcpyAsync(layer.ids.data(), ids.data, ids.nbytes(), cudaMemcpyDeviceToHost, stream));
  NW_CUDA_CHECK(cudaMemcpyAsync(layer.weights.data(), weights.data, weights.nbytes(), cudaMemcpyDeviceToHost, stream));
  NW_CUDA_CHECK(cudaStreamSynchronize(stream));
  routing_trace_->layers.push_back(std::move(layer));
}

void CudaModel::override_routing(Tensor& ids, Tensor& weights, int64_t first_row, int64_t rows,
                                 cudaStream_t stream) {
  NW_CHECK(override_layer_ < routing_override_->layers.size(), "routing override: ",
           routing_override_->layers.size(), " MoE layers given, the forward has more");
  const RoutingTrace::Layer& l = routing_override_->layers[override_layer_++];
  NW_CHECK(l.tokens == rows && l.top_k == ids.size(1) && l.ids.size() == static_cast<size_t>(rows * l.top_k) &&
               l.weights.size() == l.ids.size() && first_row + ids.size(0) <= rows,
           "routing override: a layer of ", l.tokens, " tokens x top ", l.top_k, " for rows ", first_row, " + ",
           ids.shape_string(), " of ", rows);
  const size_t skip = static_cast<size_t>(first_row * l.top_k);
  NW_CUDA_CHECK(cudaMemcpyAsync(ids.data, l.ids.data() + skip, ids.nbytes(), cudaMemcpyHostToDevice, stream));
  NW_CUDA_CHECK(cudaMemcpyAsync(weights.data, l.weights.data() + skip, weights.nbytes(), cudaMemcpyHostToDevice,
                                stream));
  NW_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void CudaModel::embed(const CudaStep& step, const Tensor& table, Tensor& residual, bool idle, cudaStream_t stream) {
  if (idle) return;
  ops::cuda::embedding(step.token_ids, table, residual, stream, tp_dims_.vocab.begin);
  attention_all_reduce(residual, stream);  // each token's row came from one rank, the others gave zeros
}

Tensor CudaModel::decoder_layer(const CudaLayerWeights& w, const CudaStep& step, const Tensor& cache,
                                Tensor& residual, const Tensor& ffn_out, bool idle, cudaStream_t stream) {
  Tensor normed = buffer(kNormed, DType::kBF16, {step.num_tokens, local_.hidden_size});
  Tensor delta = buffer(kDelta, DType::kBF16, {step.num_tokens, local_.hidden_size});
  if (!idle) {
    ops::cuda::add_rms_norm(residual, ffn_out, w.input_norm, static_cast<float>(local_.rms_norm_eps), normed, stream);
    attention(w, step, cache, stream);  // normed -> delta
    attention_all_reduce(delta, stream);  // each rank's heads' share of o_proj
  }
  return feed_forward(w, step, residual, delta, stream);
}

Tensor CudaModel::head(const CudaStep& step, Tensor& residual, const Tensor& ffn_out, const Tensor& norm,
                       const Tensor& lm_head, bool idle, cudaStream_t stream) {
  const int64_t t = step.num_tokens, r = step.last_rows.size(0), h = local_.hidden_size;
  Tensor logits = buffer(kLogits, DType::kF32, {r, local_.vocab_size});
  if (idle) return logits;
  Tensor normed = buffer(step.keep_hidden ? kHidden : kNormed, DType::kBF16, {t, h});
  ops::cuda::add_rms_norm(residual, ffn_out, norm, static_cast<float>(local_.rms_norm_eps), normed, stream);
  if (step.keep_hidden) hidden_ = normed;
  Tensor rows = buffer(kLastRows, DType::kBF16, {r, h});
  ops::cuda::gather_rows(normed, step.last_rows, rows, stream);
  Tensor logits_bf16 = buffer(kLogitsBf16, DType::kBF16, {r, tp_dims_.vocab.size});
  gemm_.linear_bf16(rows, lm_head, logits_bf16, stream);
  if (!attn_) {
    ops::cuda::bf16_to_f32(logits_bf16, logits, stream);
    return logits;
  }
  // Every rank of the attention group gets the whole logits (its first rank samples them; the others could, the
  // same way).
  Tensor shard = buffer(kLogitsShard, DType::kF32, {r, tp_dims_.vocab.size});
  ops::cuda::bf16_to_f32(logits_bf16, shard, stream);
  Tensor gathered = buffer(kGatheredLogits, DType::kF32, {attn_->size() * r, tp_dims_.vocab.size});
  attn_->all_gather(shard, gathered, stream);
  ops::cuda::join_vocab_shards(gathered, attn_->size(), logits, stream);
  return logits;
}

Tensor CudaModel::forward(const CudaStep& step, const std::vector<Tensor>& cache, cudaStream_t stream) {
  const int64_t t = step.num_tokens, b = step.num_seqs, h = local_.hidden_size;
  const bool idle = dp_size_ > 1 && t == 0 && b == 0;  // an idle DP group: it only meets the others at the FFN
  NW_CHECK(idle || (t > 0 && t <= max_tokens_ && b > 0 && b <= t), "CudaModel::forward: ", t, " tokens in ", b,
           " sequences (at most ", max_tokens_, " tokens per step)");
  NW_CHECK(static_cast<int>(cache.size()) >= local_.num_hidden_layers, "CudaModel::forward: ", cache.size(),
           " cache layers for ", local_.num_hidden_layers, " layers");
  Tensor residual = buffer(kResidual, DType::kF32, {t, h});
  embed(step, weights_.embed, residual, idle, stream);
  override_layer_ = 0;
  Tensor ffn_out;  // the last FFN's delta for this rank's rows, added by the next norm (none before layer 0)
  for (int layer = 0; layer < local_.num_hidden_layers; ++layer)
    ffn_out = decoder_layer(weights_.layers[layer], step, cache[layer], residual, ffn_out, idle, stream);
  return head(step, residual, ffn_out, weights_.final_norm, weights_.lm_head, idle, stream);
}

// [enorm(embedding) | hnorm(hidden)] side by side in one [T, 2H] BF16 buffer (eh_proj's input columns), eh_proj
// back to the F32 residual stream, then the MTP layer as a decoder layer and its own head.
Tensor CudaModel::forward_mtp(const CudaStep& step, const Tensor& hidden, const std::vector<Tensor>& cache,
                              cudaStream_t stream) {
  const int64_t t = step.num_tokens, h = local_.hidden_size, layer = local_.num_hidden_layers;
  const bool idle = dp_size_ > 1 && t == 0 && step.num_seqs == 0;  // a DP group with nothing: it meets at the MoE
  NW_CHECK(weights_.mtp, "CudaModel::forward_mtp: the weights were loaded without their MTP layer");
  NW_CHECK(idle || (t > 0 && t <= max_tokens_ && step.num_seqs > 0), "CudaModel::forward_mtp: ", t, " tokens in ",
           step.num_seqs, " sequences");
  NW_CHECK(static_cast<int64_t>(cache.size()) > layer, "CudaModel::forward_mtp: ", cache.size(),
           " cache layers, the MTP layer's is ", layer);
  NW_CHECK(hidden.dtype == DType::kBF16 && hidden.ndim() == 2 && hidden.size(0) == t && hidden.size(1) == h,
           "CudaModel::forward_mtp: hidden", hidden.shape_string(), " must be [", t, ", ", h, "] BF16");
  const CudaMtpWeights& w = *weights_.mtp;
  const float eps = static_cast<float>(local_.rms_norm_eps);
  Tensor residual = buffer(kResidual, DType::kF32, {t, h});
  Tensor joined = buffer(kMtpJoined, DType::kBF16, {t, 2 * h});
  if (!idle && !attn_ && h <= 8192) {  // the whole vocabulary here: one kernel (a draft round is launch-bound)
    ops::cuda::mtp_input(step.token_ids, w.embed, hidden, w.enorm, w.hnorm, eps, joined, stream);
  } else if (!idle) {  // the embedding's vocabulary shards meet first
    embed(step, w.embed, residual, false, stream);
    Tensor normed = buffer(kNormed, DType::kBF16, {t, h});
    ops::cuda::add_rms_norm(residual, Tensor(), w.enorm, eps, normed, stream);
    ops::cuda::copy_columns(joined, 0, normed, 0, h, stream);
    ops::cuda::copy_columns(joined, h, hidden, 0, h, stream);
    ops::cuda::rms_norm_rows(static_cast<uint16_t*>(joined.data) + h, t, h, 2 * h, w.hnorm, eps, stream);
  }
  if (!idle) {  // an idle DP group only meets the others in the layer's MoE
    Tensor projected = buffer(kDelta, DType::kBF16, {t, h});
    linear(joined, w.eh_proj, projected, stream);
    ops::cuda::bf16_to_f32(projected, residual, stream);
  }
  override_layer_ = 0;
  drafting_ = true;  // the draft model's routing is not the served model's expert load (the CPU's does not count)
  const Tensor ffn_out = decoder_layer(w.layer, step, cache[layer], residual, Tensor(), idle, stream);
  drafting_ = false;
  return head(step, residual, ffn_out, w.head_norm, w.head, idle, stream);
}

void CudaModel::all_reduce(Tensor& t, cudaStream_t stream) {
  if (tp_) tp_->all_reduce(t, t, stream);
}

void CudaModel::attention_all_reduce(Tensor& t, cudaStream_t stream) {
  if (attn_) attn_->all_reduce(t, t, stream);
}

}  // namespace narwhal
