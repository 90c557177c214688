// `narwhal bench-serving`: SGLang's bench_serving against narwhal or any OpenAI-compatible server: a dataset of
// prompts sent at a Poisson rate, streamed, timed per chunk, summarized in SGLang's table and JSONL line.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <thread>

#include "cli/arg_parser.h"
#include "cli/bench_serving_metrics.h"
#include "cli/bench_serving_server.h"
#include "cli/commands.h"
#include "cli/file_limit.h"
#include "core/error.h"

namespace narwhal {

namespace {

struct BenchServingFlags {
  std::string backend = "sglang";
  std::string base_url;
  std::string host = "0.0.0.0";
  int port = 0;  // 0: the backend's usual port
  std::string model;
  std::string tokenizer;
  std::string api_key;
  DatasetOptions dataset;
  double request_rate = INFINITY;
  int max_concurrency = 0;
  std::string output_file;
  bool output_details = false;
  bool disable_tqdm = false;
  int64_t seed = 1;
  bool disable_ignore_eos = false;
  std::string extra_request_body;
  bool flush_cache = false;
  int warmup_requests = 1;

  void register_flags(ArgParser& p) {
    p.add("backend", &backend, "narwhal, sglang, sglang-native (/generate); openai, sglang-oai, vllm, lmdeploy "
                               "(/v1/completions); openai-chat, sglang-oai-chat, vllm-chat, lmdeploy-chat "
                               "(/v1/chat/completions)");
    p.add("base-url", &base_url, "the server, http://HOST:PORT; empty: from --host and --port");
    p.add("host", &host, "server host when --base-url is not given");
    p.add("port", &port, "server port when --base-url is not given (0: 8000 for vllm, 23333 for lmdeploy, else 30000)");
    p.add("model", &model, "model id sent to OpenAI backends; empty: the first of GET /v1/models");
    p.add("tokenizer", &tokenizer, "directory with tokenizer.json; empty: the server's, from /get_model_info");
    p.add("api-key", &api_key, "sent as \"Authorization: Bearer KEY\"; empty: $OPENAI_API_KEY");
    p.add("dataset-name", &dataset.name, "sharegpt, random or random-ids");
    p.add("dataset-path", &dataset.path, "ShareGPT JSON file (needed by sharegpt; random draws its tokens from it)");
    p.add("num-prompts", &dataset.num_prompts, "requests to send");
    p.add("sharegpt-output-len", &dataset.sharegpt_output_len, "output tokens per ShareGPT request (0: the answer's)");
    p.add("sharegpt-context-len", &dataset.sharegpt_context_len,
          "drop ShareGPT requests whose prompt + output exceed this (0: keep all)");
    p.add("random-input-len", &dataset.random_input_len, "input tokens per random request");
    p.add("random-output-len", &dataset.random_output_len, "output tokens per random request");
    p.add("random-range-ratio", &dataset.random_range_ratio,
          "random lengths are drawn uniformly from [len * ratio, len]");
    p.add("request-rate", &request_rate, "requests per second, Poisson arrivals; inf sends all at once");
    p.add("max-concurrency", &max_concurrency, "requests in flight at most (0: not set)");
    p.add("output-file", &output_file, "JSONL file the result line is appended to; empty: "
                                       "BACKEND_MMDD_NUMPROMPTS_IN_OUT.jsonl or ..._DATASET.jsonl");
    p.add_switch("output-details", &output_details, "add per-request lengths, TTFTs, ITLs, texts and errors");
    p.add_switch("disable-tqdm", &disable_tqdm, "no progress bar");
    p.add("seed", &seed, "seed of the dataset and arrival draws");
    p.add_switch("disable-ignore-eos", &disable_ignore_eos, "let requests stop at EOS");
    p.add("extra-request-body", &extra_request_body, "JSON object merged into every request payload");
    p.add_switch("flush-cache", &flush_cache, "POST /flush_cache before the run");
    p.add("warmup-requests", &warmup_requests, "requests (the first prompt, at most 32 output tokens) sent first");
    p.add_unsupported("disable-stream", "the benchmark measures streamed responses");
    p.add_unsupported("tokenize-prompt", "random-ids sends token ids to every backend that takes them");
    p.add_unsupported("apply-chat-template", "use an openai-chat backend for templated prompts");
    p.add_unsupported("prompt-suffix", "prompts are sent as the dataset gives them");
    p.add_unsupported("profile", "narwhal has no profiler endpoint");
    p.add_unsupported("lora-name", "LoRA adapters are not implemented");
    p.add_unsupported("pd-separated", "prefill/decode disaggregation is not implemented");
  }
};

std::string default_output_file(const BenchServingFlags& f) {
  char date[8];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%m%d", std::localtime(&now));
  const std::string head = cat(f.backend, "_", date, "_", f.dataset.num_prompts);
  if (f.dataset.name.rfind("random", 0) == 0)
    return cat(head, "_", f.dataset.random_input_len, "_", f.dataset.random_output_len, ".jsonl");
  return cat(head, "_", f.dataset.name, ".jsonl");
}

// SGLang's warmup: the first prompt with at most 32 output tokens, `count` times at once; one must succeed.
void warm_up(BenchHttpClient& client, const Backend& backend, const DatasetRow& first, int count,
             const RequestOptions& options, std::mt19937_64& rng) {
  std::printf("Starting warmup with %d sequences...\n", count);
  std::fflush(stdout);
  DatasetRow row = first;
  row.output_len = std::min<int64_t>(row.output_len, 32);
  const RunResult warmup = run_requests(client, backend, std::vector<DatasetRow>(static_cast<size_t>(count), row),
                                        options, {.progress = false, .io_threads = bench_io_threads()}, rng);
  const bool any_ok = std::any_of(warmup.outcomes.begin(), warmup.outcomes.end(),
                                  [](const RequestOutcome& o) { return o.success; });
  NW_CHECK(any_ok, "Warmup failed - Please make sure benchmark arguments are correctly specified. Error: ",
           warmup.outcomes[0].error);
  std::printf("Warmup completed with %d sequences. Starting main benchmark run...\n", count);
}

}  // namespace

int run_bench_serving(int argc, char** argv) {
  BenchServingFlags f;
  ArgParser parser("bench-serving",
                   "Benchmarks online serving as SGLang's bench_serving does: sends --num-prompts streamed requests "
                   "at --request-rate\n(Poisson) to narwhal, SGLang or any OpenAI-compatible server, prints SGLang's "
                   "result table and appends a JSONL line.");
  f.register_flags(parser);
  if (!parser.parse(argc, argv, 2)) return 0;
  const Backend backend = parse_backend(f.backend);
  NW_CHECK(f.request_rate > 0, "--request-rate must be > 0 (inf: all at once), got ", f.request_rate);
  NW_CHECK(f.max_concurrency >= 0, "--max-concurrency must be >= 0, got ", f.max_concurrency);
  NW_CHECK(f.warmup_requests >= 0, "--warmup-requests must be >= 0, got ", f.warmup_requests);
  RequestOptions options;
  options.ignore_eos = !f.disable_ignore_eos;
  if (!f.extra_request_body.empty()) {
    options.extra_body = json::parse(f.extra_request_body, nullptr, false);
    NW_CHECK(options.extra_body.is_object(), "--extra-request-body must be a JSON object, got ", f.extra_request_body);
  }
  raise_file_limit();

  const int default_port = f.backend.rfind("vllm", 0) == 0 ? 8000 : f.backend.rfind("lmdeploy", 0) == 0 ? 23333 : 30000;
  BenchHttpClient client(parse_base_url(f.base_url.empty() ? cat("http://", f.host, ":", f.port ? f.port : default_port)
                                                           : f.base_url),
                         api_key_or_env(f.api_key));
  options.model = f.model.empty() ? served_model_id(client) : f.model;
  const text::Tokenizer tokenizer(find_tokenizer_dir(client, f.tokenizer, options.model));
  std::printf("bench-serving: %s at %s, model %s\n", f.backend.c_str(), client.url().text().c_str(),
              options.model.c_str());

  std::mt19937_64 rng(static_cast<uint64_t>(f.seed));
  f.dataset.send_ids = backend.takes_token_ids();
  f.dataset.max_vocab = served_vocab_size(client);
  const std::vector<DatasetRow> rows = sample_dataset(f.dataset, tokenizer, rng);
  if (f.warmup_requests > 0) warm_up(client, backend, rows[0], f.warmup_requests, options, rng);
  if (f.flush_cache) flush_cache(client);
  // SGLang lets the server settle for a second between warmup and the run.
  if (f.warmup_requests > 0) std::this_thread::sleep_for(std::chrono::seconds(1));

  const RunResult run = run_requests(
      client, backend, rows, options,
      {.request_rate = f.request_rate, .max_concurrency = f.max_concurrency, .progress = !f.disable_tqdm,
       .io_threads = bench_io_threads()},
      rng);
  const nlohmann::ordered_json server_info = fetch_server_info(client);
  const RunDescription description{
      .backend = f.backend,
      .dataset_name = f.dataset.name,
      .request_rate = f.request_rate,
      .max_concurrency = f.max_concurrency,
      .sharegpt_output_len = f.dataset.sharegpt_output_len,
      .random_input_len = f.dataset.random_input_len,
      .random_output_len = f.dataset.random_output_len,
      .random_range_ratio = f.dataset.random_range_ratio,
      .accept_length = backend.is_sglang() ? accept_length(server_info) : std::nullopt};
  const ServingMetrics metrics = compute_metrics(run, tokenizer);
  print_serving_table(description, metrics);

  const std::string output_file = f.output_file.empty() ? default_output_file(f) : f.output_file;
  std::ofstream out(output_file, std::ios::app);
  NW_CHECK(out.good(), "cannot open --output-file ", output_file, " for appending");
  out << serving_result_json(description, metrics, server_info, f.output_details ? &run : nullptr)
             .dump(-1, ' ', false, json::error_handler_t::replace)
      << "\n";
  NW_CHECK(out.good(), "cannot write --output-file ", output_file);
  if (metrics.failed > 0)
    std::fprintf(stderr, "%lld of %zu requests failed; the first: %s\n", static_cast<long long>(metrics.failed),
                 run.outcomes.size(), metrics.first_error.c_str());
  NW_CHECK(metrics.completed > 0, "every request failed; the first: ", metrics.first_error);
  return 0;
}

}  // namespace narwhal
