// Tensor construction, slicing and reshaping (host side).
#include "core/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/cuda_check.h"
#include "core/error.h"

namespace narwhal {

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string Tensor::shape_string() const { return shape_to_string(shape); }

Tensor Tensor::zeros(DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  size_t bytes = t.nbytes();
  // 64-byte alignment for vector loads; at least one byte so empty tensors still have an address.
  size_t padded = ((bytes ? bytes : 1) + 63) / 64 * 64;
  void* mem = std::aligned_alloc(64, padded);
  NW_CHECK(mem != nullptr, "out of host memory allocating ", bytes, " bytes");
  std::memset(mem, 0, padded);
  t.storage = std::shared_ptr<void>(mem, std::free);
  t.data = mem;
  return t;
}

Tensor Tensor::empty(DType dtype, std::vector<int64_t> shape, Device device) {
  if (device == Device::kCPU) return zeros(dtype, std::move(shape));
  Tensor t;
  t.dtype = dtype;
  t.device = device;
  t.shape = std::move(shape);
  void* mem = nullptr;
  NW_CUDA_CHECK(cudaMalloc(&mem, std::max<size_t>(t.nbytes(), 1)));
  t.storage = std::shared_ptr<void>(mem, [](void* p) { cudaFree(p); });
  t.data = mem;
  return t;
}

Tensor Tensor::to(Device target) const {
  Tensor out = empty(dtype, shape, target);
  const cudaMemcpyKind kind = device == Device::kCPU
                                  ? (target == Device::kCPU ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice)
                                  : (target == Device::kCPU ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice);
  NW_CUDA_CHECK(cudaMemcpy(out.data, data, nbytes(), kind));
  return out;
}

Tensor Tensor::from_floats(const std::vector<float>& values, std::vector<int64_t> shape) {
  Tensor t = zeros(DType::kF32, std::move(shape));
  NW_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "from_floats: ", values.size(),
           " values for shape ", t.shape_string());
  std::memcpy(t.data, values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::view(void* data, DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.shape = std::move(shape);
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  NW_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape[0], "rows(", begin, ", ", end,
           ") out of range for shape ", shape_string());
  Tensor t = *this;
  t.shape[0] = end - begin;
  int64_t row_elems = shape[0] ? numel() / shape[0] : 0;
  t.data = static_cast<char*>(data) + begin * row_elems * static_cast<int64_t>(dtype_size(dtype));
  return t;
}

Tensor Tensor::reshape(std::vector<int64_t> new_shape) const {
  Tensor t = *this;
  t.shape = std::move(new_shape);
  NW_CHECK(t.numel() == numel(), "reshape ", shape_string(), " -> ", t.shape_string(), ": element count differs");
  return t;
}

}  // namespace narwhal
