// A speculative verify's acceptance and the draft model's inputs after it, on the device: ops/verify_accept.h (the
// CPU reference) says what it computes; this takes the same arguments as CUDA tensors.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/tensor.h"

namespace narwhal::ops::cuda {

// Shapes as ops::verify_accept's: fed, draws, ext_ids [B * L] I32; verify_slots, ext_slots [B * L] I64;
// seq_info [B, 3] I32; page_table [B, P] I32; ext_last [B] I32; chain_positions, chain_lens [N - 1, B] I32,
// chain_slots [N - 1, B] I64; 1 <= B <= 65536, 2 <= L <= 64, page_size >= 1. A thread per sequence, no host sync:
// CUDA-graph capturable.
void verify_accept(const Tensor& fed, const Tensor& draws, const Tensor& verify_slots, const Tensor& seq_info,
                   const Tensor& page_table, int64_t page_size, Tensor& ext_ids, Tensor& ext_slots, Tensor& ext_last,
                   Tensor& chain_positions, Tensor& chain_slots, Tensor& chain_lens, cudaStream_t stream);

}  // namespace narwhal::ops::cuda
