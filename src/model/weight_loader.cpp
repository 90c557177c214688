// load_weights: checkpoint tensors -> ModelWeights, with name/shape checks, FP8 block dequantization,
// gate/up fusion and expert stacking (per-expert official names or transformers v5's fused 3D tensors).
#include <cstring>

#include "core/error.h"
#include "core/logging.h"
#include "core/progress.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace narwhal {

namespace {

class WeightReader {
 public:
  WeightReader(const ModelConfig& config, const Checkpoint& ckpt) : config_(config), ckpt_(ckpt) {}

  bool has(const std::string& name) const { return ckpt_.find(name) != nullptr; }

  // A vector or matrix stored as F32/BF16/F16, or a matrix stored as F8_E4M3 with its `_scale_inv`.
  Tensor get(const std::string& name, std::vector<int64_t> shape) const {
    const TensorInfo& info = ckpt_.get(name);
    NW_CHECK(info.shape == shape, *info.file, ": tensor '", name, "' has shape ", shape_to_string(info.shape),
             ", expected ", shape_to_string(shape), " from config.json");
    if (info.dtype != DType::kF8E4M3) return to_float(info);
    NW_CHECK(shape.size() == 2, *info.file, ": tensor '", name, "' is F8_E4M3 but not a matrix");
    return dequantize_fp8(info, name);
  }

 private:
  Tensor dequantize_fp8(const TensorInfo& info, const std::string& name) const {
    const Fp8Config blocks = config_.fp8.value_or(Fp8Config{});
    const int64_t rows = info.shape[0], cols = info.shape[1];
    const int64_t block_rows = (rows + blocks.block_n - 1) / blocks.block_n;
    const int64_t block_cols = (cols + blocks.block_k - 1) / blocks.block_k;
    const std::string scale_name = name + "_scale_inv";
    NW_CHECK(has(scale_name), ckpt_.lookup_source(), ": tensor '", name, "' is F8_E4M3 but '", scale_name,
             "' (its block scales) is missing");
    const TensorInfo& scale_info = ckpt_.get(scale_name);
    NW_CHECK(scale_info.shape == std::vector<int64_t>({block_rows, block_cols}), *scale_info.file, ": tensor '",
             scale_name, "' has shape ", shape_to_string(scale_info.shape), ", expected ",
             shape_to_string({block_rows, block_cols}), " for ", blocks.block_n, "x", blocks.block_k,
             " blocks of a ", shape_to_string(info.shape), " weight");
    Tensor scale = to_float(scale_info);
    Tensor out = Tensor::zeros(DType::kF32, info.shape);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* scale_row = scale.f32() + (r / blocks.block_n) * block_cols;
      for (int64_t c = 0; c < cols; ++c)
        out.f32()[r * cols + c] = fp8_e4m3_to_float(info.data[r * cols + c]) * scale_row[c / blocks.block_k];
    }
    return out;
  }

  const ModelConfig& config_;
  const Checkpoint& ckpt_;
};

// Concatenates matrices with equal column counts along rows (gate over up).
Tensor stack_rows(const std::vector<Tensor>& parts) {
  int64_t rows = 0;
  for (const Tensor& p : parts) rows += p.size(0);
  Tensor out = Tensor::zeros(DType::kF32, {rows, parts[0].size(1)});
  char* dst = static_cast<char*>(out.data);
  for (const Tensor& p : parts) {
    std::memcpy(dst, p.data, p.nbytes());
    dst += p.nbytes();
  }
  return out;
}

MlpWeights load_mlp(const WeightReader& r, const std::string& prefix, int64_t hidden, int64_t inter) {
  MlpWeights w;
  w.gate_up = stack_rows({r.get(prefix + "gate_proj.weight", {inter, hidden}),
                          r.get(prefix + "up_proj.weight", {inter, hidden})});
  w.down = r.get(prefix + "down_proj.weight", {hidden, inter});
  return w;
}

AttentionWeights load_attention(const WeightReader& r, const ModelConfig& c, const std::string& p) {
  const int64_t h = c.num_attention_heads, hidden = c.hidden_size;
  AttentionWeights w;
  if (c.q_lora_rank) {
    w.q_a_proj = r.get(p + "q_a_proj.weight", {*c.q_lora_rank, hidden});
    w.q_a_norm = r.get(p + "q_a_layernorm.weight", {*c.q_lora_rank});
    w.q_b_proj = r.get(p + "q_b_proj.weight", {h * c.qk_head_dim(), *c.q_lora_rank});
  } else {
    w.q_proj = r.get(p + "q_proj.weight", {h * c.qk_head_dim(), hidden});
  }
  w.kv_a_proj = r.get(p + "kv_a_proj_with_mqa.weight", {c.kv_cache_dim(), hidden});
  w.kv_a_norm = r.get(p + "kv_a_layernorm.weight", {c.kv_lora_rank});
  w.kv_b_proj = r.get(p + "kv_b_proj.weight", {h * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank});
  w.o_proj = r.get(p + "o_proj.weight", {hidden, h * c.v_head_dim});
  return w;
}

MoeWeights load_moe(const WeightReader& r, const ModelConfig& c, const std::string& p) {
  const int64_t e = c.n_routed_experts, hidden = c.hidden_size, inter = c.moe_intermediate_size;
  MoeWeights w;
  w.router = r.get(p + "gate.weight", {e, hidden});
  if (c.topk_method == TopkMethod::kNoauxTc) w.correction_bias = r.get(p + "gate.e_score_correction_bias", {e});
  if (r.has(p + "experts.gate_up_proj")) {  // transformers v5 layout: experts already stacked
    w.experts_gate_up = r.get(p + "experts.gate_up_proj", {e, 2 * inter, hidden});
    w.experts_down = r.get(p + "experts.down_proj", {e, hidden, inter});
  } else {
    w.experts_gate_up = Tensor::zeros(DType::kF32, {e, 2 * inter, hidden});
    w.experts_down = Tensor::zeros(DType::kF32, {e, hidden, inter});
    for (int64_t x = 0; x < e; ++x) {
      MlpWeights expert = load_mlp(r, cat(p, "experts.", x, "."), hidden, inter);
      std::memcpy(w.experts_gate_up.f32() + x * 2 * inter * hidden, expert.gate_up.data, expert.gate_up.nbytes());
      std::memcpy(w.experts_down.f32() + x * hidden * inter, expert.down.data, expert.down.nbytes());
    }
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
  w.eh_proj = r.get(p + "eh_proj.weight", {hidden, 2 * hidden});
  w.layer = load_layer(r, c, layer);
  w.head_norm = r.get(p + "shared_head.norm.weight", {hidden});
  w.head = r.has(p + "shared_head.head.weight") ? r.get(p + "shared_head.head.weight", {c.vocab_size, hidden})
                                                : main.lm_head;
  return w;
}

}  // namespace

ModelWeights load_weights(const ModelConfig& c, const Checkpoint& ckpt) {
  WeightReader r(c, ckpt);
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
