// sum_rows_host: the host backend's rank-ordered sum.
#include "parallel/sum_rows.h"

#include "core/error.h"

namespace narwhal {

namespace {

// Element i of the sum; `load` widens an element to the accumulator type, `store` narrows the total back.
template <typename T, typename Acc, typename Load, typename Store>
void sum_typed(const void* rows, int count, int64_t n, void* out, Load load, Store store) {
  const T* in = static_cast<const T*>(rows);
  T* dst = static_cast<T*>(out);
  for (int64_t i = 0; i < n; ++i) {
    Acc acc = load(in[i]);
    for (int r = 1; r < count; ++r) acc += load(in[r * n + i]);
    dst[i] = store(acc);
  }
}

}  // namespace

void sum_rows_host(const void* rows, int count, int64_t n, DType dtype, void* out) {
  switch (dtype) {
    case DType::kF32:
      return sum_typed<float, float>(rows, count, n, out, [](float v) { return v; }, [](float v) { return v; });
    case DType::kBF16:
      return sum_typed<uint16_t, float>(rows, count, n, out, bf16_to_float, float_to_bf16);
    case DType::kI32:  // unsigned arithmetic: overflow wraps instead of being undefined
      return sum_typed<int32_t, uint32_t>(
          rows, count, n, out, [](int32_t v) { return static_cast<uint32_t>(v); },
          [](uint32_t v) { return static_cast<int32_t>(v); });
    default:
      throw Error(cat("sum of ", dtype_name(dtype), " is not supported"));
  }
}

}  // namespace narwhal
