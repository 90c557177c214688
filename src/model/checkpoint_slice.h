// The part of a checkpoint tensor that one TP rank reads, copied straight out of the memory-mapped shard: as F32
// (FP8 dequantized with its blocks' scales), or as FP8 bytes with the scale blocks that cover them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/safetensors.h"
#include "parallel/parallel_config.h"

namespace narwhal {

// Which part of a stored matrix [rows, cols] (or of each matrix of a stacked [E, rows, cols]) a rank reads: all of
// it, a range of rows, or a range of columns. A row range may run past the last row (a padded vocabulary shard):
// those rows read as zeros.
struct Cut {
  enum class Dim { kNone, kRows, kCols };
  Dim dim = Dim::kNone;
  Shard range;

  static Cut rows(Shard s) { return {Dim::kRows, s}; }
  static Cut cols(Shard s) { return {Dim::kCols, s}; }
  // The shape the cut reads out of a tensor of shape `full`.
  std::vector<int64_t> shape_of(std::vector<int64_t> full) const;
};

// An FP8 matrix's block scales (`weight_scale_inv`): F32 [ceil(rows / block_rows), ceil(cols / block_cols)], the
// whole tensor's; weight = fp8 * scale of its block.
struct BlockScales {
  Tensor scale;
  int64_t block_rows = 128;
  int64_t block_cols = 128;
};

// Host F32 copy of the cut of an F32, BF16 or F16 tensor, or of an FP8 e4m3 matrix dequantized with `fp8`'s
// scales, which any cut can do exactly (each element takes its own block's scale).
Tensor read_f32(const TensorInfo& info, const Cut& cut, const BlockScales& fp8 = {});

// FP8 kept FP8 (the GPU's block-scaled GEMMs): the cut's bytes and the scale blocks that cover them. The cut must
// start on a block boundary and end on one or at the matrix's end, or a block's scale would be split between
// ranks: otherwise throws naming the tensor, --tp-size `tp_size` and the block the cut falls in.
struct Fp8Cut {
  Tensor q;      // F8E4M3 [rows', cols']
  Tensor scale;  // F32 [ceil(rows' / block_rows), ceil(cols' / block_cols)]
};
Fp8Cut read_fp8(const TensorInfo& info, const BlockScales& fp8, const Cut& cut, int tp_size);

}  // namespace narwhal
