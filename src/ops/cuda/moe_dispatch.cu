// GPU MoE dispatch: the send order (a CTA per destination scanning the tokens), the pack (a warp per row) and the
// combine (a CTA per token and column block), each the same computation as ops/cpu/moe_dispatch.cpp.
#include "ops/cuda/moe_dispatch.h"

#include "core/error.h"
#include "ops/cuda/block_primitives.cuh"
#include "ops/cuda/common.cuh"

namespace narwhal::ops::cuda {

namespace {

constexpr int kMaxRanks = 256;
constexpr int kMaxTopK = 32;  // a warp's lanes carry a row's ids and weights
constexpr int kLayoutThreads = 256;
constexpr int kPackWarps = 8;
constexpr int kCombineThreads = 128;
constexpr int kCols = 8;  // BF16 values per 16-byte copy

struct Choices {
  const int32_t* ids;
  int top_k;
  const int32_t* expert_rank;
  int experts;
};

// Whether choice j of token t is an expert of rank d (ids outside [0, E) are nobody's).
__device__ __forceinline__ bool on_rank(const Choices& c, int t, int j, int d) {
  const int e = c.ids[static_cast<int64_t>(t) * c.top_k + j];
  return e >= 0 && e < c.experts && c.expert_rank[e] == d;
}

__global__ void __launch_bounds__(kLayoutThreads) layout_kernel(Choices c, int tokens, int self, int ranks,
                                                                int32_t* counts, int32_t* send_slot,
                                                                int32_t* send_token) {
  grid_dependency_wait();
  __shared__ Pair scratch[kLayoutThreads / 32];
  const int d = blockIdx.x;
  int running = 0;
  for (int base = 0; base < tokens; base += kLayoutThreads) {
    const int t = base + static_cast<int>(threadIdx.x);
    bool sent = t < tokens && d == self;
    for (int j = 0; t < tokens && j < c.top_k && !sent; ++j) sent = on_rank(c, t, j, d);
    Pair total;
    const Pair before = block_exclusive_scan<kLayoutThreads>(Pair{sent ? 1u : 0u, 0}, scratch, total);
    if (t < tokens) {
      const int slot = sent ? running + static_cast<int>(before.count) : -1;
      send_slot[static_cast<int64_t>(t) * ranks + d] = slot;
      if (sent) send_token[static_cast<int64_t>(d) * tokens + slot] = t;
    }
    running += static_cast<int>(total.count);
  }
  if (threadIdx.x == 0) counts[d] = running;
}

// Block d's first row: d * capacity, or the counts before it when packed back to back.
__device__ __forceinline__ int64_t block_start(const int32_t* counts, int d, int capacity) {
  if (capacity > 0) return static_cast<int64_t>(d) * capacity;
  int64_t at = 0;
  for (int r = 0; r < d; ++r) at += counts[r];
  return at;
}

struct PackOut {
  bf16* x;
  int32_t* ids;
  float* weights;
};

// Warp `i` of destination blockIdx.y: row i of its block (width = capacity, or T when packed).
__global__ void __launch_bounds__(kPackWarps * 32) pack_kernel(const bf16* x, int hidden, Choices c,
                                                               const float* weights, const int32_t* counts,
                                                               const int32_t* send_token, int tokens, int capacity,
                                                               int width, PackOut out) {
  grid_dependency_wait();
  const int d = blockIdx.y, lane = threadIdx.x % 32;
  const int i = blockIdx.x * kPackWarps + static_cast<int>(threadIdx.x / 32);
  const int count = counts[d];
  if (i >= width || (capacity == 0 && i >= count)) return;
  const int64_t row = block_start(counts, d, capacity) + i;
  if (i >= count) {  // low-latency padding: routes nowhere
    if (lane < c.top_k) {
      out.ids[row * c.top_k + lane] = -1;
      out.weights[row * c.top_k + lane] = 0.0f;
    }
    return;
  }
  const int t = send_token[static_cast<int64_t>(d) * tokens + i];
  if (lane < c.top_k) {
    const bool here = on_rank(c, t, lane, d);
    out.ids[row * c.top_k + lane] = here ? c.ids[static_cast<int64_t>(t) * c.top_k + lane] : -1;
    out.weights[row * c.top_k + lane] = here ? weights[static_cast<int64_t>(t) * c.top_k + lane] : 0.0f;
  }
  const uint4* src = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(t) * hidden);
  uint4* dst = reinterpret_cast<uint4*>(out.x + row * hidden);
  for (int v = lane; v < hidden / kCols; v += 32) dst[v] = src[v];
}

__global__ void __launch_bounds__(kCombineThreads) combine_kernel(const bf16* returned, const int32_t* send_slot,
                                                                  const int32_t* counts, int ranks, int capacity,
                                                                  int hidden, bf16* out) {
  grid_dependency_wait();
  __shared__ int64_t starts[kMaxRanks];
  if (threadIdx.x == 0) {
    int64_t at = 0;
    for (int d = 0; d < ranks; ++d) {
      starts[d] = capacity > 0 ? static_cast<int64_t>(d) * capacity : at;
      at += counts[d];
    }
  }
  __syncthreads();
  const int t = blockIdx.x, col = (blockIdx.y * kCombineThreads + threadIdx.x) * kCols;
  if (col >= hidden) return;
  float acc[kCols] = {};
  for (int d = 0; d < ranks; ++d) {
    const int slot = send_slot[static_cast<int64_t>(t) * ranks + d];
    if (slot < 0) continue;
    float v[kCols];
    bf16x8_to_float(*reinterpret_cast<const uint4*>(returned + (starts[d] + slot) * hidden + col), v);
#pragma unroll
    for (int i = 0; i < kCols; ++i) acc[i] += v[i];
  }
  uint4 packed;
  bf16* dst = reinterpret_cast<bf16*>(&packed);
#pragma unroll
  for (int i = 0; i < kCols; ++i) dst[i] = __float2bfloat16(acc[i]);
  *reinterpret_cast<uint4*>(out + static_cast<int64_t>(t) * hidden + col) = packed;
}

// Rows of BF16 values move in 16-byte copies, so their tensors must start 16-byte aligned.
void check(const Tensor& t, DType dtype, std::vector<int64_t> shape, const char* op, const char* name) {
  const size_t align = dtype == DType::kBF16 ? 16 : dtype_size(dtype);
  NW_CHECK(t.device == Device::kCUDA && t.dtype == dtype && t.shape == shape &&
               reinterpret_cast<uintptr_t>(t.data) % align == 0,
           "cuda::", op, ": ", name, " is ", dtype_name(t.dtype), t.shape_string(),
           t.device == Device::kCUDA ? "" : " on the host", ", expected a CUDA ", dtype_name(dtype),
           shape_to_string(shape), " (", align, "-byte aligned)");
}

// The ranks of `counts`, refused past kMaxRanks.
int ranks_of(const Tensor& counts, const char* op) {
  NW_CHECK(counts.ndim() == 1 && counts.size(0) >= 1 && counts.size(0) <= kMaxRanks, "cuda::", op, ": counts",
           counts.shape_string(), " (1 to ", kMaxRanks, " ranks)");
  check(counts, DType::kI32, counts.shape, op, "counts");
  return static_cast<int>(counts.size(0));
}

Choices choices(const Tensor& topk_ids, const Tensor& expert_rank, int64_t tokens, const char* op) {
  const int64_t k = topk_ids.ndim() == 2 ? topk_ids.size(1) : 0;
  NW_CHECK(k >= 1 && k <= kMaxTopK && tokens < (int64_t{1} << 31) && expert_rank.ndim() == 1, "cuda::", op,
           ": topk_ids", topk_ids.shape_string(), " for ", tokens, " tokens, expert_rank", expert_rank.shape_string(),
           " (top-k 1 to ", kMaxTopK, ", fewer than 2^31 tokens)");
  check(topk_ids, DType::kI32, {tokens, k}, op, "topk_ids");
  check(expert_rank, DType::kI32, expert_rank.shape, op, "expert_rank");
  return {device_ptr<const int32_t>(topk_ids), static_cast<int>(k), device_ptr<const int32_t>(expert_rank),
          static_cast<int>(expert_rank.size(0))};
}

void check_hidden(int64_t hidden, const char* op) {
  NW_CHECK(hidden % kCols == 0 && hidden > 0 && hidden < (int64_t{1} << 24), "cuda::", op, ": hidden ", hidden,
           " must be a positive multiple of ", kCols);
}

}  // namespace

void moe_dispatch_layout(const Tensor& topk_ids, const Tensor& expert_rank, int self, Tensor& counts,
                         Tensor& send_slot, Tensor& send_token, cudaStream_t stream) {
  const char* op = "moe_dispatch_layout";
  const int ranks = ranks_of(counts, op);
  const int64_t tokens = topk_ids.ndim() == 2 ? topk_ids.size(0) : -1;
  const Choices c = choices(topk_ids, expert_rank, tokens, op);
  NW_CHECK(self >= 0 && self < ranks, "cuda::", op, ": self ", self, " of ", ranks, " ranks");
  check(send_slot, DType::kI32, {tokens, ranks}, op, "send_slot");
  check(send_token, DType::kI32, {ranks, tokens}, op, "send_token");
  launch(layout_kernel, ranks, kLayoutThreads, 0, stream, c, static_cast<int>(tokens), self, ranks,
         device_ptr<int32_t>(counts), device_ptr<int32_t>(send_slot), device_ptr<int32_t>(send_token));
}

void moe_dispatch_pack(const Tensor& x, const Tensor& topk_ids, const Tensor& topk_weights, const Tensor& expert_rank,
                       const Tensor& counts, const Tensor& send_token, int64_t capacity, Tensor& send_x,
                       Tensor& send_ids, Tensor& send_weights, cudaStream_t stream) {
  const char* op = "moe_dispatch_pack";
  const int ranks = ranks_of(counts, op);
  const int64_t tokens = x.ndim() == 2 ? x.size(0) : -1, hidden = x.ndim() == 2 ? x.size(1) : 0;
  const Choices c = choices(topk_ids, expert_rank, tokens, op);
  const int64_t rows = send_x.ndim() == 2 ? send_x.size(0) : -1;
  check_hidden(hidden, op);
  NW_CHECK(capacity >= 0 && capacity < (int64_t{1} << 31) && rows >= 0 && (capacity == 0 || rows == ranks * capacity),
           "cuda::", op, ": send_x", send_x.shape_string(), " at capacity ", capacity, " for ", ranks, " ranks");
  check(x, DType::kBF16, {tokens, hidden}, op, "x");
  check(topk_weights, DType::kF32, {tokens, c.top_k}, op, "topk_weights");
  check(send_token, DType::kI32, {ranks, tokens}, op, "send_token");
  check(send_x, DType::kBF16, {rows, hidden}, op, "send_x");
  check(send_ids, DType::kI32, {rows, c.top_k}, op, "send_ids");
  check(send_weights, DType::kF32, {rows, c.top_k}, op, "send_weights");
  const int64_t width = capacity > 0 ? capacity : tokens;
  if (width == 0) return;
  const dim3 grid(static_cast<unsigned>(ceil_div(width, kPackWarps)), static_cast<unsigned>(ranks));
  launch(pack_kernel, grid, kPackWarps * 32, 0, stream, device_ptr<const bf16>(x), static_cast<int>(hidden), c,
         device_ptr<const float>(topk_weights), device_ptr<const int32_t>(counts),
         device_ptr<const int32_t>(send_token), static_cast<int>(tokens), static_cast<int>(capacity),
         static_cast<int>(width),
         PackOut{device_ptr<bf16>(send_x), device_ptr<int32_t>(send_ids), device_ptr<float>(send_weights)});
}

void moe_dispatch_combine(const Tensor& returned, const Tensor& send_slot, const Tensor& counts, int64_t capacity,
                          Tensor& out, cudaStream_t stream) {
  const char* op = "moe_dispatch_combine";
  const int ranks = ranks_of(counts, op);
  const int64_t tokens = out.ndim() == 2 ? out.size(0) : -1, hidden = out.ndim() == 2 ? out.size(1) : 0;
  const int64_t rows = returned.ndim() == 2 ? returned.size(0) : -1;
  check_hidden(hidden, op);
  NW_CHECK(tokens >= 0 && tokens < (int64_t{1} << 31) && rows >= 0 && capacity >= 0 && capacity < (int64_t{1} << 31),
           "cuda::", op, ": out", out.shape_string(), " returned", returned.shape_string(), " at capacity ", capacity);
  check(returned, DType::kBF16, {rows, hidden}, op, "returned");
  check(send_slot, DType::kI32, {tokens, ranks}, op, "send_slot");
  check(out, DType::kBF16, {tokens, hidden}, op, "out");
  if (tokens == 0) return;
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(ceil_div(hidden, kCombineThreads * kCols)));
  launch(combine_kernel, grid, kCombineThreads, 0, stream, device_ptr<const bf16>(returned),
         device_ptr<const int32_t>(send_slot), device_ptr<const int32_t>(counts), ranks,
         static_cast<int>(capacity), static_cast<int>(hidden), device_ptr<bf16>(out));
}

std::vector<int64_t> dispatch_counts_to_host(const Tensor& counts, cudaStream_t stream) {
  NW_CHECK(counts.device == Device::kCUDA && counts.dtype == DType::kI32, "cuda::dispatch_counts_to_host: counts ",
           dtype_name(counts.dtype), counts.shape_string(), " (CUDA I32 expected)");
  std::vector<int32_t> host(static_cast<size_t>(counts.numel()));
  NW_CUDA_CHECK(cudaMemcpyAsync(host.data(), counts.data, counts.nbytes(), cudaMemcpyDeviceToHost, stream));
  NW_CUDA_CHECK(cudaStreamSynchronize(stream));
  return {host.begin(), host.end()};
}

}  // namespace narwhal::ops::cuda
