// `narwhal bench-one-batch`: SGLang's bench_one_batch on the GPU runner: one static batch, prefill then decode,
// with each decode step's time against its HBM floor (bytes it must read over the bandwidth measured here). With
// --tp it times the TP group's steps (greedy tokens drawn on TP rank 0) without a floor. With
// --speculative-oracle-accept-length it also times speculative steps that accept that many tokens (bench_speculative.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <cuda_profiler_api.h>

#include "cli/bench_speculative.h"
#include "cli/commands.h"
#include "cli/server_args.h"
#include "core/cuda_check.h"
#include "core/error.h"
#include "model/cuda_weights.h"
#include "runtime/cuda_model_runner.h"
#include "runtime/model_runner_factory.h"

namespace narwhal {

namespace {

struct BenchFlags {
  std::string batch_size = "1";
  std::string input_len = "1024";
  int output_len = 16;
  int oracle_accept = 0;  // > 0: also time speculative steps that accept this many tokens
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

// Bytes one decode step must read: every weight except the embedding table (B rows) and the routed experts
// (the expected number of distinct ones B tokens pick, E(1 - (1 - k/E)^B), per MoE layer), plus the KV cache.
struct StepBytes {
  double weights = 0, experts = 0, kv = 0;
  double total() const { return weights + experts + kv; }
};

StepBytes decode_bytes(const CudaModelWeights& w, const ModelConfig& c, int64_t batch, int64_t context) {
  StepBytes s;
  double routed_total = 0, routed_per_expert = 0;
  for (const CudaLayerWeights& l : w.layers) {
    if (!l.moe) continue;
    const ops::cuda::MoeExpertWeights& e = l.moe->experts;
    const double all = static_cast<double>(e.gate_up.nbytes() + e.down.nbytes()) +
                       (e.gate_up_scale_inv.defined() ? e.gate_up_scale_inv.nbytes() + e.down_scale_inv.nbytes() : 0);
    const double per_expert = all / static_cast<double>(e.gate_up.size(0));
    routed_total += per_expert * c.n_routed_experts;
    routed_per_expert += per_expert;
  }
  const double hidden_row = static_cast<double>(c.hidden_size) * 2;
  s.weights = static_cast<double>(w.bytes) - routed_total - hidden_row * c.vocab_size + hidden_row * batch;
  const double e = c.n_routed_experts, k = c.num_experts_per_tok;
  const double distinct = e > 0 ? e * (1.0 - std::pow(1.0 - k / e, static_cast<double>(batch))) : 0;
  s.experts = distinct * routed_per_expert;
  s.kv = static_cast<double>(batch) * context * c.kv_cache_dim() * 2 * c.num_hidden_layers;
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Result {
  int64_t batch, input_len, output_len;
  double prefill_s, decode_median_s, floor_s;  // floor_s 0: not computed (--tp > 1)
};

// Each sequence's greedy next token, drawn where the forward ran (only the ids come back): the served step, as the
// engine runs it for a temperature-0 request.
std::vector<int32_t> greedy_step(ModelRunner& runner, const ForwardBatch& batch) {
  static const SamplingParams kGreedy = [] {
    SamplingParams p;
    p.temperature = 0.0;
    return p;
  }();
  static const TokenCounts kNoCounts;
  std::vector<SampleRequest> samples(batch.seqs.size());
  for (size_t s = 0; s < samples.size(); ++s) samples[s] = {static_cast<int64_t>(s), &kGreedy, &kNoCounts};
  runner.launch(batch, samples, false);
  std::vector<int32_t> ids;
  for (const SampledToken& t : runner.finish().sampled) ids.push_back(t.token);
  return ids;
}

}  // namespace

int run_bench_one_batch(int argc, char** argv) {
  ServerArgs args;
  BenchFlags f;
  ArgParser parser("bench-one-batch",
                   "Times one static batch on the GPU (prefill, then decode steps), as SGLang's bench_one_batch, "
                   "and prints each decode step against its HBM floor.");
  args.register_flags(parser);
  parser.add("batch-size", &f.batch_size, "batch sizes, comma-separated");
  parser.add("input-len", &f.input_len, "prompt lengths, comma-separated");
  parser.add("output-len", &f.output_len, "decode steps per case");
  parser.add("speculative-oracle-accept-length", &f.oracle_accept,
             "with --speculative-algorithm NEXTN: also time --output-len speculative steps whose drafts are the "
             "target's own greedy tokens, so that this many tokens (1 .. --speculative-num-steps + 1) are accepted "
             "per step, and compare their tok/s with plain decoding's");
  if (!parser.parse(argc, argv, 2)) return 0;
  args.device = "cuda";
  args.validate();
  require_cuda_device("bench-one-batch");
  NW_CHECK(f.output_len >= 1, "--output-len must be >= 1, got ", f.output_len);
  const int spec_steps = args.speculative_config().num_steps;
  NW_CHECK(f.oracle_accept == 0 || (spec_steps > 0 && f.oracle_accept >= 1 && f.oracle_accept <= spec_steps + 1),
           "--speculative-oracle-accept-length ", f.oracle_accept, " needs --speculative-algorithm NEXTN and a value "
           "in 1 .. --speculative-num-steps + 1");
  // The oracle's steps walk the plain decode's tokens: it decodes as many as they may take.
  const int decode_steps = f.oracle_accept > 0 ? f.output_len * f.oracle_accept + spec_steps + 1 : f.output_len;
  const std::vector<int> batches = parse_id_list(f.batch_size, "batch-size");
  const std::vector<int> inputs = parse_id_list(f.input_len, "input-len");
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  const int max_input = *std::max_element(inputs.begin(), inputs.end());
  NW_CHECK(max_batch >= 1 && *std::min_element(inputs.begin(), inputs.end()) >= 1, "batch sizes and input lengths must be >= 1");

  RunnerOptions options = args.runner_options();
  options.cuda_graph_max_bs = std::max(args.cuda_graph_max_bs, max_batch);
  // Prefill runs whole sequences per step, as many as fit in 16384 tokens.
  options.max_tokens_per_step = std::max<int64_t>(16384, max_input);
  if (is_worker_node(options)) {  // node 0 runs the benchmark; this node runs its ranks' part of each step
    run_worker_node(options);
    return 0;
  }
  const bool tp = args.tp_size > 1;
  const double bandwidth = tp ? 0.0 : measure_hbm_bandwidth();
  if (tp) {
    std::printf("--tp %d: no HBM floor (each GPU reads its own slice). With %s=1 every rank shares one GPU and takes "
                "its turn, so those times say nothing about TP speed.\n", args.tp_size, kDeviceLocalEnv);
  } else {
    std::printf("HBM bandwidth (device-to-device copy, read + write): %.0f GB/s\n", bandwidth / 1e9);
  }
  std::unique_ptr<ModelRunner> runner = make_model_runner(options);
  const ModelConfig& config = runner->config();
  const int64_t seq_tokens = max_input + decode_steps + 2 * spec_steps;
  const int64_t pages_per_seq = (seq_tokens + args.page_size - 1) / args.page_size;
  NW_CHECK(pages_per_seq * max_batch <= runner->num_pages(), "the cache holds ", runner->num_pages(),
           " pages; batch ", max_batch, " x ", seq_tokens, " tokens needs ", pages_per_seq * max_batch);

  std::mt19937 rng(static_cast<uint32_t>(args.random_seed));
  std::vector<Result> results;
  // Profilers started with --capture-range=cudaProfilerApi see the timed decode steps, or with this set the timed
  // prefill (scripts/gpu-check GPU_CHECK_PROFILE=prefill).
  const bool profile_prefill = std::getenv("NARWHAL_PROFILE_PREFILL") != nullptr;
  for (int batch : batches) {
    for (int input : inputs) {
      std::vector<std::vector<int32_t>> tables(batch), prompts(batch);
      for (int s = 0; s < batch; ++s) {
        for (int64_t p = 0; p < pages_per_seq; ++p) tables[s].push_back(static_cast<int32_t>(s * pages_per_seq + p));
        for (int i = 0; i < input; ++i)
          prompts[s].push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(config.vocab_size)));
      }
      // Warm-up prefill + decode step (kernel plans), then the timed run.
      std::vector<int32_t> next;
      std::vector<std::vector<int32_t>> truth(batch);  // the timed pass's greedy tokens, for the oracle
      double prefill_s = 0;
      std::vector<double> steps;
      for (int pass = 0; pass < 2; ++pass) {
        next.clear();
        if (pass == 1 && profile_prefill) NW_CUDA_CHECK(cudaProfilerStart());
        const double t0 = now_s();
        for (int first = 0; first < batch;) {
          ForwardBatch fb;
          int s = first;
          while (s < batch && (s == first || (s - first + 1) * int64_t{input} <= options.max_tokens_per_step))
            fb.add_sequence(prompts[s], 0, tables[s]), ++s;
          for (int32_t id : greedy_step(*runner, fb)) next.push_back(id);
          first = s;
        }
        prefill_s = now_s() - t0;
        if (pass == 1 && profile_prefill) NW_CUDA_CHECK(cudaProfilerStop());
        steps.clear();
        for (std::vector<int32_t>& t : truth) t.clear();
        if (pass == 1 && !profile_prefill) NW_CUDA_CHECK(cudaProfilerStart());
        for (int step = 0; step < (pass == 0 ? 1 : decode_steps); ++step) {
          for (int s = 0; s < batch; ++s) truth[s].push_back(next[s]);
          ForwardBatch fb;
          for (int s = 0; s < batch; ++s) fb.add_sequence({next[s]}, input + step, tables[s]);
          const double t1 = now_s();
          next = greedy_step(*runner, fb);
          steps.push_back(now_s() - t1);
        }
        for (int s = 0; s < batch; ++s) truth[s].push_back(next[s]);
        if (pass == 1 && !profile_prefill) NW_CUDA_CHECK(cudaProfilerStop());
      }
      const double decode_s = median(steps);
      std::printf("batch %d input %d: Prefill. latency: %.5f s, throughput: %.2f token/s\n", batch, input, prefill_s,
                  batch * static_cast<double>(input) / prefill_s);
      std::printf("batch %d input %d: Decode.  median latency: %.5f s, median throughput: %.2f token/s\n", batch,
                  input, decode_s, batch / decode_s);
      double floor_s = 0;
      if (const auto* single = dynamic_cast<const CudaModelRunner*>(runner.get())) {  // TP 1: one GPU's weights
        const StepBytes bytes = decode_bytes(single->model().weights(), config, batch, input + f.output_len / 2);
        floor_s = bytes.total() / bandwidth;
        std::printf("batch %d input %d: Decode HBM floor: %.3f ms (weights %.0f MB + experts %.0f MB + KV %.0f MB at "
                    "%.0f GB/s); step / floor = %.2f\n",
                    batch, input, floor_s * 1e3, bytes.weights / 1e6, bytes.experts / 1e6, bytes.kv / 1e6,
                    bandwidth / 1e9, decode_s / floor_s);
      }
      results.push_back({batch, input, f.output_len, prefill_s, decode_s, floor_s});
      if (f.oracle_accept > 0) {
        const OracleResult o = time_oracle_verify(*runner, tables, truth, input, f.oracle_accept, spec_steps,
                                                  f.output_len);
        std::printf("batch %d input %d: Speculative (NEXTN %d steps, oracle accept %d). median step: %.5f s, accept "
                    "len: %.2f, throughput: %.2f token/s against plain decoding's %.2f (x%.2f)\n",
                    batch, input, spec_steps, f.oracle_accept, o.median_step_s, o.accept_length,
                    batch * o.accept_length / o.median_step_s, batch / decode_s,
                    o.accept_length * decode_s / o.median_step_s);
      }
    }
  }
  std::printf("\n| batch | input | output | prefill s | prefill tok/s | decode ms/step | decode tok/s | floor ms | "
              "step/floor |\n|---|---|---|---|---|---|---|---|---|\n");
  for (const Result& r : results) {
    char floor[64] = "n/a | n/a";
    if (r.floor_s > 0) std::snprintf(floor, sizeof floor, "%.3f | %.2f", r.floor_s * 1e3, r.decode_median_s / r.floor_s);
    std::printf("| %lld | %lld | %lld | %.4f | %.0f | %.3f | %.0f | %s |\n", static_cast<long long>(r.batch),
                static_cast<long long>(r.input_len), static_cast<long long>(r.output_len), r.prefill_s,
                r.batch * r.input_len / r.prefill_s, r.decode_median_s * 1e3, r.batch / r.decode_median_s, floor);
  }
  return 0;
}

}  // namespace narwhal
