// The fused MoE's grouped GEMMs with BF16 expert weights (the kernel is moe_gemm_kernel.cuh).
#include "ops/cuda/moe_gemm_kernel.cuh"

namespace narwhal::ops::cuda::moe {

void grouped_gemm_bf16(const GemmArgs& args, Tile tile, bool gate_up, cudaStream_t stream) {
  dispatch_grouped_gemm</*kFp8=*/false>(args, tile, gate_up, stream);
}

}  // namespace narwhal::ops::cuda::moe
