// make_model_runner: loads a model directory onto the chosen device and sizes its paged KV cache.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/model_runner.h"

namespace narwhal {

// The largest decode batch a GPU of `total_bytes` memory captures graphs for when --cuda-graph-max-bs is 0:
// SGLang's choice by memory class (512 on H200-class cards, 256 on 80 GB ones, 160 below).
inline constexpr int kMaxAutoCudaGraphBs = 512;
int auto_cuda_graph_max_bs(int64_t total_bytes);

// What a runner needs to know to load and to size the cache (filled from ServerArgs by the CLI).
struct RunnerOptions {
  std::string model_path;
  std::string device = "cpu";
  int64_t page_size = 64;
  int64_t max_total_tokens = 0;         // > 0: the cache holds at most this many tokens
  int64_t cpu_cache_bytes = 1LL << 30;  // cpu: host bytes for the cache
  double mem_fraction_static = 0.85;    // gpu: weights + cache share of device memory (kv_budget_from_mem_fraction)
  std::string load_format = "auto";     // gpu: "dummy" makes random weights from config.json (SGLang's flag)
  int cuda_graph_max_bs = 0;            // gpu: decode batches up to this size replay captured CUDA graphs (0: auto)
  bool disable_cuda_graph = false;
  int64_t max_tokens_per_step = 16384;  // gpu: step buffers hold this many tokens
};

// The cpu runner's cache gets floor(cpu_cache_bytes / (bytes per token * page_size)) pages, capped by
// max_total_tokens. A GPU runner sizes its cache from the memory left after loading its weights
// (kv_budget_from_mem_fraction), then kv_pool_pages. Throws Error for an unknown or unbuilt device.
std::unique_ptr<ModelRunner> make_model_runner(const RunnerOptions& options);

}  // namespace narwhal
