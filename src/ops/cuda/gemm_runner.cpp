// GemmRunner: cuBLASLt plans cached per shape (BF16 GEMM/BMM, FP8 with VEC128 x BLK128x128 scales) and the
// dispatch of FP8 products between cuBLASLt and the own small-M kernel.
#include <cublasLt.h>

#include <unordered_map>

#include "core/cuda_check.h"
#include "core/error.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/gemm_kernels.h"

#define NW_CUBLAS_CHECK(expr)                                                                           \
  do {                                                                                                  \
    cublasStatus_t nw_status_ = (expr);                                                                 \
    if (nw_status_ != CUBLAS_STATUS_SUCCESS)                                                            \
      throw ::narwhal::Error(::narwhal::cat(#expr, " failed: ", cublasLtGetStatusString(nw_status_), " (", \
                                            __FILE__, ":", __LINE__, ")"));                             \
  } while (0)

namespace narwhal::ops::cuda {

namespace {

constexpr size_t kLtWorkspaceBytes = size_t{32} << 20;  // what cuBLAS recommends on Hopper
constexpr int64_t kScaleBlock = 128;
constexpr int64_t kSplitKPartialFloats = int64_t{4} << 20;
constexpr int64_t kSplitKCounters = 4096;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One cuBLASLt problem, in the row-major terms of the callers: y[b] [m, n] = x[b] [m, k] op(w[b]). Leading
// dimensions and batch strides in elements.
struct PlanKey {
  bool fp8 = false, w_transposed = true;
  int64_t batch = 1, m = 0, n = 0, k = 0, ldx = 0, ldw = 0, ldy = 0, stride_x = 0, stride_w = 0, stride_y = 0;
  bool operator==(const PlanKey&) const = default;
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& key) const {
    size_t h = (key.fp8 ? 1 : 0) | (key.w_transposed ? 2 : 0);
    for (int64_t v : {key.batch, key.m, key.n, key.k, key.ldx, key.ldw, key.ldy, key.stride_x, key.stride_w,
                      key.stride_y})
      h = h * 1000003u ^ std::hash<int64_t>()(v);
    return h;
  }
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t w = nullptr, x = nullptr, y = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool supported = false;
};

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                                   int64_t stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  NW_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, rows, cols, ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    NW_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    NW_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  return layout;
}

void check_fp8_weight(const Fp8BlockWeight& w, int64_t batch, int64_t n, int64_t k) {
  const bool batched = batch > 1 || w.q.ndim() == 3;
  const std::vector<int64_t> q_shape = batched ? std::vector<int64_t>{batch, n, k} : std::vector<int64_t>{n, k};
  const int64_t nb = ceil_div(n, kScaleBlock), kb4 = ceil_div(ceil_div(k, kScaleBlock), 4) * 4;
  const std::vector<int64_t> s_shape =
      batched ? std::vector<int64_t>{batch, nb, kb4} : std::vector<int64_t>{nb, kb4};
  NW_CHECK(w.q.dtype == DType::kF8E4M3 && w.q.device == Device::kCUDA && w.q.shape == q_shape &&
               w.scale.dtype == DType::kF32 && w.scale.shape == s_shape,
           "fp8 weight: q ", w.q.shape_string(), " scale ", w.scale.shape_string(), " where q ",
           shape_to_string(q_shape), " F8_E4M3 and scale ", shape_to_string(s_shape), " F32 are expected");
}

// Output columns a GEMV warp computes: more share each x load, which from 3 rows on is what a one-column warp waits
// for (bench_gemm_bf16: at M = 4 one column reads V2-Lite's lm_head at 2.9 TB/s), but fewer warps cover N, so the
// count halves while the grid would leave SMs without a CTA.
int bf16_gemv_columns(int64_t m, int64_t n, int64_t batch, int sms) {
  int columns = m <= 2 ? 1 : m <= 4 ? 2 : 4;
  while (columns > 1 && ceil_div(n, int64_t{kBf16SmallMWarps} * columns) * batch < sms) columns /= 2;
  return columns;
}

}  // namespace

struct GemmRunner::State {
  cublasLtHandle_t handle = nullptr;
  Tensor lt_workspace, fp8_q, fp8_scale, partials, counters;
  SplitKWorkspace split_k;
  std::unordered_map<PlanKey, Plan, PlanKeyHash> plans;

  ~State() {
    for (auto& [key, plan] : plans) {
      cublasLtMatrixLayoutDestroy(plan.w);
      cublasLtMatrixLayoutDestroy(plan.x);
      cublasLtMatrixLayoutDestroy(plan.y);
      cublasLtMatmulDescDestroy(plan.desc);
    }
    if (handle) cublasLtDestroy(handle);
  }

  // Host work on the first call of a shape only: descriptors and the heuristic's best algorithm.
  const Plan& plan_for(const PlanKey& key) {
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    Plan& plan = plans[key];
    const cudaDataType_t in_type = key.fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    NW_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    // Column-major view of the row-major problem: y^T [n, m] = op(w)^T [n, k] x^T [k, m].
    const cublasOperation_t op_w = key.w_transposed ? CUBLAS_OP_T : CUBLAS_OP_N, op_x = CUBLAS_OP_N;
    NW_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_w, sizeof(op_w)));
    NW_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_x, sizeof(op_x)));
    if (key.fp8) {
      const cublasLtMatmulMatrixScale_t w_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F,
                                        x_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
      NW_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &w_mode, sizeof(w_mode)));
      NW_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &x_mode, sizeof(x_mode)));
      // The heuristic finds no block-scaled algorithm while the scale pointers are null (seen with cuBLASLt
      // 13.1 on H100); any device pointer will do here, each call sets the real ones.
      const void* placeholder = fp8_scale.data;
      for (auto attr : {CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER})
        NW_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, attr, &placeholder, sizeof(placeholder)));
    }
    plan.w = key.w_transposed ? make_layout(in_type, key.k, key.n, key.ldw, key.batch, key.stride_w)
                              : make_layout(in_type, key.n, key.k, key.ldw, key.batch, key.stride_w);
    plan.x = make_layout(in_type, key.k, key.m, key.ldx, key.batch, key.stride_x);
    plan.y = make_layout(CUDA_R_16BF, key.n, key.m, key.ldy, key.batch, key.stride_y);

    cublasLtMatmulPreference_t pref = nullptr;
    NW_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t workspace_bytes = kLtWorkspaceBytes;
    NW_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                         &workspace_bytes, sizeof(workspace_bytes)));
    // Views (row slices, head slices) are only 16-byte aligned; the default assumes 256.
    const uint32_t alignment = 16;
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      NW_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &alignment, sizeof(alignment)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle, plan.desc, plan.w, plan.x, plan.y, plan.y,
                                                                 pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    plan.supported = status == CUBLAS_STATUS_SUCCESS && found > 0;
    if (plan.supported) plan.algo = result.algo;
    return plan;
  }

  void run(const Plan& plan, const void* w, const void* x, void* y, float beta, cudaStream_t stream) {
    const float alpha = 1.0f;
    NW_CUBLAS_CHECK(cublasLtMatmul(handle, plan.desc, &alpha, w, plan.w, x, plan.x, &beta, y, plan.y, y, plan.y,
                                   &plan.algo, lt_workspace.data, kLtWorkspaceBytes, stream));
  }

  // Quantizes rows of x (flattened m * batch + b) into the scratch with the layout of QuantFp8Args.
  void quantize(const MatrixBatch& x, int64_t main_rows, cudaStream_t stream) {
    const int64_t rows = x.batch * x.rows, kblocks = ceil_div(x.cols, kScaleBlock);
    NW_CHECK(rows * x.cols <= fp8_q.numel() && kblocks * (rows + 4) <= fp8_scale.numel(),
             "fp8 activations of ", rows, " x ", x.cols, " exceed GemmRunnerOptions::max_fp8_elements");
    QuantFp8Args a;
    a.x = x.data;
    a.batch = x.batch;
    a.rows = x.rows;
    a.k = x.cols;
    a.x_row_stride = x.row_stride;
    a.x_batch_stride = x.batch_stride;
    a.q = fp8_q.ptr<uint8_t>();
    a.scale = fp8_scale.f32();
    a.main_rows = main_rows;
    a.main_ld = main_rows;
    a.tail_offset = kblocks * main_rows;
    launch_quantize_fp8(a, stream);
  }
};

GemmRunner::GemmRunner(const GemmRunnerOptions& options) : state_(std::make_unique<State>()) {
  State& s = *state_;
  NW_CUBLAS_CHECK(cublasLtCreate(&s.handle));
  s.lt_workspace = Tensor::empty(DType::kF32, {static_cast<int64_t>(kLtWorkspaceBytes / 4)}, Device::kCUDA);
  s.fp8_q = Tensor::empty(DType::kF8E4M3, {options.max_fp8_elements}, Device::kCUDA);
  s.fp8_scale = Tensor::empty(DType::kF32, {options.max_fp8_elements / 64 + 4096}, Device::kCUDA);
  s.partials = Tensor::empty(DType::kF32, {kSplitKPartialFloats}, Device::kCUDA);
  s.counters = Tensor::empty(DType::kI32, {kSplitKCounters}, Device::kCUDA);
  NW_CUDA_CHECK(cudaMemset(s.counters.data, 0, s.counters.nbytes()));
  int device = 0;
  NW_CUDA_CHECK(cudaGetDevice(&device));
  NW_CUDA_CHECK(cudaDeviceGetAttribute(&s.split_k.num_sms, cudaDevAttrMultiProcessorCount, device));
  s.split_k.partials = s.partials.f32();
  s.split_k.partial_floats = kSplitKPartialFloats;
  s.split_k.counters = s.counters.ptr<unsigned>();
  s.split_k.counter_count = kSplitKCounters;
}

GemmRunner::~GemmRunner() = default;

void GemmRunner::linear_bf16(const Tensor& x, const Tensor& w, Tensor& y, cudaStream_t stream, bool accumulate,
                             Bf16GemmPath path) {
  NW_CHECK(x.ndim() == 2 && w.ndim() == 2 && y.ndim() == 2,
           "linear_bf16: x", x.shape_string(), " w", w.shape_string(), " y", y.shape_string(), " must be 2-D");
  bmm_bf16(MatrixBatch{x.data, x.dtype, 1, x.size(0), x.size(1), x.size(1), 0},
           MatrixBatch{w.data, w.dtype, 1, w.size(0), w.size(1), w.size(1), 0}, true,
           MatrixBatch{y.data, y.dtype, 1, y.size(0), y.size(1), y.size(1), 0}, stream, accumulate, path);
}

void GemmRunner::bmm_bf16(const MatrixBatch& x, const MatrixBatch& w, bool w_transposed, const MatrixBatch& y,
                          cudaStream_t stream, bool accumulate, Bf16GemmPath path) {
  const int64_t k = x.cols, n = w_transposed ? w.rows : w.cols;
  NW_CHECK(x.dtype == DType::kBF16 && w.dtype == DType::kBF16 && y.dtype == DType::kBF16 &&
               (w_transposed ? w.cols : w.rows) == k && y.rows == x.rows && y.cols == n && x.batch == w.batch &&
               y.batch == x.batch,
           "bmm_bf16: x [", x.batch, ", ", x.rows, ", ", x.cols, "] w [", w.batch, ", ", w.rows, ", ", w.cols,
           "] y [", y.batch, ", ", y.rows, ", ", y.cols, "] (BF16) do not agree");
  if (x.rows == 0 || n == 0) return;
  Bf16SmallMArgs small{x.data, x.row_stride, x.batch_stride, w.data, w.row_stride, w.batch_stride, y.data,
                       y.row_stride, y.batch_stride, x.batch, x.rows, n, k, accumulate};
  const bool fits = w_transposed && bf16_small_m_fits(small);
  NW_CHECK(path != Bf16GemmPath::kGemv || fits, "bmm_bf16: the GEMV takes a transposed weight, at most ",
           kBf16SmallMMaxKernelRows, " rows, K and strides multiples of 8 (m ", x.rows, " k ", k, ")");
  if (path == Bf16GemmPath::kGemv || (path == Bf16GemmPath::kAuto && fits && x.rows <= kBf16SmallMMaxRows)) {
    small.columns = bf16_gemv_columns(x.rows, n, x.batch, state_->split_k.num_sms);
    launch_bf16_small_m(small, stream);
    return;
  }
  const PlanKey key{false, w_transposed, x.batch, x.rows, n, k, x.row_stride, w.row_stride, y.row_stride,
                    x.batch_stride, w.batch_stride, y.batch_stride};
  const Plan& plan = state_->plan_for(key);
  NW_CHECK(plan.supported, "bmm_bf16: cuBLASLt has no algorithm for m ", x.rows, " n ", n, " k ", k, " batch ",
           x.batch, " (strides must be multiples of 8 elements)");
  state_->run(plan, w.data, x.data, y.data, accumulate ? 1.0f : 0.0f, stream);
}

void GemmRunner::linear_fp8(const Tensor& x, const Fp8BlockWeight& w, Tensor& y, cudaStream_t stream,
                            Fp8GemmPath path) {
  State& s = *state_;
  NW_CHECK(x.ndim() == 2 && x.dtype == DType::kBF16 && y.ndim() == 2 && y.dtype == DType::kBF16 && w.q.ndim() == 2,
           "linear_fp8: x", x.shape_string(), " y", y.shape_string(), " must be 2-D BF16");
  const int64_t m = x.size(0), k = x.size(1), n = w.q.size(0);
  check_fp8_weight(w, 1, n, k);
  NW_CHECK(y.size(0) == m && y.size(1) == n, "linear_fp8: y", y.shape_string(), " for x", x.shape_string(), " w",
           w.q.shape_string());
  NW_CHECK(path != Fp8GemmPath::kCublasLt || n % 8 == 0, "linear_fp8: cuBLASLt needs N % 8 == 0, N = ", n);
  if (m == 0) return;
  const bool use_lt =
      n % 8 == 0 && (path == Fp8GemmPath::kCublasLt || (path == Fp8GemmPath::kAuto && m > kFp8SmallMMaxRows));
  // cuBLASLt reads the activation scales as an M-major matrix of pitch M, which needs M % 4 == 0: it gets the
  // rows up to the last multiple of 4, and the small-M kernel the (at most 3) rows after them.
  const int64_t main_rows = use_lt ? m / 4 * 4 : m, kblocks = ceil_div(k, kScaleBlock);
  s.quantize(MatrixBatch{x.data, x.dtype, 1, m, k, k, 0}, main_rows, stream);
  const uint8_t* q = s.fp8_q.ptr<uint8_t>();
  const float* scale = s.fp8_scale.f32();

  Fp8SmallMArgs args;
  args.x_row = k;
  args.sx_row = 1;
  args.w = w.q.ptr<uint8_t>();
  args.sw = w.scale.f32();
  args.sw_ld = w.scale.size(1);
  args.y_row = n;
  args.n = n;
  args.k = k;
  auto run_small_m = [&](int64_t row_begin, int64_t rows, const float* row_scales, int64_t scale_pitch) {
    args.x = q + row_begin * k;
    args.sx = row_scales;
    args.sx_kb = scale_pitch;
    args.y = y.ptr<uint16_t>() + row_begin * n;
    args.m = rows;
    launch_fp8_gemm_small_m(args, s.split_k, stream);
  };
  if (!use_lt) {
    run_small_m(0, m, scale, m);
    return;
  }
  if (main_rows > 0) {
    const Plan& plan = s.plan_for(PlanKey{true, true, 1, main_rows, n, k, k, k, n, 0, 0, 0});
    NW_CHECK(plan.supported || path != Fp8GemmPath::kCublasLt, "linear_fp8: cuBLASLt has no block-scaled FP8 "
             "algorithm for m ", main_rows, " n ", n, " k ", k);
    if (plan.supported) {
      const void* w_scale = w.scale.data;
      NW_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale,
                                                     sizeof(w_scale)));
      NW_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scale,
                                                     sizeof(scale)));
      s.run(plan, w.q.data, q, y.data, 0.0f, stream);
    } else {
      run_small_m(0, main_rows, scale, main_rows);
    }
  }
  if (main_rows < m) run_small_m(main_rows, m - main_rows, scale + kblocks * main_rows, 4);
}

void GemmRunner::bmm_fp8(const MatrixBatch& x, const Fp8BlockWeight& w, const MatrixBatch& y, cudaStream_t stream) {
  State& s = *state_;
  const int64_t batch = x.batch, m = x.rows, k = x.cols, n = w.q.ndim() == 3 ? w.q.size(1) : 0;
  check_fp8_weight(w, batch, n, k);
  NW_CHECK(x.dtype == DType::kBF16 && y.dtype == DType::kBF16 && y.batch == batch && y.rows == m && y.cols == n,
           "bmm_fp8: x [", batch, ", ", m, ", ", k, "] y [", y.batch, ", ", y.rows, ", ", y.cols, "] w ",
           w.q.shape_string(), " do not agree");
  const int64_t rows = batch * m;
  s.quantize(x, rows, stream);
  // Quantized row (m, b) sits at (m * batch + b) * k, its scale for K block kb at kb * rows + m * batch + b.
  Fp8SmallMArgs args;
  args.x = s.fp8_q.ptr<uint8_t>();
  args.x_row = batch * k;
  args.x_batch = k;
  args.sx = s.fp8_scale.f32();
  args.sx_row = batch;
  args.sx_kb = rows;
  args.sx_batch = 1;
  args.w = w.q.ptr<uint8_t>();
  args.w_batch = n * k;
  args.sw = w.scale.f32();
  args.sw_ld = w.scale.size(2);
  args.sw_batch = w.scale.size(1) * w.scale.size(2);
  args.y = y.data;
  args.y_row = y.row_stride;
  args.y_batch = y.batch_stride;
  args.batch = batch;
  args.m = m;
  args.n = n;
  args.k = k;
  launch_fp8_gemm_small_m(args, s.split_k, stream);
}

}  // namespace narwhal::ops::cuda
