// ApiError: a request that cannot be served, as an HTTP status and OpenAI's error body.
#pragma once

#include <stdexcept>
#include <string>

#include "core/json.h"

namespace narwhal::server {

// Thrown by request parsing and handlers; the router turns it into the response. Never crosses into the engine.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string type, std::string param = "", std::string code = "")
      : std::runtime_error(message), status_(status), type_(std::move(type)), param_(std::move(param)),
        code_(std::move(code)) {}

  int status() const { return status_; }
  // {"error": {"message", "type", "param", "code"}} with null for an empty param or code, as OpenAI sends.
  json body() const;

 private:
  int status_;
  std::string type_, param_, code_;
};

// The errors OpenAI's API answers with, by cause.
ApiError invalid_request(const std::string& message, const std::string& param = "", const std::string& code = "");
ApiError not_found(const std::string& message, const std::string& param = "", const std::string& code = "");
ApiError unauthorized(const std::string& message);
ApiError method_not_allowed(const std::string& message);
ApiError payload_too_large(const std::string& message);
ApiError server_error(const std::string& message);
ApiError unavailable(const std::string& message);

// Serializes for the wire: invalid UTF-8 (a token's partial character) becomes U+FFFD instead of throwing.
std::string dump_json(const json& j);

}  // namespace narwhal::server
