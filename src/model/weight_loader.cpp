// load_weights: checkpoint tensors -> ModelWeights, with name/shape checks, gate/up fusion and expert
// stacking (per-expert official names or transformers v5's stacked 3D tensors). Tensors are composed on
// the host in the target dtype (CPU: F32 with FP8 dequantized; GPU: BF16, FP8 kept with scales) and placed
// on the device once composed. A TP rank cuts its rows or columns out of each split tensor as it reads it.
#include <cstring>
#include <filesystem>
#include <optional>

#include "core/error.h"
#include "core/logging.h"
#include "core/progress.h"
#include "model/checkpoint_slice.h"
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

// [.., ra, cols] and [.., rb, cols] of one dtype -> [.., ra + rb, cols]: each matrix's rows of a, then of b.
Tensor concat_matrix_rows(const Tensor& a, const Tensor& b) {
  std::vector<int64_t> shape = a.shape;
  shape[shape.size() - 2] += b.size(-2);
  Tensor out = Tensor::zeros(a.dtype, shape);
  const int64_t matrices = a.numel() / (a.size(-2) * a.size(-1));
  const size_t a_bytes = a.nbytes() / matrices, b_bytes = b.nbytes() / matrices;
  char* dst = static_cast<char*>(out.data);
  for (int64_t m = 0; m < matrices; ++m) {
    std::memcpy(dst, static_cast<const char*>(a.data) + m * a_bytes, a_bytes);
    std::memcpy(dst + a_bytes, static_cast<const char*>(b.data) + m * b_bytes, b_bytes);
    dst += a_bytes + b_bytes;
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
  WeightReader(const ModelConfig& config, const Checkpoint& ckpt, Device device, int tp_size)
      : config_(config), ckpt_(ckpt), device_(device), tp_size_(tp_size), blocks_(config.fp8.value_or(Fp8Config{})) {}

  bool has(const std::string& name) const { return ckpt_.find(name) != nullptr; }
  Device device() const { return device_; }

  // Norms, embeddings, router: F32 on the CPU, BF16 on the GPU (still on the host here). `shape` is the stored
  // one; `cut` the part this rank reads.
  Tensor host_tensor(const std::string& name, std::vector<int64_t> shape, const Cut& cut = {}) const {
    const TensorInfo& info = checked(name, shape);
    Tensor f32 = read_f32(info, cut, info.dtype == DType::kF8E4M3 ? scales_of(info) : BlockScales{});
    return device_ == Device::kCPU ? f32 : to_bf16(f32);
  }
  Tensor get(const std::string& name, std::vector<int64_t> shape, const Cut& cut = {}) const {
    return place(host_tensor(name, shape, cut));
  }
  // Kept in F32 on every device (e_score_correction_bias, as DeepSeek-V3 stores it).
  Tensor get_f32(const std::string& name, std::vector<int64_t> shape) const {
    return place(read_f32(checked(name, shape), {}));
  }

  // A linear weight (the `cut` of a stored [rows, cols]) on the host: dequantized F32 on the CPU; on the GPU its
  // FP8 bytes and scales (cut with whole blocks), or BF16.
  Linear host_linear(const std::string& name, int64_t rows, int64_t cols, const Cut& cut = {}) const {
    const TensorInfo& info = checked(name, {rows, cols});
    if (info.dtype != DType::kF8E4M3 || device_ == Device::kCPU) return {host_tensor(name, {rows, cols}, cut), {}};
    Fp8Cut part = read_fp8(info, scales_of(info), cut, tp_size_);
    return {part.q, part.scale};
  }
  Linear linear(const std::string& name, int64_t rows, int64_t cols, const Cut& cut = {}) const {
    return place(host_linear(name, rows, cols, cut));
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

  BlockScales scales_of(const TensorInfo& info) const {
    const int64_t block_rows = (info.shape[0] + blocks_.block_n - 1) / blocks_.block_n;
    const int64_t block_cols = (info.shape[1] + blocks_.block_k - 1) / blocks_.block_k;
    const std::string scale_name = info.name + "_scale_inv";
    NW_CHECK(has(scale_name), ckpt_.lookup_source(), ": tensor '", info.name, "' is F8_E4M3 but '", scale_name,
             "' (its block scales) is missing");
    const TensorInfo& scale = ckpt_.get(scale_name);
    NW_CHECK(scale.shape == std::vector<int64_t>({block_rows, block_cols}), *scale.file, ": tensor '", scale_name,
             "' has shape ", shape_to_string(scale.shape), ", expected ", shape_to_string({block_rows, block_cols}),
             " for ", blocks_.block_n, "x", blocks_.block_k, " blocks of a ", shape_to_string(info.shape), " weight");
    return {read_f32(scale, {}), blocks_.block_n, blocks_.block_k};
  }

  const ModelConfig& config_;
  const Checkpoint& ckpt_;
  Device device_;
  int tp_size_;
  Fp8Config blocks_;
};

// gate_proj and up_proj fused into one [2I', hidden] weight, and down_proj; on the host. `part` is the range of
// the intermediate dimension this rank holds (all of it without TP).
std::pair<Linear, Linear> host_mlp(const WeightReader& r, const std::string& prefix, int64_t hidden, int64_t inter,
                                   const Shard& part) {
  Linear gate = r.host_linear(prefix + "gate_proj.weight", inter, hidden, Cut::rows(part));
  Linear up = r.host_linear(prefix + "up_proj.weight", inter, hidden, Cut::rows(part));
  Linear gate_up = r.stack({gate, up}, false);
  return {gate_up, r.host_linear(prefix + "down_proj.weight", hidden, inter, Cut::cols(part))};
}

MlpWeights load_mlp(const WeightReader& r, const std::string& prefix, int64_t hidden, int64_t inter,
                    const Shard& part) {
  auto [gate_up, down] = host_mlp(r, prefix, hidden, inter, part);
  return {r.place(gate_up), r.place(down)};
}

// q / q_b and kv_b by the rank's heads (rows), o_proj by their columns; q_a and kv_a whole.
AttentionWeights load_attention(const WeightReader& r, const ModelConfig& c, const std::string& p, const TpDims& d) {
  const int64_t h = c.num_attention_heads, hidden = c.hidden_size;
  const Cut q_rows = Cut::rows(scaled(d.heads, c.qk_head_dim()));
  AttentionWeights w;
  if (c.q_lora_rank) {
    w.q_a_proj = r.linear(p + "q_a_proj.weight", *c.q_lora_rank, hidden);
    w.q_a_norm = r.get(p + "q_a_layernorm.weight", {*c.q_lora_rank});
    w.q_b_proj = r.linear(p + "q_b_proj.weight", h * c.qk_head_dim(), *c.q_lora_rank, q_rows);
  } else {
    w.q_proj = r.linear(p + "q_proj.weight", h * c.qk_head_dim(), hidden, q_rows);
  }
  w.kv_a_proj = r.linear(p + "kv_a_proj_with_mqa.weight", c.kv_cache_dim(), hidden);
  w.kv_a_norm = r.get(p + "kv_a_layernorm.weight", {c.kv_lora_rank});
  const int64_t kv_b_rows = c.qk_nope_head_dim + c.v_head_dim;
  w.kv_b_proj = r.linear(p + "kv_b_proj.weight", h * kv_b_rows, c.kv_lora_rank, Cut::rows(scaled(d.heads, kv_b_rows)));
  w.o_proj = r.linear(p + "o_proj.weight", hidden, h * c.v_head_dim, Cut::cols(scaled(d.heads, c.v_head_dim)));
  return w;
}

// The leading-dimension rows `rows` of a host tensor, in that order, as a tensor of their own.
Tensor leading_rows(const Tensor& t, const std::vector<int32_t>& rows) {
  bool all_in_order = static_cast<int64_t>(rows.size()) == t.size(0);
  for (size_t i = 0; all_in_order && i < rows.size(); ++i) all_in_order = rows[i] == static_cast<int32_t>(i);
  if (all_in_order) return t;
  std::vector<int64_t> shape = t.shape;
  shape[0] = static_cast<int64_t>(rows.size());
  Tensor out = Tensor::zeros(t.dtype, shape);
  const size_t row_bytes = t.nbytes() / static_cast<size_t>(t.size(0));
  for (size_t i = 0; i < rows.size(); ++i)
    std::memcpy(static_cast<char*>(out.data) + i * row_bytes, t.rows(rows[i], rows[i] + 1).data, row_bytes);
  return out;
}

// Every routed expert this rank holds (all of them without EP) cut along its intermediate dimension (SGLang's TP
// MoE; with EP only the MoE-TP group's ranks share an expert); the router whole.
MoeWeights load_moe(const WeightReader& r, const ModelConfig& c, const std::string& p, const TpDims& d) {
  const int64_t e = c.n_routed_experts, hidden = c.hidden_size, inter = c.moe_intermediate_size;
  const Shard& part = d.moe_intermediate;
  const std::vector<int32_t>& experts = d.routed_experts;
  MoeWeights w;
  w.router = r.get(p + "gate.weight", {e, hidden});
  if (c.topk_method == TopkMethod::kNoauxTc) w.correction_bias = r.get_f32(p + "gate.e_score_correction_bias", {e});
  if (r.has(p + "experts.gate_up_proj")) {  // transformers v5 layout: experts already stacked, gate rows then up
    // Cuts apply to each expert's matrix, so every expert is read and this rank's are kept (the official layout,
    // one tensor per expert, reads only this rank's).
    const std::string gate_up = p + "experts.gate_up_proj";
    const Tensor gate = r.host_tensor(gate_up, {e, 2 * inter, hidden}, Cut::rows(part));
    const Tensor up = r.host_tensor(gate_up, {e, 2 * inter, hidden}, Cut::rows({inter + part.begin, part.size}));
    w.experts_gate_up = {r.place(leading_rows(concat_matrix_rows(gate, up), experts)), {}};
    w.experts_down = {r.place(leading_rows(r.host_tensor(p + "experts.down_proj", {e, hidden, inter}, Cut::cols(part)),
                                           experts)),
                      {}};
  } else {
    std::vector<Linear> gate_ups, downs;
    for (int32_t x : experts) {
      auto [gate_up, down] = host_mlp(r, cat(p, "experts.", x, "."), hidden, inter, part);
      gate_ups.push_back(gate_up);
      downs.push_back(down);
    }
    w.experts_gate_up = r.place(r.stack(gate_ups, true));
    w.experts_down = r.place(r.stack(downs, true));
  }
  if (c.n_shared_experts > 0)
    w.shared = load_mlp(r, p + "shared_experts.", hidden, c.n_shared_experts * inter, d.shared_intermediate);
  return w;
}

DecoderLayerWeights load_layer(const WeightReader& r, const ModelConfig& c, int layer, const TpDims& d) {
  const std::string p = cat("model.layers.", layer, ".");
  DecoderLayerWeights w;
  w.input_norm = r.get(p + "input_layernorm.weight", {c.hidden_size});
  w.post_attention_norm = r.get(p + "post_attention_layernorm.weight", {c.hidden_size});
  w.attn = load_attention(r, c, p + "self_attn.", d);
  if (c.is_moe_layer(layer)) w.moe = load_moe(r, c, p + "mlp.", d);
  else w.mlp = load_mlp(r, p + "mlp.", c.hidden_size, c.intermediate_size, d.intermediate);
  return w;
}

// A vocabulary table [vocab, hidden], this rank's (padded) rows of it.
Tensor load_vocab_table(const WeightReader& r, const ModelConfig& c, const std::string& name, const TpDims& d) {
  return r.get(name, {c.vocab_size, c.hidden_size}, Cut::rows(d.vocab));
}

MtpWeights load_mtp(const WeightReader& r, const ModelConfig& c, int layer, const ModelWeights& main, const TpDims& d) {
  const std::string p = cat("model.layers.", layer, ".");
  const int64_t hidden = c.hidden_size;
  MtpWeights w;
  w.embed = r.has(p + "embed_tokens.weight") ? load_vocab_table(r, c, p + "embed_tokens.weight", d) : main.embed;
  w.enorm = r.get(p + "enorm.weight", {hidden});
  w.hnorm = r.get(p + "hnorm.weight", {hidden});
  w.eh_proj = r.linear(p + "eh_proj.weight", hidden, 2 * hidden);
  w.layer = load_layer(r, c, layer, d);
  w.head_norm = r.get(p + "shared_head.norm.weight", {hidden});
  w.head = r.has(p + "shared_head.head.weight") ? load_vocab_table(r, c, p + "shared_head.head.weight", d)
                                                : main.lm_head;
  return w;
}

// MTP layers count only when the checkpoint carries them (a config may announce them without weights).
int mtp_layers_in(const ModelConfig& c, const Checkpoint& ckpt) {
  int layers = 0;
  while (layers < c.num_nextn_predict_layers &&
         ckpt.find(cat("model.layers.", c.num_hidden_layers + layers, ".eh_proj.weight")))
    ++layers;
  return layers;
}

}  // namespace

Checkpoint open_checkpoint(const std::string& model_dir, const std::string& draft_dir, const ModelConfig& c) {
  Checkpoint checkpoint(model_dir);
  if (draft_dir.empty()) return checkpoint;
  const std::string config_path = (std::filesystem::path(draft_dir) / "config.json").string();
  NW_CHECK(std::filesystem::exists(config_path), draft_dir, ": no config.json (--speculative-draft-model-path names a ",
           "NextN checkpoint: the target's config.json and its MTP layer's weights)");
  const ModelConfig draft = ModelConfig::from_file(config_path);
  const std::pair<const char*, std::pair<int64_t, int64_t>> dims[] = {
      {"hidden_size", {draft.hidden_size, c.hidden_size}},
      {"vocab_size", {draft.vocab_size, c.vocab_size}},
      {"num_hidden_layers", {draft.num_hidden_layers, c.num_hidden_layers}},
      {"num_attention_heads", {draft.num_attention_heads, c.num_attention_heads}},
      {"q_lora_rank", {draft.q_lora_rank.value_or(0), c.q_lora_rank.value_or(0)}},
      {"kv_lora_rank", {draft.kv_lora_rank, c.kv_lora_rank}},
      {"qk_nope_head_dim", {draft.qk_nope_head_dim, c.qk_nope_head_dim}},
      {"qk_rope_head_dim", {draft.qk_rope_head_dim, c.qk_rope_head_dim}},
      {"v_head_dim", {draft.v_head_dim, c.v_head_dim}},
      {"n_routed_experts", {draft.n_routed_experts, c.n_routed_experts}},
      {"num_experts_per_tok", {draft.num_experts_per_tok, c.num_experts_per_tok}},
      {"moe_intermediate_size", {draft.moe_intermediate_size, c.moe_intermediate_size}},
      {"intermediate_size", {draft.intermediate_size, c.intermediate_size}}};
  for (const auto& [field, values] : dims)
    NW_CHECK(values.first == values.second, config_path, ": field '", field, "' is ", values.first, ", the target's (",
             model_dir, ") ", values.second, ": a draft checkpoint must be the served model's own NextN layer");
  const std::string prefix = cat("model.layers.", c.num_hidden_layers, ".");
  const size_t taken = checkpoint.overlay(draft_dir, prefix);
  NW_CHECK(taken > 0 && checkpoint.find(prefix + "eh_proj.weight"), draft_dir, ": no tensor '", prefix,
           "eh_proj.weight' in its *.safetensors (a NextN checkpoint holds the MTP layer under the full model's ",
           "names, model.layers.<num_hidden_layers>.*)");
  return checkpoint;
}

int weight_load_steps(const ModelConfig& c, const Checkpoint& ckpt) {
  return c.num_hidden_layers + mtp_layers_in(c, ckpt) + 1;
}

ModelWeights load_weights(const ModelConfig& c, const Checkpoint& ckpt, Device device, TpSlice slice,
                          ProgressBar* shared_progress) {
  const TpDims d = tp_dims(c, slice);
  WeightReader r(c, ckpt, device, slice.size);
  ModelWeights w;
  const int mtp_layers = mtp_layers_in(c, ckpt);
  if (mtp_layers < c.num_nextn_predict_layers && slice.rank == 0) {
    NW_LOG(Warning) << ckpt.dir() << ": config announces " << c.num_nextn_predict_layers
                    << " MTP layer(s) but the checkpoint has weights for " << mtp_layers
                    << "; running without the missing ones";
  }

  std::optional<ProgressBar> own_progress;
  if (!shared_progress) own_progress.emplace("Loading weights", weight_load_steps(c, ckpt));
  ProgressBar& progress = shared_progress ? *shared_progress : *own_progress;
  w.embed = load_vocab_table(r, c, "model.embed_tokens.weight", d);
  w.final_norm = r.get("model.norm.weight", {c.hidden_size});
  w.lm_head = c.tie_word_embeddings && !r.has("lm_head.weight") ? w.embed : load_vocab_table(r, c, "lm_head.weight", d);
  progress.advance();
  for (int layer = 0; layer < c.num_hidden_layers; ++layer) {
    w.layers.push_back(load_layer(r, c, layer, d));
    progress.advance();
  }
  for (int k = 0; k < mtp_layers; ++k) {
    w.mtp.push_back(load_mtp(r, c, c.num_hidden_layers + k, w, d));
    progress.advance();
  }
  if (own_progress) own_progress->finish();
  return w;
}

}  // namespace narwhal
