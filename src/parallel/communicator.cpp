// Communicator: the argument checks every backend shares, done once before the backend runs the collective.
#include "parallel/communicator.h"

#include <numeric>

#include "core/error.h"

namespace narwhal {

const char* collective_name(Collective op) {
  switch (op) {
    case Collective::kAllReduce: return "all_reduce";
    case Collective::kAllGather: return "all_gather";
    case Collective::kReduceScatter: return "reduce_scatter";
    case Collective::kAllToAll: return "all_to_all";
    case Collective::kBroadcast: return "broadcast";
    case Collective::kBarrier: return "barrier";
    case Collective::kSplit: return "split";
  }
  return "?";
}

bool summable(DType dtype) { return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kI32; }

namespace {

const char* device_name(Device d) { return d == Device::kCPU ? "CPU" : "CUDA"; }

bool overlaps(const Tensor& a, const Tensor& b) {
  const char* pa = static_cast<const char*>(a.data);
  const char* pb = static_cast<const char*>(b.data);
  return a.nbytes() > 0 && b.nbytes() > 0 && pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

// Rows [part * n, (part + 1) * n) of t: where a rank's own slice lies in a stacked tensor.
const void* slice_data(const Tensor& t, int64_t part, int64_t n) {
  const int64_t row_bytes = t.size(0) ? static_cast<int64_t>(t.nbytes()) / t.size(0) : 0;
  return static_cast<const char*>(t.data) + part * n * row_bytes;
}

}  // namespace

Communicator::Communicator(int rank, int size, std::string name, Device device)
    : rank_(rank), size_(size), name_(std::move(name)), device_(device) {}

std::string Communicator::where(Collective op) const {
  return cat(name_, " ", collective_name(op), " (rank ", rank_, " of ", size_, ")");
}

void Communicator::check_tensor(Collective op, const Tensor& t, const char* role) const {
  NW_CHECK(t.device == device_, where(op), ": ", role, " is a ", device_name(t.device), " tensor, but this ",
           "communicator's tensors live on the ", device_name(device_));
  NW_CHECK(t.data != nullptr || t.numel() == 0, where(op), ": ", role, " has no data");
  NW_CHECK(op == Collective::kAllReduce || op == Collective::kBroadcast || t.ndim() >= 1, where(op), ": ", role,
           " needs a row dimension, got shape ", t.shape_string());
}

void Communicator::check_rows(Collective op, const Tensor& in, const Tensor& out) const {
  check_tensor(op, in, "in");
  check_tensor(op, out, "out");
  NW_CHECK(in.dtype == out.dtype, where(op), ": in is ", dtype_name(in.dtype), " but out is ", dtype_name(out.dtype));
  NW_CHECK(in.ndim() == out.ndim() && std::equal(in.shape.begin() + 1, in.shape.end(), out.shape.begin() + 1),
           where(op), ": rows of in ", in.shape_string(), " and out ", out.shape_string(), " differ");
}

void Communicator::all_reduce(const Tensor& in, const Tensor& out, cudaStream_t stream) {
  const Collective op = Collective::kAllReduce;
  check_tensor(op, in, "in");
  check_tensor(op, out, "out");
  NW_CHECK(summable(in.dtype) && in.dtype == out.dtype, where(op), ": sums F32, BF16 or I32 into the same dtype, got ",
           dtype_name(in.dtype), " into ", dtype_name(out.dtype));
  NW_CHECK(in.shape == out.shape, where(op), ": in ", in.shape_string(), " and out ", out.shape_string(), " differ");
  NW_CHECK(in.data == out.data || !overlaps(in, out), where(op), ": in and out partly overlap");
  do_all_reduce(in, out, stream);
}

void Communicator::all_gather(const Tensor& in, const Tensor& out, cudaStream_t stream) {
  const Collective op = Collective::kAllGather;
  check_rows(op, in, out);
  NW_CHECK(out.size(0) == size_ * in.size(0), where(op), ": out ", out.shape_string(), " should have ", size_,
           " x ", in.size(0), " rows for in ", in.shape_string());
  NW_CHECK(!overlaps(in, out) || in.data == slice_data(out, rank_, in.size(0)), where(op),
           ": in overlaps out other than as this rank's slice of it");
  do_all_gather(in, out, stream);
}

void Communicator::reduce_scatter(const Tensor& in, const Tensor& out, cudaStream_t stream) {
  const Collective op = Collective::kReduceScatter;
  check_rows(op, in, out);
  NW_CHECK(summable(in.dtype), where(op), ": sums F32, BF16 or I32, got ", dtype_name(in.dtype));
  NW_CHECK(in.size(0) == size_ * out.size(0), where(op), ": in ", in.shape_string(), " should have ", size_, " x ",
           out.size(0), " rows for out ", out.shape_string());
  NW_CHECK(!overlaps(in, out) || out.data == slice_data(in, rank_, out.size(0)), where(op),
           ": out overlaps in other than as this rank's slice of it");
  do_reduce_scatter(in, out, stream);
}

void Communicator::all_to_all(const Tensor& in, const std::vector<int64_t>& send_rows, const Tensor& out,
                              const std::vector<int64_t>& recv_rows, cudaStream_t stream) {
  const Collective op = Collective::kAllToAll;
  check_rows(op, in, out);
  NW_CHECK(send_rows.size() == static_cast<size_t>(size_) && recv_rows.size() == static_cast<size_t>(size_),
           where(op), ": ", send_rows.size(), " send and ", recv_rows.size(), " receive counts for ", size_, " ranks");
  for (int j = 0; j < size_; ++j)
    NW_CHECK(send_rows[j] >= 0 && recv_rows[j] >= 0, where(op), ": negative row count for rank ", j);
  const int64_t sent = std::accumulate(send_rows.begin(), send_rows.end(), int64_t{0});
  const int64_t received = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0});
  NW_CHECK(sent == in.size(0), where(op), ": send counts add up to ", sent, " rows, in has ", in.size(0));
  NW_CHECK(received == out.size(0), where(op), ": receive counts add up to ", received, " rows, out has ", out.size(0));
  NW_CHECK(send_rows[rank_] == recv_rows[rank_], where(op), ": sends itself ", send_rows[rank_], " rows but expects ",
           recv_rows[rank_]);
  NW_CHECK(!overlaps(in, out), where(op), ": in and out overlap");
  do_all_to_all(in, send_rows, out, recv_rows, stream);
}

void Communicator::broadcast(const Tensor& tensor, int root, cudaStream_t stream) {
  const Collective op = Collective::kBroadcast;
  check_tensor(op, tensor, "tensor");
  NW_CHECK(root >= 0 && root < size_, where(op), ": root ", root, " is not a rank of a group of ", size_);
  do_broadcast(tensor, root, stream);
}

void Communicator::barrier() { do_barrier(); }

std::unique_ptr<Communicator> Communicator::split(int color, int key, const std::string& name) {
  NW_CHECK(!name.empty(), where(Collective::kSplit), ": the new group needs a name");
  return do_split(color, key, name);
}

}  // namespace narwhal
