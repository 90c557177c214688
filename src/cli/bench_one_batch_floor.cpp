// decode_step_bytes: one GPU's share of every weight, by tp_dims, and what a decode step reads of it.
#include "cli/bench_one_batch_floor.h"

#include <algorithm>
#include <cmath>

#include "model/cuda_weights.h"

namespace narwhal {

namespace {

constexpr int64_t kBlock = 128;

// A [rows, cols] linear as the GPU holds it.
double linear_bytes(int64_t rows, int64_t cols, bool fp8) {
  const double elements = static_cast<double>(rows) * static_cast<double>(cols);
  if (!fp8) return 2 * elements;
  return elements + 4 * static_cast<double>(((rows + kBlock - 1) / kBlock) * ((cols + kBlock - 1) / kBlock));
}

// A gated MLP of intermediate width `inter`: gate and up [inter, hidden], down [hidden, inter].
double mlp_bytes(int64_t hidden, int64_t inter, bool fp8) {
  return 2 * linear_bytes(inter, hidden, fp8) + linear_bytes(hidden, inter, fp8);
}

}  // namespace

DecodeStepBytes decode_step_bytes(const ModelConfig& c, const TpSlice& slice, int64_t batch, int64_t context) {
  const TpDims d = tp_dims(c, slice);
  const bool fp8 = c.fp8.has_value() && fp8_kernels_fit(c);
  const int64_t h = c.hidden_size, heads = d.heads.size;
  const auto vector = [](int64_t n) { return 2.0 * static_cast<double>(n); };  // BF16 norm weights, embedding rows

  double attention = 2 * vector(h) + linear_bytes(c.kv_cache_dim(), h, fp8) + vector(c.kv_lora_rank) +
                     linear_bytes(heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank, fp8) +
                     linear_bytes(h, heads * c.v_head_dim, fp8);
  if (c.q_lora_rank)
    attention += linear_bytes(*c.q_lora_rank, h, fp8) + vector(*c.q_lora_rank) +
                 linear_bytes(heads * c.qk_head_dim(), *c.q_lora_rank, fp8);
  else
    attention += linear_bytes(heads * c.qk_head_dim(), h, fp8);
  const double experts = c.n_routed_experts, k = c.num_experts_per_tok;
  const double tokens = static_cast<double>(batch) * slice.dp_size;  // every DP group's meet in the MoE
  const double router = experts * vector(h) + (c.topk_method == TopkMethod::kNoauxTc ? 4 * experts : 0);
  const double shared = d.shared_intermediate.size > 0 ? mlp_bytes(h, d.shared_intermediate.size, fp8) : 0;
  const double mine = static_cast<double>(d.routed_experts.size());
  const double picked = experts > 0 ? mine * (1 - std::pow(1 - k / experts, tokens)) : 0;
  DecodeStepBytes s;
  for (int layer = 0; layer < c.num_hidden_layers; ++layer) {
    s.weights += attention;
    if (c.is_moe_layer(layer)) {
      s.weights += router + shared;
      s.experts += picked * mlp_bytes(h, d.moe_intermediate.size, fp8);
    } else {
      s.weights += mlp_bytes(h, d.intermediate.size, fp8);
    }
  }
  const double vocab_rows = static_cast<double>(d.vocab.size);
  s.weights += vector(h) * (1 + vocab_rows);  // the final norm and this rank's lm_head rows
  if (!c.tie_word_embeddings) s.weights += vector(h) * std::min(static_cast<double>(batch), vocab_rows);
  s.kv = vector(c.kv_cache_dim()) * static_cast<double>(batch) * static_cast<double>(context) * c.num_hidden_layers;
  return s;
}

}  // namespace narwhal
