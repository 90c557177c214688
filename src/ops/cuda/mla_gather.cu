// Gathers each sequence's paged MLA latents (prefix + new tokens) into one contiguous buffer for prefill.
#include "ops/cuda/common.cuh"
#include "ops/cuda/mla.h"

namespace narwhal::ops::cuda {

namespace {

constexpr int kGatherThreads = 256;
constexpr int kGatherRows = 32;  // token rows per CTA: 32 x 1152 bytes for DeepSeek's 576-wide latents

// One CTA copies up to kGatherRows consecutive positions of one sequence, 16 bytes per thread and step, so a
// warp reads whole cache rows (contiguous within a page) and writes whole output rows.
__global__ void __launch_bounds__(kGatherThreads) gather_latents_kernel(const uint4* cache, int page_size,
                                                                        int row_chunks, const int32_t* page_table,
                                                                        int64_t page_table_ld,
                                                                        const int32_t* cu_seqlens_k, uint4* out) {
  grid_dependency_wait();
  const int seq = blockIdx.y;
  const int k_begin = cu_seqlens_k[seq], k_len = cu_seqlens_k[seq + 1] - k_begin;
  const int pos_begin = blockIdx.x * kGatherRows;
  const int rows = min(kGatherRows, k_len - pos_begin);
  if (rows <= 0) return;
  const int32_t* pages = page_table + seq * page_table_ld;
  for (int i = threadIdx.x; i < rows * row_chunks; i += kGatherThreads) {
    const int pos = pos_begin + i / row_chunks, chunk = i % row_chunks;
    const int64_t slot = static_cast<int64_t>(pages[pos / page_size]) * page_size + pos % page_size;
    out[(static_cast<int64_t>(k_begin) + pos) * row_chunks + chunk] = cache[slot * row_chunks + chunk];
  }
}

}  // namespace

void mla_gather_latents(const Tensor& cache, const Tensor& page_table, const Tensor& cu_seqlens_k,
                        int64_t max_seqlen_k, Tensor& out, cudaStream_t stream) {
  const int64_t width = cache.ndim() == 3 ? cache.size(2) : 0;
  NW_CHECK(cache.dtype == DType::kBF16 && out.dtype == DType::kBF16 && width % 8 == 0 && width > 0 &&
               out.ndim() == 2 && out.size(1) == width && page_table.dtype == DType::kI32 &&
               page_table.ndim() == 2 && cu_seqlens_k.dtype == DType::kI32 && cu_seqlens_k.ndim() == 1 &&
               cu_seqlens_k.size(0) == page_table.size(0) + 1,
           "mla_gather_latents: cache", cache.shape_string(), " page_table", page_table.shape_string(),
           " cu_seqlens_k", cu_seqlens_k.shape_string(), " out", out.shape_string(), " do not agree");
  const int64_t num_seqs = page_table.size(0);
  if (num_seqs == 0 || max_seqlen_k == 0) return;
  const dim3 grid(static_cast<unsigned>(ceil_div(max_seqlen_k, kGatherRows)), static_cast<unsigned>(num_seqs));
  launch(gather_latents_kernel, grid, kGatherThreads, 0, stream,
         device_ptr<const uint4>(cache), static_cast<int>(cache.size(1)), static_cast<int>(width / 8),
         device_ptr<const int32_t>(page_table), page_table.size(1), device_ptr<const int32_t>(cu_seqlens_k),
         device_ptr<uint4>(out));
}

}  // namespace narwhal::ops::cuda
