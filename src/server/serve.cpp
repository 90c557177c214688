// serve: signal handling and the drain sequence around the HTTP server.
#include "server/serve.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <thread>

#include "core/error.h"
#include "core/logging.h"
#include "server/router.h"

namespace narwhal::server {

namespace {

// The self-pipe: the signal handler writes the signal's number, the serve loop reads it.
int g_signal_pipe[2] = {-1, -1};

void on_shutdown_signal(int signal_number) {
  const int saved_errno = errno;
  const auto byte = static_cast<unsigned char>(signal_number);
  [[maybe_unused]] const ssize_t written = ::write(g_signal_pipe[1], &byte, 1);  // a full pipe drops only repeats
  errno = saved_errno;
}

sigset_t shutdown_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

const char* signal_name(int signal_number) { return signal_number == SIGTERM ? "SIGTERM" : "SIGINT"; }

// A real handler, process-wide: whichever thread the kernel picks (one of OpenBLAS's, started before main and
// not blocking anything, included) only writes a byte, so no signal can end the process by its default action.
// Then this thread takes the signals, which the kernel prefers for a signal sent to the process.
void install_shutdown_handler() {
  if (g_signal_pipe[0] < 0)
    NW_CHECK(::pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) == 0, "cannot create a pipe for signals: ", errno);
  struct sigaction action = {};
  action.sa_handler = on_shutdown_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  const sigset_t signals = shutdown_signals();
  pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
}

// The next signal within `seconds` (< 0: however long it takes), or 0.
int wait_for_signal(double seconds) {
  pollfd readable = {g_signal_pipe[0], POLLIN, 0};
  if (::poll(&readable, 1, seconds < 0 ? -1 : static_cast<int>(seconds * 1000)) <= 0) return 0;
  unsigned char byte = 0;
  return ::read(g_signal_pipe[0], &byte, 1) == 1 ? byte : 0;
}

// Waits up to `seconds` until nothing is `busy()`; a signal meanwhile is noted, and the wait goes on.
bool wait_until_idle(const std::function<int64_t()>& busy, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (busy() > 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (const int again = wait_for_signal(0.02)) {
      NW_LOG(Warning) << "received " << signal_name(again) << " while draining: still waiting for " << busy()
                      << " requests (SIGKILL stops at once)";
    }
  }
  return true;
}

}  // namespace

void block_shutdown_signals() {
  const sigset_t signals = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is an error code, not a crash
}

int serve(ServerContext& context, const ServeOptions& options, const std::function<void(int port)>& on_listening) {
  Router router(context);
  HttpServer http(
      options.http, [&router](const HttpRequest& head) { return router.admit(head); },
      [&router](HttpRequest&& request, std::shared_ptr<Responder> responder) {
        router.handle(std::move(request), std::move(responder));
      });
  router.transport = &http.counters();
  router.after = [&http](double seconds, std::function<void()> callback) { http.after(seconds, std::move(callback)); };
  http.start();
  install_shutdown_handler();  // after the last thread serve starts: they all keep the signals blocked
  on_listening(http.port());

  int received = 0;
  std::string engine_failure;
  while (received == 0 && engine_failure.empty()) {
    received = wait_for_signal(0.1);
    engine_failure = context.engine.failure();
  }
  // In flight: generating in the engine, or admitted and still being read or handled (not yet submitted).
  const auto in_flight = [&] { return context.in_flight() + http.counters().requests_in_progress; };
  if (!engine_failure.empty()) {
    // Its requests were aborted with the failure; /health already says 503, new generation requests get it too.
    NW_LOG(Error) << "the engine stopped (" << engine_failure << "): answering 503 for " << kFailedEngineGraceSeconds
                  << " s, then exiting";
    router.start_draining();
    std::this_thread::sleep_for(std::chrono::duration<double>(kFailedEngineGraceSeconds));
    http.stop_accepting();
    context.abort_all();
    wait_until_idle(in_flight, 1.0);
    context.engine.stop();
    context.outputs.stop();
    http.stop();
    NW_LOG(Info) << "server stopped";
    return 1;
  }
  NW_LOG(Info) << "received " << signal_name(received) << ": draining " << in_flight()
               << " in-flight requests (up to " << options.drain_timeout_seconds << " s)";
  router.start_draining();
  http.stop_accepting();
  if (!wait_until_idle(in_flight, options.drain_timeout_seconds)) {
    NW_LOG(Warning) << "drain timeout: aborting " << in_flight() << " requests";
    context.abort_all();
    wait_until_idle(in_flight, 10.0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the last responses' bytes reach their sockets
  context.engine.stop();  // then the output workers, then the I/O threads: no output may arrive after them
  context.outputs.stop();
  http.stop();
  NW_LOG(Info) << "server stopped";
  return 0;
}

}  // namespace narwhal::server
