// Health: liveness from the engine's heartbeat, and the generation probe with its timeout.
#include "server/health.h"

#include <atomic>
#include <chrono>

#include "core/error.h"
#include "server/api_error.h"

namespace narwhal::server {

namespace {

// One /health_generate: answered once, by the probe's output or by the timer, whichever comes first.
struct Probe {
  std::shared_ptr<Responder> responder;
  std::atomic<bool> answered{false};
  uint64_t request_id = 0;
  int64_t steps_at_start = 0;

  void answer(int status, const std::string& message) {
    if (answered.exchange(true)) return;
    if (status == 200) return responder->respond(200, "text/plain", "");
    responder->respond(status, "application/json", dump_json(unavailable(message).body()));
  }
};

}  // namespace

int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::optional<std::string> engine_problem(const EngineStats& stats, int64_t now_ns, double stall_seconds) {
  if (!stats.loop_running) return "the engine loop is not running";
  const double silent = static_cast<double>(now_ns - stats.heartbeat_ns) * 1e-9;
  if (silent > stall_seconds)
    return cat("the engine loop has shown no sign of life for ", static_cast<int64_t>(silent), " s");
  return std::nullopt;
}

void handle_health(const ServerContext& context, bool draining) {
  if (const std::string failure = context.engine.failure(); !failure.empty())
    throw unavailable("Unhealthy: the engine stopped: " + failure + ".");
  if (draining) throw unavailable("The server is shutting down.");
  if (auto problem = engine_problem(context.engine.stats(), steady_now_ns(), kHealthCheckTimeoutSeconds))
    throw unavailable("Unhealthy: " + *problem + ".");
}

void handle_health_generate(ServerContext& context, bool draining, const Timer& after,
                            std::shared_ptr<Responder> responder, double timeout_seconds) {
  handle_health(context, draining);
  auto probe = std::make_shared<Probe>();
  probe->responder = std::move(responder);
  probe->steps_at_start = context.engine.stats().steps;
  RequestInput input;
  input.input_ids = {0};  // as SGLang's probe: any valid id will do
  input.params.max_new_tokens = 1;
  input.params.temperature = 0.0;
  input.on_output = [probe](RequestOutput&& out) {
    if (!out.finish) return;
    if (out.finish->kind == FinishReason::Kind::kAbort) return probe->answer(503, "The health probe was aborted.");
    probe->answer(200, "");
  };
  probe->request_id = context.engine.submit(std::move(input));
  after(timeout_seconds, [probe, &context, timeout_seconds] {
    if (context.engine.stats().steps > probe->steps_at_start) probe->answer(200, "");
    else probe->answer(503, cat("The health probe did not finish within ", timeout_seconds, " s."));
    context.engine.abort(probe->request_id);  // after answering: its abort output must not answer first
  });
}

}  // namespace narwhal::server
