// Dense matrix products of the forward pass: y = x W^T (nn.Linear layout) and strided GEMM.
#pragma once

#include "core/tensor.h"

namespace narwhal::ops {

// y[M, N] = x[M, K] * w[N, K]^T. F32 host tensors; y is overwritten.
void linear(const Tensor& x, const Tensor& w, Tensor& y);

// C[M, N] = alpha * A[M, K] * op(B) + beta * C over raw row-major float pointers with leading dimensions;
// op(B) = B^T when b_transposed (B is [N, K]), else B ([K, N]). The building block of attention and MoE.
void gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
          bool b_transposed, float beta, float* c, int64_t ldc);

}  // namespace narwhal::ops
