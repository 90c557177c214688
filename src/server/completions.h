// POST /v1/completions: the legacy text completion API, streamed or not, with batched prompts, echo and logprobs.
#pragma once

#include <memory>

#include "server/http_server.h"
#include "server/server_context.h"

namespace narwhal::server {

// Throws ApiError for a bad request; otherwise the response is sent later, from the engine's outputs.
void handle_completions(ServerContext& context, const HttpRequest& request, std::shared_ptr<Responder> responder);

// The request's model must be the served one (404 model_not_found otherwise, as OpenAI); empty = not given.
void check_model(const ServerContext& context, const std::string& model);

}  // namespace narwhal::server
