// CPU GEMMs through OpenBLAS (float32, multithreaded by the library).
#include "ops/linear.h"

#include <cblas.h>

#include "core/error.h"

namespace narwhal::ops {

void gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
          bool b_transposed, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, b_transposed ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb),
              beta, c, static_cast<int>(ldc));
}

void linear(const Tensor& x, const Tensor& w, Tensor& y) {
  NW_CHECK(x.ndim() == 2 && w.ndim() == 2 && y.ndim() == 2 && x.size(1) == w.size(1) && y.size(0) == x.size(0) &&
               y.size(1) == w.size(0),
           "linear: shapes x", x.shape_string(), " w", w.shape_string(), " y", y.shape_string(), " do not agree");
  const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  gemm(m, n, k, 1.0f, x.f32(), k, w.f32(), k, true, 0.0f, y.f32(), n);
}

}  // namespace narwhal::ops
