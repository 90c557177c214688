// Transport: what every connection of one HttpServer shares (settings, handlers, counters, the body budget, the
// open sessions), and the lease each admitted request holds on it.
#pragma once

#include <atomic>
#include <boost/asio/thread_pool.hpp>
#include <memory>
#include <mutex>
#include <unordered_set>

#include "server/http_server.h"

namespace narwhal::server {

class HttpSession;

// What every connection of one server shares.
struct Transport {
  Transport(const HttpServerConfig& c, HeadCheck a, RequestHandler h, boost::asio::thread_pool::executor_type w)
      : config(c), admit(std::move(a)), handle(std::move(h)), workers(w) {}

  const HttpServerConfig config;
  const HeadCheck admit;
  const RequestHandler handle;
  const boost::asio::thread_pool::executor_type workers;  // where large requests are handled
  TransportCounters counters;
  std::atomic<int64_t> body_bytes{0};  // held by bodies being read, parsed or handled (max_body_bytes_in_flight)

  // The open sessions, to find the longest-idle one at the connection cap.
  void add(HttpSession* session);
  void remove(HttpSession* session);
  std::shared_ptr<HttpSession> longest_idle();

 private:
  std::mutex mutex_;
  std::unordered_set<HttpSession*> sessions_;
};

// Held by a request from its accepted head until its handler returns (or its connection closes first): counts it
// among the requests a drain waits for, and holds its share of Transport::body_bytes.
class RequestLease {
 public:
  RequestLease() = default;
  explicit RequestLease(std::shared_ptr<Transport> transport);
  RequestLease(RequestLease&& other) noexcept { *this = std::move(other); }
  RequestLease& operator=(RequestLease&& other) noexcept;
  ~RequestLease() { release(); }
  // Takes `bytes` more of the body budget; false (taking nothing) if that would pass the limit.
  bool grow(int64_t bytes);
  void release();

 private:
  std::shared_ptr<Transport> transport_;
  int64_t bytes_ = 0;
};

}  // namespace narwhal::server
