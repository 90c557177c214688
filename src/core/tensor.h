// Tensor: a typed, shaped view of memory on a device, optionally keeping its storage alive.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace narwhal {

enum class Device { kCPU, kCUDA };

// A row-major (contiguous) tensor view. Ops take these by const reference and write into
// caller-provided outputs, so the hot path never allocates. `storage` is set when the view owns
// (shares) its memory; views of someone else's memory (a mapped checkpoint, a slice) leave it empty.
struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCPU;
  std::vector<int64_t> shape;
  std::shared_ptr<void> storage;

  // Zero-filled host tensor.
  static Tensor zeros(DType dtype, std::vector<int64_t> shape);
  // Uninitialised tensor on `device` (cudaMalloc on the GPU; callers overwrite every element).
  static Tensor empty(DType dtype, std::vector<int64_t> shape, Device device);
  // Host F32 tensor holding `values`.
  static Tensor from_floats(const std::vector<float>& values, std::vector<int64_t> shape);
  static Tensor view(void* data, DType dtype, std::vector<int64_t> shape);

  bool defined() const { return data != nullptr; }
  int ndim() const { return static_cast<int>(shape.size()); }
  int64_t size(int dim) const { return shape[dim < 0 ? dim + ndim() : dim]; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  std::string shape_string() const;

  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
  float* f32() const { return static_cast<float*>(data); }

  // View of rows [begin, end) along dim 0, sharing storage.
  Tensor rows(int64_t begin, int64_t end) const;
  // Same memory, another shape of equal element count.
  Tensor reshape(std::vector<int64_t> new_shape) const;
  // A copy on `device` (synchronous; for set-up and tests, never the hot path).
  Tensor to(Device device) const;
};

std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace narwhal
