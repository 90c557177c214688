// HttpSession: one client connection: reads requests, writes responses in order, notices when the client leaves.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <deque>
#include <memory>
#include <optional>

#include "server/http_server.h"

namespace narwhal::server {

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(boost::asio::ip::tcp::socket&& socket, const HttpServerConfig& config, const RequestHandler& handler,
              std::shared_ptr<TransportCounters> counters);
  ~HttpSession();
  void run();

  // Called by the request's Responder, on the strand; `exchange` names the request so that a stale
  // Responder cannot write into a later response.
  void send(uint64_t exchange, std::string bytes, bool ends_response);
  void set_disconnect_callback(uint64_t exchange, std::function<void()> callback);
  bool keep_alive() const { return keep_alive_; }
  auto strand() { return stream_.get_executor(); }

 private:
  void read_request();
  void on_read(boost::beast::error_code ec);
  void reply_and_close(int status, const std::string& message);
  void watch_for_disconnect(uint64_t exchange);
  int64_t kernel_unsent_bytes();  // in the socket's send queue (sent but unacknowledged included)
  void flush();
  void on_written(boost::beast::error_code ec);
  void linger_close();
  void shut();  // closes; a response still being produced learns through its disconnect callback

  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  const HttpServerConfig& config_;
  const RequestHandler& handler_;
  std::shared_ptr<TransportCounters> counters_;

  uint64_t exchange_ = 0;       // the request being answered (0: none)
  bool response_ended_ = false;  // its last bytes are queued
  bool keep_alive_ = true;
  std::function<void()> on_disconnect_;
  std::deque<std::string> pending_;
  int64_t queued_bytes_ = 0;     // of pending_ and writing_ (the kernel may hold part of writing_ already)
  std::string writing_;          // bytes of the write in flight
  bool write_in_flight_ = false;
  bool closed_ = false;
};

}  // namespace narwhal::server
