// Operand layouts of the GEMMs: strided matrix views, and FP8 weights arranged at load time.
#include <cstring>

#include "core/cuda_check.h"
#include "core/error.h"
#include "ops/cuda/gemm.h"

namespace narwhal::ops::cuda {

namespace {

constexpr int64_t kBlock = 128;

int64_t round_up_4(int64_t v) { return (v + 3) / 4 * 4; }

}  // namespace

MatrixBatch head_slices(const Tensor& t, int64_t offset, int64_t width) {
  NW_CHECK(t.ndim() == 3 && offset + width <= t.size(2), "head_slices: columns [", offset, ", ", offset + width,
           ") of ", t.shape_string());
  const int64_t heads = t.size(1), dim = t.size(2);
  return MatrixBatch{static_cast<char*>(t.data) + offset * dtype_size(t.dtype), t.dtype, heads, t.size(0), width,
                     heads * dim, dim};
}

MatrixBatch row_groups(const Tensor& t, int64_t batch, int64_t offset, int64_t rows) {
  NW_CHECK(t.ndim() == 2 && t.size(0) % batch == 0 && offset + rows <= t.size(0) / batch, "row_groups: rows [",
           offset, ", ", offset + rows, ") of ", batch, " groups of ", t.shape_string());
  const int64_t cols = t.size(1);
  return MatrixBatch{static_cast<char*>(t.data) + offset * cols * dtype_size(t.dtype), t.dtype, batch, rows, cols,
                     cols, t.size(0) / batch * cols};
}

Fp8BlockWeight make_fp8_block_weight(const Tensor& q, const Tensor& scale_inv) {
  NW_CHECK(q.dtype == DType::kF8E4M3 && scale_inv.dtype == DType::kF32 && q.device == Device::kCUDA &&
               scale_inv.device == Device::kCUDA && q.ndim() == scale_inv.ndim(),
           "make_fp8_block_weight: q ", q.shape_string(), " scale_inv ", scale_inv.shape_string(),
           " must be device F8_E4M3 and F32 of equal rank");
  const int64_t k_blocks = scale_inv.size(-1), padded = round_up_4(k_blocks);
  NW_CHECK(k_blocks == (q.size(-1) + kBlock - 1) / kBlock, "make_fp8_block_weight: scale_inv ",
           scale_inv.shape_string(), " does not have one column per 128 of q ", q.shape_string());
  if (padded == k_blocks) return {q, scale_inv};
  std::vector<int64_t> shape = scale_inv.shape;
  shape.back() = padded;
  Tensor scale = Tensor::empty(DType::kF32, shape, Device::kCUDA);
  NW_CUDA_CHECK(cudaMemset(scale.data, 0, scale.nbytes()));
  const int64_t rows = scale_inv.numel() / k_blocks;
  NW_CUDA_CHECK(cudaMemcpy2D(scale.data, padded * sizeof(float), scale_inv.data, k_blocks * sizeof(float),
                             k_blocks * sizeof(float), rows, cudaMemcpyDeviceToDevice));
  return {q, scale};
}

MlaFp8Weights split_kv_b_fp8(const Tensor& kv_b_q, const Tensor& kv_b_scale, int64_t heads) {
  constexpr int64_t kHeadDim = 128;  // nope and v head dims of every DeepSeek model: one scale block row each
  const int64_t latent = kv_b_q.size(1), latent_blocks = latent / kBlock;
  NW_CHECK(kv_b_q.device == Device::kCPU && kv_b_q.dtype == DType::kF8E4M3 && kv_b_q.ndim() == 2 &&
               kv_b_q.size(0) == heads * 2 * kHeadDim && latent % kBlock == 0 && kv_b_scale.dtype == DType::kF32 &&
               kv_b_scale.shape == std::vector<int64_t>({heads * 2, latent_blocks}),
           "split_kv_b_fp8: kv_b ", kv_b_q.shape_string(), " scale ", kv_b_scale.shape_string(), " for ", heads,
           " heads of nope = v = 128 (host F8_E4M3 and F32 expected)");
  const uint8_t* src = kv_b_q.ptr<uint8_t>();
  const float* src_scale = kv_b_scale.f32();
  const int64_t uv_scale_pitch = round_up_4(latent_blocks);
  Tensor uk_t = Tensor::zeros(DType::kF8E4M3, {heads, latent, kHeadDim});
  Tensor uk_t_scale = Tensor::zeros(DType::kF32, {heads, latent_blocks, 4});
  Tensor uv = Tensor::zeros(DType::kF8E4M3, {heads, kHeadDim, latent});
  Tensor uv_scale = Tensor::zeros(DType::kF32, {heads, 1, uv_scale_pitch});
  for (int64_t h = 0; h < heads; ++h) {
    const uint8_t* uk_rows = src + h * 2 * kHeadDim * latent;  // W_UK[h] [128, latent], then W_UV[h]
    for (int64_t d = 0; d < kHeadDim; ++d)
      for (int64_t c = 0; c < latent; ++c) uk_t.ptr<uint8_t>()[(h * latent + c) * kHeadDim + d] = uk_rows[d * latent + c];
    std::memcpy(uv.ptr<uint8_t>() + h * kHeadDim * latent, uk_rows + kHeadDim * latent, kHeadDim * latent);
    for (int64_t kb = 0; kb < latent_blocks; ++kb) {
      uk_t_scale.f32()[(h * latent_blocks + kb) * 4] = src_scale[(2 * h) * latent_blocks + kb];
      uv_scale.f32()[h * uv_scale_pitch + kb] = src_scale[(2 * h + 1) * latent_blocks + kb];
    }
  }
  return {{uk_t.to(Device::kCUDA), uk_t_scale.to(Device::kCUDA)}, {uv.to(Device::kCUDA), uv_scale.to(Device::kCUDA)}};
}

Tensor transpose_w_uk_bf16(const Tensor& kv_b, int64_t heads, int64_t nope, int64_t v) {
  NW_CHECK(kv_b.dtype == DType::kBF16 && kv_b.ndim() == 2 && kv_b.size(0) == heads * (nope + v),
           "transpose_w_uk_bf16: kv_b ", kv_b.shape_string(), " for ", heads, " heads of nope ", nope, " + v ", v,
           " (BF16 expected)");
  const Tensor host = kv_b.to(Device::kCPU);
  const int64_t latent = kv_b.size(1);
  const uint16_t* src = host.ptr<uint16_t>();
  Tensor uk_t = Tensor::zeros(DType::kBF16, {heads, latent, nope});
  uint16_t* dst = uk_t.ptr<uint16_t>();
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t d = 0; d < nope; ++d)
      for (int64_t c = 0; c < latent; ++c) dst[(h * latent + c) * nope + d] = src[(h * (nope + v) + d) * latent + c];
  return uk_t.to(Device::kCUDA);
}

}  // namespace narwhal::ops::cuda
