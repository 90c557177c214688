// SGLang's native endpoints and the small GET endpoints: /generate, /flush_cache, /get_model_info,
// /get_server_info, /v1/models, /health, /metrics.
#pragma once

#include <memory>

#include "server/http_server.h"
#include "server/server_context.h"

namespace narwhal::server {

void handle_generate(ServerContext& context, const HttpRequest& request, std::shared_ptr<Responder> responder);
json models_response(const ServerContext& context);
json model_info(const ServerContext& context);
json server_info(const ServerContext& context);

}  // namespace narwhal::server
