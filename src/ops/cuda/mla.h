// Multi-head Latent Attention on the GPU: prefill (non-absorbed form) and decode (absorbed form) kernels.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/tensor.h"

namespace narwhal::ops::cuda {

// ---- MLA prefill, non-absorbed form (mla_gather.cu, mla_prefill.cu) ----
// Step: gather the latents of every key (prefix + new) -> decompress them with kv_b_proj (the caller's GEMM:
// kv = latents[:, :kv_lora] x kv_b^T, BF16 out) -> mla_prefill_attention. Ragged batches are described by
// device I32 prefix sums: sequence b's new tokens are rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]-1 of q and
// out, its keys rows cu_seqlens_k[b] .. cu_seqlens_k[b+1]-1 of the gathered latents and kv. Its prefix length
// is implied: prefix_b = seqlen_k_b - seqlen_q_b (keys are the cached prefix followed by the new tokens).
// Grids come from host-known bounds (max_seqlen_*), never from device reads: CUDA-graph safe, no sync.

// out[cu_seqlens_k[b] + p, :] = cache[page_table[b, p / page_size], p % page_size, :] for p < seqlen_k_b.
// cache [num_pages, page_size, width] BF16 (width = kv_lora + rope, a multiple of 8), page_table [B, max_pages]
// I32, cu_seqlens_k [B + 1] I32, out [>= S_total, width] BF16; max_seqlen_k >= every seqlen_k_b.
void mla_gather_latents(const Tensor& cache, const Tensor& page_table, const Tensor& cu_seqlens_k,
                        int64_t max_seqlen_k, Tensor& out, cudaStream_t stream);

// Causal attention of each sequence's new tokens over its keys, DeepSeek head dims (nope 128, rope 64, v 128):
// query row i of sequence b (position prefix_b + i) attends keys 0 .. prefix_b + i with
//   key = [kv[k, h, 0:128] | latents[k, width-64 : width]] (k_pe shared by the heads), value = kv[k, h, 128:256].
// q [T, H, 192] BF16 (rope slice rotated), kv [S_total, H, 256] BF16, latents [S_total, width] BF16 (the
// gathered buffer), cu_seqlens_q / cu_seqlens_k [B + 1] I32, out [T, H, 128] BF16; max_seqlen_q >= every
// seqlen_q_b. No workspace. Rows of q not covered by cu_seqlens_q are not written.
void mla_prefill_attention(const Tensor& q, const Tensor& kv, const Tensor& latents, const Tensor& cu_seqlens_q,
                           const Tensor& cu_seqlens_k, int64_t max_seqlen_q, float softmax_scale, Tensor& out,
                           cudaStream_t stream);
// ---- end MLA prefill ----

// ---- MLA decode, absorbed form (mla_decode.cu) ----
// Each query head's q = [q_nope W_UK | q_pe] (576 wide) attends, as one MQA, over the paged latent cache:
// keys are the whole 576-wide entries, values their first 512; the output is the 512-wide latent that W_UV
// maps afterwards. Built for DeepSeek's kv_lora 512 + rope 64.
// The most new tokens per sequence mla_decode takes (a speculative verify's pending token and up to 7 drafts): what
// mla_decode_test checks (q_len 1, 2, 4, 5 and 8); the kernel's row blocks would take more, untested.
constexpr int64_t kMlaDecodeMaxQLen = 8;

struct MlaDecodeParams {
  int64_t heads = 0;
  int64_t q_len = 1;  // new tokens per sequence (1, or 2..kMlaDecodeMaxQLen for a verify), causal or a tree
  int64_t kv_lora = 512;
  int64_t rope_dim = 64;
  float softmax_scale = 1.0f;
  int64_t page_size = 64;  // a power of two >= 16
};

// Bytes of workspace mla_decode needs (FP32 partial outputs of the split KV). Depends on batch, heads, q_len
// and the device's SM count only, so a CUDA graph can be captured once for a batch size.
size_t mla_decode_workspace_bytes(int64_t batch, const MlaDecodeParams& params, int num_sms);

// q [batch * q_len, heads, 576] BF16 (row b * q_len + t: token t of sequence b); cache [num_pages, page_size,
// 576] BF16; page_table [batch, max_pages] I32 and seq_lens [batch] I32 on the device (seq_lens count the
// keys including the new tokens, already in the cache); out [batch * q_len, heads, 512] BF16. Token t of
// sequence b sees keys 0 .. seq_lens[b] - q_len - 1 (the prefix) and, among the new tokens, every one up to itself
// (causal; tree_parents undefined) or, with a speculative tree (tree_parents [batch * q_len] I32: new token t's parent
// among its sequence's new tokens, earlier, -1 a root), itself and its ancestors. A sequence of length 0 (batch
// padding) gets zeros. Page-table entries past a sequence's last page are never read. workspace:
// mla_decode_workspace_bytes(batch, params, SMs of the current device). No host sync, grid independent of seq_lens:
// CUDA-graph safe.
void mla_decode(const Tensor& q, const Tensor& cache, const Tensor& page_table, const Tensor& seq_lens,
                const Tensor& tree_parents, const MlaDecodeParams& params, Tensor& out, void* workspace,
                size_t workspace_bytes, cudaStream_t stream);
// ---- end MLA decode ----

}  // namespace narwhal::ops::cuda
