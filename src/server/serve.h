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

// Serves until SIGINT/SIGTERM, stops accepting, waits up to the drain timeout for in-flight requests (a second
// signal meanwhile is logged, and the drain goes on), aborts the rest, stops the engine, and returns.
// `on_listening` gets the bound port.
void serve(ServerContext& context, const ServeOptions& options, const std::function<void(int port)>& on_listening);

}  // namespace narwhal::server
