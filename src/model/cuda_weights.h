// The GPU forward's weights, converted once at load into the layouts its kernels want: BF16 or FP8
// block-scaled linears, W_UK / W_UV for absorbed MLA, experts with the shared experts folded in.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/tensor_parallel.h"
#include "model/weights.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/moe.h"

namespace narwhal {

// A linear in nn.Linear layout [out, in]: BF16, or FP8 with 128x128 block scales.
struct CudaLinear {
  Tensor bf16;
  ops::cuda::Fp8BlockWeight fp8;
  bool is_fp8() const { return fp8.q.defined(); }
  int64_t out_features() const { return is_fp8() ? fp8.q.size(0) : bf16.size(0); }
};

struct CudaAttentionWeights {
  CudaLinear q_proj, q_a_proj, q_b_proj, kv_a_proj, kv_b_proj, o_proj;
  Tensor q_a_norm, kv_a_norm;
  // Absorbed form: kv_b_proj's W_UK / W_UV as BF16 row groups of `kv_b_bf16` [H * (nope + v), kv_lora], or
  // (FP8 checkpoints) split and re-blocked per head.
  Tensor kv_b_bf16;
  Tensor w_uk_t_bf16;  // BF16 checkpoints: W_UK transposed per head [H, kv_lora, nope] (ops::cuda::transpose_w_uk_bf16)
  std::optional<ops::cuda::MlaFp8Weights> kv_b_fp8;
};

struct CudaMlpWeights {
  CudaLinear gate_up, down;
};

struct CudaMoeWeights {
  Tensor router;           // [E, hidden] BF16; its product runs in FP32
  Tensor correction_bias;  // [E] F32, noaux_tc only
  ops::cuda::MoeExpertWeights experts;
};

struct CudaLayerWeights {
  Tensor input_norm, post_attention_norm;
  CudaAttentionWeights attn;
  std::optional<CudaMlpWeights> mlp;
  std::optional<CudaMoeWeights> moe;
};

// The first multi-token-prediction layer (speculative decoding's draft model): DeepSeekModel::forward_mtp's weights in
// the kernels' layouts. embed and head are the main model's tensors where the checkpoint shares them.
struct CudaMtpWeights {
  Tensor embed, enorm, hnorm;
  CudaLinear eh_proj;  // [hidden, 2 * hidden]: input [enorm(embedding) ; hnorm(hidden)]
  CudaLayerWeights layer;
  Tensor head_norm, head;
};

struct CudaModelWeights {
  Tensor embed, final_norm, lm_head;
  std::vector<CudaLayerWeights> layers;
  std::optional<CudaMtpWeights> mtp;  // only when asked for (speculative decoding)
  int64_t bytes = 0;  // device bytes of everything above
};

// Whether FP8 linears can stay FP8 on the GPU: every fused or split dim a whole number of 128-blocks and
// DeepSeek's head dims (nope = v = 128). Otherwise FP8 checkpoints are dequantized to BF16 at load. Decided on the
// whole config: a TP split that then cuts a block is refused by the loader (read_fp8), as SGLang refuses it.
bool fp8_kernels_fit(const ModelConfig& config);

// Reads a checkpoint straight into device weights: TP rank `slice`'s part of them (see load_weights), advancing
// `progress` when given. MTP layers are dropped, except the first when `mtp` (it must then be in the checkpoint).
CudaModelWeights load_cuda_weights(const ModelConfig& config, const Checkpoint& checkpoint, TpSlice slice = {},
                                   ProgressBar* progress = nullptr, bool mtp = false);

// Random weights generated on the GPU from the config alone (SGLang's --load-format dummy), TP rank `slice`'s part:
// BF16, or FP8 with block scales when the config is FP8 and fp8_kernels_fit the rank's dims. std 1/sqrt(fan_in),
// norms 1. Replicated tensors get the same values on every rank, split ones each rank's own (with DP attention,
// attention's and the vocabulary's are its place's in its DP group, so every group holds the same model). With `mtp`
// an MTP layer too (layer num_hidden_layers' shapes, its own embed and head), whether or not config.json announces
// one, so that speculative decoding can be timed at any model's shapes.
CudaModelWeights dummy_cuda_weights(const ModelConfig& config, uint64_t seed, TpSlice slice = {}, bool mtp = false);

// Converts device weights in the loader's layout (weights.h, Device::kCUDA) into the kernel layouts; `config` is
// the one the weights' shapes follow (a TP rank's local_config).
CudaModelWeights convert_cuda_weights(const ModelConfig& config, ModelWeights weights);

}  // namespace narwhal
