// ProcessWorld: set-up per backend, rank threads, and the policy on a lost node.
#include "parallel/process_world.h"

#include <cuda_runtime.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <thread>

#include "core/cuda_check.h"
#include "core/error.h"
#include "core/logging.h"
#include "parallel/command_channel.h"
#include "parallel/device_local_communicator.h"
#include "parallel/host_communicator.h"
#include "parallel/nccl_communicator.h"
#include "parallel/tcp_mesh.h"
#include "parallel/tcp_store.h"

namespace narwhal {

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::kHost: return "host";
    case Backend::kDeviceLocal: return "device-local";
    case Backend::kNccl: return "nccl";
  }
  return "?";
}

ProcessWorld::ProcessWorld(const ParallelFlags& flags, Backend backend, const Fingerprint& fingerprint)
    : backend_(backend) {
  ParallelConfig::validate(flags);
  if (backend == Backend::kNccl && flags.devices_per_node == 0) {  // one GPU per rank: say so before NCCL does
    ParallelFlags counted = flags;
    NW_CUDA_CHECK(cudaGetDeviceCount(&counted.devices_per_node));
    ParallelConfig::validate(counted);
  }
  NW_CHECK(backend != Backend::kDeviceLocal || flags.nnodes == 1, "the device-local backend runs every rank on one ",
           "GPU of one process, so --nnodes must be 1, got ", flags.nnodes);
  const int world_size = ParallelConfig::world_size_of(flags);
  for (int r = 0; r < world_size; ++r)
    if (r / (world_size / flags.nnodes) == flags.node_rank) configs_.emplace_back(flags, r);
  const ParallelConfig& first = configs_.front();
  if (flags.nnodes > 1) {
    store_ = std::make_unique<TcpStore>(flags.dist_init_addr, flags.node_rank, flags.node_rank == 0,
                                        flags.dist_timeout_s, first.describe_ranks(first.node_ranks(0)));
    Fingerprint with_backend = fingerprint;
    with_backend["backend"] = backend_name(backend);
    join_nodes(*store_, first, with_backend);
  }

  if (backend == Backend::kNccl) make_nccl_comms();
  else make_exchange_comms();

  if (store_) {
    commands_ = std::make_unique<CommandChannel>(*store_, first, status_);
    // A lost node ends the host-side waits of every backend through the world status. NCCL kernels waiting for
    // it would not end, so there the process exits (non-zero, naming the lost ranks) after a grace in which the
    // host side learns of it: a server's engine stops and its /health says 503 first.
    const bool exit_soon = backend == Backend::kNccl;
    watchdog_ = std::make_unique<NodeWatchdog>(*store_, first, [status = status_, exit_soon](const std::string& loss) {
      status->fail(loss);
      if (!exit_soon) return;
      constexpr auto kGrace = std::chrono::seconds(3);
      NW_LOG(Error) << loss << "; exiting in " << kGrace.count() << " s";
      std::this_thread::sleep_for(kGrace);
      std::_Exit(1);
    });
  }
}

void ProcessWorld::make_nccl_comms() {
  const ParallelFlags& flags = configs_.front().flags();
  std::string unique_id;
  if (flags.node_rank == 0) {
    unique_id = NcclCommunicator::new_unique_id();
    if (store_) store_->set("nccl/unique_id", unique_id);
  } else {
    unique_id = store_->get("nccl/unique_id");
  }
  std::vector<int> ranks;
  for (const ParallelConfig& c : configs_) {
    ranks.push_back(c.rank());
    devices_.push_back(c.local_rank());
  }
  comms_ = NcclCommunicator::create(unique_id, configs_.front().world_size(), ranks, devices_, flags.dist_timeout_s,
                                    status_);
}

void ProcessWorld::make_exchange_comms() {
  const ParallelConfig& first = configs_.front();
  auto context = std::make_shared<WorldContext>();
  context->status = status_;
  context->nnodes = first.nnodes();
  context->ranks_per_node = first.ranks_per_node();
  context->node = first.node_rank();
  context->timeout_s = first.timeout_s();
  if (store_) {
    context->mesh = std::make_shared<TcpMesh>(*store_, first);
    context->failure_of = [store = store_.get(), per_node = first.ranks_per_node()](int rank) {
      return announced_failure(*store, rank / per_node);
    };
  }
  int device = -1;
  if (backend_ == Backend::kDeviceLocal) NW_CUDA_CHECK(cudaGetDevice(&device));
  auto local = ExchangeCommunicator::world_local_group(*context, first.world_size());
  for (const ParallelConfig& c : configs_) {
    ExchangeCommunicator::Group group = ExchangeCommunicator::world_group(*context, c.rank(), local);
    devices_.push_back(device);
    if (backend_ == Backend::kHost) comms_.push_back(std::make_unique<HostCommunicator>(context, std::move(group)));
    else comms_.push_back(std::make_unique<DeviceLocalCommunicator>(context, std::move(group), device));
  }
}

ProcessWorld::~ProcessWorld() {
  // The watchdog goes first: nodes that leave from here on are finishing, not lost.
  watchdog_.reset();
  // NCCL's finalize ends only once every rank finalizes, so this process's ranks let go of theirs all at once.
  std::vector<std::thread> closers;
  for (auto& comm : comms_) closers.emplace_back([&comm] { comm.reset(); });
  for (std::thread& t : closers) t.join();
}

void ProcessWorld::run(const RankFn& fn) {
  std::vector<std::thread> threads;
  std::atomic<bool> any_failed{false};
  std::atomic<int> running{num_local_ranks()};
  // Host ranks compute on the CPU side by side: each gets its share of the OpenMP threads, since more threads
  // than cores spin-wait on each other (a TP 2 forward on 2 cores ran 10x slower with 2 threads per rank).
  const int omp_threads = std::max(1, omp_get_max_threads() / num_local_ranks());
  for (int i = 0; i < num_local_ranks(); ++i) {
    threads.emplace_back([&, i] {
      try {
        if (backend_ == Backend::kHost) omp_set_num_threads(omp_threads);
        if (devices_[i] >= 0) NW_CUDA_CHECK(cudaSetDevice(devices_[i]));
        fn(configs_[i], *comms_[i]);
      } catch (const std::exception& e) {
        // Ranks that fail because this one did only repeat its message, and the first failure is kept.
        status_->fail(cat(configs_[i].describe_ranks({configs_[i].rank()}), " failed: ", e.what()));
        any_failed = true;
      }
      --running;
    });
  }
  if (backend_ == Backend::kNccl) exit_if_stuck(running);
  for (std::thread& t : threads) t.join();
  if (!any_failed) return;
  if (store_) {
    try {
      announce_failure(*store_, configs_.front().node_rank(), status_->message());
    } catch (const Error&) {
      // The store is gone (node 0 died): the others learn of this node's end from its closed connections.
    }
  }
  throw Error(status_->message());
}

void ProcessWorld::exit_if_stuck(const std::atomic<int>& running) const {
  // Host-side waits end once the world fails, but NCCL kernels waiting for a rank that failed never finish, nor
  // does a rank blocked on them (a stream synchronize): those get a grace period, then the process exits.
  constexpr auto kGrace = std::chrono::seconds(5);
  std::optional<std::chrono::steady_clock::time_point> failed_at;
  while (running > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!status_->failed()) continue;
    if (!failed_at) failed_at = std::chrono::steady_clock::now();
    if (std::chrono::steady_clock::now() - *failed_at < kGrace) continue;
    NW_LOG(Error) << status_->message() << "; " << running << " rank(s) still blocked in NCCL work, exiting";
    std::_Exit(1);
  }
}

void run_ranks(const ParallelFlags& flags, const RankFn& fn, Backend backend) {
  NW_CHECK(flags.nnodes == 1, "run_ranks runs one process's ranks; --nnodes ", flags.nnodes, " needs ProcessWorld");
  ProcessWorld(flags, backend).run(fn);
}

void run_ranks(int world_size, const RankFn& fn, Backend backend, double timeout_s) {
  ParallelFlags flags;
  flags.tp_size = world_size;
  flags.dist_timeout_s = timeout_s;
  run_ranks(flags, fn, backend);
}

ParallelGroups split_groups(Communicator& world, const ParallelConfig& config) {
  auto split = [&](const RankGroup& g, const char* name) { return world.split(g.color(), g.index, name); };
  ParallelGroups groups;
  groups.tp = split(config.tp_group(), "tp");
  groups.attn_tp = split(config.attn_tp_group(), "attn_tp");
  groups.ep = split(config.ep_group(), "ep");
  groups.moe_tp = split(config.moe_tp_group(), "moe_tp");
  return groups;
}

}  // namespace narwhal
