// make_model_runner: loads a model directory onto the chosen device and sizes its paged KV cache; with tensor
// parallelism, joins the world and makes the TP group's runner (node 0) or follows node 0 (the other nodes).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "parallel/parallel_config.h"
#include "runtime/model_runner.h"
#include "runtime/speculative.h"

namespace narwhal {

// The largest decode batch a GPU of `total_bytes` memory captures graphs for when --cuda-graph-max-bs is 0:
// SGLang's choice by memory class (512 on H200-class cards, 256 on 80 GB ones, 160 below).
inline constexpr int kMaxAutoCudaGraphBs = 512;
int auto_cuda_graph_max_bs(int64_t total_bytes);

// Set to 1, GPU tensor parallelism runs every rank on the current GPU (the device-local backend, for tests on one
// GPU) instead of a GPU per rank over NCCL.
inline constexpr const char* kDeviceLocalEnv = "NARWHAL_TP_DEVICE_LOCAL";
bool device_local_requested();

// What a runner needs to know to load and to size the cache (filled from ServerArgs by the CLI).
struct RunnerOptions {
  std::string model_path;
  std::string device = "cpu";
  int64_t page_size = 64;
  int64_t max_total_tokens = 0;         // > 0: the cache holds at most this many tokens
  int64_t cpu_cache_bytes = 1LL << 30;  // cpu: host bytes for the cache (each TP rank holds the whole latent cache)
  double mem_fraction_static = 0.85;    // gpu: weights + cache share of device memory (kv_budget_from_mem_fraction)
  std::string load_format = "auto";     // gpu: "dummy" makes random weights from config.json (SGLang's flag)
  int cuda_graph_max_bs = 0;            // gpu: decode batches up to this size replay captured CUDA graphs (0: auto)
  bool disable_cuda_graph = false;
  int64_t max_tokens_per_step = 16384;  // gpu: step buffers hold this many tokens
  // --tp-size, --nnodes, --node-rank, --dist-init-addr, --dist-timeout. TP over the host backend on the CPU (rank
  // threads, nodes over TCP), over NCCL on the GPU (a GPU per rank), or device-local with kDeviceLocalEnv.
  ParallelFlags parallel = {};
  // The runner verifies and drafts (the cache holds the MTP layer too); cuda: not with DP attention (CudaModelRunner
  // refuses it).
  SpeculativeConfig speculative = {};
};

// Whether these options make this process a node other than 0 of a multi-node world: it runs run_worker_node, not
// an engine.
bool is_worker_node(const RunnerOptions& options);

// The cpu runner's cache gets floor(cpu_cache_bytes / (bytes per token * page_size)) pages, capped by
// max_total_tokens. A GPU runner sizes its cache from the memory left after loading its weights
// (kv_budget_from_mem_fraction), then kv_pool_pages. With --tp-size > 1 or --nnodes > 1 this is node 0's
// TpModelRunner: it joins the world at --dist-init-addr (every node must give the same flags that shape the ranks'
// runners, or all of them fail naming the flag) and every rank loads only its slices. Throws Error for an unknown
// or unbuilt device.
std::unique_ptr<ModelRunner> make_model_runner(const RunnerOptions& options);
// The engine's runners: one per DP group with --enable-dp-attention (views of one TpModelRunner, see DpGroupRunner;
// every DP group's first rank must be on node 0), else make_model_runner's one.
std::vector<std::unique_ptr<ModelRunner>> make_model_runners(const RunnerOptions& options);

// A node other than 0: joins the world, loads its ranks' slices and runs node 0's steps until node 0 stops (returns)
// or is lost (throws, naming it).
void run_worker_node(const RunnerOptions& options);

}  // namespace narwhal
