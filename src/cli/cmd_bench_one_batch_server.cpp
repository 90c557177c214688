// `narwhal bench-one-batch-server`: SGLang's bench_one_batch_server: one batch of --batch-size requests sent at
// once to a server (--base-url, or a `narwhal serve` it launches with the remaining flags), per case the batch's
// latency, prefill (time to the last first token) and decode throughput.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <set>

#include "cli/arg_parser.h"
#include "cli/bench_serve_process.h"
#include "cli/bench_serving_runner.h"
#include "cli/bench_serving_server.h"
#include "cli/commands.h"
#include "cli/file_limit.h"
#include "cli/server_args.h"
#include "core/error.h"

namespace narwhal {

namespace {

struct OneBatchFlags {
  std::string run_name = "default";
  std::string batch_size = "1";
  std::string input_len = "1024";
  std::string output_len = "16";
  double temperature = 0.0;
  std::string backend = "sglang";
  std::string base_url;
  std::string local_tokenizer_path;
  bool skip_warmup = false;
  bool show_report = false;
  int64_t seed = 42;
  std::string result_filename = "result.jsonl";

  void register_flags(ArgParser& p) {
    p.add("run-name", &run_name, "name recorded in the result lines");
    p.add("batch-size", &batch_size, "batch sizes, comma-separated");
    p.add("input-len", &input_len, "prompt lengths in tokens, comma-separated");
    p.add("output-len", &output_len, "output lengths in tokens, comma-separated");
    p.add("temperature", &temperature, "sampling temperature");
    p.add("backend", &backend, "sglang / narwhal (/generate) or any backend name bench-serving takes");
    p.add("base-url", &base_url, "a running server; without it one is launched with the other flags");
    p.add("local-tokenizer-path", &local_tokenizer_path,
          "directory with tokenizer.json; empty: the server's, from /get_model_info");
    p.add_switch("skip-warmup", &skip_warmup, "no warmup batch (input 1024, output 16) per batch size");
    p.add_switch("show-report", &show_report, "print a table of all cases at the end");
    p.add("seed", &seed, "seed of the random prompts");
    p.add("result-filename", &result_filename, "JSONL file each case's line is appended to (\"\": none)");
  }
};

struct CaseResult {
  int batch_size = 0, input_len = 0, output_len = 0;
  double latency = 0, input_throughput = 0, output_throughput = 0, overall_throughput = 0, last_ttft = 0;
  double last_gen_throughput = -1;  // SGLang's servers report it in /get_server_info; narwhal does not
  double acc_length = -1;
};

double round_to(double v, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(v * scale) / scale;
}

struct Bench {
  BenchHttpClient& client;
  Backend backend;
  RequestOptions options;
  const text::Tokenizer& tokenizer;
  std::mt19937_64 rng;

  // One batch: exact lengths, random ids, every request sent at once on an emptied prefix cache.
  CaseResult run_case(int batch_size, int input_len, int output_len) {
    flush_cache(client);
    DatasetOptions dataset;
    dataset.name = "random-ids";
    dataset.num_prompts = batch_size;
    dataset.random_input_len = input_len;
    dataset.random_output_len = output_len;
    dataset.random_range_ratio = 1.0;
    dataset.send_ids = backend.takes_token_ids();
    dataset.max_vocab = served_vocab_size(client);
    const std::vector<DatasetRow> rows = sample_dataset(dataset, tokenizer, rng);
    const RunResult run = run_requests(client, backend, rows, options, {.progress = false}, rng);
    CaseResult r{.batch_size = batch_size, .input_len = input_len, .output_len = output_len};
    for (const RequestOutcome& o : run.outcomes) {
      NW_CHECK(o.success, "batch ", batch_size, " x ", input_len, ": a request failed: ", o.error);
      r.last_ttft = std::max(r.last_ttft, o.start_time + o.ttft);
    }
    r.latency = run.duration;
    r.input_throughput = batch_size * static_cast<double>(input_len) / r.last_ttft;
    r.output_throughput = batch_size * static_cast<double>(output_len) / (r.latency - r.last_ttft);
    r.overall_throughput = batch_size * static_cast<double>(input_len + output_len) / r.latency;
    if (auto accepted = accept_length(fetch_server_info(client))) r.acc_length = *accepted;
    std::printf("batch size: %d\ninput_len: %d\noutput_len: %d\nlatency: %.2f s\ninput throughput: %.2f tok/s\n",
                batch_size, input_len, output_len, r.latency, r.input_throughput);
    if (output_len != 1) std::printf("output throughput: %.2f tok/s\n", r.output_throughput);
    std::printf("last_ttft: %.2f s\nlast generation throughput: %.2f tok/s\n", r.last_ttft, r.last_gen_throughput);
    if (r.acc_length > 0) std::printf("acc_length: %.2f \n", r.acc_length);
    std::fflush(stdout);
    return r;
  }
};

void append_result(const std::string& file, const std::string& run_name, const CaseResult& r) {
  const nlohmann::ordered_json line = {{"run_name", run_name},
                                       {"batch_size", r.batch_size},
                                       {"input_len", r.input_len},
                                       {"output_len", r.output_len},
                                       {"latency", round_to(r.latency, 4)},
                                       {"input_throughput", round_to(r.input_throughput, 2)},
                                       {"output_throughput", round_to(r.output_throughput, 2)},
                                       {"overall_throughput", round_to(r.overall_throughput, 2)},
                                       {"last_ttft", round_to(r.last_ttft, 4)},
                                       {"last_gen_throughput", round_to(r.last_gen_throughput, 2)},
                                       {"acc_length", round_to(r.acc_length, 2)},
                                       {"cache_hit_rate", nullptr}};
  std::ofstream out(file, std::ios::app);
  out << line.dump() << "\n";
  NW_CHECK(out.good(), "cannot append to --result-filename ", file);
}

// SGLang's --show-report table (without its dollar-cost columns, which assume GPU prices).
void print_report(std::vector<CaseResult> results, const OneBatchFlags& f) {
  std::stable_sort(results.begin(), results.end(),
                   [](const CaseResult& a, const CaseResult& b) { return a.input_len < b.input_len; });
  std::printf("\nInput lens: %s. Output lens: %s.\n", f.input_len.c_str(), f.output_len.c_str());
  std::printf("| batch size | input len | latency (s) | input throughput (tok/s) | output throughput (tok/s) | "
              "acc length | ITL (ms) |\n|---|---|---|---|---|---|---|\n");
  for (const CaseResult& r : results) {
    const std::string acc = r.acc_length > 0 ? cat(round_to(r.acc_length, 2)) : "n/a";
    std::printf("| %d | %d | %.2f | %.2f | %.2f | %s | %.2f |\n", r.batch_size, r.input_len, r.latency,
                r.input_throughput, r.output_throughput, acc.c_str(), 1000.0 * r.batch_size / r.output_throughput);
  }
}

// The flags left for `narwhal serve`, checked here so that a typo fails before a model loads; returns its API key.
std::string check_serve_flags(const std::vector<std::string>& serve_flags) {
  ServerArgs args;
  OneBatchFlags bench_flags;  // none is left over; registered so that a mistyped one gets a suggestion
  ArgParser parser("bench-one-batch-server", "");
  args.register_flags(parser);
  args.register_server_flags(parser);
  bench_flags.register_flags(parser);
  std::vector<std::string> words = {"narwhal", "bench-one-batch-server"};
  words.insert(words.end(), serve_flags.begin(), serve_flags.end());
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  parser.parse(static_cast<int>(argv.size()), argv.data(), 2);
  args.validate_server();
  return args.api_key;
}

}  // namespace

int run_bench_one_batch_server(int argc, char** argv) {
  OneBatchFlags f;
  ArgParser parser("bench-one-batch-server",
                   "Times one batch of requests sent at once to a server, as SGLang's bench_one_batch_server: "
                   "latency, time to the\nlast first token, input and output throughput. Without --base-url it "
                   "launches `narwhal serve` with every flag\nnot listed here (--model-path, ...: see `narwhal serve "
                   "--help`) on a free port and stops it at the end.");
  f.register_flags(parser);
  std::vector<std::string> serve_flags;
  if (!parser.parse(argc, argv, 2, &serve_flags)) return 0;
  const std::vector<int> batch_sizes = parse_id_list(f.batch_size, "batch-size");
  const std::vector<int> input_lens = parse_id_list(f.input_len, "input-len");
  const std::vector<int> output_lens = parse_id_list(f.output_len, "output-len");
  for (const std::vector<int>* list : {&batch_sizes, &input_lens, &output_lens})
    NW_CHECK(*std::min_element(list->begin(), list->end()) >= 1, "batch sizes and lengths must be >= 1");
  raise_file_limit();

  std::optional<ServeProcess> server;
  std::string api_key = api_key_or_env("");
  if (f.base_url.empty()) {
    api_key = check_serve_flags(serve_flags);
    server.emplace(serve_flags);
  } else {
    NW_CHECK(serve_flags.empty(), "bench-one-batch-server: with --base-url the server is already running; these "
                                  "flags are not the benchmark's: ", serve_flags[0]);
  }
  BenchHttpClient client(parse_base_url(server ? server->base_url() : f.base_url), api_key);
  const text::Tokenizer tokenizer(find_tokenizer_dir(client, f.local_tokenizer_path, ""));
  Bench bench{client, parse_backend(f.backend), {}, tokenizer, std::mt19937_64(static_cast<uint64_t>(f.seed))};
  bench.options.temperature = f.temperature;
  if (bench.backend.api != ServingApi::kGenerate) bench.options.model = served_model_id(client);
  const nlohmann::ordered_json info = fetch_server_info(client);
  const int64_t max_running = info.is_object() ? info.value("max_running_requests", int64_t{0}) : 0;

  if (!f.skip_warmup) {
    std::printf("======== Warmup Begin ========\n");
    for (int bs : std::set<int>(batch_sizes.begin(), batch_sizes.end())) bench.run_case(bs, 1024, 16);
    std::printf("======== Warmup End   ========\n\n");
  }
  std::vector<CaseResult> results;
  for (int bs : batch_sizes) {
    if (max_running > 0 && bs > max_running) {
      std::printf("========Skip benchmark batch_size=%d > max_running_requests=%lld========\n", bs,
                  static_cast<long long>(max_running));
      continue;
    }
    for (int il : input_lens) {
      for (int ol : output_lens) {
        results.push_back(bench.run_case(bs, il, ol));
        if (!f.result_filename.empty()) append_result(f.result_filename, f.run_name, results.back());
      }
    }
  }
  if (!f.result_filename.empty()) std::printf("\nResults are saved to %s\n", f.result_filename.c_str());
  if (f.show_report) print_report(results, f);
  return 0;
}

}  // namespace narwhal
