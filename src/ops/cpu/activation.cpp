// CPU SiLU-and-mul.
#include "ops/activation.h"

#include <cmath>

#include "core/error.h"

namespace narwhal::ops {

void silu_and_mul(const Tensor& gate_up, Tensor& out) {
  const int64_t m = gate_up.size(0), inter = gate_up.size(1) / 2;
  NW_CHECK(out.size(0) == m && out.size(1) == inter, "silu_and_mul: gate_up", gate_up.shape_string(), " out",
           out.shape_string(), " do not agree");
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < m; ++r) {
    const float* g = gate_up.f32() + r * 2 * inter;
    const float* u = g + inter;
    float* o = out.f32() + r * inter;
    for (int64_t i = 0; i < inter; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

}  // namespace narwhal::ops
