// Health: /health (the engine loop alive and not draining) and SGLang's /health_generate (a 1-token generation).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "server/http_server.h"
#include "server/server_context.h"

namespace narwhal::server {

// SGLang's HEALTH_CHECK_TIMEOUT: how long /health_generate waits, and how long one engine step may take
// before /health calls the loop stuck.
inline constexpr double kHealthCheckTimeoutSeconds = 20.0;

// Why the engine cannot serve (its loop stopped, or has shown no sign of life for `stall_seconds` at
// `now_ns`, steady clock), or nothing when it can.
std::optional<std::string> engine_problem(const EngineStats& stats, int64_t now_ns, double stall_seconds);
int64_t steady_now_ns();

// Runs `callback` on an I/O thread after `seconds`.
using Timer = std::function<void(double seconds, std::function<void()> callback)>;

// 200 with an empty body, or throws ApiError 503 saying why not.
void handle_health(const ServerContext& context, bool draining);
// Submits a 1-token generation and answers 200 when it completes, or, at the timeout, 200 if the engine
// finished any step meanwhile (it is busy, not stuck: SGLang's rule) and 503 otherwise.
void handle_health_generate(ServerContext& context, bool draining, const Timer& after,
                            std::shared_ptr<Responder> responder, double timeout_seconds = kHealthCheckTimeoutSeconds);

}  // namespace narwhal::server
