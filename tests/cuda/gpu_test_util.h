// Helpers for GPU op tests: skip without a device, random inputs in BF16 on both sides, host copies.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/tensor.h"
#include "test_util.h"

namespace narwhal::testing {

bool gpu_available();
int gpu_count();  // GPUs this process sees (0 without a driver)

// A BF16 tensor of N(0, scale^2) values: `host` holds the exact (BF16-rounded) values as F32 for the CPU
// reference, `device` the BF16 copy the kernel reads.
struct RandomBf16 {
  Tensor host;
  Tensor device;
};
RandomBf16 random_bf16(std::vector<int64_t> shape, uint64_t seed, float scale = 1.0f);

// Host F32 copy of a device tensor of dtype F32 or BF16.
Tensor to_host_f32(const Tensor& device_tensor);

// FP8 e4m3 weights with DeepSeek-V3 128x128 block scales, shape [R, C] or [B, R, C]: `q` and `scale_inv`
// ([.., ceil(R/128), ceil(C/128)] F32, weight = fp8 * scale_inv) on the host and the device, and `dequantized`,
// the exact F32 weight the reference multiplies with. Entries are O(1 / sqrt(C)), as a trained projection's.
struct RandomFp8 {
  Tensor q, scale_inv, dequantized;
  Tensor q_device, scale_inv_device;
};
RandomFp8 random_fp8_blocks(std::vector<int64_t> shape, uint64_t seed);

// Device I32 tensor holding `values`.
Tensor device_i32(const std::vector<int32_t>& values, std::vector<int64_t> shape);
// Uninitialised device tensor filled with 0xff bytes: NaN in F32 and BF16, so an unwritten output fails compare.
Tensor poisoned(DType dtype, std::vector<int64_t> shape);

// Page tables of sequences holding lengths[s] tokens each, over a shuffled pool with spare pages, so every
// sequence's pages are scattered: table [num_seqs, max_pages] row-major, -1 past a sequence's last page.
struct ScatteredPages {
  std::vector<int32_t> table;
  int64_t max_pages = 0, pool_pages = 0;
};
ScatteredPages scattered_pages(const std::vector<int64_t>& lengths, int64_t page_size, uint64_t seed);

// A small config at DeepSeek's real attention dims (so the tuned MLA and MoE kernels run; 16 heads, hidden 1024,
// moe_intermediate 256, 16 experts, vocab 1000), few layers and experts; FP8 with 128x128 blocks when asked.
json deepseek_dims_json(bool fp8);

// Compares a device result (F32 or BF16) with a host F32 reference of equal size: prints max-abs and relative
// error (max |diff| / max |ref|) under `what`, expects rel <= tolerance (NaN fails), returns the numbers.
ErrorStats expect_close(const Tensor& device_result, const Tensor& reference, double tolerance,
                        const std::string& what);

}  // namespace narwhal::testing

// First statement of every GPU test: CI machines have no GPU, so the test reports itself skipped there.
#define NW_REQUIRE_GPU() \
  if (!::narwhal::testing::gpu_available()) GTEST_SKIP() << "no CUDA device"
