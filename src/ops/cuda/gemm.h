// Dense matrix products of the GPU forward: BF16 and FP8 block-scaled GEMMs in nn.Linear layout (y = x w^T),
// and the strided-batched matmuls of absorbed MLA (W_UK folded into q, W_UV applied after attention).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "core/tensor.h"

namespace narwhal::ops::cuda {

// A batch of row-major matrices: element (b, r, c) at data + (b * batch_stride + r * row_stride + c) elements.
// Describes strided views a Tensor cannot, e.g. the nope slice of every head of q [T, H, 192].
struct MatrixBatch {
  void* data = nullptr;
  DType dtype = DType::kBF16;
  int64_t batch = 1, rows = 0, cols = 0, row_stride = 0, batch_stride = 0;
};

// Columns [offset, offset + width) of every head of t [T, H, D]: batch H of [T, width] matrices.
MatrixBatch head_slices(const Tensor& t, int64_t offset, int64_t width);
// Rows [offset, offset + rows) of each of `batch` equal row groups of t [batch * group_rows, C]: batch of
// [rows, C] matrices. kv_b_proj [H * (nope + v), kv_lora]: W_UK = row_groups(kv_b, H, 0, nope), W_UV = (.., nope, v).
MatrixBatch row_groups(const Tensor& t, int64_t batch, int64_t offset, int64_t rows);

// FP8 e4m3 weight with DeepSeek-V3 128x128 block scales (w = q * scale, the checkpoint's weight_scale_inv):
// q [N, K] (or [B, N, K]) row-major; scale [ceil(N/128), round_up(ceil(K/128), 4)] (or [B, ...]) F32, row-major,
// the column padding being what cuBLASLt's BLK128x128 mode reads. The checkpoint's [ceil(N/128), ceil(K/128)]
// already is this when ceil(K/128) % 4 == 0, as for every DeepSeek-V3 projection.
struct Fp8BlockWeight {
  Tensor q;
  Tensor scale;
};
// From a device weight and its device weight_scale_inv; copies the scales into padded rows only where needed.
// Load time only (allocates, synchronous).
Fp8BlockWeight make_fp8_block_weight(const Tensor& q, const Tensor& scale_inv);

// The absorbed-MLA weights of an FP8 kv_b_proj (host q [H * 256, L] F8 and scale_inv [H * 2, L / 128], nope and
// v head dims 128): w_uk_t [H, L, 128] (W_UK transposed, so q_latent = q_nope w_uk_t^T is an nn.Linear product)
// and w_uv [H, 128, L], on the device. Exact: each head's 128-row slab is one scale block row. Load time only.
struct MlaFp8Weights {
  Fp8BlockWeight w_uk_t, w_uv;
};
MlaFp8Weights split_kv_b_fp8(const Tensor& kv_b_q, const Tensor& kv_b_scale, int64_t heads);
// W_UK transposed per head from a BF16 kv_b_proj [H * (nope + v), L] (any device): [H, L, nope] on the device, so
// that q_latent = q_nope w_uk_t^T runs as a transposed-weight product (the batch-invariant small-M kernel at
// decode sizes, where the untransposed form would take cuBLASLt's per-M algorithms). Load time only.
Tensor transpose_w_uk_bf16(const Tensor& kv_b, int64_t heads, int64_t nope, int64_t v);

// Per-token-group FP8 quantization (for tests and callers that keep quantized activations): x [M, K] BF16 ->
// q [M, K] F8_E4M3, scale [ceil(K/128), M] F32 (M-major: scale of row m, group g at g * M + m), amax / 448.
// K % 16 == 0.
void quantize_fp8_token_groups(const Tensor& x, Tensor& q, Tensor& scale, cudaStream_t stream);

enum class Bf16GemmPath {
  kAuto,      // the own weight-streaming kernel up to kBf16SmallMMaxRows rows (w transposed), cuBLASLt above
  kGemv,      // the own kernel; refused where it does not fit (bf16_small_m_fits: at most 8 rows, w transposed)
  kCublasLt,  // cuBLASLt at any M
};
// Up to 8 rows the GEMV keeps a row's bits whatever M is, so a verify of up to 8 rows gets a decode's (docs/
// speculative.md). Measured on H200 (bench_gemm_bf16, docs/performance.md): ahead of cuBLASLt at every M <= 8 on
// small weights (V2-Lite's kv_a and o_proj), behind from 4 rows on large ones (lm_head 120-165 us against 114-116).
inline constexpr int64_t kBf16SmallMMaxRows = 8;

enum class Fp8GemmPath {
  kAuto,      // small-M kernel up to kFp8SmallMMaxRows rows, cuBLASLt above
  kSmallM,    // always the own kernel (any M; slow for large M)
  kCublasLt,  // cuBLASLt (rows past the last multiple of 4 still go to the small-M kernel); fails if unsupported
};
// Measured on H100 (docs/performance.md): the two paths tie up to 16 rows, cuBLASLt is ahead from 32 on.
inline constexpr int64_t kFp8SmallMMaxRows = 16;

struct GemmRunnerOptions {
  // Capacity of the FP8 activation scratch: the largest rows x K of any linear_fp8 / bmm_fp8 (rows = M, or
  // batch x rows for the BMM).
  int64_t max_fp8_elements = int64_t{8192} * 7168;
};

// Owns the cuBLASLt handle and workspace, the FP8 activation scratch and the split-K scratch, all allocated at
// construction. Plans (descriptors + the heuristic's algorithm) are cached per shape on first use, so steady-state
// calls do no host work beyond the launches and are CUDA-graph capturable (warm each shape up before capture).
// Not thread-safe, and one stream at a time: the scratch buffers are shared by every call.
class GemmRunner {
 public:
  explicit GemmRunner(const GemmRunnerOptions& options = {});
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // y[M, N] = x[M, K] w[N, K]^T (+ y when accumulate: a residual add for free), BF16, FP32 accumulation.
  void linear_bf16(const Tensor& x, const Tensor& w, Tensor& y, cudaStream_t stream, bool accumulate = false,
                   Bf16GemmPath path = Bf16GemmPath::kAuto);

  // y[b] = x[b] op(w[b]) (+ y[b] when accumulate), BF16: op(w) = w^T when w_transposed (w[b] is [N, K]), else
  // w ([K, N]). Strides must be multiples of 8 elements and data 16-byte aligned. Up to kBf16SmallMMaxRows
  // rows with w transposed run the own weight-streaming kernel (gemm_kernels.h), cuBLASLt the rest (see
  // Bf16GemmPath).
  void bmm_bf16(const MatrixBatch& x, const MatrixBatch& w, bool w_transposed, const MatrixBatch& y,
                cudaStream_t stream, bool accumulate = false, Bf16GemmPath path = Bf16GemmPath::kAuto);

  // y[M, N] (BF16) = x[M, K] (BF16) dequant(w)^T: x is quantized per row per 128 columns into the runner's
  // scratch (as DeepSeek-V3 was trained), then multiplied by the small-M kernel or cuBLASLt (see Fp8GemmPath).
  // K % 16 == 0; cuBLASLt also needs N % 8 == 0 (else the small-M kernel runs).
  void linear_fp8(const Tensor& x, const Fp8BlockWeight& w, Tensor& y, cudaStream_t stream,
                  Fp8GemmPath path = Fp8GemmPath::kAuto);

  // y[b] (BF16) = x[b] (BF16, quantized per row per 128 columns) dequant(w.q[b])^T, w.q [B, N, K]; the small-M
  // kernel (decode-sized rows). The FP8 form of the absorbed-MLA BMMs, with split_kv_b_fp8's weights.
  void bmm_fp8(const MatrixBatch& x, const Fp8BlockWeight& w, const MatrixBatch& y, cudaStream_t stream);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace narwhal::ops::cuda
