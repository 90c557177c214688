// HttpSession: one client connection: judges each request on its head, streams the body into the JSON reader,
// writes responses in order, times out idle and slow clients, notices when the client leaves.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>

#include "core/json_reader.h"
#include "server/http_server.h"
#include "server/http_transport.h"

namespace narwhal::server {

// A Beast body type that holds nothing: each piece of the body goes to a sink as it arrives (after chunked
// decoding), which returns false to stop the read.
struct StreamedBody {
  using value_type = std::function<bool(std::string_view bytes)>;

  class reader {
   public:
    template <bool isRequest, class Fields>
    reader(boost::beast::http::header<isRequest, Fields>&, value_type& sink) : sink_(sink) {}
    void init(const boost::optional<uint64_t>&, boost::beast::error_code& ec) { ec = {}; }
    template <class ConstBufferSequence>
    size_t put(const ConstBufferSequence& buffers, boost::beast::error_code& ec) {
      size_t taken = 0;
      for (const auto buffer : boost::beast::buffers_range_ref(buffers)) {
        if (sink_ && !sink_({static_cast<const char*>(buffer.data()), buffer.size()})) {
          ec = boost::system::errc::make_error_code(boost::system::errc::operation_canceled);
          return taken;
        }
        taken += buffer.size();
      }
      ec = {};
      return taken;
    }
    void finish(boost::beast::error_code& ec) { ec = {}; }

   private:
    value_type& sink_;
  };
};

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(boost::asio::ip::tcp::socket&& socket, std::shared_ptr<Transport> transport);
  ~HttpSession();
  void run();
  // At the connection cap with no idle connection to close: answers 503 and closes, reading no request.
  void refuse_connection();
  // Since when this connection waits for a request with nothing of one read (steady clock, ns), or 0.
  int64_t idle_since_ns() const { return idle_since_ns_; }
  // Closes the connection if it still waits for a request (from any thread).
  void close_if_idle();

  // Called by the request's Responder, on the strand; `exchange` names the request so that a stale
  // Responder cannot write into a later response.
  void send(uint64_t exchange, std::string bytes, bool ends_response);
  void set_disconnect_callback(uint64_t exchange, std::function<void()> callback);
  auto strand() { return socket_.get_executor(); }

 private:
  enum class Phase { kIdle, kHead, kBody, kHandling, kClosing };

  void await_request();
  void read_head();
  void on_head(boost::beast::error_code ec);
  bool check_framing();
  void read_body();
  void on_body(boost::beast::error_code ec);
  bool take_body_bytes(std::string_view bytes);
  void handle_request();
  void read_more();
  void on_read_more(boost::beast::error_code ec, size_t bytes);
  void refuse(int status, const std::string& error_body, const std::string& extra_headers = "");
  void refuse(int status, const std::string& message, const char* type, const char* code);
  void arm_deadline(std::chrono::steady_clock::time_point when);
  int64_t kernel_unsent_bytes();  // in the socket's send queue (sent but unacknowledged included)
  void flush();
  void on_written(boost::beast::error_code ec);
  void linger_close();
  void shut();  // closes; a response still being produced learns through its disconnect callback

  boost::asio::ip::tcp::socket socket_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<StreamedBody>> parser_;
  boost::asio::steady_timer deadline_;
  uint64_t deadline_generation_ = 0;
  std::shared_ptr<Transport> transport_;
  const HttpServerConfig& config_;

  Phase phase_ = Phase::kIdle;
  std::atomic<int64_t> idle_since_ns_{0};
  bool read_in_flight_ = false;  // a read_more()

  // The request being read: its head, body document, lease and how its body is going.
  HttpRequest request_;
  std::optional<JsonReader> json_;
  RequestLease lease_;
  bool chunked_ = false;
  bool over_budget_ = false;
  int64_t body_bytes_ = 0;
  std::chrono::steady_clock::time_point body_started_;

  uint64_t exchange_ = 0;        // the request being answered (0: none)
  bool response_ended_ = false;  // its last bytes are queued
  bool keep_alive_ = true;
  bool http10_ = false;          // the client speaks HTTP/1.0: no chunked encoding, no keep-alive
  std::function<void()> on_disconnect_;
  std::deque<std::string> pending_;
  int64_t queued_bytes_ = 0;     // of pending_ and writing_ (the kernel may hold part of writing_ already)
  std::string writing_;          // bytes of the write in flight
  bool write_in_flight_ = false;
  bool closed_ = false;
};

}  // namespace narwhal::server
