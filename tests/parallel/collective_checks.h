// Every collective of a Communicator checked against a serial host reference, and split groups checked against
// ParallelConfig: the shared body of the host, multi-process, device-local and NCCL tests. Failures throw an
// Error (so that, inside a rank, they fail the world and reach the test through run()).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/error.h"
#include "core/tensor.h"
#include "parallel/communicator.h"
#include "parallel/parallel_config.h"
#include "parallel/process_world.h"

namespace narwhal::testing {

inline uint64_t mix_bits(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Element i of rank `rank`'s input to call `seed`. Floats span 2^-10 to 2^10, so a sum's bits show its order.
inline Tensor test_input(DType dtype, const std::vector<int64_t>& shape, int rank, int seed) {
  Tensor t = Tensor::zeros(dtype, shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const uint64_t h = mix_bits((static_cast<uint64_t>(seed) << 40) ^ (static_cast<uint64_t>(rank) << 32) ^ i);
    const float value = std::ldexp(static_cast<float>(h & 0xffff) / 32768.0f - 1.0f, static_cast<int>(h >> 59) - 10);
    if (dtype == DType::kF32) t.f32()[i] = value;
    else if (dtype == DType::kBF16) t.ptr<uint16_t>()[i] = float_to_bf16(value);
    else t.ptr<int32_t>()[i] = static_cast<int32_t>(h >> 20);  // large: sums wrap
  }
  return t;
}

// The exchange backends' arithmetic, written out plainly: added in rank order, BF16 in F32 rounded once.
inline Tensor rank_order_sum(const std::vector<Tensor>& inputs) {
  Tensor out = Tensor::zeros(inputs[0].dtype, inputs[0].shape);
  for (int64_t i = 0; i < out.numel(); ++i) {
    if (out.dtype == DType::kI32) {
      uint32_t acc = 0;
      for (const Tensor& in : inputs) acc += static_cast<uint32_t>(in.ptr<int32_t>()[i]);
      out.ptr<int32_t>()[i] = static_cast<int32_t>(acc);
      continue;
    }
    auto load = [&](const Tensor& in) {
      return in.dtype == DType::kF32 ? in.f32()[i] : bf16_to_float(in.ptr<uint16_t>()[i]);
    };
    float acc = load(inputs[0]);
    for (size_t r = 1; r < inputs.size(); ++r) acc += load(inputs[r]);
    if (out.dtype == DType::kF32) out.f32()[i] = acc;
    else out.ptr<uint16_t>()[i] = float_to_bf16(acc);
  }
  return out;
}

inline Tensor stack_rows(const std::vector<Tensor>& parts) {
  std::vector<int64_t> shape = parts[0].shape;
  shape[0] = 0;
  for (const Tensor& p : parts) shape[0] += p.size(0);
  Tensor out = Tensor::zeros(parts[0].dtype, shape);
  size_t at = 0;
  for (const Tensor& p : parts) {
    std::memcpy(static_cast<char*>(out.data) + at, p.data, p.nbytes());
    at += p.nbytes();
  }
  return out;
}

// Moves tensors between the host and a communicator's device, and compares results.
class CollectiveHarness {
 public:
  // `exact_sums`: sums must equal rank_order_sum bit for bit (the exchange backends); NCCL adds in its own order.
  CollectiveHarness(Communicator& comm, cudaStream_t stream, bool exact_sums)
      : comm_(comm), stream_(stream), exact_sums_(exact_sums) {}

  Tensor to_comm(const Tensor& host) const {
    if (comm_.device() == Device::kCUDA) return host.to(Device::kCUDA);
    Tensor copy = Tensor::zeros(host.dtype, host.shape);
    std::memcpy(copy.data, host.data, host.nbytes());
    return copy;
  }
  // 0xff bytes (NaN, -1): an output the collective forgot to write fails the comparison.
  Tensor poisoned(DType dtype, const std::vector<int64_t>& shape) const {
    Tensor t = Tensor::empty(dtype, shape, comm_.device());
    if (comm_.device() == Device::kCUDA) NW_CUDA_CHECK(cudaMemset(t.data, 0xff, t.nbytes()));
    else std::memset(t.data, 0xff, t.nbytes());
    return t;
  }
  Tensor to_host(const Tensor& t) const {
    if (t.device == Device::kCPU) return t;
    NW_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return t.to(Device::kCPU);
  }
  // Throws naming the call and the first differing element. `sum` results get NCCL's tolerance when not exact.
  void expect(const Tensor& result, const Tensor& want, const std::string& what, bool sum = false) const {
    const Tensor got = to_host(result);
    const std::string where = cat(comm_.name(), " rank ", comm_.rank(), " of ", comm_.size(), ": ", what, " ",
                                  dtype_name(want.dtype), " ", want.shape_string());
    NW_CHECK(got.shape == want.shape && got.dtype == want.dtype, where, ": got ", got.shape_string());
    const bool exact = exact_sums_ || !sum || want.dtype == DType::kI32;
    if (exact) {
      const auto* g = static_cast<const unsigned char*>(got.data);
      const auto* w = static_cast<const unsigned char*>(want.data);
      for (size_t b = 0; b < want.nbytes(); ++b)
        NW_CHECK(g[b] == w[b], where, ": byte ", b, " (element ", b / dtype_size(want.dtype), ") is ",
                 static_cast<int>(g[b]), ", expected ", static_cast<int>(w[b]));
      return;
    }
    auto value = [](const Tensor& t, int64_t i) {
      return t.dtype == DType::kF32 ? t.f32()[i] : bf16_to_float(t.ptr<uint16_t>()[i]);
    };
    double scale = 1e-30;
    for (int64_t i = 0; i < want.numel(); ++i) scale = std::max(scale, std::fabs(static_cast<double>(value(want, i))));
    const double tolerance = (want.dtype == DType::kF32 ? 1e-5 : 2e-2) * scale;
    for (int64_t i = 0; i < want.numel(); ++i)
      NW_CHECK(std::fabs(value(got, i) - value(want, i)) <= tolerance, where, ": element ", i, " is ", value(got, i),
               ", expected ", value(want, i));
  }

  Communicator& comm() const { return comm_; }
  cudaStream_t stream() const { return stream_; }

 private:
  Communicator& comm_;
  cudaStream_t stream_;
  bool exact_sums_;
};

// Every collective, on F32, BF16 and I32, against the serial reference (inputs every rank can recompute).
inline void check_all_collectives(const CollectiveHarness& h) {
  Communicator& comm = h.comm();
  const int n_ranks = comm.size(), me = comm.rank();
  auto all_inputs = [&](DType dtype, const std::vector<int64_t>& shape, int seed) {
    std::vector<Tensor> inputs;
    for (int r = 0; r < n_ranks; ++r) inputs.push_back(test_input(dtype, shape, r, seed));
    return inputs;
  };
  int seed = 0;
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kI32}) {
    for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{5, 3}, {1000}, {0, 4}}) {
      const std::vector<Tensor> inputs = all_inputs(dtype, shape, ++seed);
      const Tensor want = rank_order_sum(inputs);
      Tensor in = h.to_comm(inputs[me]);
      Tensor out = h.poisoned(dtype, shape);
      comm.all_reduce(in, out, h.stream());
      h.expect(out, want, "all_reduce", true);
      comm.all_reduce(in, in, h.stream());
      h.expect(in, want, "in-place all_reduce", true);
    }

    const int64_t rows = 4;
    std::vector<Tensor> inputs = all_inputs(dtype, {rows, 3}, ++seed);
    Tensor gathered = h.poisoned(dtype, {n_ranks * rows, 3});
    comm.all_gather(h.to_comm(inputs[me]), gathered, h.stream());
    h.expect(gathered, stack_rows(inputs), "all_gather");
    Tensor in_place = h.to_comm(stack_rows(inputs));  // this rank's slice already holds its input
    comm.all_gather(in_place.rows(me * rows, (me + 1) * rows), in_place, h.stream());
    h.expect(in_place, stack_rows(inputs), "in-place all_gather");

    inputs = all_inputs(dtype, {n_ranks * rows, 3}, ++seed);
    std::vector<Tensor> my_chunks;
    for (const Tensor& in : inputs) my_chunks.push_back(in.rows(me * rows, (me + 1) * rows));
    Tensor scattered = h.poisoned(dtype, {rows, 3});
    comm.reduce_scatter(h.to_comm(inputs[me]), scattered, h.stream());
    h.expect(scattered, rank_order_sum(my_chunks), "reduce_scatter", true);

    // Uneven counts with zeros: rank r sends (r + 2j) % 3 rows to rank j.
    auto count = [](int from, int to) { return static_cast<int64_t>((from + 2 * to) % 3); };
    std::vector<int64_t> send_rows, recv_rows;
    std::vector<Tensor> received;
    for (int j = 0; j < n_ranks; ++j) {
      send_rows.push_back(count(me, j));
      recv_rows.push_back(count(j, me));
    }
    const int a2a_seed = ++seed;
    for (int j = 0; j < n_ranks; ++j) {
      int64_t total = 0, offset = 0;
      for (int k = 0; k < n_ranks; ++k) total += count(j, k);
      for (int k = 0; k < me; ++k) offset += count(j, k);
      received.push_back(test_input(dtype, {total, 2}, j, a2a_seed).rows(offset, offset + count(j, me)));
    }
    int64_t my_total = 0;
    for (int64_t c : send_rows) my_total += c;
    const Tensor want_a2a = stack_rows(received);
    Tensor a2a = h.poisoned(dtype, want_a2a.shape);
    comm.all_to_all(h.to_comm(test_input(dtype, {my_total, 2}, me, a2a_seed)), send_rows, a2a, recv_rows, h.stream());
    h.expect(a2a, want_a2a, "all_to_all");

    for (int root = 0; root < n_ranks; ++root) {
      inputs = all_inputs(dtype, {7}, ++seed);
      Tensor t = h.to_comm(inputs[me]);
      comm.broadcast(t, root, h.stream());
      h.expect(t, inputs[root], cat("broadcast from ", root));
    }
  }
  comm.barrier();
}

// Each split group's members, in order (an all_gather of world ranks), against ParallelConfig's, then a sum on it.
inline void check_groups(Communicator& world, const ParallelConfig& config, cudaStream_t stream, bool exact_sums) {
  ParallelGroups groups = split_groups(world, config);
  const std::pair<Communicator*, RankGroup> expected[] = {{groups.tp.get(), config.tp_group()},
                                                          {groups.attn_tp.get(), config.attn_tp_group()},
                                                          {groups.ep.get(), config.ep_group()},
                                                          {groups.moe_tp.get(), config.moe_tp_group()}};
  for (const auto& [comm, group] : expected) {
    const CollectiveHarness h(*comm, stream, exact_sums);
    NW_CHECK(comm->size() == group.size() && comm->rank() == group.index, comm->name(), " of rank ", config.rank(),
             ": rank ", comm->rank(), " of ", comm->size(), ", expected ", group.index, " of ", group.size());
    Tensor mine = Tensor::zeros(DType::kI32, {1});
    mine.ptr<int32_t>()[0] = config.rank();
    Tensor members = h.poisoned(DType::kI32, {group.size()});
    comm->all_gather(h.to_comm(mine), members, stream);
    Tensor want = Tensor::zeros(DType::kI32, {group.size()});
    for (int i = 0; i < group.size(); ++i) want.ptr<int32_t>()[i] = group.ranks[i];
    h.expect(members, want, "members");
    std::vector<Tensor> inputs;
    for (int r : group.ranks) inputs.push_back(test_input(DType::kBF16, {64}, r, 99));
    Tensor sum = h.to_comm(inputs[group.index]);
    comm->all_reduce(sum, sum, stream);
    h.expect(sum, rank_order_sum(inputs), "all_reduce", true);
  }
}

}  // namespace narwhal::testing
