// `narwhal bench-one-batch`: SGLang's bench_one_batch on the GPU runner: one static batch, prefill then decode,
// with each decode step's time against its HBM floor (the bytes one GPU must read, decode_step_bytes, over the
// bandwidth measured here). With --tp it times the TP group's steps (greedy tokens drawn on TP rank 0), with
// --enable-dp-attention --dp-size D the steps of D DP groups that each run the batch.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <cuda_profiler_api.h>

#include "cli/bench_one_batch_floor.h"
#include "cli/commands.h"
#include "cli/server_args.h"
#include "core/cuda_check.h"
#include "core/error.h"
#include "runtime/model_runner_factory.h"

namespace narwhal {

namespace {

struct BenchFlags {
  std::string batch_size = "1";
  std::string input_len = "1024";
  int output_len = 16;
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Device-to-device copy bandwidth (bytes read + written per second) of a 2 GiB copy, median of 10.
double measure_hbm_bandwidth() {
  const size_t bytes = size_t{1} << 31;
  Tensor a = Tensor::empty(DType::kI32, {static_cast<int64_t>(bytes / 4)}, Device::kCUDA);
  Tensor b = Tensor::empty(DType::kI32, {static_cast<int64_t>(bytes / 4)}, Device::kCUDA);
  NW_CUDA_CHECK(cudaMemset(a.data, 1, bytes));
  cudaEvent_t start, stop;
  NW_CUDA_CHECK(cudaEventCreate(&start));
  NW_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    NW_CUDA_CHECK(cudaEventRecord(start));
    NW_CUDA_CHECK(cudaMemcpyAsync(b.data, a.data, bytes, cudaMemcpyDeviceToDevice));
    NW_CUDA_CHECK(cudaEventRecord(stop));
    NW_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    NW_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    if (i >= 2) ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return 2.0 * static_cast<double>(bytes) / (ms[ms.size() / 2] * 1e-3);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Result {
  int64_t batch, input_len, output_len;
  double prefill_s, decode_median_s, floor_s;  // floor_s: the per-GPU floor
};

// Each DP group's greedy next token per sequence of its batch, drawn where the forward ran (only the ids come back):
// the served step, as the engine runs it for temperature-0 requests. Every group launches before any finishes (one
// step of them all).
std::vector<std::vector<int32_t>> greedy_step(const std::vector<std::unique_ptr<ModelRunner>>& groups,
                                              const std::vector<ForwardBatch>& batches) {
  static const SamplingParams kGreedy = [] {
    SamplingParams p;
    p.temperature = 0.0;
    return p;
  }();
  static const TokenCounts kNoCounts;
  std::vector<std::vector<SampleRequest>> samples(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t s = 0; s < batches[g].seqs.size(); ++s)
      samples[g].push_back({static_cast<int64_t>(s), &kGreedy, &kNoCounts});
    groups[g]->launch(batches[g], samples[g], false);
  }
  std::vector<std::vector<int32_t>> ids(groups.size());
  for (size_t g = 0; g < groups.size(); ++g)
    for (const SampledToken& t : groups[g]->finish().sampled) ids[g].push_back(t.token);
  return ids;
}

}  // namespace

int run_bench_one_batch(int argc, char** argv) {
  ServerArgs args;
  BenchFlags f;
  ArgParser parser("bench-one-batch",
                   "Times one static batch on the GPU (prefill, then decode steps), as SGLang's bench_one_batch, "
                   "and prints each decode step against the HBM floor of one GPU. With --enable-dp-attention "
                   "--dp-size D every DP group runs --batch-size sequences (SGLang's: each rank builds the same "
                   "batch), so a step carries D x batch of them; throughputs count every group's tokens.");
  args.register_flags(parser);
  parser.add("batch-size", &f.batch_size, "batch sizes (per DP group), comma-separated");
  parser.add("input-len", &f.input_len, "prompt lengths, comma-separated");
  parser.add("output-len", &f.output_len, "decode steps per case");
  if (!parser.parse(argc, argv, 2)) return 0;
  args.device = "cuda";
  args.validate();
  require_cuda_device("bench-one-batch");
  NW_CHECK(f.output_len >= 1, "--output-len must be >= 1, got ", f.output_len);
  const std::vector<int> batches = parse_id_list(f.batch_size, "batch-size");
  const std::vector<int> inputs = parse_id_list(f.input_len, "input-len");
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  const int max_input = *std::max_element(inputs.begin(), inputs.end());
  NW_CHECK(max_batch >= 1 && *std::min_element(inputs.begin(), inputs.end()) >= 1, "batch sizes and input lengths must be >= 1");

  RunnerOptions options = args.runner_options();
  options.cuda_graph_max_bs = std::max(args.cuda_graph_max_bs, max_batch);
  // Prefill runs whole sequences per step, as many as fit in 16384 tokens (per DP group).
  options.max_tokens_per_step = std::max<int64_t>(16384, max_input);
  if (is_worker_node(options)) {  // node 0 runs the benchmark; this node runs its ranks' part of each step
    run_worker_node(options);
    return 0;
  }
  const ParallelFlags& parallel = options.parallel;
  const TpSlice slice{0, parallel.tp_size, parallel.ep_size, parallel.dp_attention_groups()};
  // Device-local TP runs every rank on this GPU, each in turn: a step's time is the sum of their work, and the GPU
  // reads every rank's share.
  const int ranks_here = parallel.tp_size > 1 && device_local_requested() ? parallel.tp_size : 1;
  const double bandwidth = measure_hbm_bandwidth();
  std::printf("HBM bandwidth (device-to-device copy, read + write, this GPU): %.0f GB/s\n", bandwidth / 1e9);
  if (parallel.tp_size > 1)
    std::printf("--tp %d --ep %d, %d DP group(s) of %d rank(s): the floor is what one GPU reads (its share of the "
                "weights, its DP group's cache)%s\n", parallel.tp_size, parallel.ep_size, slice.dp_size,
                slice.attn_size(), ranks_here > 1 ? "" : "; a GPU per rank, meeting at every layer: a step is each's");
  if (ranks_here > 1)
    std::printf("%s=1: all %d ranks share this GPU and take turns, so a step's time is the sum of their work; "
                "step / floor below is against %d x the per-GPU floor, and says nothing about TP speed.\n",
                kDeviceLocalEnv, ranks_here, ranks_here);
  const std::vector<std::unique_ptr<ModelRunner>> groups = make_model_runners(options);
  const ModelRunner& runner = *groups.front();
  const ModelConfig& config = runner.config();
  const int64_t pages_per_seq = (max_input + f.output_len + args.page_size - 1) / args.page_size;
  NW_CHECK(pages_per_seq * max_batch <= runner.num_pages(), "the cache holds ", runner.num_pages(),
           " pages; batch ", max_batch, " x ", max_input + f.output_len, " tokens needs ", pages_per_seq * max_batch);

  std::mt19937 rng(static_cast<uint32_t>(args.random_seed));
  std::vector<Result> results;
  // Profilers started with --capture-range=cudaProfilerApi see the timed decode steps, or with this set the timed
  // prefill (scripts/gpu-check GPU_CHECK_PROFILE=prefill).
  const bool profile_prefill = std::getenv("NARWHAL_PROFILE_PREFILL") != nullptr;
  const size_t dp = groups.size();
  for (int batch : batches) {
    for (int input : inputs) {
      // Each group's own prompts, in its own cache (the same page ids in each).
      std::vector<std::vector<int32_t>> tables(batch);
      std::vector<std::vector<std::vector<int32_t>>> prompts(dp, std::vector<std::vector<int32_t>>(batch));
      for (int s = 0; s < batch; ++s)
        for (int64_t p = 0; p < pages_per_seq; ++p) tables[s].push_back(static_cast<int32_t>(s * pages_per_seq + p));
      for (auto& group : prompts)
        for (auto& prompt : group)
          for (int i = 0; i < input; ++i)
            prompt.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(config.vocab_size)));
      // Warm-up prefill + decode step (kernel plans), then the timed run.
      std::vector<std::vector<int32_t>> next(dp);
      double prefill_s = 0;
      std::vector<double> steps;
      for (int pass = 0; pass < 2; ++pass) {
        for (auto& ids : next) ids.clear();
        if (pass == 1 && profile_prefill) NW_CUDA_CHECK(cudaProfilerStart());
        const double t0 = now_s();
        for (int first = 0; first < batch;) {
          std::vector<ForwardBatch> fb(dp);
          int s = first;
          while (s < batch && (s == first || (s - first + 1) * int64_t{input} <= options.max_tokens_per_step)) {
            for (size_t g = 0; g < dp; ++g) fb[g].add_sequence(prompts[g][s], 0, tables[s]);
            ++s;
          }
          const std::vector<std::vector<int32_t>> ids = greedy_step(groups, fb);
          for (size_t g = 0; g < dp; ++g) next[g].insert(next[g].end(), ids[g].begin(), ids[g].end());
          first = s;
        }
        prefill_s = now_s() - t0;
        if (pass == 1 && profile_prefill) NW_CUDA_CHECK(cudaProfilerStop());
        steps.clear();
        if (pass == 1 && !profile_prefill) NW_CUDA_CHECK(cudaProfilerStart());
        for (int step = 0; step < (pass == 0 ? 1 : f.output_len); ++step) {
          std::vector<ForwardBatch> fb(dp);
          for (size_t g = 0; g < dp; ++g)
            for (int s = 0; s < batch; ++s) fb[g].add_sequence({next[g][s]}, input + step, tables[s]);
          const double t1 = now_s();
          next = greedy_step(groups, fb);
          steps.push_back(now_s() - t1);
        }
        if (pass == 1 && !profile_prefill) NW_CUDA_CHECK(cudaProfilerStop());
      }
      const double decode_s = median(steps), sequences = static_cast<double>(dp) * batch;
      std::printf("batch %d input %d: Prefill. latency: %.5f s, throughput: %.2f token/s\n", batch, input, prefill_s,
                  sequences * input / prefill_s);
      std::printf("batch %d input %d: Decode.  median latency: %.5f s, median throughput: %.2f token/s\n", batch,
                  input, decode_s, sequences / decode_s);
      const DecodeStepBytes bytes = decode_step_bytes(config, slice, batch, input + f.output_len / 2);
      const double floor_s = bytes.total() / bandwidth;
      std::printf("batch %d input %d: Decode HBM floor per GPU: %.3f ms (weights %.0f MB + experts %.0f MB + KV "
                  "%.0f MB at %.0f GB/s); step / floor = %.2f\n",
                  batch, input, floor_s * 1e3, bytes.weights / 1e6, bytes.experts / 1e6, bytes.kv / 1e6,
                  bandwidth / 1e9, decode_s / (ranks_here * floor_s));
      results.push_back({batch, input, f.output_len, prefill_s, decode_s, floor_s});
    }
  }
  std::printf("\n| batch | input | output | prefill s | prefill tok/s | decode ms/step | decode tok/s | floor ms | "
              "step/floor |\n|---|---|---|---|---|---|---|---|---|\n");
  for (const Result& r : results) {
    const double sequences = static_cast<double>(dp) * r.batch;
    std::printf("| %lld | %lld | %lld | %.4f | %.0f | %.3f | %.0f | %.3f | %.2f |\n", static_cast<long long>(r.batch),
                static_cast<long long>(r.input_len), static_cast<long long>(r.output_len), r.prefill_s,
                sequences * r.input_len / r.prefill_s, r.decode_median_s * 1e3, sequences / r.decode_median_s,
                r.floor_s * 1e3, r.decode_median_s / (ranks_here * r.floor_s));
  }
  return 0;
}

}  // namespace narwhal
