// CPU MoE dispatch: the reference of ops/cuda/moe_dispatch.cu, and what DeepSeekModel's deepep path runs.
#include "ops/moe_dispatch.h"

#include <cstring>
#include <vector>

#include "core/error.h"

namespace narwhal::ops {

namespace {

// Element (row, col) of a [rows, H] F32 or BF16 tensor, as F32.
float element(const Tensor& t, int64_t row, int64_t col) {
  const int64_t i = row * t.size(1) + col;
  return t.dtype == DType::kF32 ? t.f32()[i] : bf16_to_float(t.ptr<uint16_t>()[i]);
}

void check_counts(const Tensor& counts, const char* op) {
  NW_CHECK(counts.device == Device::kCPU && counts.dtype == DType::kI32 && counts.ndim() == 1 && counts.size(0) >= 1,
           op, ": counts ", counts.shape_string(), " ", dtype_name(counts.dtype), " (host I32 [N] expected)");
}

// Each destination block's first row (see the header).
std::vector<int64_t> block_starts(const Tensor& counts, int64_t capacity) {
  std::vector<int64_t> starts(static_cast<size_t>(counts.size(0)));
  int64_t at = 0;
  for (int64_t d = 0; d < counts.size(0); ++d) {
    starts[d] = capacity > 0 ? d * capacity : at;
    at += counts.ptr<int32_t>()[d];
  }
  return starts;
}

}  // namespace

void moe_dispatch_layout(const Tensor& topk_ids, const Tensor& expert_rank, int self, Tensor& counts,
                         Tensor& send_slot, Tensor& send_token) {
  check_counts(counts, "moe_dispatch_layout");
  const int64_t n = counts.size(0), t = topk_ids.ndim() == 2 ? topk_ids.size(0) : -1, k = t >= 0 ? topk_ids.size(1) : 0;
  const int64_t experts = expert_rank.numel();
  NW_CHECK(topk_ids.dtype == DType::kI32 && t >= 0 && expert_rank.dtype == DType::kI32 && expert_rank.ndim() == 1 &&
               send_slot.dtype == DType::kI32 && send_slot.shape == std::vector<int64_t>({t, n}) &&
               send_token.dtype == DType::kI32 && send_token.shape == std::vector<int64_t>({n, t}) && self >= 0 &&
               self < n,
           "moe_dispatch_layout: topk_ids", topk_ids.shape_string(), " expert_rank", expert_rank.shape_string(),
           " send_slot", send_slot.shape_string(), " send_token", send_token.shape_string(), " for ", n,
           " ranks, self ", self, " (I32 [T, k], [E], [T, N], [N, T] expected)");
  const int32_t* ids = topk_ids.ptr<int32_t>();
  const int32_t* rank_of = expert_rank.ptr<int32_t>();
  for (int64_t d = 0; d < n; ++d) {
    int32_t count = 0;
    for (int64_t i = 0; i < t; ++i) {
      bool sent = d == self;
      for (int64_t j = 0; j < k && !sent; ++j) {
        const int32_t e = ids[i * k + j];
        sent = e >= 0 && e < experts && rank_of[e] == d;
      }
      send_slot.ptr<int32_t>()[i * n + d] = sent ? count : -1;
      if (sent) send_token.ptr<int32_t>()[d * t + count++] = static_cast<int32_t>(i);
    }
    counts.ptr<int32_t>()[d] = count;
  }
}

void moe_dispatch_pack(const Tensor& x, const Tensor& topk_ids, const Tensor& topk_weights, const Tensor& expert_rank,
                       const Tensor& counts, const Tensor& send_token, int64_t capacity, Tensor& send_x,
                       Tensor& send_ids, Tensor& send_weights) {
  check_counts(counts, "moe_dispatch_pack");
  const int64_t n = counts.size(0), t = x.ndim() == 2 ? x.size(0) : -1;
  const int64_t k = topk_ids.ndim() == 2 ? topk_ids.size(1) : -1;
  const int64_t rows = send_x.ndim() == 2 ? send_x.size(0) : -1, experts = expert_rank.numel();
  NW_CHECK((x.dtype == DType::kF32 || x.dtype == DType::kBF16) && t >= 0 && send_x.dtype == x.dtype &&
               rows >= 0 && send_x.size(1) == x.size(1) && topk_ids.shape == std::vector<int64_t>({t, k}) &&
               topk_weights.shape == topk_ids.shape && topk_weights.dtype == DType::kF32 &&
               send_token.shape == std::vector<int64_t>({n, t}) &&
               send_ids.shape == std::vector<int64_t>({rows, k}) && send_ids.dtype == DType::kI32 &&
               send_weights.shape == send_ids.shape && send_weights.dtype == DType::kF32 && capacity >= 0 &&
               (capacity == 0 || rows == n * capacity),
           "moe_dispatch_pack: x", x.shape_string(), " ", dtype_name(x.dtype), " topk", topk_ids.shape_string(),
           " send_x", send_x.shape_string(), " send_ids", send_ids.shape_string(), " send_weights",
           send_weights.shape_string(), " for ", n, " ranks at capacity ", capacity);
  const std::vector<int64_t> starts = block_starts(counts, capacity);
  const size_t row_bytes = static_cast<size_t>(x.size(1)) * dtype_size(x.dtype);
  for (int64_t d = 0; d < n; ++d) {
    const int64_t count = counts.ptr<int32_t>()[d], block = capacity > 0 ? capacity : count;
    NW_CHECK(count <= t && (capacity == 0 || count <= capacity) && starts[d] + block <= rows, "moe_dispatch_pack: ",
             count, " rows for rank ", d, " do not fit ", rows, " rows at capacity ", capacity);
    for (int64_t i = 0; i < block; ++i) {
      const int64_t row = starts[d] + i;
      int32_t* out_ids = send_ids.ptr<int32_t>() + row * k;
      float* out_weights = send_weights.f32() + row * k;
      if (i >= count) {
        for (int64_t j = 0; j < k; ++j) out_ids[j] = -1, out_weights[j] = 0.0f;
        continue;
      }
      const int64_t token = send_token.ptr<int32_t>()[d * t + i];
      std::memcpy(static_cast<char*>(send_x.data) + row * row_bytes,
                  static_cast<const char*>(x.data) + token * row_bytes, row_bytes);
      for (int64_t j = 0; j < k; ++j) {
        const int32_t e = topk_ids.ptr<int32_t>()[token * k + j];
        const bool here = e >= 0 && e < experts && expert_rank.ptr<int32_t>()[e] == d;
        out_ids[j] = here ? e : -1;
        out_weights[j] = here ? topk_weights.f32()[token * k + j] : 0.0f;
      }
    }
  }
}

void moe_dispatch_combine(const Tensor& returned, const Tensor& send_slot, const Tensor& counts, int64_t capacity,
                          Tensor& out) {
  check_counts(counts, "moe_dispatch_combine");
  const int64_t n = counts.size(0), t = out.ndim() == 2 ? out.size(0) : -1, h = t >= 0 ? out.size(1) : 0;
  const int64_t rows = returned.ndim() == 2 ? returned.size(0) : -1;
  NW_CHECK((out.dtype == DType::kF32 || out.dtype == DType::kBF16) && returned.dtype == out.dtype && t >= 0 &&
               rows >= 0 && returned.size(1) == h && send_slot.dtype == DType::kI32 &&
               send_slot.shape == std::vector<int64_t>({t, n}) && capacity >= 0,
           "moe_dispatch_combine: returned", returned.shape_string(), " ", dtype_name(returned.dtype), " send_slot",
           send_slot.shape_string(), " out", out.shape_string(), " ", dtype_name(out.dtype), " for ", n, " ranks");
  const std::vector<int64_t> starts = block_starts(counts, capacity);
  std::vector<float> acc(static_cast<size_t>(h));
  for (int64_t i = 0; i < t; ++i) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t d = 0; d < n; ++d) {
      const int32_t slot = send_slot.ptr<int32_t>()[i * n + d];
      if (slot < 0) continue;
      NW_CHECK(slot < counts.ptr<int32_t>()[d] && starts[d] + slot < rows, "moe_dispatch_combine: token ", i,
               "'s slot ", slot, " for rank ", d, " is outside its block");
      for (int64_t c = 0; c < h; ++c) acc[c] += element(returned, starts[d] + slot, c);
    }
    for (int64_t c = 0; c < h; ++c) {
      if (out.dtype == DType::kF32) out.f32()[i * h + c] = acc[c];
      else out.ptr<uint16_t>()[i * h + c] = float_to_bf16(acc[c]);
    }
  }
}

}  // namespace narwhal::ops
