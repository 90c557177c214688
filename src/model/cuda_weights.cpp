// Load-time conversion of weights into the GPU kernels' layouts; checkpoint and dummy (random) sources.
#include "model/cuda_weights.h"

#include <cmath>

#include "core/cuda_check.h"
#include "core/error.h"
#include "core/logging.h"
#include "model/safetensors.h"
#include "ops/cuda/portable.h"

namespace narwhal {

namespace {

constexpr int64_t kBlock = 128;

Tensor device_bf16(const Tensor& host_f32) {
  Tensor bf = Tensor::zeros(DType::kBF16, host_f32.shape);
  for (int64_t i = 0; i < host_f32.numel(); ++i) bf.ptr<uint16_t>()[i] = float_to_bf16(host_f32.f32()[i]);
  return bf.to(Device::kCUDA);
}

// Host F32 weights (FP8 already dequantized by the CPU loader) -> the device layout of load_weights(kCUDA).
void upload_bf16(Tensor& t) {
  if (t.defined()) t = device_bf16(t);
}
void upload_bf16(Linear& l) { upload_bf16(l.weight); }
void upload_bf16(MlpWeights& m) {
  upload_bf16(m.gate_up);
  upload_bf16(m.down);
}
void upload_bf16(DecoderLayerWeights& l) {
  upload_bf16(l.input_norm);
  upload_bf16(l.post_attention_norm);
  AttentionWeights& a = l.attn;
  for (Linear* x : {&a.q_proj, &a.q_a_proj, &a.q_b_proj, &a.kv_a_proj, &a.kv_b_proj, &a.o_proj}) upload_bf16(*x);
  upload_bf16(a.q_a_norm);
  upload_bf16(a.kv_a_norm);
  if (l.mlp) upload_bf16(*l.mlp);
  if (l.moe) {
    upload_bf16(l.moe->router);
    if (l.moe->correction_bias.defined()) l.moe->correction_bias = l.moe->correction_bias.to(Device::kCUDA);
    upload_bf16(l.moe->experts_gate_up);
    upload_bf16(l.moe->experts_down);
    if (l.moe->shared) upload_bf16(*l.moe->shared);
  }
}
// The MTP layer's embed and head are the main model's tensors where the checkpoint shares them: those stay shared.
void upload_bf16(MtpWeights& m, const ModelWeights& host, const ModelWeights& device) {
  for (Tensor* t : {&m.embed, &m.head}) {
    if (t->data == host.embed.data) *t = device.embed;
    else if (t->data == host.lm_head.data) *t = device.lm_head;
    else upload_bf16(*t);
  }
  for (Tensor* t : {&m.enorm, &m.hnorm, &m.head_norm}) upload_bf16(*t);
  upload_bf16(m.eh_proj);
  upload_bf16(m.layer);
}
ModelWeights upload_dequantized(ModelWeights w, bool mtp) {
  const ModelWeights host{w.embed, {}, w.final_norm, w.lm_head, {}};
  upload_bf16(w.embed);
  upload_bf16(w.final_norm);
  w.lm_head = host.lm_head.data == host.embed.data ? w.embed : device_bf16(w.lm_head);
  for (DecoderLayerWeights& l : w.layers) upload_bf16(l);
  w.mtp.resize(mtp ? 1 : 0);
  for (MtpWeights& m : w.mtp) upload_bf16(m, host, w);
  return w;
}

CudaLinear convert_linear(const Linear& l) {
  if (!l.fp8()) return {l.weight, {}};
  return {{}, ops::cuda::make_fp8_block_weight(l.weight, l.scale_inv)};
}

// Copies `rows` rows of `row_bytes` from src (pitch src_pitch) to dst (pitch dst_pitch), device to device.
void copy_rows(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t row_bytes, size_t rows) {
  NW_CUDA_CHECK(cudaMemcpy2D(dst, dst_pitch, src, src_pitch, row_bytes, rows, cudaMemcpyDeviceToDevice));
}

// [E, 2I, H] / [E, H, I] routed experts plus the shared MLP cut into S experts of width I (gate rows s*I.., up
// rows S*I + s*I.., down columns s*I..), for weights (block = 1) or their 128-block scales (block = 128).
Tensor fold_gate_up(const Tensor& routed, const Tensor& shared, int shared_count, int64_t inter_rows) {
  const int64_t e = routed.size(0), cols = routed.size(2);
  Tensor out = Tensor::empty(routed.dtype, {e + shared_count, 2 * inter_rows, cols}, Device::kCUDA);
  NW_CUDA_CHECK(cudaMemcpy(out.data, routed.data, routed.nbytes(), cudaMemcpyDeviceToDevice));
  const size_t row_bytes = cols * dtype_size(routed.dtype), half = inter_rows * row_bytes;
  char* dst = static_cast<char*>(out.data) + routed.nbytes();
  const char* src = static_cast<const char*>(shared.data);
  for (int s = 0; s < shared_count; ++s) {
    NW_CUDA_CHECK(cudaMemcpy(dst + 2 * s * half, src + s * half, half, cudaMemcpyDeviceToDevice));
    NW_CUDA_CHECK(cudaMemcpy(dst + (2 * s + 1) * half, src + (shared_count + s) * half, half,
                             cudaMemcpyDeviceToDevice));
  }
  return out;
}

Tensor fold_down(const Tensor& routed, const Tensor& shared, int shared_count) {
  const int64_t e = routed.size(0), rows = routed.size(1), inter_cols = routed.size(2);
  Tensor out = Tensor::empty(routed.dtype, {e + shared_count, rows, inter_cols}, Device::kCUDA);
  NW_CUDA_CHECK(cudaMemcpy(out.data, routed.data, routed.nbytes(), cudaMemcpyDeviceToDevice));
  const size_t elem = dtype_size(routed.dtype), expert_bytes = rows * inter_cols * elem;
  for (int s = 0; s < shared_count; ++s)
    copy_rows(static_cast<char*>(out.data) + routed.nbytes() + s * expert_bytes, inter_cols * elem,
              static_cast<const char*>(shared.data) + s * inter_cols * elem, shared_count * inter_cols * elem,
              inter_cols * elem, rows);
  return out;
}

ops::cuda::MoeExpertWeights fold_experts(const ModelConfig& c, const MoeWeights& w) {
  ops::cuda::MoeExpertWeights out;
  const int shared = w.shared ? c.n_shared_experts : 0;
  const int64_t inter = c.moe_intermediate_size;
  out.num_shared = shared;
  if (!shared) {
    out.gate_up = w.experts_gate_up.weight;
    out.down = w.experts_down.weight;
    out.gate_up_scale_inv = w.experts_gate_up.scale_inv;
    out.down_scale_inv = w.experts_down.scale_inv;
    return out;
  }
  out.gate_up = fold_gate_up(w.experts_gate_up.weight, w.shared->gate_up.weight, shared, inter);
  out.down = fold_down(w.experts_down.weight, w.shared->down.weight, shared);
  if (w.experts_gate_up.fp8()) {
    NW_CHECK(inter % kBlock == 0, "FP8 experts need moe_intermediate_size % 128 == 0, got ", inter);
    out.gate_up_scale_inv = fold_gate_up(w.experts_gate_up.scale_inv, w.shared->gate_up.scale_inv, shared,
                                         inter / kBlock);
    out.down_scale_inv = fold_down(w.experts_down.scale_inv, w.shared->down.scale_inv, shared);
  }
  return out;
}

int64_t bytes_of(const Tensor& t) { return t.defined() ? static_cast<int64_t>(t.nbytes()) : 0; }
int64_t bytes_of(const CudaLinear& l) { return bytes_of(l.bf16) + bytes_of(l.fp8.q) + bytes_of(l.fp8.scale); }

int64_t layer_bytes(const CudaLayerWeights& l) {
  const CudaAttentionWeights& a = l.attn;
  int64_t b = 0;
  for (const CudaLinear* x : {&a.q_proj, &a.q_a_proj, &a.q_b_proj, &a.kv_a_proj, &a.kv_b_proj, &a.o_proj})
    b += bytes_of(*x);
  b += bytes_of(l.input_norm) + bytes_of(l.post_attention_norm) + bytes_of(a.q_a_norm) + bytes_of(a.kv_a_norm);
  if (a.kv_b_fp8) b += bytes_of(a.kv_b_fp8->w_uk_t.q) + bytes_of(a.kv_b_fp8->w_uv.q);
  b += bytes_of(a.w_uk_t_bf16);
  if (l.mlp) b += bytes_of(l.mlp->gate_up) + bytes_of(l.mlp->down);
  if (l.moe) {
    const ops::cuda::MoeExpertWeights& e = l.moe->experts;
    b += bytes_of(l.moe->router) + bytes_of(e.gate_up) + bytes_of(e.down) + bytes_of(e.gate_up_scale_inv) +
         bytes_of(e.down_scale_inv);
  }
  return b;
}

int64_t count_bytes(const CudaModelWeights& w) {
  int64_t b = bytes_of(w.embed) + bytes_of(w.final_norm) + (w.lm_head.data == w.embed.data ? 0 : bytes_of(w.lm_head));
  for (const CudaLayerWeights& l : w.layers) b += layer_bytes(l);
  if (const std::optional<CudaMtpWeights>& m = w.mtp) {
    for (const Tensor* t : {&m->embed, &m->head})
      if (t->data != w.embed.data && t->data != w.lm_head.data) b += bytes_of(*t);
    b += bytes_of(m->enorm) + bytes_of(m->hnorm) + bytes_of(m->head_norm) + bytes_of(m->eh_proj) +
         layer_bytes(m->layer);
  }
  return b;
}

void check_mtp_loaded(const ModelWeights& w, bool mtp, const Checkpoint& checkpoint) {
  NW_CHECK(!mtp || !w.mtp.empty(), checkpoint.dir(), ": --speculative-algorithm NEXTN drafts with the checkpoint's MTP ",
           "layer, and this one has none (config.json field 'num_nextn_predict_layers' is 0, or its layer weights are ",
           "missing)");
}

}  // namespace

bool fp8_kernels_fit(const ModelConfig& c) {
  auto blocks = [](int64_t v) { return v % kBlock == 0; };
  return blocks(c.hidden_size) && blocks(c.intermediate_size) && blocks(c.moe_intermediate_size) &&
         blocks(c.kv_lora_rank) && (!c.q_lora_rank || blocks(*c.q_lora_rank)) && c.qk_nope_head_dim == kBlock &&
         c.v_head_dim == kBlock;
}

namespace {

CudaLayerWeights convert_layer(const ModelConfig& c, DecoderLayerWeights& l) {
  CudaLayerWeights cl;
  cl.input_norm = l.input_norm;
  cl.post_attention_norm = l.post_attention_norm;
  const AttentionWeights& a = l.attn;
  CudaAttentionWeights& ca = cl.attn;
  ca.q_proj = convert_linear(a.q_proj);
  ca.q_a_proj = convert_linear(a.q_a_proj);
  ca.q_b_proj = convert_linear(a.q_b_proj);
  ca.kv_a_proj = convert_linear(a.kv_a_proj);
  ca.kv_b_proj = convert_linear(a.kv_b_proj);
  ca.o_proj = convert_linear(a.o_proj);
  ca.q_a_norm = a.q_a_norm;
  ca.kv_a_norm = a.kv_a_norm;
  if (a.kv_b_proj.fp8())
    ca.kv_b_fp8 = ops::cuda::split_kv_b_fp8(a.kv_b_proj.weight.to(Device::kCPU), a.kv_b_proj.scale_inv.to(Device::kCPU),
                                            c.num_attention_heads);
  else {
    ca.kv_b_bf16 = a.kv_b_proj.weight;
    const int64_t nope = c.qk_nope_head_dim, v = c.v_head_dim;
    ca.w_uk_t_bf16 = ops::cuda::transpose_w_uk_bf16(a.kv_b_proj.weight, a.kv_b_proj.weight.size(0) / (nope + v), nope, v);
  }
  if (l.mlp) cl.mlp = CudaMlpWeights{convert_linear(l.mlp->gate_up), convert_linear(l.mlp->down)};
  if (l.moe) {
    cl.moe = CudaMoeWeights{l.moe->router, l.moe->correction_bias, fold_experts(c, *l.moe)};
    l.moe.reset();  // frees the unfolded copies before the next layer folds
  }
  return cl;
}

}  // namespace

CudaModelWeights convert_cuda_weights(const ModelConfig& c, ModelWeights w) {
  CudaModelWeights out;
  out.embed = w.embed;
  out.final_norm = w.final_norm;
  out.lm_head = w.lm_head;
  for (DecoderLayerWeights& l : w.layers) out.layers.push_back(convert_layer(c, l));
  if (!w.mtp.empty()) {  // the first MTP layer only: the draft model of speculative decoding
    MtpWeights& m = w.mtp.front();
    out.mtp = CudaMtpWeights{m.embed, m.enorm, m.hnorm, convert_linear(m.eh_proj), convert_layer(c, m.layer),
                             m.head_norm, m.head};
  }
  out.bytes = count_bytes(out);
  return out;
}

CudaModelWeights load_cuda_weights(const ModelConfig& c, const Checkpoint& checkpoint, TpSlice slice,
                                   ProgressBar* progress, bool mtp) {
  const ModelConfig local = local_config(c, tp_dims(c, slice));
  if (c.fp8 && !fp8_kernels_fit(c)) {
    if (slice.rank == 0) {
      NW_LOG(Warning) << checkpoint.dir() << ": FP8 weights whose dims are not whole 128-blocks (or heads not 128 "
                      << "wide) are dequantized to BF16 for the GPU";
    }
    ModelWeights host = load_weights(c, checkpoint, Device::kCPU, slice, progress);
    check_mtp_loaded(host, mtp, checkpoint);
    return convert_cuda_weights(local, upload_dequantized(std::move(host), mtp));
  }
  ModelWeights w = load_weights(c, checkpoint, Device::kCUDA, slice, progress);
  check_mtp_loaded(w, mtp, checkpoint);
  w.mtp.resize(mtp ? 1 : 0);
  return convert_cuda_weights(local, std::move(w));
}

namespace {

// Makes each tensor from its own seed, the next of a sequence every rank walks alike; a tensor that TP splits adds
// the rank's place in the split to it, so that ranks hold different parts and the same replicated tensors. With DP
// attention, attention and the vocabulary split over a DP group (attn_rank), so the groups hold the same model.
struct DummyMaker {
  const ModelConfig& c;  // the rank's shapes (local_config)
  bool fp8;
  uint64_t seed;
  uint64_t rank_salt, attn_rank_salt;
  uint64_t salt = 0;  // while a split tensor is made: the salt of its split

  uint64_t next_seed() { return seed++ + salt; }
  Tensor random(std::vector<int64_t> shape, float std) {
    Tensor t = Tensor::empty(DType::kBF16, std::move(shape), Device::kCUDA);
    ops::cuda::fill_random(t, next_seed(), std, nullptr);
    return t;
  }
  Tensor ones(int64_t n) {
    Tensor t = Tensor::empty(DType::kBF16, {n}, Device::kCUDA);
    ops::cuda::fill_constant(t, 1.0f, nullptr);
    return t;
  }
  // FP8: uniform codes in [-240, 240] times a per-block scale giving std 1/sqrt(in).
  Linear linear(std::vector<int64_t> shape) {
    const int64_t in = shape.back();
    const float std = 1.0f / std::sqrt(static_cast<float>(in));
    if (!fp8) return {random(shape, std), {}};
    Linear l;
    l.weight = Tensor::empty(DType::kF8E4M3, shape, Device::kCUDA);
    ops::cuda::fill_random_fp8(l.weight, next_seed(), 240.0f, nullptr);
    std::vector<int64_t> scale_shape = shape;
    scale_shape[scale_shape.size() - 2] = (shape[shape.size() - 2] + kBlock - 1) / kBlock;
    scale_shape.back() = (in + kBlock - 1) / kBlock;
    l.scale_inv = Tensor::empty(DType::kF32, scale_shape, Device::kCUDA);
    ops::cuda::fill_constant(l.scale_inv, std * 1.7320508f / 240.0f, nullptr);
    return l;
  }
  MlpWeights mlp(int64_t inter) {
    return {linear({2 * inter, c.hidden_size}), linear({c.hidden_size, inter})};
  }
  // What `make` returns, made as a tensor split over every rank (the MLP and experts) or over the attention group.
  template <typename F>
  auto split_part(F make) {
    return salted(rank_salt, make);
  }
  template <typename F>
  auto attn_part(F make) {
    return salted(attn_rank_salt, make);
  }
  template <typename F>
  auto salted(uint64_t s, F make) {
    salt = s;
    auto out = make();
    salt = 0;
    return out;
  }
};

}  // namespace

namespace {

// Decoder layer `layer` (the MTP layer is num_hidden_layers) of the rank's shapes; `dims` for its expert count.
DecoderLayerWeights dummy_layer(DummyMaker& m, const TpDims& dims, int layer) {
  const ModelConfig& c = m.c;
  const int64_t hidden = c.hidden_size, heads = c.num_attention_heads;
  const float head_std = 1.0f / std::sqrt(static_cast<float>(hidden));
  DecoderLayerWeights l;
  l.input_norm = m.ones(hidden);
  l.post_attention_norm = m.ones(hidden);
  AttentionWeights& a = l.attn;
  if (c.q_lora_rank) {
    a.q_a_proj = m.linear({*c.q_lora_rank, hidden});
    a.q_a_norm = m.ones(*c.q_lora_rank);
    a.q_b_proj = m.attn_part([&] { return m.linear({heads * c.qk_head_dim(), *c.q_lora_rank}); });
  } else {
    a.q_proj = m.attn_part([&] { return m.linear({heads * c.qk_head_dim(), hidden}); });
  }
  a.kv_a_proj = m.linear({c.kv_cache_dim(), hidden});
  a.kv_a_norm = m.ones(c.kv_lora_rank);
  a.kv_b_proj = m.attn_part([&] { return m.linear({heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}); });
  a.o_proj = m.attn_part([&] { return m.linear({hidden, heads * c.v_head_dim}); });
  if (c.is_moe_layer(layer)) {
    MoeWeights moe;
    const int64_t e = c.n_routed_experts, mine = static_cast<int64_t>(dims.routed_experts.size());
    const int64_t inter = c.moe_intermediate_size;
    moe.router = m.random({e, hidden}, head_std);
    if (c.topk_method == TopkMethod::kNoauxTc) {
      moe.correction_bias = Tensor::empty(DType::kF32, {e}, Device::kCUDA);
      ops::cuda::fill_random(moe.correction_bias, m.next_seed(), 0.01f, nullptr);
    }
    moe.experts_gate_up = m.split_part([&] { return m.linear({mine, 2 * inter, hidden}); });
    moe.experts_down = m.split_part([&] { return m.linear({mine, hidden, inter}); });
    if (c.n_shared_experts > 0) moe.shared = m.split_part([&] { return m.mlp(c.n_shared_experts * inter); });
    l.moe = std::move(moe);
  } else {
    l.mlp = m.split_part([&] { return m.mlp(c.intermediate_size); });
  }
  return l;
}

}  // namespace

CudaModelWeights dummy_cuda_weights(const ModelConfig& config, uint64_t seed, TpSlice slice, bool mtp) {
  const TpDims dims = tp_dims(config, slice);
  const ModelConfig c = local_config(config, dims);
  DummyMaker m{c, c.fp8.has_value() && fp8_kernels_fit(c), seed, static_cast<uint64_t>(slice.rank) << 32,
               static_cast<uint64_t>(slice.attn_rank()) << 32};
  const int64_t hidden = c.hidden_size, vocab_rows = dims.vocab.size;
  const float head_std = 1.0f / std::sqrt(static_cast<float>(hidden));
  ModelWeights w;
  w.embed = m.attn_part([&] { return m.random({vocab_rows, hidden}, 1.0f); });
  w.final_norm = m.ones(hidden);
  w.lm_head = m.attn_part([&] { return m.random({vocab_rows, hidden}, head_std); });
  for (int layer = 0; layer < c.num_hidden_layers; ++layer) w.layers.push_back(dummy_layer(m, dims, layer));
  if (mtp) {  // made after the main layers, so that those are the same with and without it
    MtpWeights t;
    t.embed = m.attn_part([&] { return m.random({vocab_rows, hidden}, 1.0f); });
    t.enorm = m.ones(hidden);
    t.hnorm = m.ones(hidden);
    t.eh_proj = m.linear({hidden, 2 * hidden});
    t.layer = dummy_layer(m, dims, c.num_hidden_layers);
    t.head_norm = m.ones(hidden);
    t.head = m.attn_part([&] { return m.random({vocab_rows, hidden}, head_std); });
    w.mtp.push_back(std::move(t));
  }
  NW_CUDA_CHECK(cudaDeviceSynchronize());
  return convert_cuda_weights(c, std::move(w));
}

}  // namespace narwhal
