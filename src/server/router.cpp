// Router: the route table of the OpenAI and native APIs.
#include "server/router.h"

#include <array>

#include "core/logging.h"
#include "server/api_error.h"
#include "server/chat_completions.h"
#include "server/completions.h"
#include "server/health.h"
#include "server/native_api.h"

namespace narwhal::server {

namespace {

struct Route {
  const char* path;
  const char* method;
  bool json_body = false;  // the body is a JSON object, parsed as it arrives
};

constexpr std::array kRoutes = {
    Route{"/v1/chat/completions", "POST", true}, Route{"/v1/completions", "POST", true},
    Route{"/generate", "POST", true},           Route{"/v1/models", "GET"},
    Route{"/health", "GET"},                    Route{"/health_generate", "GET"},
    Route{"/metrics", "GET"},                   Route{"/get_model_info", "GET"},
    Route{"/get_server_info", "GET"},           Route{"/flush_cache", "POST"},
};

const Route* find_route(const std::string& path) {
  for (const Route& r : kRoutes)
    if (path == r.path) return &r;
  return nullptr;
}

bool is_public(const std::string& path) {
  return path == "/health" || path == "/health_generate" || path == "/metrics";
}

void respond_json(Responder& responder, int status, const json& body) {
  responder.respond(status, "application/json", dump_json(body));
}

}  // namespace

void Router::check_api_key(const HttpRequest& request) const {
  const std::string& key = context_.options.api_key;
  if (key.empty() || is_public(request.path)) return;
  const std::string prefix = "Bearer ";
  if (request.authorization.empty())
    throw unauthorized("You didn't provide an API key. You need to provide your API key in an Authorization header "
                       "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).");
  if (request.authorization.rfind(prefix, 0) != 0 || request.authorization.substr(prefix.size()) != key)
    throw unauthorized("Incorrect API key provided.");
}

Admission Router::admit(const HttpRequest& head) {
  const Route* route = find_route(head.path);
  try {
    if (!route) throw not_found("Unknown route: " + head.method + " " + head.path, "", "unknown_url");
    if (head.method != route->method)
      throw method_not_allowed("Method " + head.method + " is not allowed on " + head.path + "; use " +
                               route->method + ".");
    check_api_key(head);
  } catch (const ApiError& e) {
    context_.metrics.count_response(route ? route->path : "unmatched", e.status());
    return {.status = e.status(), .error_body = dump_json(e.body()), .allow = e.status() == 405 ? route->method : ""};
  }
  Admission admitted;
  admitted.json_body = route->json_body;
  return admitted;
}

void Router::handle(HttpRequest&& request, std::shared_ptr<Responder> responder) {
  const Route* route = find_route(request.path);
  const std::string label = route ? route->path : "unmatched";
  try {
    if (!route) throw not_found("Unknown route: " + request.method + " " + request.path, "", "unknown_url");
    dispatch(request, responder);
    context_.metrics.count_response(label, 200);
  } catch (const ApiError& e) {
    context_.metrics.count_response(label, e.status());
    respond_json(*responder, e.status(), e.body());
  } catch (const std::exception& e) {
    NW_LOG(Error) << request.method << " " << request.path << " failed: " << e.what();
    context_.metrics.count_response(label, 500);
    respond_json(*responder, 500, server_error(e.what()).body());
  }
}

void Router::dispatch(const HttpRequest& request, const std::shared_ptr<Responder>& responder) {
  const std::string& path = request.path;
  const bool generates = path == "/v1/chat/completions" || path == "/v1/completions" || path == "/generate";
  if (generates && draining_) throw unavailable("The server is shutting down.");
  if (path == "/v1/chat/completions") return handle_chat_completions(context_, request, responder);
  if (path == "/v1/completions") return handle_completions(context_, request, responder);
  if (path == "/generate") return handle_generate(context_, request, responder);
  if (path == "/health") {
    handle_health(context_, draining_);
    return responder->respond(200, "text/plain", "");
  }
  if (path == "/health_generate") return handle_health_generate(context_, draining_, after, responder);
  if (path == "/metrics") {
    static const TransportCounters kNoTransport;
    return responder->respond(200, "text/plain; version=0.0.4; charset=utf-8",
                              context_.metrics.render(context_.engine.stats(), transport ? *transport : kNoTransport));
  }
  if (path == "/v1/models") return respond_json(*responder, 200, models_response(context_));
  if (path == "/get_model_info") return respond_json(*responder, 200, model_info(context_));
  if (path == "/get_server_info") return respond_json(*responder, 200, server_info(context_));
  if (path == "/flush_cache") {
    if (context_.in_flight() > 0)
      throw invalid_request("Cache not flushed: requests are running. Retry when the server is idle.");
    context_.engine.flush_cache();
    return responder->respond(200, "text/plain", "Cache flushed.\n");
  }
}

}  // namespace narwhal::server
