// ApiError bodies and the constructors for each kind of failure.
#include "server/api_error.h"

namespace narwhal::server {

json ApiError::body() const {
  auto or_null = [](const std::string& s) { return s.empty() ? json(nullptr) : json(s); };
  return {{"error", {{"message", what()}, {"type", type_}, {"param", or_null(param_)}, {"code", or_null(code_)}}}};
}

ApiError invalid_request(const std::string& message, const std::string& param, const std::string& code) {
  return ApiError(400, message, "invalid_request_error", param, code);
}
ApiError not_found(const std::string& message, const std::string& param, const std::string& code) {
  return ApiError(404, message, "invalid_request_error", param, code);
}
ApiError unauthorized(const std::string& message) {
  return ApiError(401, message, "invalid_request_error", "", "invalid_api_key");
}
ApiError method_not_allowed(const std::string& message) {
  return ApiError(405, message, "invalid_request_error", "", "method_not_allowed");
}
ApiError payload_too_large(const std::string& message) {
  return ApiError(413, message, "invalid_request_error", "", "request_too_large");
}
ApiError server_error(const std::string& message) { return ApiError(500, message, "server_error"); }
ApiError unavailable(const std::string& message) { return ApiError(503, message, "server_error", "", "unavailable"); }

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace narwhal::server
