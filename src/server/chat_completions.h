// POST /v1/chat/completions: chat template, generation, reasoning split and tool calls, streamed or not.
#pragma once

#include <memory>

#include "server/http_server.h"
#include "server/server_context.h"

namespace narwhal::server {

// Throws ApiError for a bad request; otherwise the response is sent later, from the engine's outputs.
void handle_chat_completions(ServerContext& context, const HttpRequest& request, std::shared_ptr<Responder> responder);

}  // namespace narwhal::server
