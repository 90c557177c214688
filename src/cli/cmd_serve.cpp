// `narwhal serve`: the OpenAI-compatible HTTP server (SGLang's launch_server flags).
#include <algorithm>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/file_limit.h"
#include "cli/server_args.h"
#include "cli/tokenizer_token_text.h"
#include "core/error.h"
#include "core/json.h"
#include "core/logging.h"
#include "runtime/engine.h"
#include "runtime/model_runner_factory.h"
#include "server/serve.h"

namespace narwhal {

namespace {

// Each streaming client holds a socket: lift the soft descriptor limit (often 1024) to the hard one, and keep
// the connection cap under it, so that connections past the cap are answered (503, or an idle one closed)
// instead of failing to be accepted while idle sockets hold every descriptor.
int fit_connections_to_file_limit(int max_connections) {
  raise_file_limit();
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return max_connections;
  // Descriptors besides connections: model files, the tokenizer, pipes, the listening socket, epoll.
  constexpr rlim_t kOtherDescriptors = 64;
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= static_cast<rlim_t>(max_connections) + kOtherDescriptors)
    return max_connections;
  const int fitted = static_cast<int>(std::max<rlim_t>(limit.rlim_cur, 2 * kOtherDescriptors) - kOtherDescriptors);
  NW_LOG(Warning) << "--limit-concurrency " << max_connections << " lowered to " << fitted
                  << ": the file descriptor limit is " << limit.rlim_cur;
  return fitted;
}

}  // namespace

int run_serve(int argc, char** argv) {
  ServerArgs args;
  ArgParser parser("serve", "Serves the model over HTTP: OpenAI's /v1/chat/completions, /v1/completions, /v1/models,\n"
                            "SGLang's /generate, /flush_cache, /get_model_info, /get_server_info, /health, /health_generate, /metrics.");
  args.register_flags(parser);
  args.register_server_flags(parser);
  if (!parser.parse(argc, argv, 2)) return 0;
  args.validate_server();
  const RunnerOptions runner_options = args.runner_options();
  if (is_worker_node(runner_options)) {  // no HTTP here: node 0 serves, this node runs its ranks' part of each step
    std::printf("narwhal serve: node %d of %d, a worker of node 0 at %s\n", args.node_rank, args.nnodes,
                args.dist_init_addr.c_str());
    std::fflush(stdout);
    run_worker_node(runner_options);
    return 0;
  }
  server::block_shutdown_signals();
  const int max_connections = fit_connections_to_file_limit(args.limit_concurrency);

  const std::string tokenizer_dir = args.tokenizer_path.empty() ? args.model_path : args.tokenizer_path;
  const text::Tokenizer tokenizer(tokenizer_dir);
  const bool own_template = !args.chat_template.empty();
  const std::string template_source =
      own_template ? read_text_file(args.chat_template) : tokenizer.config().chat_template;
  std::unique_ptr<text::ChatTemplate> chat_template;
  if (!template_source.empty())
    chat_template = std::make_unique<text::ChatTemplate>(
        template_source, own_template ? args.chat_template : tokenizer.config().chat_template_origin);

  TokenizerTokenText token_text(tokenizer);
  auto engine = std::make_unique<Engine>(make_model_runners(runner_options), args.engine_config(), &token_text);
  server::ServerContext context(*engine, tokenizer, chat_template.get(),
                                {.model_name = args.model_name(),
                                 .model_path = args.model_path,
                                 .tokenizer_path = tokenizer_dir,
                                 .api_key = args.api_key,
                                 .reasoning_parser = args.reasoning_parser,
                                 .tool_call_parser = args.tool_call_parser,
                                 .max_sequences_per_request = args.max_sequences_per_request,
                                 .allow_auto_truncate = args.allow_auto_truncate});
  server::ServeOptions options;
  options.http = {.host = args.host,
                  .port = args.port,
                  .threads = args.http_threads,
                  .max_body_bytes = args.max_request_body,
                  .max_body_bytes_in_flight = args.max_request_body_in_flight,
                  .max_connections = max_connections,
                  .keep_alive_seconds = args.timeout_keep_alive,
                  .head_seconds = args.timeout_request_head,
                  .min_body_bytes_per_second = static_cast<double>(args.min_request_body_rate),
                  .max_queued_bytes = args.max_queued_response_bytes};
  options.drain_timeout_seconds = args.drain_timeout;
  engine->start();
  return server::serve(context, options, [&](int port) {
    NW_LOG(Info) << "serving " << args.model_name() << " on http://" << args.host << ":" << port;
    std::printf("narwhal serve: listening on http://%s:%d\n", args.host.c_str(), port);
    std::fflush(stdout);
  });
}

}  // namespace narwhal
