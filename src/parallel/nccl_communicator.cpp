// NcclCommunicator: NCCL calls through NcclLibrary, with bounded polling of nonblocking communicators.
#include "parallel/nccl_communicator.h"

#include <cstring>
#include <thread>

#include "core/cuda_check.h"
#include "core/error.h"
#include "parallel/nccl_library.h"
#include "parallel/socket.h"

namespace narwhal {

namespace {

ncclDataType_t summed_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return ncclFloat32;
    case DType::kBF16: return ncclBfloat16;
    default: return ncclInt32;  // Communicator's checks let only F32, BF16 and I32 reach a sum
  }
}

ncclConfig_t nonblocking_config() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

char* at(void* base, size_t offset) { return static_cast<char*>(base) + offset; }

}  // namespace

std::string NcclCommunicator::new_unique_id() {
  ncclUniqueId id;
  const ncclResult_t r = NcclLibrary::get().GetUniqueId(&id);
  NW_CHECK(r == ncclSuccess, "ncclGetUniqueId failed: ", NcclLibrary::get().GetErrorString(r));
  return std::string(id.internal, sizeof id.internal);
}

std::vector<std::unique_ptr<Communicator>> NcclCommunicator::create(const std::string& unique_id, int world_size,
                                                                    const std::vector<int>& ranks,
                                                                    const std::vector<int>& devices, double timeout_s,
                                                                    std::shared_ptr<WorldStatus> status) {
  const NcclLibrary& nccl = NcclLibrary::get();
  ncclUniqueId id;
  NW_CHECK(unique_id.size() == sizeof id.internal, "an ncclUniqueId has ", sizeof id.internal, " bytes, got ",
           unique_id.size());
  std::memcpy(id.internal, unique_id.data(), sizeof id.internal);
  std::vector<ncclComm_t> comms(ranks.size(), nullptr);
  ncclConfig_t config = nonblocking_config();
  // One group, so that a single thread can set up several GPUs' ranks without each waiting for the others.
  nccl.GroupStart();
  for (size_t i = 0; i < ranks.size(); ++i) {
    NW_CUDA_CHECK(cudaSetDevice(devices[i]));
    const ncclResult_t r = nccl.CommInitRankConfig(&comms[i], world_size, id, ranks[i], &config);
    NW_CHECK(r == ncclSuccess || r == ncclInProgress, "ncclCommInitRankConfig (rank ", ranks[i], ") failed: ",
             nccl.GetErrorString(r));
  }
  const ncclResult_t r = nccl.GroupEnd();
  NW_CHECK(r == ncclSuccess || r == ncclInProgress, "NCCL set-up failed: ", nccl.GetErrorString(r));
  std::vector<std::unique_ptr<Communicator>> out;
  for (size_t i = 0; i < ranks.size(); ++i)
    out.emplace_back(new NcclCommunicator(comms[i], ranks[i], world_size, "world", devices[i], timeout_s, status));
  for (auto& c : out) {
    auto* n = static_cast<NcclCommunicator*>(c.get());
    const std::string problem = n->wait_ready(n->comm_);
    if (problem.empty()) continue;
    for (auto& other : out) static_cast<NcclCommunicator*>(other.get())->abort();
    status->fail(cat("NCCL set-up of rank ", n->rank(), " of ", world_size, ": ", problem));
    throw Error(status->message());
  }
  return out;
}

NcclCommunicator::NcclCommunicator(ncclComm* comm, int rank, int size, std::string name, int device, double timeout_s,
                                   std::shared_ptr<WorldStatus> status)
    : Communicator(rank, size, std::move(name), Device::kCUDA),
      comm_(comm),
      device_(device),
      timeout_s_(timeout_s),
      status_(std::move(status)) {
  NW_CUDA_CHECK(cudaSetDevice(device_));
  NW_CUDA_CHECK(cudaStreamCreateWithFlags(&barrier_stream_, cudaStreamNonBlocking));
  NW_CUDA_CHECK(cudaMalloc(&barrier_word_, sizeof(int32_t)));
}

NcclCommunicator::~NcclCommunicator() {
  cudaSetDevice(device_);
  if (comm_ && status_->failed()) abort();  // peers may be gone: do not wait for them
  if (comm_) {
    // Finalize flushes this rank's last calls (peers may still be reading them); abort if that does not end.
    const NcclLibrary& nccl = NcclLibrary::get();
    nccl.CommFinalize(comm_);
    const Deadline deadline(timeout_s_);
    ncclResult_t state = ncclInProgress;
    while (nccl.CommGetAsyncError(comm_, &state) == ncclSuccess && state == ncclInProgress && !deadline.passed())
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (state == ncclSuccess) nccl.CommDestroy(comm_);
    else nccl.CommAbort(comm_);
  }
  cudaFree(barrier_word_);
  cudaStreamDestroy(barrier_stream_);
}

void NcclCommunicator::abort() {
  if (comm_) NcclLibrary::get().CommAbort(comm_);
  comm_ = nullptr;
}

void NcclCommunicator::fail(const std::string& message) {
  abort();
  status_->fail(message);
  throw Error(message);
}

std::string NcclCommunicator::wait_ready(ncclComm* comm) const {
  const NcclLibrary& nccl = NcclLibrary::get();
  const Deadline deadline(timeout_s_);
  while (true) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = nccl.CommGetAsyncError(comm, &state);
    if (r != ncclSuccess) state = r;
    if (state == ncclSuccess) return "";
    if (state != ncclInProgress) return cat("NCCL error: ", nccl.GetErrorString(state), " (", nccl.GetLastError(comm), ")");
    if (status_->failed()) return "gave up because " + status_->message();
    if (deadline.passed()) return cat("NCCL did not finish within ", timeout_s_, " s (a rank never came?)");
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void NcclCommunicator::start(Collective op) {
  NW_CHECK(comm_, where(op), ": this communicator was aborted after an earlier failure");
  status_->check(where(op));  // queueing work that a failed rank will never match would hang the GPU
  NW_CUDA_CHECK(cudaSetDevice(device_));
}

void NcclCommunicator::finish(int result, Collective op) {
  const ncclResult_t r = static_cast<ncclResult_t>(result);
  if (r != ncclSuccess && r != ncclInProgress)
    fail(cat(where(op), ": NCCL error: ", NcclLibrary::get().GetErrorString(r), " (",
             NcclLibrary::get().GetLastError(comm_), ")"));
  if (r != ncclInProgress) return;
  const std::string problem = wait_ready(comm_);
  if (!problem.empty()) fail(cat(where(op), ": ", problem));
}

// Empty tensors (the same on every rank, or the call would not match) need no NCCL call at all.
void NcclCommunicator::do_all_reduce(const Tensor& in, const Tensor& out, cudaStream_t stream) {
  if (in.nbytes() == 0) return;
  start(Collective::kAllReduce);
  finish(NcclLibrary::get().AllReduce(in.data, out.data, in.numel(), summed_type(in.dtype), ncclSum, comm_, stream),
         Collective::kAllReduce);
}

void NcclCommunicator::do_all_gather(const Tensor& in, const Tensor& out, cudaStream_t stream) {
  if (in.nbytes() == 0) return;
  start(Collective::kAllGather);
  finish(NcclLibrary::get().AllGather(in.data, out.data, in.nbytes(), ncclUint8, comm_, stream),
         Collective::kAllGather);
}

void NcclCommunicator::do_reduce_scatter(const Tensor& in, const Tensor& out, cudaStream_t stream) {
  if (out.nbytes() == 0) return;
  start(Collective::kReduceScatter);
  finish(NcclLibrary::get().ReduceScatter(in.data, out.data, out.numel(), summed_type(in.dtype), ncclSum, comm_,
                                          stream),
         Collective::kReduceScatter);
}

void NcclCommunicator::do_all_to_all(const Tensor& in, const std::vector<int64_t>& send_rows, const Tensor& out,
                                     const std::vector<int64_t>& recv_rows, cudaStream_t stream) {
  start(Collective::kAllToAll);
  const NcclLibrary& nccl = NcclLibrary::get();
  // From the shape, not in's bytes: a rank with no rows to send may still receive some (deepep's empty slices).
  size_t row = dtype_size(in.dtype);
  for (int d = 1; d < in.ndim(); ++d) row *= static_cast<size_t>(in.shape[d]);
  // One group of point-to-point calls; the rank's own rows are a plain device copy.
  ncclResult_t queued = ncclSuccess;  // the first failure among the group's calls
  auto queue = [&](ncclResult_t r) {
    if (queued == ncclSuccess && r != ncclSuccess && r != ncclInProgress) queued = r;
  };
  nccl.GroupStart();
  size_t sent = 0, received = 0;
  for (int j = 0; j < size(); ++j) {
    const size_t send_bytes = send_rows[j] * row, recv_bytes = recv_rows[j] * row;
    if (j == rank()) {
      if (send_bytes)
        NW_CUDA_CHECK(cudaMemcpyAsync(at(out.data, received), at(in.data, sent), send_bytes, cudaMemcpyDeviceToDevice,
                                      stream));
    } else {
      if (send_bytes) queue(nccl.Send(at(in.data, sent), send_bytes, ncclUint8, j, comm_, stream));
      if (recv_bytes) queue(nccl.Recv(at(out.data, received), recv_bytes, ncclUint8, j, comm_, stream));
    }
    sent += send_bytes;
    received += recv_bytes;
  }
  const ncclResult_t ended = nccl.GroupEnd();
  finish(queued != ncclSuccess ? queued : ended, Collective::kAllToAll);
}

void NcclCommunicator::do_broadcast(const Tensor& tensor, int root, cudaStream_t stream) {
  if (tensor.nbytes() == 0) return;
  start(Collective::kBroadcast);
  finish(NcclLibrary::get().Broadcast(tensor.data, tensor.data, tensor.nbytes(), ncclUint8, root, comm_, stream),
         Collective::kBroadcast);
}

void NcclCommunicator::do_barrier() {
  start(Collective::kBarrier);
  finish(NcclLibrary::get().AllReduce(barrier_word_, barrier_word_, 1, ncclInt32, ncclSum, comm_, barrier_stream_),
         Collective::kBarrier);
  // The all_reduce completes once every rank has queued it; wait for that on the host, bounded.
  const Deadline deadline(timeout_s_);
  while (true) {
    const cudaError_t e = cudaStreamQuery(barrier_stream_);
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotReady) NW_CUDA_CHECK(e);
    ncclResult_t state = ncclSuccess;
    NcclLibrary::get().CommGetAsyncError(comm_, &state);
    if (state != ncclSuccess && state != ncclInProgress)
      fail(cat(where(Collective::kBarrier), ": NCCL error: ", NcclLibrary::get().GetErrorString(state)));
    if (status_->failed()) fail(cat(where(Collective::kBarrier), ": gave up because ", status_->message()));
    if (deadline.passed())
      fail(cat(where(Collective::kBarrier), ": the other ranks did not arrive within ", timeout_s_, " s"));
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

std::unique_ptr<Communicator> NcclCommunicator::do_split(int color, int key, const std::string& name) {
  start(Collective::kSplit);
  const NcclLibrary& nccl = NcclLibrary::get();
  ncclConfig_t config = nonblocking_config();
  ncclComm_t child = nullptr;
  finish(nccl.CommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &child, &config), Collective::kSplit);
  if (!child) return nullptr;
  const std::string problem = wait_ready(child);
  if (!problem.empty()) {
    nccl.CommAbort(child);
    fail(cat(where(Collective::kSplit), " into ", name, ": ", problem));
  }
  int child_rank = 0, child_size = 0;
  nccl.CommUserRank(child, &child_rank);
  nccl.CommCount(child, &child_size);
  return std::unique_ptr<Communicator>(
      new NcclCommunicator(child, child_rank, child_size, name, device_, timeout_s_, status_));
}

}  // namespace narwhal
