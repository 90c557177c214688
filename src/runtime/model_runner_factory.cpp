// make_model_runner: one place that picks the ModelRunner implementation by device and parallelism.
#include "runtime/model_runner_factory.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/cuda_check.h"
#include "core/error.h"
#include "core/json.h"
#include "core/logging.h"
#include "core/progress.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "parallel/process_world.h"
#include "runtime/cpu_model_runner.h"
#include "runtime/cuda_model_runner.h"
#include "runtime/kv_pool.h"
#include "runtime/tp_model_runner.h"

namespace narwhal {

bool device_local_requested() {
  const char* v = std::getenv(kDeviceLocalEnv);
  return v && std::string(v) == "1";
}

namespace {

ModelConfig read_config(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  NW_CHECK(std::filesystem::exists(path), model_dir, ": no config.json (is --model-path a model directory?)");
  return ModelConfig::from_file(path);
}

// The served checkpoint, with --speculative-draft-model-path's MTP layer over its own.
Checkpoint model_checkpoint(const RunnerOptions& options, const ModelConfig& config) {
  return open_checkpoint(options.model_path, options.speculative.draft_model_path, config);
}

int64_t cpu_cache_pages(const RunnerOptions& options, const ModelConfig& config, bool log) {
  const int64_t bytes_per_token = CpuModelRunner::cache_bytes_per_token(config, options.speculative.enabled());
  const int64_t pages =
      kv_pool_pages(options.cpu_cache_bytes, bytes_per_token, options.page_size, options.max_total_tokens);
  if (log) {
    NW_LOG(Info) << "cpu KV cache: " << pages << " pages x " << options.page_size << " tokens x " << bytes_per_token
                 << " bytes (--cpu-cache-bytes " << options.cpu_cache_bytes << ")";
  }
  return pages;
}

std::unique_ptr<ModelRunner> make_cpu_runner(const RunnerOptions& options) {
  auto model = std::make_shared<const DeepSeekModel>(DeepSeekModel::load(options.model_path, options.speculative.draft_model_path));
  const int64_t pages = cpu_cache_pages(options, model->config(), true);
  return std::make_unique<CpuModelRunner>(std::move(model), pages, options.page_size, options.speculative);
}

CudaRunnerOptions cuda_options(const RunnerOptions& options) {
  require_cuda_device("--device cuda", "; --device cpu runs the reference forward on the CPU");
  CudaRunnerOptions cuda;
  cuda.page_size = options.page_size;
  cuda.max_total_tokens = options.max_total_tokens;
  cuda.mem_fraction_static = options.mem_fraction_static;
  cuda.cuda_graph_max_bs = options.cuda_graph_max_bs;
  cuda.disable_cuda_graph = options.disable_cuda_graph;
  cuda.max_tokens_per_step = options.max_tokens_per_step;
  cuda.speculative = options.speculative;
  if (cuda.cuda_graph_max_bs == 0) {
    size_t free_bytes = 0, total_bytes = 0;
    NW_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    cuda.cuda_graph_max_bs = auto_cuda_graph_max_bs(static_cast<int64_t>(total_bytes));
  }
  return cuda;
}

std::unique_ptr<CudaModelRunner> make_cuda_runner(const RunnerOptions& options, const CudaRunnerOptions& cuda) {
  if (options.load_format == "dummy") return CudaModelRunner::dummy(options.model_path, cuda);
  return CudaModelRunner::load(options.model_path, cuda);
}

Backend tp_backend(const RunnerOptions& options) {
  if (options.device == "cpu") return Backend::kHost;
  return device_local_requested() ? Backend::kDeviceLocal : Backend::kNccl;
}

// config.json's bytes as 16 hex digits (FNV-1a): the same model under two paths, or two models under one.
std::string config_digest(const std::string& model_dir) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : read_text_file((std::filesystem::path(model_dir) / "config.json").string()))
    h = (h ^ c) * 0x100000001b3ull;
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  return text;
}

// What every node must agree on: the flags that shape each rank's weights, cache and step buffers (join_nodes adds
// the parallel flags, --tp-size among them). The device decides the dtypes (F32 on the CPU, BF16 / FP8 on the GPU).
Fingerprint runner_fingerprint(const RunnerOptions& o) {
  return {{"--model-path", o.model_path},
          {"config.json", config_digest(o.model_path)},
          {"--device", o.device},
          {"--load-format", o.load_format},
          {"--page-size", std::to_string(o.page_size)},
          {"--max-total-tokens", std::to_string(o.max_total_tokens)},
          {"--cpu-cache-bytes", std::to_string(o.cpu_cache_bytes)},
          {"--mem-fraction-static", cat(o.mem_fraction_static)},
          {"--cuda-graph-max-bs", std::to_string(o.cuda_graph_max_bs)},
          {"--disable-cuda-graph", o.disable_cuda_graph ? "true" : "false"},
          {"tokens per step (--chunked-prefill-size, --max-prefill-tokens, --max-running-requests)",
           std::to_string(o.max_tokens_per_step)}};
}

bool dp_attention(const ParallelFlags& flags) { return flags.dp_attention_groups() > 1; }

// The TP group's split of the model (rank 0's; every rank's has the same shape).
TpSlice world_slice(const ParallelFlags& flags) {
  return {0, flags.tp_size, flags.ep_size, flags.dp_attention_groups(), flags.moe_a2a_backend, flags.deepep_mode};
}

// Each DP group's first rank draws the group's tokens for the engine, which runs on node 0: with more than one
// node some group would start on another (its drawn tokens have no way back yet), so DP attention is one node's.
void check_dp_groups_start_on_node_zero(const ParallelFlags& flags) {
  if (!dp_attention(flags)) return;
  const int ranks_per_node = ParallelConfig::world_size_of(flags) / flags.nnodes;
  const int group_size = flags.tp_size / flags.dp_size;
  const int last_first = (flags.dp_size - 1) * group_size;
  NW_CHECK(last_first < ranks_per_node, "--enable-dp-attention --dp-size ", flags.dp_size, " over --nnodes ",
           flags.nnodes, ": DP group ", flags.dp_size - 1, " would start at rank ", last_first, " on node ",
           last_first / ranks_per_node, ", but the engine on node 0 draws every group's tokens, so DP attention "
           "runs on one node for now (--nnodes 1)");
}

// Refuses a --tp-size the model cannot split before any node waits for the others (every node refuses alike).
std::unique_ptr<ProcessWorld> join_world(const RunnerOptions& options) {
  const ModelConfig config = read_config(options.model_path);
  ParallelConfig::validate(options.parallel);
  check_dp_groups_start_on_node_zero(options.parallel);
  const TpSlice slice = world_slice(options.parallel);
  tp_dims(config, slice);
  if (options.device == "cuda") {
    require_cuda_device("--device cuda", "; --device cpu runs tensor parallelism on the CPU");
    check_gpu_support(config, slice);
  }
  return std::make_unique<ProcessWorld>(options.parallel, tp_backend(options), runner_fingerprint(options));
}

// Makes each local rank's runner on its thread: its slices of the weights (one progress bar for this process's
// ranks) and its own latent cache.
RankRunnerFactory rank_factory(const RunnerOptions& options, const ProcessWorld& world) {
  const ModelConfig config = read_config(options.model_path);
  const int ranks = world.num_local_ranks();
  std::shared_ptr<ProgressBar> progress;
  if (options.load_format != "dummy")
    progress = std::make_shared<ProgressBar>(
        "Loading weights", ranks * weight_load_steps(config, model_checkpoint(options, config)));
  auto made = std::make_shared<std::atomic<int>>(0);
  const auto done = [progress, made, ranks] {
    if (++*made == ranks && progress) progress->finish();
  };
  if (options.device == "cpu") {
    const int64_t pages = cpu_cache_pages(options, config, world.config(0).node_rank() == 0);
    return [options, config, pages, progress, done](const ParallelConfig& rank, Communicator& tp,
                                                    Communicator* dp_group) {
      TpSlice slice = world_slice(rank.flags());
      slice.rank = tp.rank();
      ModelWeights weights =
          load_weights(config, model_checkpoint(options, config), Device::kCPU, slice, progress.get());
      auto model = std::make_shared<const DeepSeekModel>(config, std::move(weights), &tp, slice.ep_size, dp_group,
                                                         slice.dp_size, slice.moe_a2a, slice.deepep_mode);
      done();
      return std::make_unique<CpuModelRunner>(std::move(model), pages, options.page_size, options.speculative);
    };
  }
  CudaRunnerOptions cuda = cuda_options(options);
  const int ranks_per_device = tp_backend(options) == Backend::kDeviceLocal ? ranks : 1;
  return [options, cuda, progress, done, ranks_per_device](const ParallelConfig& rank, Communicator& tp,
                                                           Communicator* dp_group) {
    CudaRunnerOptions mine = cuda;
    mine.dp_group = dp_group;
    mine.dp_size = world_slice(rank.flags()).dp_size;
    mine.tp = &tp;
    mine.ep_size = rank.ep_size();
    mine.moe_a2a = rank.flags().moe_a2a_backend;
    mine.deepep_mode = rank.flags().deepep_mode;
    mine.ranks_per_device = ranks_per_device;
    mine.progress = progress.get();
    std::unique_ptr<ModelRunner> runner = make_cuda_runner(options, mine);
    done();
    return runner;
  };
}

}  // namespace

int auto_cuda_graph_max_bs(int64_t total_bytes) {
  const int64_t gib = total_bytes >> 30;
  return gib >= 120 ? kMaxAutoCudaGraphBs : gib >= 70 ? 256 : 160;
}

bool is_worker_node(const RunnerOptions& options) { return options.parallel.node_rank != 0; }

std::vector<std::unique_ptr<ModelRunner>> make_model_runners(const RunnerOptions& options) {
  NW_CHECK(options.device == "cpu" || options.device == "cuda", "--device ", options.device,
           ": no model runner for it (available: cpu, cuda)");
  std::vector<std::unique_ptr<ModelRunner>> runners;
  if (options.parallel.tp_size > 1 || options.parallel.nnodes > 1) {
    NW_CHECK(!is_worker_node(options), "--node-rank ", options.parallel.node_rank, " follows node 0: it runs no engine");
    std::unique_ptr<ProcessWorld> world = join_world(options);
    RankRunnerFactory make = rank_factory(options, *world);
    if (!dp_attention(options.parallel)) {
      runners.push_back(std::make_unique<TpModelRunner>(std::move(world), std::move(make)));
      return runners;
    }
    auto tp = std::make_shared<TpModelRunner>(std::move(world), std::move(make));
    for (int g = 0; g < tp->dp_size(); ++g) runners.push_back(std::make_unique<DpGroupRunner>(tp, g));
    return runners;
  }
  NW_CHECK(!dp_attention(options.parallel), "--enable-dp-attention --dp-size ", options.parallel.dp_size,
           " splits the --tp-size ranks into DP groups: it needs --tp-size >= --dp-size");
  runners.push_back(options.device == "cpu" ? make_cpu_runner(options)
                                            : make_cuda_runner(options, cuda_options(options)));
  return runners;
}

std::unique_ptr<ModelRunner> make_model_runner(const RunnerOptions& options) {
  NW_CHECK(!dp_attention(options.parallel), "--enable-dp-attention gives a runner per DP group: this command "
           "drives one model runner, so it takes no --dp-size");
  std::vector<std::unique_ptr<ModelRunner>> runners = make_model_runners(options);
  return std::move(runners.front());
}

void run_worker_node(const RunnerOptions& options) {
  std::unique_ptr<ProcessWorld> world = join_world(options);
  const ParallelConfig& first = world->config(0);
  NW_LOG(Info) << first.describe_ranks(first.local_ranks()) << ": a worker of node 0 (" << options.parallel.dist_init_addr
               << "), following its steps";
  follow_node_zero(*world, rank_factory(options, *world));
  NW_LOG(Info) << "node 0 stopped: node " << first.node_rank() << " stops too";
}

}  // namespace narwhal
