// HttpServer: the asynchronous HTTP/1.1 transport (Boost.Beast): keep-alive, chunked streaming, disconnect detection.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace narwhal::server {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // the target without its query
  std::string query;
  std::string authorization;
  std::string body;
};

// The way back to the client of one request. Thread-safe (calls are queued onto the connection's strand);
// after the client went away every call is a no-op.
class Responder {
 public:
  virtual ~Responder() = default;
  // A whole response; ends the exchange.
  virtual void respond(int status, const std::string& content_type, std::string body) = 0;
  // A streamed 200 response (chunked transfer encoding): start, any number of writes, end.
  virtual void start_stream(const std::string& content_type) = 0;
  virtual void write(std::string data) = 0;
  virtual void end_stream() = 0;
  // `callback` runs once, on an I/O thread, if the client goes away before the response has been sent.
  virtual void on_disconnect(std::function<void()> callback) = 0;
};

using RequestHandler = std::function<void(HttpRequest&& request, std::shared_ptr<Responder> responder)>;

// Connection counts the transport keeps, shared with every session.
struct TransportCounters {
  std::atomic<int64_t> open_connections{0};
  std::atomic<int64_t> slow_client_closes{0};  // closed because their unsent bytes passed max_queued_bytes
};

struct HttpServerConfig {
  std::string host = "127.0.0.1";
  int port = 30000;  // 0: any free port (see HttpServer::port)
  int threads = 4;
  int64_t max_body_bytes = 32 << 20;  // larger bodies get 413
  int keep_alive_seconds = 300;       // idle connections are closed after this
  // A connection whose unsent response bytes pass this (a client reading slower than it is written to) is
  // closed, which aborts its request: one stalled reader cannot make the server buffer without bound.
  int64_t max_queued_bytes = 4 << 20;
};

class HttpServer {
 public:
  // Binds and listens (Error if the address cannot be bound); serves nothing until start().
  HttpServer(const HttpServerConfig& config, RequestHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  void start();
  // Closes the listening socket; open connections keep being served.
  void stop_accepting();
  // Closes every connection and joins the I/O threads.
  void stop();
  const TransportCounters& counters() const { return *counters_; }
  // Runs `callback` on an I/O thread after `seconds` (dropped if the server stops first).
  void after(double seconds, std::function<void()> callback);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::shared_ptr<TransportCounters> counters_;
  std::vector<std::thread> threads_;
};

}  // namespace narwhal::server
