// narwhal entry point: dispatches `narwhal <command> [flags]` and turns expected errors into messages.
#include <cstdio>
#include <cstring>
#include <exception>

#include "cli/commands.h"
#include "core/error.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);
};

const Command kCommands[] = {
    {"generate", "run the model on token ids and print the generated ids (and logits) as JSON",
     narwhal::run_generate},
    {"make-model", "write a random DeepSeek-architecture checkpoint (e.g. the bundled tiny model)",
     narwhal::run_make_model},
    {"tokenize", "encode text with a tokenizer directory and print the ids as JSON", narwhal::run_tokenize},
    {"chat-template", "render a conversation with the tokenizer's chat template", narwhal::run_chat_template},
    {"serve", "serve the model over HTTP (OpenAI-compatible API, SGLang's native API, Prometheus metrics)",
     narwhal::run_serve},
    {"bench-one-batch", "time one static batch on the GPU (prefill, decode) against the HBM floor",
     narwhal::run_bench_one_batch},
    {"bench-serving", "benchmark a running server with SGLang's bench_serving (TTFT, ITL, throughput)",
     narwhal::run_bench_serving},
    {"bench-one-batch-server", "time one batch sent at once to a server (launched here or at --base-url)",
     narwhal::run_bench_one_batch_server},
    {"bench-accuracy", "score a server on GSM8K-style questions with SGLang's few-shot gsm8k benchmark",
     narwhal::run_bench_accuracy},
};

void print_usage() {
  std::printf("usage: narwhal <command> [flags]   (narwhal <command> --help for its flags)\n\ncommands:\n");
  for (const Command& c : kCommands) std::printf("  %-22s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      return c.run(argc, argv);
    } catch (const narwhal::Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "internal error: %s\n", e.what());
      return 3;
    }
  }
  std::fprintf(stderr, "error: unknown command '%s'\n\n", argv[1]);
  print_usage();
  return 2;
}
