// The model's weights after load, in the layouts the ops want: float32 on the CPU backend; on the GPU,
// BF16, with FP8 block-quantized linears kept in FP8 beside their scales.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/model_config.h"
#include "model/tensor_parallel.h"

namespace narwhal {

class Checkpoint;
class ProgressBar;

// A linear layer's weight [out, in] (nn.Linear layout; or [E, out, in] for stacked experts), and its
// 128x128 block scales `scale_inv` [ceil(out/128), ceil(in/128)] when the weight stays FP8 (GPU only).
struct Linear {
  Tensor weight;
  Tensor scale_inv;
  bool fp8() const { return scale_inv.defined(); }
};

struct AttentionWeights {
  Linear q_proj;        // [H * qk_head_dim, hidden] when q_lora_rank is null
  Linear q_a_proj;      // [q_lora, hidden]
  Tensor q_a_norm;      // [q_lora]
  Linear q_b_proj;      // [H * qk_head_dim, q_lora]
  Linear kv_a_proj;     // [kv_lora + rope, hidden]
  Tensor kv_a_norm;     // [kv_lora]
  Linear kv_b_proj;     // [H * (nope + v), kv_lora]: per head W_UK rows then W_UV rows
  Linear o_proj;        // [hidden, H * v]
};

struct MlpWeights {
  Linear gate_up;  // [2I, hidden]: gate_proj rows then up_proj rows, fused at load
  Linear down;     // [hidden, I]
};

struct MoeWeights {
  Tensor router;                 // [E, hidden]
  Tensor correction_bias;        // [E], noaux_tc only
  Linear experts_gate_up;        // [E, 2I, hidden]
  Linear experts_down;           // [E, hidden, I]
  std::optional<MlpWeights> shared;
};

struct DecoderLayerWeights {
  Tensor input_norm;
  Tensor post_attention_norm;
  AttentionWeights attn;
  std::optional<MlpWeights> mlp;  // dense layers
  std::optional<MoeWeights> moe;  // MoE layers
};

// DeepSeek-V3's multi-token-prediction module (one per num_nextn_predict_layers).
struct MtpWeights {
  Tensor embed;      // its own embed_tokens, or the main model's when the checkpoint has none
  Tensor enorm, hnorm;
  Linear eh_proj;    // [hidden, 2 * hidden]: input is [enorm(embedding) ; hnorm(hidden)]
  DecoderLayerWeights layer;
  Tensor head_norm;  // shared_head.norm
  Tensor head;       // shared_head.head, or the main lm_head when absent
};

struct ModelWeights {
  Tensor embed;      // [vocab, hidden]
  std::vector<DecoderLayerWeights> layers;
  Tensor final_norm;
  Tensor lm_head;    // [vocab, hidden]
  std::vector<MtpWeights> mtp;  // empty when the checkpoint has no MTP weights
};

// Reads every tensor the config needs from the checkpoint, checking names and shapes, fusing/stacking into
// the layouts above, and placing them on `device`: the CPU gets float32 (FP8 dequantized), the GPU BF16
// (FP8 kept). A TP rank (`slice`) reads only its part of each split tensor (tensor_parallel.h says which), straight
// from the mapped shards, so its shapes are local_config's and its vocabulary rows TpDims::vocab. Shows a
// progress bar on stderr, or advances `progress` (shared by the ranks of a process) by weight_load_steps.
ModelWeights load_weights(const ModelConfig& config, const Checkpoint& checkpoint, Device device = Device::kCPU,
                          TpSlice slice = {}, ProgressBar* progress = nullptr);
// The checkpoint load_weights reads: `model_dir`'s, and with a separate draft checkpoint (--speculative-draft-model-
// path: SGLang's NextN export, the MTP layer under its full-model names model.layers.<num_hidden_layers>.*) that
// layer's tensors taken from `draft_dir` instead. The draft's config.json must give the target's dims (its field and
// both values are named otherwise) and it must hold the layer (eh_proj named when not).
Checkpoint open_checkpoint(const std::string& model_dir, const std::string& draft_dir, const ModelConfig& config);

// How far load_weights advances a progress bar: one step for the embeddings and head, one per layer (MTP
// layers included when the checkpoint has them).
int weight_load_steps(const ModelConfig& config, const Checkpoint& checkpoint);

}  // namespace narwhal
