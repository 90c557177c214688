// SiLU-and-multiply of the gated MLPs: out = silu(gate) * up.
#pragma once

#include "core/tensor.h"

namespace narwhal::ops {

// gate_up is [M, 2I] (gate columns first, then up); out is [M, I].
void silu_and_mul(const Tensor& gate_up, Tensor& out);

}  // namespace narwhal::ops
