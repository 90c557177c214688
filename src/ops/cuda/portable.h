// Portable GPU ops for any head/expert shape (the tuned MLA and MoE kernels are built for DeepSeek's real
// dims), the FP32 router product, and random weight fills for dummy (benchmark) models.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/tensor.h"

namespace narwhal::ops::cuda {

// One attention operand: element d of key/value row k, head h at data + k * row_stride + h * head_stride + d
// (BF16). head_stride 0 = shared by every head (the latent cache rows of MQA-style absorbed attention).
struct HeadOperand {
  const void* data = nullptr;
  int64_t row_stride = 0;
  int64_t head_stride = 0;
};

// Causal ragged attention with keys split in two parts: score(i, k) = scale * (q[i, h, 0:a_len] . key_a[k, h] +
// q[i, h, a_len:a_len+b_len] . key_b[k, h]), out[i, h, 0:v_len] = softmax . value[k, h]. Query row i of
// sequence b (cu_seqlens_q) sees keys cu_seqlens_k[b] .. + prefix_b + i, prefix_b = seqlen_k_b - seqlen_q_b; with
// tree_parents (I32, one per row of q: row i's parent among its sequence's new tokens, earlier, -1 a root; at most 32
// new tokens a sequence) only the prefix, its ancestors and itself. Undefined tree_parents: causal.
// Covers both MLA forms at any dims: decompressed (key_a = kv's nope part, key_b = gathered k_pe, value = kv's
// v part) and absorbed (key_a = gathered latents, key_b = their rope part, value = latents). q [T, H, >= a+b]
// BF16 with row stride q.size(1) * q.size(2); out [T, H, v_len] BF16. Any number of keys (an online softmax over
// chunks of 1024), v_len <= 1024, a_len + b_len <= 8192. Simple and slow: for shapes the tuned kernels do not take.
void mla_attention_portable(const Tensor& q, int64_t a_len, int64_t b_len, const HeadOperand& key_a,
                            const HeadOperand& key_b, const HeadOperand& value, int64_t v_len,
                            const Tensor& cu_seqlens_q, const Tensor& cu_seqlens_k, int64_t max_seqlen_q,
                            const Tensor& tree_parents, float softmax_scale, Tensor& out, cudaStream_t stream);

// logits[T, E] (F32) = x[T, H] (F32, or BF16) w[E, H]^T (BF16), FP32 accumulation: the router's scores stay
// FP32. H % 8 == 0.
void router_logits_f32(const Tensor& x, const Tensor& w, Tensor& logits, cudaStream_t stream);

// out[t] = sum_j topk_weights[t, j] * expert_out[topk_ids[t, j], t] + sum_s expert_out[num_routed + s, t]:
// combines per-expert outputs expert_out [num_routed + num_shared, T, H] BF16 computed densely (the portable
// MoE path), out [T, H] BF16.
void moe_combine_dense(const Tensor& expert_out, const Tensor& topk_ids, const Tensor& topk_weights,
                       int num_routed, int num_shared, Tensor& out, cudaStream_t stream);

// Fills a device BF16/F32 tensor with uniform values of mean 0 and standard deviation `std` (hash of seed and
// index: reproducible, no state), or an F8E4M3 tensor with uniform values in [-range, range].
void fill_random(Tensor& t, uint64_t seed, float std, cudaStream_t stream);
void fill_random_fp8(Tensor& t, uint64_t seed, float range, cudaStream_t stream);
// Fills a device F32 or BF16 tensor with `value`.
void fill_constant(Tensor& t, float value, cudaStream_t stream);

}  // namespace narwhal::ops::cuda
