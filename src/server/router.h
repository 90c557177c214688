// Router: method + path -> handler, the API key check and 404/405 on the request head, and every ApiError turned
// into OpenAI's error body.
#pragma once

#include <atomic>
#include <functional>
#include <memory>

#include "server/http_server.h"
#include "server/server_context.h"

namespace narwhal::server {

class Router {
 public:
  explicit Router(ServerContext& context) : context_(context) {}
  // Judges a request on its head, before its body is read: unknown path (404), a method the path does not
  // take (405, with Allow), a missing or wrong API key (401); public routes need no key.
  Admission admit(const HttpRequest& head);
  // An admitted request, its body read.
  void handle(HttpRequest&& request, std::shared_ptr<Responder> responder);
  // While draining, new generation requests get 503.
  void start_draining() { draining_ = true; }
  // Set once the HTTP server exists: its counters for /metrics, and its timer for /health_generate.
  const TransportCounters* transport = nullptr;
  std::function<void(double seconds, std::function<void()> callback)> after;

 private:
  void dispatch(const HttpRequest& request, const std::shared_ptr<Responder>& responder);
  void check_api_key(const HttpRequest& request) const;

  ServerContext& context_;
  std::atomic<bool> draining_{false};
};

}  // namespace narwhal::server
