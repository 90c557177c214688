// Interface of the fused MoE's grouped GEMM (kernel in moe_gemm_kernel.cuh): each M-tile of expert-sorted rows
// times its expert's weights on BF16 tensor cores (mma.sync m16n8k16, FP32 accumulators), FP8 block-scaled
// weights dequantized to BF16 in shared memory; epilogue SiLU-and-mul (gate_up) or router-weighted store (down).
#pragma once

#include "ops/cuda/common.cuh"

namespace narwhal::ops::cuda::moe {

// The three tile shapes; moe_experts picks one from the expected rows per expert (a function of T only).
enum class Tile { kDecode, kMedium, kPrefill };

struct GemmArgs {
  const bf16* a;                 // gate_up: x [T, K] (rows gathered by token); down: act [rows, K] (sorted rows)
  const void* b;                 // [E', b_rows, K] BF16 or F8E4M3, K contiguous
  const float* b_scale_inv;      // F8E4M3: [E', b_rows / 128, K / 128]
  const int32_t* sorted_pairs;   // [rows]: pair index (token * pair_width + slot), num_pairs marks padding
  const int32_t* tile_expert;    // [max_tiles]: expert of each M-tile
  const int32_t* num_tiles;      // device scalar: M-tiles in use
  const float* topk_weights;     // [T, top_k] (down only; slots >= top_k are shared experts, weight 1)
  bf16* c;                       // gate_up: act [rows, N] (sorted rows); down: y [num_pairs, N] (pair rows)
  int n;                         // output columns: I (gate_up) or H (down)
  int k;                         // reduction length: H (gate_up) or I (down)
  int b_rows;                    // rows of one expert's weight: 2I or H
  int top_k, pair_width, num_pairs;
  int max_tiles;                 // M-tiles the grid covers (a bound from T)
};

// Rows per M-tile of each tile shape (the sort/align step pads every expert's rows to a multiple of it).
constexpr int tile_rows(Tile tile) { return tile == Tile::kDecode ? 16 : tile == Tile::kMedium ? 64 : 128; }

// Launchers, one per weight dtype (moe_gemm_bf16.cu, moe_gemm_fp8.cu).
void grouped_gemm_bf16(const GemmArgs& args, Tile tile, bool gate_up, cudaStream_t stream);
void grouped_gemm_fp8(const GemmArgs& args, Tile tile, bool gate_up, cudaStream_t stream);

}  // namespace narwhal::ops::cuda::moe
