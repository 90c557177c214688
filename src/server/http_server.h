// HttpServer: the asynchronous HTTP/1.1 transport (Boost.Beast): request heads judged before their bodies, JSON
// bodies parsed as they arrive, keep-alive, chunked streaming, caps and timeouts, disconnect detection.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace narwhal::server {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // the target without its query
  std::string query;
  std::string authorization;
  // The JSON body, parsed while it was read (null for routes that take none). Key order is kept: chat
  // templates print tool schemas with tojson.
  nlohmann::ordered_json body;
  std::string body_error;  // why the body is not valid JSON; then the body was not read to its end
};

// The verdict on a request's head (route, method, credentials), given before any byte of its body is read.
struct Admission {
  int status = 0;          // 0: read the body and handle the request; else answer this status and close
  std::string error_body;  // the answer's JSON body
  std::string allow;       // 405: the methods the path takes, for the Allow header
  bool json_body = false;  // admitted: parse the body as JSON (else it is read and dropped)
};

// The way back to the client of one request. Thread-safe (calls are queued onto the connection's strand);
// after the client went away every call is a no-op.
class Responder {
 public:
  virtual ~Responder() = default;
  // A whole response; ends the exchange.
  virtual void respond(int status, const std::string& content_type, std::string body) = 0;
  // A streamed 200 response: start, any number of writes, end. Chunked for HTTP/1.1 clients; for HTTP/1.0 ones
  // the bytes as they are, the end of the stream being the end of the connection.
  virtual void start_stream(const std::string& content_type) = 0;
  virtual void write(std::string data) = 0;
  virtual void end_stream() = 0;
  // `callback` runs once, on an I/O thread, if the client goes away before the response has been sent.
  virtual void on_disconnect(std::function<void()> callback) = 0;
};

using HeadCheck = std::function<Admission(const HttpRequest& head)>;
// Runs on an I/O thread, or on a worker thread for a large body (its template and tokenizer work would hold
// an I/O thread for long).
using RequestHandler = std::function<void(HttpRequest&& request, std::shared_ptr<Responder> responder)>;

// Connection counts the transport keeps, shared with every session.
struct TransportCounters {
  std::atomic<int64_t> open_connections{0};
  std::atomic<int64_t> slow_client_closes{0};  // closed because their unsent bytes passed max_queued_bytes
  // Requests whose head was accepted and whose handler has not returned yet (body being read, or queued for a
  // worker): a drain waits for them as for the engine's.
  std::atomic<int64_t> requests_in_progress{0};
};

struct HttpServerConfig {
  std::string host = "127.0.0.1";
  int port = 30000;  // 0: any free port (see HttpServer::port)
  int threads = 4;   // I/O threads, and as many workers for large requests
  int64_t max_body_bytes = 32 << 20;  // a larger Content-Length gets 413 before any of the body is read
  // All bodies being read, parsed or handled at once: each holds its bytes and the document built from them
  // (see JsonLimits::for_body), so this bounds their memory. A body that would pass it gets 503.
  int64_t max_body_bytes_in_flight = 128 << 20;
  // Open connections at most. Past it the longest-idle keep-alive connection is closed to make room, or, when
  // none is idle, the new one gets 503 and is closed.
  int max_connections = 4096;
  double keep_alive_seconds = 5;  // a connection waiting for its next request is closed after this
  double head_seconds = 10;       // from a request's first byte to the end of its headers
  // A body must arrive at this rate at least, after head_seconds of grace (slow-body attacks); 0: no limit.
  double min_body_bytes_per_second = 64 << 10;
  // A connection whose unsent response bytes pass this (a client reading slower than it is written to) is
  // closed, which aborts its request: one stalled reader cannot make the server buffer without bound.
  int64_t max_queued_bytes = 4 << 20;
};

class HttpServer {
 public:
  // Binds and listens (Error if the address cannot be bound); serves nothing until start().
  HttpServer(const HttpServerConfig& config, HeadCheck admit, RequestHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  void start();
  // Closes the listening socket; open connections keep being served.
  void stop_accepting();
  // Closes every connection and joins the I/O and worker threads.
  void stop();
  const TransportCounters& counters() const;
  // Runs `callback` on an I/O thread after `seconds` (dropped if the server stops first).
  void after(double seconds, std::function<void()> callback);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::vector<std::thread> threads_;
};

}  // namespace narwhal::server
