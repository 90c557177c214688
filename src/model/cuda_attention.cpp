// CudaModel's MLA: projections, RoPE + latent store, then the absorbed (decode) or decompressed (prefill) form,
// per part in a mixed step.
#include "core/cuda_check.h"
#include "core/error.h"
#include "model/cuda_model.h"
#include "ops/cuda/mla.h"
#include "ops/cuda/portable.h"

namespace narwhal {

namespace {

char* at(const Tensor& t, int64_t elements) {
  return static_cast<char*>(t.data) + elements * static_cast<int64_t>(dtype_size(t.dtype));
}

}  // namespace

void CudaModel::attention(const CudaLayerWeights& lw, const CudaStep& step, const Tensor& cache,
                          cudaStream_t stream) {
  const CudaAttentionWeights& w = lw.attn;
  const int64_t t = step.num_tokens, heads = local_.num_attention_heads, qk = local_.qk_head_dim();
  const int64_t width = local_.kv_cache_dim();
  const float eps = static_cast<float>(local_.rms_norm_eps);
  const Tensor x = buffer(kNormed, DType::kBF16, {t, local_.hidden_size});
  Tensor q = buffer(kQ, DType::kBF16, {t, heads * qk});
  if (local_.q_lora_rank) {
    Tensor q_a = buffer(kQa, DType::kBF16, {t, *local_.q_lora_rank});
    linear(x, w.q_a_proj, q_a, stream);
    ops::cuda::rms_norm_rows(q_a.data, t, q_a.size(1), q_a.size(1), w.q_a_norm, eps, stream);
    linear(q_a, w.q_b_proj, q, stream);
  } else {
    linear(x, w.q_proj, q, stream);
  }
  Tensor latent = buffer(kLatent, DType::kBF16, {t, width});
  linear(x, w.kv_a_proj, latent, stream);
  Tensor q3 = q.reshape({t, heads, qk});
  Tensor out = buffer(kAttnOut, DType::kBF16, {t, heads, local_.v_head_dim});
  if (step.parts.empty()) {
    attend(w, step, cache, q3, latent, out, stream);
  } else {
    for (const CudaStep& part : step.parts) {
      const int64_t begin = part.first_token, end = begin + part.num_tokens;
      attend(w, part, cache, q3.rows(begin, end), latent.rows(begin, end), out.rows(begin, end), stream);
    }
  }
  Tensor delta = buffer(kDelta, DType::kBF16, {t, local_.hidden_size});
  linear(out.reshape({t, heads * local_.v_head_dim}), w.o_proj, delta, stream);
}

// kv_a's output is [compressed kv | k_pe]: one kernel normalises the first part, rotates k_pe and q_pe, and
// stores each token's latent in its cache slot. The absorbed form takes q_pe straight into the tail of its
// kv_lora + rope wide query; the decompressed form rotates q in place.
void CudaModel::attend(const CudaAttentionWeights& w, const CudaStep& step, const Tensor& cache, Tensor q,
                       const Tensor& latent, Tensor out, cudaStream_t stream) {
  const int64_t t = step.num_tokens, heads = local_.num_attention_heads, width = local_.kv_cache_dim();
  Tensor q_abs = step.absorbed ? buffer(kQAbsorbed, DType::kBF16, {t, heads, width}) : Tensor();
  Tensor cache_pages = cache;
  const int64_t nope = local_.qk_nope_head_dim, kv_lora = local_.kv_lora_rank;
  ops::cuda::mla_rope_and_store(q, nope, latent, w.kv_a_norm, static_cast<float>(local_.rms_norm_eps),
                                step.positions, step.slots, rope_, cache_pages, step.absorbed ? q_abs : q,
                                step.absorbed ? kv_lora : nope, stream);
  if (step.absorbed) attend_absorbed(w, step, cache, q, q_abs, out, stream);
  else attend_decompressed(w, step, cache, q, out, stream);
}

Tensor CudaModel::gather_keys(const CudaStep& step, const Tensor& cache, cudaStream_t stream) {
  Tensor gathered = buffer(kGathered, DType::kBF16, {step.total_keys, local_.kv_cache_dim()});
  ops::cuda::mla_gather_latents(cache, step.page_table, step.cu_seqlens_k, step.max_seqlen_k, gathered, stream);
  return gathered;
}

// q_abs[:, :, :kv_lora] = q_nope W_UK per head (its rope tail is already there), attention over the 576-wide
// latents (MQA), then W_UV maps the 512-wide result.
void CudaModel::attend_absorbed(const CudaAttentionWeights& w, const CudaStep& step, const Tensor& cache,
                                const Tensor& q, Tensor& q_abs, Tensor& out, cudaStream_t stream) {
  const int64_t t = step.num_tokens, heads = local_.num_attention_heads, nope = local_.qk_nope_head_dim;
  const int64_t rope = local_.qk_rope_head_dim, kv_lora = local_.kv_lora_rank, width = kv_lora + rope;
  const int64_t v = local_.v_head_dim;
  const ops::cuda::MatrixBatch q_nope = ops::cuda::head_slices(q, 0, nope);
  if (w.kv_b_fp8)
    gemm_.bmm_fp8(q_nope, w.kv_b_fp8->w_uk_t, ops::cuda::head_slices(q_abs, 0, kv_lora), stream);
  else
    gemm_.bmm_bf16(q_nope, ops::cuda::row_groups(w.w_uk_t_bf16.reshape({heads * kv_lora, nope}), heads, 0, kv_lora),
                   true, ops::cuda::head_slices(q_abs, 0, kv_lora), stream);

  Tensor latent_out = buffer(kAttnLatent, DType::kBF16, {t, heads, kv_lora});
  const float scale = static_cast<float>(local_.softmax_scale());
  const int64_t most = ops::cuda::kMlaDecodeMaxQLen;
  NW_CHECK(step.q_len >= 1 && step.q_len <= most, "CudaModel: an absorbed step of ", step.q_len,
           " tokens per sequence (the decode kernel takes 1 to ", most, ")");
  if (fast_attention_ && step.num_tokens == step.num_seqs * step.q_len) {
    ops::cuda::MlaDecodeParams p;
    p.heads = heads;
    p.q_len = step.q_len;
    p.kv_lora = kv_lora;
    p.rope_dim = rope;
    p.softmax_scale = scale;
    p.page_size = page_size_;
    const size_t bytes = ops::cuda::mla_decode_workspace_bytes(step.num_seqs, p, num_sms_);
    Tensor ws = buffer(kDecodeWorkspace, DType::kI32, {static_cast<int64_t>(bytes / 4 + 1)});
    ops::cuda::mla_decode(q_abs, cache, step.page_table, step.seq_lens, step.tree_parents, p, latent_out, ws.data,
                          ws.nbytes(), stream);
  } else {
    Tensor keys = gather_keys(step, cache, stream);
    const ops::cuda::HeadOperand latents{keys.data, width, 0}, k_pe{at(keys, kv_lora), width, 0};
    ops::cuda::mla_attention_portable(q_abs, kv_lora, rope, latents, k_pe, latents, kv_lora, step.cu_seqlens_q,
                                      step.cu_seqlens_k, step.max_seqlen_q, step.tree_parents, scale,
                                      latent_out, stream);
  }
  const ops::cuda::MatrixBatch attn = ops::cuda::head_slices(latent_out, 0, kv_lora);
  if (w.kv_b_fp8)
    gemm_.bmm_fp8(attn, w.kv_b_fp8->w_uv, ops::cuda::head_slices(out, 0, v), stream);
  else
    gemm_.bmm_bf16(attn, ops::cuda::row_groups(w.kv_b_bf16, heads, nope, v), true, ops::cuda::head_slices(out, 0, v),
                   stream);
}

// Keys and values decompressed from every cached + new latent with kv_b_proj, then causal attention.
void CudaModel::attend_decompressed(const CudaAttentionWeights& w, const CudaStep& step, const Tensor& cache,
                                    const Tensor& q, Tensor& out, cudaStream_t stream) {
  const int64_t s = step.total_keys, heads = local_.num_attention_heads, nope = local_.qk_nope_head_dim;
  const int64_t rope = local_.qk_rope_head_dim, kv_lora = local_.kv_lora_rank, width = kv_lora + rope;
  const int64_t v = local_.v_head_dim;
  NW_CHECK(!step.tree_parents.defined(), "CudaModel: a speculative draft tree runs in the absorbed form only (a step "
           "that cannot split its decoding sequences from its prompt chunks)");
  Tensor keys = gather_keys(step, cache, stream);
  Tensor latent_rows = buffer(kLatentRows, DType::kBF16, {s, kv_lora});
  ops::cuda::copy_columns(latent_rows, 0, keys, 0, kv_lora, stream);
  Tensor kv = buffer(kKv, DType::kBF16, {s, heads * (nope + v)});
  linear(latent_rows, w.kv_b_proj, kv, stream);
  const float scale = static_cast<float>(local_.softmax_scale());
  if (fast_attention_) {
    ops::cuda::mla_prefill_attention(q, kv.reshape({s, heads, nope + v}), keys, step.cu_seqlens_q, step.cu_seqlens_k,
                                     step.max_seqlen_q, scale, out, stream);
    return;
  }
  const ops::cuda::HeadOperand k_nope{kv.data, heads * (nope + v), nope + v}, k_pe{at(keys, kv_lora), width, 0};
  const ops::cuda::HeadOperand values{at(kv, nope), heads * (nope + v), nope + v};
  ops::cuda::mla_attention_portable(q, nope, rope, k_nope, k_pe, values, v, step.cu_seqlens_q, step.cu_seqlens_k,
                                    step.max_seqlen_q, Tensor{}, scale, out, stream);
}

}  // namespace narwhal
