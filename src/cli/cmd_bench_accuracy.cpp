// `narwhal bench-accuracy`: SGLang's benchmark/gsm8k/bench_sglang.py against narwhal or any OpenAI-compatible
// server: few-shot prompts to /v1/completions (greedy, stop at "Question:"), the last number of each answer
// scored exactly against the label, printed as SGLang prints it and appended as a JSONL line.
#include <cstdio>
#include <fstream>

#include "cli/arg_parser.h"
#include "cli/bench_accuracy_data.h"
#include "cli/bench_serving_runner.h"
#include "cli/bench_serving_server.h"
#include "cli/commands.h"
#include "cli/file_limit.h"
#include "core/error.h"

namespace narwhal {

namespace {

struct BenchAccuracyFlags {
  std::string host = "http://127.0.0.1";
  int port = 30000;
  std::string base_url;
  std::string model;
  std::string api_key;
  std::string data_path = "test.jsonl";
  int num_questions = 200;
  int num_shots = 5;
  int parallel = 64;
  int max_new_tokens = 256;
  double temperature = 0.0;
  std::string result_file = "result.jsonl";

  void register_flags(ArgParser& p) {
    p.add("host", &host, "server host (http:// may be left out) when --base-url is not given");
    p.add("port", &port, "server port when --base-url is not given");
    p.add("base-url", &base_url, "the server, http://HOST:PORT; empty: from --host and --port");
    p.add("model", &model, "model id sent with each request; empty: the first of GET /v1/models");
    p.add("api-key", &api_key, "sent as \"Authorization: Bearer KEY\"; empty: $OPENAI_API_KEY");
    p.add("data-path", &data_path, "JSONL of {\"question\", \"answer\"}, the answer ending in \"#### <number>\" "
                                   "(GSM8K's test.jsonl, tools/arith_problems.py's output)");
    p.add("num-questions", &num_questions, "questions scored, taken after the shots");
    p.add("num-shots", &num_shots, "solved examples from the start of the file put before each question");
    p.add("parallel", &parallel, "requests in flight at most");
    p.add("max-new-tokens", &max_new_tokens, "max_tokens of each request");
    p.add("temperature", &temperature, "sampling temperature (0: greedy)");
    p.add("result-file", &result_file, "JSONL file the result line is appended to (\"\": none)");
  }

  std::string url() const {
    if (!base_url.empty()) return base_url;
    return cat(host.find("://") == std::string::npos ? "http://" : "", host, ":", port);
  }
};

struct Score {
  int64_t correct = 0, invalid = 0, failed = 0;
  int64_t output_tokens = 0, uncounted = 0;  // uncounted: responses that stated no completion_tokens
  std::string first_error;
};

Score score(const RunResult& run, const std::vector<AccuracyQuestion>& questions) {
  Score s;
  for (size_t i = 0; i < questions.size(); ++i) {
    const RequestOutcome& o = run.outcomes[i];
    if (!o.success) {
      if (s.failed++ == 0) s.first_error = o.error;
      ++s.invalid;
      continue;
    }
    const std::optional<std::string> pred = last_number(o.generated_text);
    if (!pred) ++s.invalid;
    else if (*pred == questions[i].label) ++s.correct;
    if (o.output_len >= 0) s.output_tokens += o.output_len;
    else ++s.uncounted;
  }
  return s;
}

double round_to(double v, double scale) { return static_cast<double>(static_cast<int64_t>(v * scale + 0.5)) / scale; }

}  // namespace

int run_bench_accuracy(int argc, char** argv) {
  BenchAccuracyFlags f;
  ArgParser parser("bench-accuracy",
                   "Scores a server on GSM8K-style questions as SGLang's benchmark/gsm8k does: --num-shots solved "
                   "examples and a\nquestion per request to /v1/completions (stop \"Question:\"), the last number of "
                   "the answer compared exactly\nwith the label after \"####\". Prints accuracy, invalid answers, "
                   "latency and output throughput.");
  f.register_flags(parser);
  if (!parser.parse(argc, argv, 2)) return 0;
  NW_CHECK(f.num_questions >= 1 && f.num_shots >= 0 && f.parallel >= 1 && f.max_new_tokens >= 1,
           "--num-questions, --parallel and --max-new-tokens must be >= 1 and --num-shots >= 0");
  NW_CHECK(f.temperature >= 0, "--temperature must be >= 0, got ", f.temperature);

  std::vector<AccuracyQuestion> rows = read_accuracy_questions(f.data_path);
  NW_CHECK(static_cast<int64_t>(rows.size()) > f.num_shots, "--data-path ", f.data_path, " has ", rows.size(),
           " questions: none is left after --num-shots ", f.num_shots);
  const std::vector<AccuracyQuestion> shots(rows.begin(), rows.begin() + f.num_shots);
  rows.erase(rows.begin(), rows.begin() + f.num_shots);
  if (static_cast<int64_t>(rows.size()) > f.num_questions) rows.resize(f.num_questions);
  raise_file_limit();

  BenchHttpClient client(parse_base_url(f.url()), api_key_or_env(f.api_key));
  RequestOptions options;
  options.model = f.model.empty() ? served_model_id(client) : f.model;
  options.ignore_eos = false;
  options.temperature = f.temperature;
  options.extra_body = {{"stop", json::array({"Question:"})}};
  std::vector<DatasetRow> requests(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    requests[i].text = few_shot_prompt(shots, rows[i]);
    requests[i].output_len = f.max_new_tokens;
  }
  std::printf("bench-accuracy: %s at %s, %zu questions of %s, %d shots, %d in parallel\n", options.model.c_str(),
              client.url().text().c_str(), rows.size(), f.data_path.c_str(), f.num_shots, f.parallel);
  std::fflush(stdout);

  std::mt19937_64 unused_rng;  // every request arrives at once: no arrival gaps to draw
  const RunResult run = run_requests(client, parse_backend("openai"), requests, options,
                                     {.max_concurrency = f.parallel, .progress_label = "bench-accuracy",
                                      .io_threads = bench_io_threads()},
                                     unused_rng);
  const Score s = score(run, rows);
  const double n = static_cast<double>(rows.size());
  const double accuracy = s.correct / n, invalid = s.invalid / n;
  const double throughput = s.output_tokens / run.duration;
  std::printf("Accuracy: %.3f\nInvalid: %.3f\nLatency: %.3f s\nOutput throughput: %.3f token/s\n", accuracy, invalid,
              run.duration, throughput);
  if (s.uncounted > 0)
    std::fprintf(stderr, "warning: %lld responses stated no completion_tokens; the throughput counts the others\n",
                 static_cast<long long>(s.uncounted));
  if (s.failed > 0)
    std::fprintf(stderr, "%lld of %zu requests failed (counted invalid); the first: %s\n",
                 static_cast<long long>(s.failed), rows.size(), s.first_error.c_str());

  if (!f.result_file.empty()) {
    // SGLang's fields first, then what else this run was.
    const nlohmann::ordered_json line = {
        {"task", "gsm8k"}, {"backend", "openai"}, {"latency", round_to(run.duration, 1e3)},
        {"accuracy", round_to(accuracy, 1e3)}, {"num_requests", rows.size()},
        {"other", {{"num_questions", rows.size()}, {"parallel", f.parallel}}},
        {"invalid", round_to(invalid, 1e3)}, {"output_throughput", round_to(throughput, 1e3)},
        {"num_output_tokens", s.output_tokens}, {"failed", s.failed}, {"model", options.model},
        {"base_url", client.url().text()}, {"data_path", f.data_path}, {"num_shots", f.num_shots},
        {"max_new_tokens", f.max_new_tokens}, {"temperature", f.temperature}};
    std::ofstream out(f.result_file, std::ios::app);
    out << line.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    NW_CHECK(out.good(), "cannot append to --result-file ", f.result_file);
  }
  NW_CHECK(s.failed < static_cast<int64_t>(rows.size()), "every request failed; the first: ", s.first_error);
  return 0;
}

}  // namespace narwhal
