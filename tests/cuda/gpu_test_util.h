// Helpers for GPU op tests: skip without a device, random inputs in BF16 on both sides, host copies.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace narwhal::testing {

bool gpu_available();

// A BF16 tensor of N(0, scale^2) values: `host` holds the exact (BF16-rounded) values as F32 for the CPU
// reference, `device` the BF16 copy the kernel reads.
struct RandomBf16 {
  Tensor host;
  Tensor device;
};
RandomBf16 random_bf16(std::vector<int64_t> shape, uint64_t seed, float scale = 1.0f);

// Host F32 copy of a device tensor of dtype F32 or BF16.
Tensor to_host_f32(const Tensor& device_tensor);

}  // namespace narwhal::testing

// First statement of every GPU test: CI machines have no GPU, so the test reports itself skipped there.
#define NW_REQUIRE_GPU() \
  if (!::narwhal::testing::gpu_available()) GTEST_SKIP() << "no CUDA device"
