// serve: runs the HTTP server over an engine until SIGINT/SIGTERM, then drains and returns.
#pragma once

#include <functional>

#include "server/http_server.h"
#include "server/server_context.h"

namespace narwhal::server {

struct ServeOptions {
  HttpServerConfig http;
  double drain_timeout_seconds = 30.0;
};

// Blocks SIGINT/SIGTERM in this thread and every thread started after it (engine, OpenMP, I/O, workers). Call
// first, before anything starts a thread; serve() then installs a handler and takes the signals on its thread.
void block_shutdown_signals();

// How long a server whose engine failed for good (a tensor-parallel rank lost) keeps answering, /health and every
// generation request with 503, before it exits: long enough for health checkers and load balancers to see it.
inline constexpr double kFailedEngineGraceSeconds = 2.0;

// Serves until SIGINT/SIGTERM, stops accepting, waits up to the drain timeout for in-flight requests (a second
// signal meanwhile is logged, and the drain goes on), aborts the rest, stops the engine, and returns 0. When the
// engine stops by itself (Engine::failure) it answers 503 for kFailedEngineGraceSeconds, stops and returns 1.
// `on_listening` gets the bound port.
int serve(ServerContext& context, const ServeOptions& options, const std::function<void(int port)>& on_listening);

}  // namespace narwhal::server
