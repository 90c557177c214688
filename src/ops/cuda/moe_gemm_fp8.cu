// The fused MoE's grouped GEMMs with FP8 e4m3 expert weights and 128x128 block scales (moe_gemm_kernel.cuh).
#include "ops/cuda/moe_gemm_kernel.cuh"

namespace narwhal::ops::cuda::moe {

void grouped_gemm_fp8(const GemmArgs& args, Tile tile, bool gate_up, cudaStream_t stream) {
  dispatch_grouped_gemm</*kFp8=*/true>(args, tile, gate_up, stream);
}

}  // namespace narwhal::ops::cuda::moe
