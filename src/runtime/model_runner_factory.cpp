// make_model_runner: one place that picks the ModelRunner implementation by device.
#include "runtime/model_runner_factory.h"

#include "core/cuda_check.h"
#include "core/error.h"
#include "core/logging.h"
#include "runtime/cpu_model_runner.h"
#include "runtime/cuda_model_runner.h"
#include "runtime/kv_pool.h"

namespace narwhal {

namespace {

std::unique_ptr<ModelRunner> make_cpu_runner(const RunnerOptions& options) {
  auto model = std::make_shared<const DeepSeekModel>(DeepSeekModel::load(options.model_path));
  const int64_t bytes_per_token = CpuModelRunner::cache_bytes_per_token(model->config());
  const int64_t pages =
      kv_pool_pages(options.cpu_cache_bytes, bytes_per_token, options.page_size, options.max_total_tokens);
  NW_LOG(Info) << "cpu KV cache: " << pages << " pages x " << options.page_size << " tokens x " << bytes_per_token
               << " bytes (--cpu-cache-bytes " << options.cpu_cache_bytes << ")";
  return std::make_unique<CpuModelRunner>(std::move(model), pages, options.page_size);
}

}  // namespace

int auto_cuda_graph_max_bs(int64_t total_bytes) {
  const int64_t gib = total_bytes >> 30;
  return gib >= 120 ? kMaxAutoCudaGraphBs : gib >= 70 ? 256 : 160;
}

std::unique_ptr<ModelRunner> make_model_runner(const RunnerOptions& options) {
  if (options.device == "cpu") return make_cpu_runner(options);
  if (options.device == "cuda") {
    require_cuda_device("--device cuda", "; --device cpu runs the reference forward on the CPU");
    CudaRunnerOptions cuda;
    cuda.page_size = options.page_size;
    cuda.max_total_tokens = options.max_total_tokens;
    cuda.mem_fraction_static = options.mem_fraction_static;
    cuda.cuda_graph_max_bs = options.cuda_graph_max_bs;
    cuda.disable_cuda_graph = options.disable_cuda_graph;
    cuda.max_tokens_per_step = options.max_tokens_per_step;
    if (cuda.cuda_graph_max_bs == 0) {
      size_t free_bytes = 0, total_bytes = 0;
      NW_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
      cuda.cuda_graph_max_bs = auto_cuda_graph_max_bs(static_cast<int64_t>(total_bytes));
    }
    if (options.load_format == "dummy") return CudaModelRunner::dummy(options.model_path, cuda);
    return CudaModelRunner::load(options.model_path, cuda);
  }
  throw Error(cat("--device ", options.device, ": no model runner for it (available: cpu, cuda)"));
}

}  // namespace narwhal
