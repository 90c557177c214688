// RMSNorm over the last dimension, statistics in float32 (DeepSeek's RMSNorm, as transformers computes it).
#pragma once

#include "core/tensor.h"

namespace narwhal::ops {

// out[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * weight. x and out are [M, N] (may alias).
void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out);
// Same on rows of width n that sit `stride` floats apart (e.g. the latent part of kv_a's output).
void rms_norm_strided(float* x, int64_t rows, int64_t n, int64_t stride, const float* weight, float eps);

}  // namespace narwhal::ops
