// read_f32 / read_fp8: row or column ranges of mapped checkpoint tensors, converted row by row.
#include "model/checkpoint_slice.h"

#include <cstring>

#include "core/error.h"

namespace narwhal {

std::vector<int64_t> Cut::shape_of(std::vector<int64_t> full) const {
  if (dim != Dim::kNone) full[full.size() - (dim == Dim::kRows ? 2 : 1)] = range.size;
  return full;
}

namespace {

// A tensor seen as `batch` matrices of rows x cols, and the row and column ranges a cut reads of each.
struct CutGeometry {
  int64_t batch = 1, rows = 1, cols = 1;
  Shard row_range, col_range;
};

CutGeometry geometry(const TensorInfo& info, const Cut& cut) {
  const size_t nd = info.shape.size();
  NW_CHECK(cut.dim == Cut::Dim::kNone || nd >= 2, *info.file, ": tensor '", info.name, "' of shape ",
           shape_to_string(info.shape), " is not a matrix, so it cannot be split between TP ranks");
  CutGeometry g;
  if (nd >= 1) g.cols = info.shape[nd - 1];
  if (nd >= 2) g.rows = info.shape[nd - 2];
  for (size_t i = 0; i + 2 < nd; ++i) g.batch *= info.shape[i];
  g.row_range = cut.dim == Cut::Dim::kRows ? cut.range : Shard{0, g.rows};
  g.col_range = cut.dim == Cut::Dim::kCols ? cut.range : Shard{0, g.cols};
  NW_CHECK(g.row_range.begin >= 0 && g.col_range.begin >= 0 && g.col_range.end() <= g.cols,
           *info.file, ": tensor '", info.name, "' of shape ", shape_to_string(info.shape), " has no rows [",
           g.row_range.begin, ", ", g.row_range.end(), ") x columns [", g.col_range.begin, ", ", g.col_range.end(),
           ")");
  return g;
}

void check_scales(const TensorInfo& info, const BlockScales& fp8, int64_t rows, int64_t cols) {
  NW_CHECK(fp8.scale.defined() && info.shape.size() == 2, *info.file, ": tensor '", info.name,
           "' is F8_E4M3 but not a matrix with block scales");
  NW_CHECK(fp8.scale.ndim() == 2 && fp8.scale.size(0) == (rows + fp8.block_rows - 1) / fp8.block_rows &&
               fp8.scale.size(1) == (cols + fp8.block_cols - 1) / fp8.block_cols,
           *info.file, ": the block scales ", fp8.scale.shape_string(), " of tensor '", info.name,
           "' do not cover its ", shape_to_string(info.shape), " in ", fp8.block_rows, "x", fp8.block_cols, " blocks");
}

// Row `row` of the cut's columns (n values from src) as F32; FP8 times the scales of block row `row`.
void convert_row(const unsigned char* src, DType dtype, int64_t n, const float* fp8_scales, int64_t first_col,
                 int64_t block_cols, float* dst) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kBF16:
    case DType::kF16:
      for (int64_t j = 0; j < n; ++j) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * j, 2);
        dst[j] = dtype == DType::kBF16 ? bf16_to_float(bits) : f16_to_float(bits);
      }
      return;
    default:  // F8E4M3, checked by the caller
      for (int64_t j = 0; j < n; ++j) dst[j] = fp8_e4m3_to_float(src[j]) * fp8_scales[(first_col + j) / block_cols];
  }
}

}  // namespace

Tensor read_f32(const TensorInfo& info, const Cut& cut, const BlockScales& fp8) {
  const DType dtype = info.dtype;
  NW_CHECK(dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16 || dtype == DType::kF8E4M3,
           *info.file, ": tensor '", info.name, "' has dtype ", dtype_name(dtype),
           " where a floating-point tensor (F32, BF16, F16, F8_E4M3) is expected");
  const CutGeometry g = geometry(info, cut);
  if (dtype == DType::kF8E4M3) check_scales(info, fp8, g.rows, g.cols);
  Tensor out = Tensor::zeros(DType::kF32, cut.shape_of(info.shape));
  const int64_t out_rows = g.batch * g.row_range.size, width = g.col_range.size;
  const size_t elem = dtype_size(dtype);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < out_rows; ++i) {
    const int64_t b = i / g.row_range.size, row = g.row_range.begin + i % g.row_range.size;
    if (row >= g.rows) continue;  // padding past the last row stays zero
    const unsigned char* src = info.data + ((b * g.rows + row) * g.cols + g.col_range.begin) * elem;
    const float* scales =
        dtype == DType::kF8E4M3 ? fp8.scale.f32() + (row / fp8.block_rows) * fp8.scale.size(1) : nullptr;
    convert_row(src, dtype, width, scales, g.col_range.begin, fp8.block_cols, out.f32() + i * width);
  }
  return out;
}

Fp8Cut read_fp8(const TensorInfo& info, const BlockScales& fp8, const Cut& cut, int tp_size) {
  NW_CHECK(info.dtype == DType::kF8E4M3, *info.file, ": tensor '", info.name, "' is not F8_E4M3");
  const CutGeometry g = geometry(info, cut);
  check_scales(info, fp8, g.rows, g.cols);
  if (cut.dim != Cut::Dim::kNone) {
    const bool by_rows = cut.dim == Cut::Dim::kRows;
    const int64_t block = by_rows ? fp8.block_rows : fp8.block_cols, total = by_rows ? g.rows : g.cols;
    const Shard& r = cut.range;
    const char* unit = by_rows ? "row" : "column";
    NW_CHECK(r.end() <= total, *info.file, ": tensor '", info.name, "' has no ", unit, "s past ", total);
    const bool starts_on_block = r.begin % block == 0, ends_on_block = r.end() % block == 0 || r.end() == total;
    NW_CHECK(starts_on_block && ends_on_block, *info.file, ": tensor '", info.name, "' (", total, " ", unit,
             "s): --tp-size ", tp_size, " gives each rank ", r.size, " of them, and ", unit, " ",
             starts_on_block ? r.end() : r.begin, " falls inside FP8 scale block ",
             (starts_on_block ? r.end() : r.begin) / block, " (", block, " ", unit,
             "s per block); FP8 weights are split with whole blocks, so choose a --tp-size that cuts at multiples of ",
             block);
  }
  Fp8Cut out;
  const int64_t rows = g.row_range.size, width = g.col_range.size;
  out.q = Tensor::zeros(DType::kF8E4M3, {rows, width});
  for (int64_t i = 0; i < rows; ++i)
    std::memcpy(out.q.ptr<unsigned char>() + i * width,
                info.data + (g.row_range.begin + i) * g.cols + g.col_range.begin, static_cast<size_t>(width));
  const int64_t row0 = g.row_range.begin / fp8.block_rows, col0 = g.col_range.begin / fp8.block_cols;
  const int64_t scale_rows = (rows + fp8.block_rows - 1) / fp8.block_rows;
  const int64_t scale_cols = (width + fp8.block_cols - 1) / fp8.block_cols;
  out.scale = Tensor::zeros(DType::kF32, {scale_rows, scale_cols});
  for (int64_t i = 0; i < scale_rows; ++i)
    std::memcpy(out.scale.f32() + i * scale_cols, fp8.scale.f32() + (row0 + i) * fp8.scale.size(1) + col0,
                static_cast<size_t>(scale_cols) * sizeof(float));
  return out;
}

}  // namespace narwhal
