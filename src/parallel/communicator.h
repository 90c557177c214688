// Communicator: the collectives tensor, DP-attention and expert parallelism need, over tensor views, with one
// interface for the NCCL, host and device-local backends.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace narwhal {

enum class Collective : uint8_t { kAllReduce, kAllGather, kReduceScatter, kAllToAll, kBroadcast, kBarrier, kSplit };
const char* collective_name(Collective op);

// all_reduce and reduce_scatter sum F32, BF16 and I32; the other collectives move any dtype.
bool summable(DType dtype);

// One rank's handle on a group of ranks. As with NCCL, every member calls the same collectives in the same order,
// each from the one thread that drives the rank. Each call checks its own arguments (devices, dtypes, shapes,
// counts) and throws an Error naming the group, the collective and what is wrong; backends that can also check
// that the ranks agree with each other do. Device backends (NCCL, device-local) take device tensors and order
// their work on `stream`; the host backend takes host tensors, finishes before returning and ignores `stream`.
// Every wait for another rank is bounded by the world's --dist-timeout.
class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }  // "world", "tp", ...: for errors
  Device device() const { return device_; }          // where its tensors live
  // Whether a CUDA graph may capture its collectives (NCCL's can; the exchange backends wait on the host).
  virtual bool graph_capturable() const { return false; }

  // out = the elementwise sum of every rank's `in` (same shape; out may be in). The exchange backends add in rank
  // order (F32 accumulation for BF16, rounded once), so every rank gets the same bits on every run.
  void all_reduce(const Tensor& in, const Tensor& out, cudaStream_t stream = nullptr);
  // out [size * n, ...] = every rank's in [n, ...], stacked in rank order. `in` may be out's own slice.
  void all_gather(const Tensor& in, const Tensor& out, cudaStream_t stream = nullptr);
  // out [n, ...] = the sum over ranks of rows [rank * n, (rank + 1) * n) of their in [size * n, ...].
  void reduce_scatter(const Tensor& in, const Tensor& out, cudaStream_t stream = nullptr);
  // The rows of `in` go out in rank order, send_rows[j] of them to rank j; `out` receives recv_rows[j] rows from
  // each rank j, stacked in rank order. recv_rows[j] must equal rank j's send_rows[rank()]; zeros are fine.
  void all_to_all(const Tensor& in, const std::vector<int64_t>& send_rows, const Tensor& out,
                  const std::vector<int64_t>& recv_rows, cudaStream_t stream = nullptr);
  // Every rank's `tensor` = the root's.
  void broadcast(const Tensor& tensor, int root, cudaStream_t stream = nullptr);
  // Returns once every rank has called it (a host-side meeting; queued device work is not waited for).
  void barrier();
  // Collective over this group: the ranks passing the same color >= 0 form a new group, ordered by (key, rank);
  // a rank passing a negative color gets nullptr. `name` names the new group in errors.
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name);

 protected:
  Communicator(int rank, int size, std::string name, Device device);

  // The collectives, called with arguments already checked.
  virtual void do_all_reduce(const Tensor& in, const Tensor& out, cudaStream_t stream) = 0;
  virtual void do_all_gather(const Tensor& in, const Tensor& out, cudaStream_t stream) = 0;
  virtual void do_reduce_scatter(const Tensor& in, const Tensor& out, cudaStream_t stream) = 0;
  virtual void do_all_to_all(const Tensor& in, const std::vector<int64_t>& send_rows, const Tensor& out,
                             const std::vector<int64_t>& recv_rows, cudaStream_t stream) = 0;
  virtual void do_broadcast(const Tensor& tensor, int root, cudaStream_t stream) = 0;
  virtual void do_barrier() = 0;
  virtual std::unique_ptr<Communicator> do_split(int color, int key, const std::string& name) = 0;

  // "tp all_reduce (rank 1 of 4)": the prefix of this group's errors.
  std::string where(Collective op) const;

 private:
  void check_tensor(Collective op, const Tensor& t, const char* role) const;
  void check_rows(Collective op, const Tensor& a, const Tensor& b) const;

  int rank_;
  int size_;
  std::string name_;
  Device device_;
};

}  // namespace narwhal
