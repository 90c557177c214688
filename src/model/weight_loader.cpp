// load_weights: checkpoint tensors -> ModelWeights, with name/shape checks, gate/up fusion and expert
// stacking (per-expert official names or transformers v5's stacked 3D tensors). Tensors are composed on
// the host in the target dtype (CPU: F32 with FP8 dequantized; GPU: BF16, FP8 kept with scales) and placed
// on the device once composed.
#include <cstring>

#include "core/error.h"
#include "core/logging.h"
#include "core/progress.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace narwhal {

namespace {

// Concatenates host tensors of one dtype along dim 0 (`shape` is the result's shape).
Tensor concat_rows(const std::vector<Tensor>& parts, std::vector<int64_t> shape) {
  Tensor out = Tensor::zeros(parts[0].dtype, std::move(shape));
  char* dst = static_cast<char*>(out.data);
  for (const Tensor& p : parts) {
    std::memcpy(dst, p.data, p.nbytes());
    dst += p.nbytes();
  }
  return out;
}

Tensor to_bf16(const Tensor& f32) {
  Tensor out = Tensor::zeros(DType::kBF16, f32.shape);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < f32.numel(); ++i) out.ptr<uint16_t>()[i] = float_to_bf16(f32.f32()[i]);
  return out;
}

class WeightReader {
 public:
  WeightReader(const ModelConfig& config, const Checkpoint& ckpt, Device device)
      : config_(config), ckpt_(ckpt), device_(device), blocks_(config.fp8.value_or(Fp8Config{})) {}

  bool has(const std::string& name) const { return ckpt_.find(name) != nullptr; }
  Device device() const { return device_; }

  // Norms, embeddings, router: F32 on the CPU, BF16 on the GPU (still on the host here).
  Tensor host_tensor(const std::string& name, std::vector<int64_t> shape) const {
    const TensorInfo& info = checked(name, shape);
    Tensor f32 = info.dtype == DType::kF8E4M3 ? dequantize_fp8(info) : to_float(info);
    return device_ == Device::kCPU ? f32 : to_bf16(f32);
  }
  Tensor get(const std::string& name, std::vector<int64_t> shape) const { return place(host_tensor(name, shape)); }
  // Kept in F32 on every device (e_score_correction_bias, as DeepSeek-V3 stores it).
  Tensor get_f32(const std::string& name, std::vector<int64_t> shape) const {
    return place(to_float(checked(name, shape)));
  }

  // A linear weight on the host: dequantized F32 on the CPU; on the GPU its FP8 bytes and scales, or BF16.
  Linear host_linear(const std::string& name, int64_t rows, int64_t cols) const {
    const TensorInfo& info = checked(name, {rows, cols});
    if (info.dtype != DType::kF8E4M3 || device_ == Device::kCPU) return {host_tensor(name, {rows, cols}), {}};
    Tensor raw = Tensor::zeros(DType::kF8E4M3, info.shape);
    std::memcpy(raw.data, info.data, info.nbytes);
    return {raw, to_float(scale_of(info))};
  }
  Linear linear(const std::string& name, int64_t rows, int64_t cols) const {
    return place(host_linear(name, rows, cols));
  }

  // Host linears of equal width stacked along rows (gate over up) or as a new leading dim (experts); on the host.
  Linear stack(const std::vector<Linear>& parts, bool new_dim) const {
    std::vector<Tensor> weights, scales;
    int64_t rows = 0;
    for (const Linear& p : parts) {
      NW_CHECK(p.fp8() == parts[0].fp8(), ckpt_.dir(), ": fused weights mix FP8 and non-FP8 tensors");
      // FP8 blocks must not straddle two parts: each part but the last must fill whole blocks.
      NW_CHECK(!p.fp8() || new_dim || &p == &parts.back() || p.weight.size(0) % blocks_.block_n == 0, ckpt_.dir(),
               ": cannot fuse FP8 weights with ", p.weight.size(0), " rows (not a multiple of the ", blocks_.block_n,
               "-row scale block) on the GPU");
      weights.push_back(p.weight);
      if (p.fp8()) scales.push_back(p.scale_inv);
      rows += p.weight.size(0);
    }
    auto shape_of = [&](const Tensor& first, int64_t total_rows) {
      std::vector<int64_t> shape = first.shape;
      if (new_dim) shape.insert(shape.begin(), static_cast<int64_t>(parts.size()));
      else shape[0] = total_rows;
      return shape;
    };
    Linear out{concat_rows(weights, shape_of(weights[0], rows)), {}};
    if (!scales.empty()) {
      int64_t scale_rows = 0;
      for (const Tensor& s : scales) scale_rows += s.size(0);
      out.scale_inv = concat_rows(scales, shape_of(scales[0], scale_rows));
    }
    return out;
  }

  Tensor place(const Tensor& t) const { return device_ == Device::kCPU ? t : t.to(device_); }
  Linear place(const Linear& l) const {
    if (device_ == Device::kCPU) return l;
    return {l.weight.to(device_), l.scale_inv.defined() ? l.scale_inv.to(device_) : Tensor{}};
  }

 private:
  const TensorInfo& checked(const std::string& name, const std::vector<int64_t>& shape) const {
    const TensorInfo& info = ckpt_.get(name);
    NW_CHECK(info.shape == shape, *info.file, ": tensor '", name, "' has shape ", shape_to_string(info.shape),
             ", expected ", shape_to_string(shape), " from config.json");
    NW_CHECK(info.dtype != DType::kF8E4M3 || shape.size() == 2, *info.file, ": tensor '", name,
             "' is F8_E4M3 but not a matrix");
    return info;
  }

  const TensorInfo& scale_of(const TensorInfo& info) const {
    const int64_t block_rows = (info.shape[0] + blocks_.block_n - 1) / blocks_.block_n;
    const int64_t block_cols = (info.shape[1] + blocks_.block_k - 1) / blocks_.block_k;
    const std::string scale_name = info.name + "_scale_inv";
    NW_CHECK(has(scale_name), ckpt_.lookup_source(), ": tensor '", info.name, "' is F8_E4M3 but '", scale_name,
             "' (its block scales) is missing");
    const TensorInfo& scale = ckpt_.get(scale_name);
    NW_CHECK(scale.shape == std::vector<int64_t>({block_rows, block_cols}), *scale.file, ": tensor '", scale_name,
             "' has shape ", shape_to_string(scale.shape), ", expected ", shape_to_string({block_rows, block_cols}),
             " for ", blocks_.block_n, "x", blocks_.block_k, " blocks of a ", shape_to_string(info.shape), " weight");
    return scale;
  }

  Tensor dequantize_fp8(const TensorInfo& info) const {
    Tensor scale = to_float(scale_of(info));
    const int64_t rows = info.shape[0], cols = info.shape[1], block_cols = scale.size(1);
    Tensor out = Tensor::zeros(DType::kF32, info.shape);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* scale_row = scale.f32() + (r / blocks_.block_n) * block_cols;
      for (int64_t c = 0; c < cols; ++c)
        out.f32()[r * cols + c] = fp8_e4m3_to_float(info.data[r * cols + c]) * scale_row[c / blocks_.block_k];
    }
    return out;
  }

  const ModelConfig& config_;
  const Checkpoint& ckpt_;
  Device device_;
  Fp8Config blocks_;
};

// gate_proj and up_proj fused into one [2I, hidden] weight, and down_proj; on the host.
std::pair<Linear, Linear> host_mlp(const WeightReader& r, const std::string& prefix, int64_t hidden, int64_t inter) {
  Linear gate = r.host_linear(prefix + "gate_proj.weight", inter, hidden);
  Linear up = r.host_linear(prefix + "up_proj.weight", inter, hidden);
  Linear gate_up = r.stack({gate, up}, false);
  return {gate_up, r.host_linear(prefix + "down_proj.weight", hidden, inter)};
}

MlpWeights load_mlp(const WeightReader& r, const std::string& prefix, int64_t hidden, int64_t inter) {
  auto [gate_up, down] = host_mlp(r, prefix, hidden, inter);
  return {r.place(gate_up), r.place(down)};
}

AttentionWeights load_attention(const WeightReader& r, const ModelConfig& c, const std::string& p) {
  const int64_t h = c.num_attention_heads, hidden = c.hidden_size;
  AttentionWeights w;
  if (c.q_lora_rank) {
    w.q_a_proj = r.linear(p + "q_a_proj.weight", *c.q_lora_rank, hidden);
    w.q_a_norm = r.get(p + "q_a_layernorm.weight", {*c.q_lora_rank});
    w.q_b_proj = r.linear(p + "q_b_proj.weight", h * c.qk_head_dim(), *c.q_lora_rank);
  } else {
    w.q_proj = r.linear(p + "q_proj.weight", h * c.qk_head_dim(), hidden);
  }
  w.kv_a_proj = r.linear(p + "kv_a_proj_with_mqa.weight", c.kv_cache_dim(), hidden);
  w.kv_a_norm = r.get(p + "kv_a_layernorm.weight", {c.kv_lora_rank});
  w.kv_b_proj = r.linear(p + "kv_b_proj.weight", h * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
  w.o_proj = r.linear(p + "o_proj.weight", hidden, h * c.v_head_dim);
  return w;
}

MoeWeights load_moe(const WeightReader& r, const ModelConfig& c, const std::string& p) {
  const int64_t e = c.n_routed_experts, hidden = c.hidden_size, inter = c.moe_intermediate_size;
  MoeWeights w;
  w.router = r.get(p + "gate.weight", {e, hidden});
  if (c.topk_method == TopkMethod::kNoauxTc) w.correction_bias = r.get_f32(p + "gate.e_score_correction_bias", {e});
  if (r.has(p + "experts.gate_up_proj")) {  // transformers v5 layout: experts already stacked
    w.experts_gate_up = {r.get(p + "experts.gate_up_proj", {e, 2 * inter, hidden}), {}};
    w.experts_down = {r.get(p + "experts.down_proj", {e, hidden, inter}), {}};
  } else {
    std::vector<Linear> gate_ups, downs;
    for (int64_t x = 0; x < e; ++x) {
      auto [gate_up, down] = host_mlp(r, cat(p, "experts.", x, "."), hidden, inter);
      gate_ups.push_back(gate_up);
      downs.push_back(down);
    }
    w.experts_gate_up = r.place(r.stack(gate_ups, true));
    w.experts_down = r.place(r.stack(downs, true));
  }
  if (c.n_shared_experts > 0) w.shared = load_mlp(r, p + "shared_experts.", hidden, c.n_shared_experts * inter);
  return w;
}

DecoderLayerWeights load_layer(const WeightReader& r, const ModelConfig& c, int layer) {
  const std::string p = cat("model.layers.", layer, ".");
  DecoderLayerWeights w;
  w.input_norm = r.get(p + "input_layernorm.weight", {c.hidden_size});
  w.post_attention_norm = r.get(p + "post_attention_layernorm.weight", {c.hidden_size});
  w.attn = load_attention(r, c, p + "self_attn.");
  if (c.is_moe_layer(layer)) w.moe = load_moe(r, c, p + "mlp.");
  else w.mlp = load_mlp(r, p + "mlp.", c.hidden_size, c.intermediate_size);
  return w;
}

MtpWeights load_mtp(const WeightReader& r, const ModelConfig& c, int layer, const ModelWeights& main) {
  const std::string p = cat("model.layers.", layer, ".");
  const int64_t hidden = c.hidden_size;
  MtpWeights w;
  w.embed = r.has(p + "embed_tokens.weight") ? r.get(p + "embed_tokens.weight", {c.vocab_size, hidden}) : main.embed;
  w.enorm = r.get(p + "enorm.weight", {hidden});
  w.hnorm = r.get(p + "hnorm.weight", {hidden});
  w.eh_proj = r.linear(p + "eh_proj.weight", hidden, 2 * hidden);
  w.layer = load_layer(r, c, layer);
  w.head_norm = r.get(p + "shared_head.norm.weight", {hidden});
  w.head = r.has(p + "shared_head.head.weight") ? r.get(p + "shared_head.head.weight", {c.vocab_size, hidden})
                                                : main.lm_head;
  return w;
}

}  // namespace

ModelWeights load_weights(const ModelConfig& c, const Checkpoint& ckpt, Device device) {
  WeightReader r(c, ckpt, device);
  ModelWeights w;
  // MTP layers count only when the checkpoint carries them (a config may announce them without weights).
  int mtp_layers = 0;
  while (mtp_layers < c.num_nextn_predict_layers &&
         r.has(cat("model.layers.", c.num_hidden_layers + mtp_layers, ".eh_proj.weight")))
    ++mtp_layers;
  if (mtp_layers < c.num_nextn_predict_layers) {
    NW_LOG(Warning) << ckpt.dir() << ": config announces " << c.num_nextn_predict_layers
                    << " MTP layer(s) but the checkpoint has weights for " << mtp_layers
                    << "; running without the missing ones";
  }

  ProgressBar progress("Loading weights", c.num_hidden_layers + mtp_layers + 1);
  w.embed = r.get("model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
  w.final_norm = r.get("model.norm.weight", {c.hidden_size});
  w.lm_head = c.tie_word_embeddings && !r.has("lm_head.weight") ? w.embed
                                                                : r.get("lm_head.weight", {c.vocab_size, c.hidden_size});
  progress.advance();
  for (int layer = 0; layer < c.num_hidden_layers; ++layer) {
    w.layers.push_back(load_layer(r, c, layer));
    progress.advance();
  }
  for (int k = 0; k < mtp_layers; ++k) {
    w.mtp.push_back(load_mtp(r, c, c.num_hidden_layers + k, w));
    progress.advance();
  }
  progress.finish();
  return w;
}

}  // namespace narwhal
