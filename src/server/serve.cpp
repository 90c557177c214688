// serve: signal handling and the drain sequence around the HTTP server.
#include "server/serve.h"

#include <pthread.h>

#include <csignal>
#include <thread>

#include "core/logging.h"
#include "server/router.h"

namespace narwhal::server {

namespace {

bool wait_until_idle(const ServerContext& context, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (context.in_flight() > 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

sigset_t shutdown_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

}  // namespace

void block_shutdown_signals() {
  const sigset_t signals = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is an error code, not a crash
}

void serve(ServerContext& context, const ServeOptions& options, const std::function<void(int port)>& on_listening) {
  const sigset_t signals = shutdown_signals();
  Router router(context);
  HttpServer http(
      options.http, [&router](const HttpRequest& head) { return router.admit(head); },
      [&router](HttpRequest&& request, std::shared_ptr<Responder> responder) {
        router.handle(std::move(request), std::move(responder));
      });
  router.transport = &http.counters();
  router.after = [&http](double seconds, std::function<void()> callback) { http.after(seconds, std::move(callback)); };
  http.start();
  on_listening(http.port());

  int received = 0;
  sigwait(&signals, &received);
  NW_LOG(Info) << "received " << (received == SIGTERM ? "SIGTERM" : "SIGINT") << ": draining " << context.in_flight()
               << " in-flight requests (up to " << options.drain_timeout_seconds << " s)";
  router.start_draining();
  http.stop_accepting();
  if (!wait_until_idle(context, options.drain_timeout_seconds)) {
    NW_LOG(Warning) << "drain timeout: aborting " << context.in_flight() << " requests";
    context.abort_all();
    wait_until_idle(context, 10.0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the last responses' bytes reach their sockets
  context.engine.stop();  // before the I/O threads: no output may arrive for a connection after them
  http.stop();
  NW_LOG(Info) << "server stopped";
}

}  // namespace narwhal::server
