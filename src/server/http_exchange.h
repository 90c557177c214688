// Exchange: one request's Responder: formats its HTTP response and queues the bytes onto the session's strand.
#pragma once

#include <memory>
#include <string>

#include "server/http_server.h"

namespace narwhal::server {

class HttpSession;

// "HTTP/1.1 404 Not Found\r\n".
std::string status_line(int status);

class Exchange : public Responder {
 public:
  // `connection`: the Connection (and Keep-Alive) header lines. `http10`: the client speaks HTTP/1.0, so a
  // stream goes out unframed and ends with the connection.
  Exchange(std::shared_ptr<HttpSession> session, uint64_t id, std::string connection, bool http10)
      : session_(std::move(session)), id_(id), connection_(std::move(connection)), http10_(http10) {}

  void respond(int status, const std::string& content_type, std::string body) override;
  void start_stream(const std::string& content_type) override;
  void write(std::string data) override;
  void end_stream() override;
  void on_disconnect(std::function<void()> callback) override;

 private:
  void send(std::string bytes, bool ends);

  std::shared_ptr<HttpSession> session_;
  uint64_t id_;
  std::string connection_;
  bool http10_;
};

}  // namespace narwhal::server
