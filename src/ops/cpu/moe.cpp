// CPU MoE: routing exactly as transformers' DeepSeek routers, the per-expert count of its choices, and experts run
// one GEMM pair per expert over the tokens routed to it.
#include "ops/moe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "ops/activation.h"
#include "ops/linear.h"

namespace narwhal::ops {

namespace {

// Indices of the k largest values (ties: lower index first), in descending order of value.
std::vector<int> top_indices(const std::vector<float>& values, int k) {
  std::vector<int> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  order.resize(k);
  return order;
}

// Keeps the experts of the best `topk_group` groups and sets the others to `masked`.
void mask_groups(std::vector<float>& choice, const RouterParams& p, bool top2_sum, float masked) {
  const int per_group = p.num_experts / p.n_group;
  std::vector<float> group_score(p.n_group);
  for (int g = 0; g < p.n_group; ++g) {
    std::vector<float> members(choice.begin() + g * per_group, choice.begin() + (g + 1) * per_group);
    if (top2_sum) {
      std::vector<int> best = top_indices(members, 2);
      group_score[g] = members[best[0]] + members[best[1]];
    } else {
      group_score[g] = *std::max_element(members.begin(), members.end());
    }
  }
  std::vector<char> keep(p.n_group, 0);
  for (int g : top_indices(group_score, p.topk_group)) keep[g] = 1;
  for (int e = 0; e < p.num_experts; ++e)
    if (!keep[e / per_group]) choice[e] = masked;
}

// Expert e of stacked weights [E, rows, cols] as F32: a view for F32, a converted copy for BF16 and for FP8
// (times its 128x128 block's scale_inv [E, ceil(rows/128), ceil(cols/128)]).
Tensor expert_f32(const Tensor& w, const Tensor& scale_inv, int64_t e) {
  const int64_t rows = w.size(1), cols = w.size(2), offset = e * rows * cols;
  if (w.dtype == DType::kF32) return Tensor::view(w.f32() + offset, DType::kF32, {rows, cols});
  Tensor out = Tensor::zeros(DType::kF32, {rows, cols});
  if (w.dtype == DType::kBF16) {
    const uint16_t* src = w.ptr<uint16_t>() + offset;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows * cols; ++i) out.f32()[i] = bf16_to_float(src[i]);
    return out;
  }
  NW_CHECK(w.dtype == DType::kF8E4M3 && scale_inv.defined(), "moe_experts: expert weights of dtype ",
           dtype_name(w.dtype), scale_inv.defined() ? "" : " without scale_inv");
  const int64_t block_rows = scale_inv.size(1), block_cols = scale_inv.size(2);
  NW_CHECK(block_rows == (rows + 127) / 128 && block_cols == (cols + 127) / 128,
           "moe_experts: scale_inv", scale_inv.shape_string(), " does not cover 128x128 blocks of ", rows, "x", cols);
  const uint8_t* src = w.ptr<uint8_t>() + offset;
  const float* scales = scale_inv.f32() + e * block_rows * block_cols;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out.f32()[r * cols + c] = fp8_e4m3_to_float(src[r * cols + c]) * scales[(r / 128) * block_cols + c / 128];
  return out;
}

}  // namespace

void moe_route(const Tensor& router_logits, const Tensor& correction_bias, const RouterParams& p, Tensor& topk_ids,
               Tensor& topk_weights) {
  const int64_t tokens = router_logits.size(0);
  NW_CHECK(router_logits.size(1) == p.num_experts && topk_ids.size(1) == p.top_k && topk_weights.size(1) == p.top_k,
           "moe_route: router logits ", router_logits.shape_string(), " do not match ", p.num_experts, " experts, top ",
           p.top_k);
  NW_CHECK(p.selection != MoeSelection::kNoauxTc || correction_bias.defined(),
           "moe_route: noaux_tc needs e_score_correction_bias");
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tokens; ++t) {
    const float* logits = router_logits.f32() + t * p.num_experts;
    std::vector<float> scores(logits, logits + p.num_experts);
    if (p.scoring == MoeScoring::kSoftmax) {
      const float mx = *std::max_element(scores.begin(), scores.end());
      float sum = 0.0f;
      for (float& s : scores) sum += (s = std::exp(s - mx));
      for (float& s : scores) s /= sum;
    } else {
      for (float& s : scores) s = 1.0f / (1.0f + std::exp(-s));
    }
    std::vector<float> choice = scores;
    if (p.selection == MoeSelection::kNoauxTc) {
      for (int e = 0; e < p.num_experts; ++e) choice[e] += correction_bias.f32()[e];
      mask_groups(choice, p, /*top2_sum=*/true, -std::numeric_limits<float>::infinity());
    } else if (p.selection == MoeSelection::kGroupLimitedGreedy) {
      mask_groups(choice, p, /*top2_sum=*/false, 0.0f);  // transformers' V2 zero-fills, softmax scores are > 0
    }
    std::vector<int> chosen = top_indices(choice, p.top_k);
    int32_t* ids = topk_ids.ptr<int32_t>() + t * p.top_k;
    float* weights = topk_weights.f32() + t * p.top_k;
    float sum = 0.0f;
    for (int j = 0; j < p.top_k; ++j) {
      ids[j] = chosen[j];
      // Greedy variants weight by the (masked) selection scores, noaux_tc by the unbiased scores.
      weights[j] = p.selection == MoeSelection::kNoauxTc ? scores[chosen[j]] : choice[chosen[j]];
      sum += weights[j];
    }
    for (int j = 0; j < p.top_k; ++j) {
      if (p.renormalize) weights[j] /= sum + 1e-20f;
      weights[j] *= p.routed_scaling_factor;
    }
  }
}

void moe_count_experts(const Tensor& topk_ids, const Tensor& valid_rows, const Tensor& row_slots, Tensor& counts) {
  const int64_t rows = topk_ids.size(0), k = topk_ids.size(1), experts = counts.numel();
  const int64_t groups = valid_rows.defined() ? valid_rows.numel() : 1;
  NW_CHECK(topk_ids.dtype == DType::kI32 && counts.dtype == DType::kI64 && groups > 0 && rows % groups == 0 &&
               (!valid_rows.defined() || valid_rows.dtype == DType::kI32) &&
               (!row_slots.defined() || (row_slots.dtype == DType::kI64 && row_slots.numel() == rows)),
           "moe_count_experts: ids ", topk_ids.shape_string(), " counts ", counts.shape_string(), " valid rows ",
           valid_rows.shape_string(), " row slots ", row_slots.shape_string());
  const int64_t block = rows / groups;
  for (int64_t r = 0; r < rows; ++r) {
    if (valid_rows.defined() && r % block >= valid_rows.ptr<int32_t>()[r / block]) continue;
    if (row_slots.defined() && row_slots.ptr<int64_t>()[r] < 0) continue;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = topk_ids.ptr<int32_t>()[r * k + j];
      if (e >= 0 && e < experts) ++counts.ptr<int64_t>()[e];
    }
  }
}

void moe_experts(const Tensor& x, const Tensor& topk_ids, const Tensor& topk_weights, const Tensor& gate_up,
                 const Tensor& down, Tensor& out, const std::vector<int32_t>* expert_index) {
  moe_experts(x, topk_ids, topk_weights, gate_up, Tensor(), down, Tensor(), out, expert_index);
}

void moe_experts(const Tensor& x, const Tensor& topk_ids, const Tensor& topk_weights, const Tensor& gate_up,
                 const Tensor& gate_up_scale_inv, const Tensor& down, const Tensor& down_scale_inv, Tensor& out,
                 const std::vector<int32_t>* expert_index) {
  const int64_t tokens = x.size(0), hidden = x.size(1), top_k = topk_ids.size(1);
  const int64_t num_experts = gate_up.size(0), inter = gate_up.size(1) / 2;
  NW_CHECK(gate_up.size(2) == hidden && down.size(0) == num_experts && down.size(1) == hidden &&
               down.size(2) == inter,
           "moe_experts: gate_up", gate_up.shape_string(), " down", down.shape_string(), " hidden ", hidden);
  // Bucket (token, weight) pairs by expert, so each expert runs as two GEMMs over its tokens.
  std::vector<std::vector<std::pair<int64_t, float>>> routed(num_experts);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < top_k; ++j) {
      int64_t e = topk_ids.ptr<int32_t>()[t * top_k + j];
      if (expert_index) e = e >= 0 && e < static_cast<int64_t>(expert_index->size()) ? (*expert_index)[e] : -1;
      if (e >= 0 && e < num_experts) routed[e].emplace_back(t, topk_weights.f32()[t * top_k + j]);
    }
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t n = static_cast<int64_t>(routed[e].size());
    if (n == 0) continue;
    const Tensor w_gate_up = expert_f32(gate_up, gate_up_scale_inv, e);
    const Tensor w_down = expert_f32(down, down_scale_inv, e);
    Tensor xe = Tensor::zeros(DType::kF32, {n, hidden});
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(xe.f32() + i * hidden, x.f32() + routed[e][i].first * hidden, hidden * sizeof(float));
    Tensor h = Tensor::zeros(DType::kF32, {n, 2 * inter});
    gemm(n, 2 * inter, hidden, 1.0f, xe.f32(), hidden, w_gate_up.f32(), hidden, true, 0.0f, h.f32(), 2 * inter);
    Tensor act = Tensor::zeros(DType::kF32, {n, inter});
    silu_and_mul(h, act);
    Tensor y = Tensor::zeros(DType::kF32, {n, hidden});
    gemm(n, hidden, inter, 1.0f, act.f32(), inter, w_down.f32(), inter, true, 0.0f, y.f32(), hidden);
    for (int64_t i = 0; i < n; ++i) {
      float* dst = out.f32() + routed[e][i].first * hidden;
      const float w = routed[e][i].second;
      for (int64_t c = 0; c < hidden; ++c) dst[c] += w * y.f32()[i * hidden + c];
    }
  }
}

}  // namespace narwhal::ops
