// ops::cuda::verify_accept: a thread per sequence, the same computation as ops/cpu/verify_accept.cpp.
#include "ops/cuda/verify_accept.h"

#include "core/error.h"
#include "ops/cuda/common.cuh"

namespace narwhal::ops::cuda {

namespace {

constexpr int kThreads = 128;

struct Rows {
  const int32_t *fed, *draws, *seq_info, *page_table;
  const int64_t* verify_slots;
  int32_t *ext_ids, *ext_last, *chain_positions, *chain_lens;
  int64_t *ext_slots, *chain_slots;
};

__global__ void __launch_bounds__(kThreads) verify_accept_kernel(Rows a, int seqs, int rows, int rounds, int pages,
                                                                 int page_size) {
  grid_dependency_wait();
  const int s = blockIdx.x * kThreads + threadIdx.x;
  if (s >= seqs) return;
  const int prefix = a.seq_info[s * 3], drafts = a.seq_info[s * 3 + 1], limit = a.seq_info[s * 3 + 2];
  const int64_t row = static_cast<int64_t>(s) * rows;
  int kept = 1;
  while (kept <= drafts && kept < rows && a.fed[row + kept] == a.draws[row + kept - 1]) ++kept;
  for (int j = 0; j < rows; ++j) {
    a.ext_ids[row + j] = a.draws[row + j];
    a.ext_slots[row + j] = j < kept ? a.verify_slots[row + j] : -1;
  }
  a.ext_last[s] = static_cast<int32_t>(row + kept - 1);
  for (int r = 1; r <= rounds; ++r) {
    const int p = prefix + kept - 1 + r;
    const int64_t at = static_cast<int64_t>(r - 1) * seqs + s;
    const bool stored = p < limit && p / page_size < pages;
    a.chain_positions[at] = p;
    a.chain_lens[at] = stored ? p + 1 : 0;
    a.chain_slots[at] = stored ? static_cast<int64_t>(a.page_table[static_cast<int64_t>(s) * pages + p / page_size]) *
                                         page_size + p % page_size
                               : -1;
  }
}

void check(const Tensor& t, DType dtype, int64_t elements, const char* name) {
  NW_CHECK(t.device == Device::kCUDA && t.dtype == dtype && t.numel() == elements, "cuda::verify_accept: ", name,
           " is ", dtype_name(t.dtype), t.shape_string(), t.device == Device::kCUDA ? "" : " on the host",
           ", expected ", elements, " CUDA ", dtype_name(dtype), " elements");
}

}  // namespace

void verify_accept(const Tensor& fed, const Tensor& draws, const Tensor& verify_slots, const Tensor& seq_info,
                   const Tensor& page_table, int64_t page_size, Tensor& ext_ids, Tensor& ext_slots, Tensor& ext_last,
                   Tensor& chain_positions, Tensor& chain_slots, Tensor& chain_lens, cudaStream_t stream) {
  const int64_t b = seq_info.ndim() == 2 ? seq_info.size(0) : 0, rounds = chain_positions.size(0), l = rounds + 2;
  NW_CHECK(seq_info.ndim() == 2 && seq_info.size(1) == 3 && b >= 1 && b <= 65536 && l <= 64 && page_size >= 1 &&
               page_table.ndim() == 2 && page_table.size(0) == b,
           "cuda::verify_accept: seq_info", seq_info.shape_string(), " page_table", page_table.shape_string(),
           " chain rounds ", rounds, " page size ", page_size, " (1 to 65536 sequences [B, 3], 2 to 64 rows each)");
  check(fed, DType::kI32, b * l, "fed");
  check(draws, DType::kI32, b * l, "draws");
  check(verify_slots, DType::kI64, b * l, "verify_slots");
  check(seq_info, DType::kI32, b * 3, "seq_info");
  check(page_table, DType::kI32, page_table.numel(), "page_table");
  check(ext_ids, DType::kI32, b * l, "ext_ids");
  check(ext_slots, DType::kI64, b * l, "ext_slots");
  check(ext_last, DType::kI32, b, "ext_last");
  check(chain_positions, DType::kI32, rounds * b, "chain_positions");
  check(chain_slots, DType::kI64, rounds * b, "chain_slots");
  check(chain_lens, DType::kI32, rounds * b, "chain_lens");
  const Rows a{static_cast<const int32_t*>(fed.data),          static_cast<const int32_t*>(draws.data),
               static_cast<const int32_t*>(seq_info.data),     static_cast<const int32_t*>(page_table.data),
               static_cast<const int64_t*>(verify_slots.data), static_cast<int32_t*>(ext_ids.data),
               static_cast<int32_t*>(ext_last.data),           static_cast<int32_t*>(chain_positions.data),
               static_cast<int32_t*>(chain_lens.data),         static_cast<int64_t*>(ext_slots.data),
               static_cast<int64_t*>(chain_slots.data)};
  launch(verify_accept_kernel, dim3(static_cast<unsigned>((b + kThreads - 1) / kThreads)), dim3(kThreads), 0, stream,
         a, static_cast<int>(b), static_cast<int>(l), static_cast<int>(rounds), static_cast<int>(page_table.size(1)),
         static_cast<int>(page_size));
}

}  // namespace narwhal::ops::cuda
