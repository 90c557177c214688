// Memory-bound ops of the GPU forward: embedding, residual add + RMSNorm, RoPE + latent cache store,
// SiLU-and-mul, greedy choice, the join of vocab-parallel logits, BF16 <-> F32. BF16 activations, FP32 statistics
// and residual stream.
#pragma once

#include <cuda_runtime.h>

#include "core/tensor.h"

namespace narwhal::ops::cuda {

// out[t, :] = table[ids[t] - first_id, :] as FP32 (the residual stream), or zeros where ids[t] is outside
// [first_id, first_id + V): a vocab-parallel rank's rows (first_id 0 and the whole table without TP).
// ids [T] I32, table [V, H] BF16, out [T, H] F32. The CPU twin is ops::embedding.
void embedding(const Tensor& ids, const Tensor& table, Tensor& out, cudaStream_t stream, int64_t first_id = 0);

// residual += delta (when delta is defined); out = rms_norm(residual) * weight.
// residual [T, H] F32 (updated in place), delta [T, H] BF16 or undefined, weight [H] BF16, out [T, H] BF16;
// H a multiple of 8 up to 32768 (every DeepSeek hidden size). `out_f32` [T, H] F32, when given, gets the same
// values unrounded: the MoE router's input, whose scores stay FP32 (a BF16 input moves near-tied scores).
void add_rms_norm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps, Tensor& out,
                  cudaStream_t stream, Tensor* out_f32 = nullptr);

// In place on BF16 rows of width `n` that lie `row_stride` elements apart (q_a, or the latent part of kv_a's
// output): x = rms_norm(x) * weight, statistics in FP32.
void rms_norm_rows(void* x, int64_t rows, int64_t n, int64_t row_stride, const Tensor& weight, float eps,
                   cudaStream_t stream);

struct RopeTable {
  Tensor inv_freq;  // [rope_dim / 2] F32 on the device
  float scaling = 1.0f;
  bool interleave = true;
};

// One MLA step's RoPE and latent-cache write, fused. kv is kv_a's output [T, kv_lora + rope] BF16 (compressed
// kv, then k_pe): each token's latent, the first part RMS-normalised with kv_norm and k_pe rotated, goes to the
// paged cache [pages, page_size, kv_lora + rope] at row slots[t] (= page * page_size + offset; -1 skips). q's
// rope slice (q [T, H, nope + rope] BF16, rope last) is rotated into q_pe_out[t, h, q_pe_col:]: q itself
// (q_pe_col = nope) or the absorbed query's tail. kv itself is not changed.
void mla_rope_and_store(const Tensor& q, int64_t nope_dim, const Tensor& kv, const Tensor& kv_norm, float eps,
                        const Tensor& positions, const Tensor& slots, const RopeTable& rope, Tensor& cache,
                        Tensor& q_pe_out, int64_t q_pe_col, cudaStream_t stream);

// out[M, I] = silu(gate_up[:, :I]) * gate_up[:, I:], BF16.
void silu_and_mul(const Tensor& gate_up, Tensor& out, cudaStream_t stream);

// out[i, :] = x[rows[i], :] (BF16 rows of width x.size(1)); e.g. each sequence's last token before lm_head.
void gather_rows(const Tensor& x, const Tensor& rows, Tensor& out, cudaStream_t stream);

// In each layer block of x ([L, R * width] BF16: L blocks of R rows of `width`, a multiple of 8), row moves[i, 1] =
// row moves[i, 0] for i = 0, 1, ... in order, so a move reads what earlier ones wrote (moves [n, 2] I64 on the
// device): a tree verify's kept path moved into its chain's slots in every layer's latent cache, as
// KvCache::keep_tree_path does on the CPU.
void move_rows(Tensor& x, int64_t width, const Tensor& moves, cudaStream_t stream);

// dst[r, dst_col : dst_col + width] = src[r, src_col : src_col + width] for every row r of src (BF16 [R, *] both,
// dst of at least R rows), one strided copy on the stream: a column slice out of a wider row (the latent part of
// the cache's rows) or into one (the MTP layer's concatenated input).
void copy_columns(Tensor& dst, int64_t dst_col, const Tensor& src, int64_t src_col, int64_t width,
                  cudaStream_t stream);

// out = float(x), elementwise (BF16 -> F32), for logits and router scores.
void bf16_to_f32(const Tensor& x, Tensor& out, cudaStream_t stream);

// out = bf16(x), elementwise (F32 -> BF16, round to nearest even: add_rms_norm's rounding, so the BF16 of its out_f32
// is its `out`), for DP attention's gathered rows. The CPU twin is float_to_bf16 (core/dtype.h).
void f32_to_bf16(const Tensor& x, Tensor& out, cudaStream_t stream);

// out [B, V] = `parts` ranks' vocabulary shards as all_gather stacks them, shards [parts * B, per_rank] F32 (rank r's
// rows r * B ..) into columns r * per_rank .. of out; the last rank's columns past V are dropped. The CPU twin is
// ops::join_vocab_shards.
void join_vocab_shards(const Tensor& shards, int64_t parts, Tensor& out, cudaStream_t stream);

// ids[b] = argmax(logits[b, :]) (lowest index on ties). logits [B, V] F32, ids [B] I32.
void argmax(const Tensor& logits, Tensor& ids, cudaStream_t stream);

}  // namespace narwhal::ops::cuda
