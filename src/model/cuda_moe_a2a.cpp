// CudaModel's MoE layers with --moe-a2a-backend deepep: route this rank's slice, dispatch it by all_to_all, run the
// rank's experts (the shared ones folded in over its own block), send the rows back, combine, gather the slices.
#include <numeric>

#include "core/error.h"
#include "model/cuda_model.h"
#include "model/moe_a2a.h"
#include "ops/cuda/moe.h"
#include "ops/cuda/moe_dispatch.h"
#include "ops/cuda/portable.h"

namespace narwhal {

namespace {

int64_t sum(const std::vector<int64_t>& v, size_t end) {
  return std::accumulate(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(end), int64_t{0});
}

}  // namespace

// model/moe_a2a.h's steps on the stream. x / x_f32: this rank's attention group's normed rows (BF16 for the experts,
// F32 for the router). Low-latency mode syncs nothing with the host (decode graphs capture it with NCCL); normal mode
// copies the exchanged counts to the host once per layer.
Tensor CudaModel::moe_a2a(const CudaMoeWeights& w, const CudaStep& step, const Tensor& x, const Tensor& x_f32,
                          cudaStream_t stream) {
  const int n = tp_->size(), attn = tp_dims_.slice.attn_size(), group = dp_rank();
  const int64_t h = local_.hidden_size, k = local_.num_experts_per_tok, t_group = step.num_tokens;
  const std::vector<int64_t> group_rows = dp_size_ > 1 ? step.dp_rows : std::vector<int64_t>{t_group};
  NW_CHECK(static_cast<int>(group_rows.size()) == dp_size_, "deepep: the step gives ", group_rows.size(),
           " DP groups' rows, not ", dp_size_);
  NW_CHECK(group_rows[static_cast<size_t>(group)] == t_group, "deepep: group ", group, " runs ", t_group,
           " rows, not the ", group_rows[static_cast<size_t>(group)], " its step names");
  const MoeA2aStep s =
      moe_a2a_step(tp_dims_.slice.deepep_mode, step.decode_only, group_rows, group, attn, tp_dims_.slice.attn_rank());
  const int64_t t = s.rows.size;
  const Tensor mine = x.rows(s.rows.begin, s.rows.end()), mine_f32 = x_f32.rows(s.rows.begin, s.rows.end());

  Tensor logits = buffer(kRouterLogits, DType::kF32, {t, local_.n_routed_experts});
  Tensor ids = buffer(kTopkIds, DType::kI32, {t, k});
  Tensor weights = buffer(kTopkWeights, DType::kF32, {t, k});
  if (t > 0) {  // an empty slice still takes part in every exchange
    ops::cuda::router_logits_f32(mine_f32, w.router, logits, stream);
    ops::cuda::moe_route(logits, w.correction_bias, router_, ids, weights, stream);
  }
  if (routing_trace_) trace_routing(logits, ids, weights, stream);
  if (routing_override_) override_routing(ids, weights, s.first_row, sum(group_rows, group_rows.size()), stream);

  Tensor counts = buffer(kA2aCounts, DType::kI32, {2 * n});  // [sent to each rank | received from each rank]
  Tensor sent_counts = counts.rows(0, n), received_counts = counts.rows(n, 2 * n);
  Tensor send_slot = buffer(kA2aSlot, DType::kI32, {t, n}), send_token = buffer(kA2aToken, DType::kI32, {n, t});
  ops::cuda::moe_dispatch_layout(ids, expert_rank_, tp_->rank(), sent_counts, send_slot, send_token, stream);
  std::vector<int64_t> send(n, s.capacity), recv(n, s.capacity);
  if (!s.low_latency) {
    const std::vector<int64_t> ones(n, 1);
    tp_->all_to_all(sent_counts.reshape({n, 1}), ones, received_counts.reshape({n, 1}), ones, stream);
    const std::vector<int64_t> host = ops::cuda::dispatch_counts_to_host(counts, stream);
    send.assign(host.begin(), host.begin() + n);
    recv.assign(host.begin() + n, host.end());
  }
  const int64_t sent = sum(send, send.size()), received = sum(recv, recv.size());
  Tensor send_x = buffer(kA2aSendX, DType::kBF16, {sent, h});
  Tensor send_ids = buffer(kA2aSendIds, DType::kI32, {sent, k});
  Tensor send_weights = buffer(kA2aSendWeights, DType::kF32, {sent, k});
  ops::cuda::moe_dispatch_pack(mine, ids, weights, expert_rank_, sent_counts, send_token, s.capacity, send_x, send_ids,
                               send_weights, stream);
  Tensor recv_x = buffer(kA2aRecvX, DType::kBF16, {received, h});
  Tensor recv_ids = buffer(kA2aRecvIds, DType::kI32, {received, k});
  Tensor recv_weights = buffer(kA2aRecvWeights, DType::kF32, {received, k});
  tp_->all_to_all(send_x, send, recv_x, recv, stream);
  tp_->all_to_all(send_ids, send, recv_ids, recv, stream);
  tp_->all_to_all(send_weights, send, recv_weights, recv, stream);

  // The routed choices of this rank's experts, and the shared experts over its own block: its slice, in order.
  ops::cuda::MoeExpertWeights e = w.experts;
  const int64_t own = sum(recv, static_cast<size_t>(tp_->rank()));
  e.shared_token_begin = static_cast<int>(own);
  e.shared_token_end = static_cast<int>(own + t);
  Tensor partial = buffer(kA2aPartial, DType::kBF16, {received, h});
  const size_t bytes = ops::cuda::moe_experts_workspace_bytes(received, static_cast<int>(k), e);
  Tensor ws = buffer(kMoeWorkspace, DType::kI32, {static_cast<int64_t>(bytes / 4 + 1)});
  ops::cuda::moe_experts(recv_x, recv_ids, recv_weights, e, partial, ws.data, ws.nbytes(), stream);
  Tensor returned = buffer(kA2aReturned, DType::kBF16, {sent, h});
  tp_->all_to_all(partial, recv, returned, send, stream);

  // Each token's rows summed in rank order, into a slice padded to `chunk` rows for the gather.
  Tensor slice = buffer(kA2aSlice, DType::kBF16, {attn_ ? s.chunk : t, h});
  Tensor out = slice.rows(0, t);
  ops::cuda::moe_dispatch_combine(returned, send_slot, sent_counts, s.capacity, out, stream);
  // One rank per group: its slice is all of the group's rows; an idle group (every rank of it alike) has none.
  if (!attn_ || s.chunk == 0) return out;
  Tensor gathered = buffer(kA2aGathered, DType::kBF16, {attn_->size() * s.chunk, h});
  attn_->all_gather(slice, gathered, stream);
  return gathered.rows(0, t_group);  // the slices in rank order are the rows in order, then the last ones' padding
}

}  // namespace narwhal
