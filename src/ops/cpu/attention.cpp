// CPU MLA over the paged latent cache: the decompressed (prefill) and absorbed (decode) forms.
#include "ops/attention.h"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"
#include "ops/linear.h"

namespace narwhal::ops {

namespace {

// Copies a sequence's cached [kv_lora + rope] rows, positions 0..len-1, into one contiguous buffer.
std::vector<float> gather_latents(const LatentCache& cache, const MlaSequence& seq, int64_t len) {
  const int64_t width = cache.pages.size(2);
  std::vector<float> rows(static_cast<size_t>(len * width));
  for (int64_t p = 0; p < len; ++p) std::memcpy(&rows[p * width], cache.token(seq.page_table, p), width * sizeof(float));
  return rows;
}

// A tree's visibility among its new tokens (MlaSequence::parents), [new_len, new_len]: row j sees its ancestors and
// itself. Empty for a causal run. The same for every head, so made once per sequence.
std::vector<char> tree_mask(const MlaSequence& seq) {
  if (!seq.parents) return {};
  const size_t n = static_cast<size_t>(seq.new_len);
  std::vector<char> mask(n * n, 0);
  for (int64_t j = 0; j < seq.new_len; ++j)
    for (int64_t k = j; k >= 0; k = seq.parents[k]) {
      NW_CHECK(seq.parents[k] < k, "mla attention: tree parent ", seq.parents[k], " of new token ", k,
               " must come before it");
      mask[static_cast<size_t>(j) * n + static_cast<size_t>(k)] = 1;
    }
  return mask;
}

// Softmax in place over scores [new_len, total] of `seq`'s rows: row j sees the prefix and new tokens 0..j
// (causal), or with a tree (`mask`, tree_mask's) the prefix, its ancestors and itself; the keys it does not see get
// 0. Visible keys are summed in key order, so a tree's row adds what the chain of its path would.
void masked_softmax(float* scores, const MlaSequence& seq, int64_t total, const std::vector<char>& mask) {
  const bool tree = !mask.empty();
  for (int64_t j = 0; j < seq.new_len; ++j) {
    float* row = scores + j * total;
    const char* seen = tree ? mask.data() + j * seq.new_len : nullptr;
    const auto visible = [&](int64_t c) { return !tree || c < seq.prefix_len || seen[c - seq.prefix_len]; };
    const int64_t end = tree ? total : seq.prefix_len + j + 1;  // causal: keys past `end` are never seen
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < end; ++c)
      if (visible(c)) mx = std::max(mx, row[c]);
    float sum = 0.0f;
    for (int64_t c = 0; c < end; ++c) sum += (row[c] = visible(c) ? std::exp(row[c] - mx) : 0.0f);
    for (int64_t c = 0; c < end; ++c) row[c] /= sum;
    for (int64_t c = end; c < total; ++c) row[c] = 0.0f;
  }
}

void check_shapes(const Tensor& q, const Tensor& kv_b, const LatentCache& cache, const MlaShape& s, const Tensor& out) {
  NW_CHECK(q.ndim() == 3 && q.size(1) == s.heads && q.size(2) == s.nope_dim + s.rope_dim && kv_b.ndim() == 2 &&
               kv_b.size(0) == s.heads * (s.nope_dim + s.v_dim) && kv_b.size(1) == s.kv_lora &&
               cache.pages.size(2) == s.kv_lora + s.rope_dim && out.ndim() == 3 && out.size(0) == q.size(0) &&
               out.size(1) == s.heads && out.size(2) == s.v_dim,
           "mla attention: shapes q", q.shape_string(), " kv_b", kv_b.shape_string(), " cache",
           cache.pages.shape_string(), " out", out.shape_string(), " do not agree");
}

}  // namespace

void mla_store_latents(const Tensor& latent, const MlaSequence* seqs, int64_t num_seqs, const LatentCache& cache) {
  const int64_t width = cache.pages.size(2);
  NW_CHECK(latent.size(1) == width, "mla_store_latents: latent", latent.shape_string(), " vs cache width ", width);
  for (int64_t s = 0; s < num_seqs; ++s)
    for (int64_t j = 0; j < seqs[s].new_len; ++j)
      std::memcpy(cache.token(seqs[s].page_table, seqs[s].prefix_len + j),
                  latent.f32() + (seqs[s].token_offset + j) * width, width * sizeof(float));
}

void mla_attention_decompressed(const Tensor& q, const Tensor& kv_b, const LatentCache& cache,
                                const MlaSequence* seqs, int64_t num_seqs, const MlaShape& s, Tensor& out) {
  check_shapes(q, kv_b, cache, s, out);
  const int64_t width = s.kv_lora + s.rope_dim, q_width = s.nope_dim + s.rope_dim, kv_width = s.nope_dim + s.v_dim;
  const int64_t q_ld = s.heads * q_width, kv_ld = s.heads * kv_width, out_ld = s.heads * s.v_dim;
  for (int64_t i = 0; i < num_seqs; ++i) {
    const MlaSequence& seq = seqs[i];
    const int64_t total = seq.prefix_len + seq.new_len;
    std::vector<float> latents = gather_latents(cache, seq, total);
    const std::vector<char> mask = tree_mask(seq);
    // Decompress every cached token into per-head [k_nope | v]: kv [total, H * (nope + v)].
    std::vector<float> kv(static_cast<size_t>(total * kv_ld));
    gemm(total, kv_ld, s.kv_lora, 1.0f, latents.data(), width, kv_b.f32(), s.kv_lora, true, 0.0f, kv.data(), kv_ld);
    std::vector<float> scores(static_cast<size_t>(seq.new_len * total));
    for (int64_t h = 0; h < s.heads; ++h) {
      const float* qh = q.f32() + seq.token_offset * q_ld + h * q_width;
      gemm(seq.new_len, total, s.nope_dim, s.softmax_scale, qh, q_ld, kv.data() + h * kv_width, kv_ld, true, 0.0f,
           scores.data(), total);
      gemm(seq.new_len, total, s.rope_dim, s.softmax_scale, qh + s.nope_dim, q_ld, latents.data() + s.kv_lora, width,
           true, 1.0f, scores.data(), total);
      masked_softmax(scores.data(), seq, total, mask);
      gemm(seq.new_len, s.v_dim, total, 1.0f, scores.data(), total, kv.data() + h * kv_width + s.nope_dim, kv_ld,
           false, 0.0f, out.f32() + seq.token_offset * out_ld + h * s.v_dim, out_ld);
    }
  }
}

void mla_attention_absorbed(const Tensor& q, const Tensor& kv_b, const LatentCache& cache, const MlaSequence* seqs,
                            int64_t num_seqs, const MlaShape& s, Tensor& out) {
  check_shapes(q, kv_b, cache, s, out);
  const int64_t width = s.kv_lora + s.rope_dim, q_width = s.nope_dim + s.rope_dim, kv_width = s.nope_dim + s.v_dim;
  const int64_t q_ld = s.heads * q_width, out_ld = s.heads * s.v_dim;
  for (int64_t i = 0; i < num_seqs; ++i) {
    const MlaSequence& seq = seqs[i];
    const int64_t total = seq.prefix_len + seq.new_len;
    std::vector<float> latents = gather_latents(cache, seq, total);
    const std::vector<char> mask = tree_mask(seq);
    std::vector<float> q_latent(static_cast<size_t>(seq.new_len * s.kv_lora));
    std::vector<float> o_latent(q_latent.size());
    std::vector<float> scores(static_cast<size_t>(seq.new_len * total));
    for (int64_t h = 0; h < s.heads; ++h) {
      const float* qh = q.f32() + seq.token_offset * q_ld + h * q_width;
      const float* w_uk = kv_b.f32() + h * kv_width * s.kv_lora;            // [nope, kv_lora]
      const float* w_uv = w_uk + s.nope_dim * s.kv_lora;                   // [v, kv_lora]
      gemm(seq.new_len, s.kv_lora, s.nope_dim, 1.0f, qh, q_ld, w_uk, s.kv_lora, false, 0.0f, q_latent.data(),
           s.kv_lora);
      gemm(seq.new_len, total, s.kv_lora, s.softmax_scale, q_latent.data(), s.kv_lora, latents.data(), width, true,
           0.0f, scores.data(), total);
      gemm(seq.new_len, total, s.rope_dim, s.softmax_scale, qh + s.nope_dim, q_ld, latents.data() + s.kv_lora, width,
           true, 1.0f, scores.data(), total);
      masked_softmax(scores.data(), seq, total, mask);
      gemm(seq.new_len, s.kv_lora, total, 1.0f, scores.data(), total, latents.data(), width, false, 0.0f,
           o_latent.data(), s.kv_lora);
      gemm(seq.new_len, s.v_dim, s.kv_lora, 1.0f, o_latent.data(), s.kv_lora, w_uv, s.kv_lora, true, 0.0f,
           out.f32() + seq.token_offset * out_ld + h * s.v_dim, out_ld);
    }
  }
}

}  // namespace narwhal::ops
