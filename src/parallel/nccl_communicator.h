// The NCCL backend: one rank per GPU, inside a node and across nodes; what serving runs on. Collectives are queued
// on the caller's stream, so the decode CUDA graphs capture them. Communicators are nonblocking, so that set-up,
// split, barrier and each call's enqueue are host-side waits bounded by --dist-timeout; a communicator whose wait
// fails or times out is aborted.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/world_status.h"

struct ncclComm;  // nccl.h's, kept out of this header

namespace narwhal {

class NcclCommunicator final : public Communicator {
 public:
  // A fresh ncclUniqueId, as bytes for the store. Rank 0 makes it; every rank of the world passes it to create().
  static std::string new_unique_id();
  // The world communicators of this process's ranks `ranks` (world ranks, on GPUs `devices`) in a world of
  // `world_size`, set up together as one NCCL group. `status` is this process's failure state, which every wait
  // checks.
  static std::vector<std::unique_ptr<Communicator>> create(const std::string& unique_id, int world_size,
                                                           const std::vector<int>& ranks,
                                                           const std::vector<int>& devices, double timeout_s,
                                                           std::shared_ptr<WorldStatus> status);
  ~NcclCommunicator() override;
  bool graph_capturable() const override { return true; }

 private:
  NcclCommunicator(ncclComm* comm, int rank, int size, std::string name, int device, double timeout_s,
                   std::shared_ptr<WorldStatus> status);

  void do_all_reduce(const Tensor& in, const Tensor& out, cudaStream_t stream) override;
  void do_all_gather(const Tensor& in, const Tensor& out, cudaStream_t stream) override;
  void do_reduce_scatter(const Tensor& in, const Tensor& out, cudaStream_t stream) override;
  void do_all_to_all(const Tensor& in, const std::vector<int64_t>& send_rows, const Tensor& out,
                     const std::vector<int64_t>& recv_rows, cudaStream_t stream) override;
  void do_broadcast(const Tensor& tensor, int root, cudaStream_t stream) override;
  void do_barrier() override;
  std::unique_ptr<Communicator> do_split(int color, int key, const std::string& name) override;

  // Before an NCCL call: the communicator still works, the world has not failed, its GPU is current.
  void start(Collective op);
  // Checks an NCCL call's result and waits until the communicator has finished it (set-up, or a call's enqueue);
  // fails on an error.
  void finish(int result, Collective op);
  // Waits until `comm` has finished its pending set-up or enqueue: "" then, else why not (an NCCL error, the
  // deadline, or a failure elsewhere in the world).
  std::string wait_ready(ncclComm* comm) const;
  // Aborts the communicator (NCCL stops its pending work), records the failure for the world, throws it.
  [[noreturn]] void fail(const std::string& message);
  void abort();

  ncclComm* comm_;
  int device_;
  double timeout_s_;
  std::shared_ptr<WorldStatus> status_;
  cudaStream_t barrier_stream_ = nullptr;  // the barrier's own little all_reduce runs here
  void* barrier_word_ = nullptr;
};

}  // namespace narwhal
