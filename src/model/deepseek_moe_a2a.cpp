// DeepSeekModel's MoE layers with --moe-a2a-backend deepep: dispatch by all_to_all, combine, gather the slices.
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "model/deepseek_model.h"
#include "model/moe_a2a.h"
#include "ops/moe.h"
#include "ops/moe_dispatch.h"

namespace narwhal {

namespace {

Tensor rows_of(DType dtype, int64_t rows, int64_t cols) { return Tensor::zeros(dtype, {rows, cols}); }

int64_t sum(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

}  // namespace

// The steps of model/moe_a2a.h on host tensors. x holds this rank's attention group's rows; each rank routes and
// dispatches its slice, and every rank of the TP group calls this together (an idle DP group with no rows).
Tensor DeepSeekModel::moe_a2a(const MoeWeights& w, const Tensor& x, const ForwardBatch& batch,
                              const ForwardOptions& options) const {
  const int n = tp_->size(), attn = tp_dims_.slice.attn_size(), group = tp_->rank() / attn;
  const int64_t hidden = x.size(1), k = router_.top_k;
  const std::vector<int64_t> group_rows = dp_size_ > 1 ? batch.dp_tokens : std::vector<int64_t>{x.size(0)};
  NW_CHECK(static_cast<int>(group_rows.size()) == dp_size_, "deepep: the batch gives ", group_rows.size(),
           " DP groups' token counts, not ", dp_size_);
  NW_CHECK(group_rows[static_cast<size_t>(group)] == x.size(0), "deepep: this group runs ", x.size(0),
           " rows, not the ", group_rows[static_cast<size_t>(group)], " its batch names");
  const MoeA2aStep step = moe_a2a_step(tp_dims_.slice.deepep_mode, every_rank_decodes(batch, dp_size_ > 1),
                                       group_rows, group, attn, tp_dims_.slice.attn_rank());
  const Tensor mine = x.rows(step.rows.begin, step.rows.end());
  const int64_t t = mine.size(0);
  Tensor ids = rows_of(DType::kI32, t, k), weights = rows_of(DType::kF32, t, k);
  route(w, mine, options, ids, weights);

  Tensor counts = Tensor::zeros(DType::kI32, {n});
  Tensor send_slot = rows_of(DType::kI32, t, n), send_token = rows_of(DType::kI32, n, t);
  ops::moe_dispatch_layout(ids, expert_rank_, tp_->rank(), counts, send_slot, send_token);
  std::vector<int64_t> send(n, step.capacity), recv(n, step.capacity);
  if (!step.low_latency) {  // normal: each destination learns how many rows come from each source
    const std::vector<int64_t> ones(n, 1);
    Tensor received = Tensor::zeros(DType::kI32, {n, 1});
    tp_->all_to_all(counts.reshape({n, 1}), ones, received, ones);
    for (int r = 0; r < n; ++r) {
      send[r] = counts.ptr<int32_t>()[r];
      recv[r] = received.ptr<int32_t>()[r];
    }
  }
  Tensor send_x = rows_of(DType::kF32, sum(send), hidden);
  Tensor send_ids = rows_of(DType::kI32, sum(send), k), send_weights = rows_of(DType::kF32, sum(send), k);
  ops::moe_dispatch_pack(mine, ids, weights, expert_rank_, counts, send_token, step.capacity, send_x, send_ids,
                         send_weights);
  Tensor recv_x = rows_of(DType::kF32, sum(recv), hidden);
  Tensor recv_ids = rows_of(DType::kI32, sum(recv), k), recv_weights = rows_of(DType::kF32, sum(recv), k);
  tp_->all_to_all(send_x, send, recv_x, recv);
  tp_->all_to_all(send_ids, send, recv_ids, recv);
  tp_->all_to_all(send_weights, send, recv_weights, recv);

  // This rank's experts over what it received (ids of other ranks' experts are -1), each row's weighted sum back.
  Tensor partial = rows_of(DType::kF32, sum(recv), hidden);
  ops::moe_experts(recv_x, recv_ids, recv_weights, w.experts_gate_up.weight, w.experts_down.weight, partial,
                   &tp_dims_.expert_index);
  Tensor returned = rows_of(DType::kF32, sum(send), hidden);
  tp_->all_to_all(partial, recv, returned, send);
  Tensor out = rows_of(DType::kF32, t, hidden);
  ops::moe_dispatch_combine(returned, send_slot, counts, step.capacity, out);
  // The shared experts over the own slice: its rows are this rank's own block, so the GPU folds them in there.
  if (w.shared) {
    const Tensor shared = shared_experts(*w.shared, mine);
    for (int64_t i = 0; i < out.numel(); ++i) out.f32()[i] += shared.f32()[i];
  }
  if (!attn_) return out;  // one rank per group: its slice is all of the group's rows
  // Every slice padded to `chunk` rows, in rank order: the group's rows in order, then the last slices' padding.
  Tensor padded = rows_of(DType::kF32, step.chunk, hidden);
  if (t > 0) std::memcpy(padded.data, out.data, out.nbytes());
  Tensor all = rows_of(DType::kF32, attn_->size() * step.chunk, hidden);
  attn_->all_gather(padded, all);
  return all.rows(0, x.size(0));
}

ForwardOptions DeepSeekModel::own_expert_counts(const ForwardOptions& options, std::vector<int64_t>& mine) const {
  if (!options.expert_tokens || !tp_dims_.slice.deepep()) return options;
  ForwardOptions own = options;
  mine.assign(static_cast<size_t>(config_.n_routed_experts), 0);
  own.expert_tokens = &mine;
  return own;
}

// One forward's counts are far below 2^31 (tokens x top_k x layers), so they sum as I32.
void DeepSeekModel::sum_expert_counts(std::vector<int64_t>& mine, const ForwardOptions& options) const {
  if (!options.expert_tokens || !tp_dims_.slice.deepep()) return;
  Tensor counts = Tensor::zeros(DType::kI32, {static_cast<int64_t>(mine.size())});
  for (size_t e = 0; e < mine.size(); ++e) counts.ptr<int32_t>()[e] = static_cast<int32_t>(mine[e]);
  tp_->all_reduce(counts, counts);
  for (size_t e = 0; e < mine.size(); ++e) (*options.expert_tokens)[e] += counts.ptr<int32_t>()[e];
}

}  // namespace narwhal
