// HttpSession: request reading with a body limit, an ordered write queue, chunked streams and disconnect watch.
#include "server/http_session.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstdio>

#include "core/logging.h"
#include "server/api_error.h"

namespace narwhal::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

std::string status_line(int status) {
  const auto reason = http::obsolete_reason(static_cast<http::status>(status));
  return "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason.data(), reason.size()) + "\r\n";
}

std::string hex(size_t n) {
  char buf[32];
  int len = std::snprintf(buf, sizeof buf, "%zx", n);
  return std::string(buf, static_cast<size_t>(len));
}

// One request's Responder: formats HTTP on the calling thread, queues the bytes onto the session's strand.
class Exchange : public Responder {
 public:
  Exchange(std::shared_ptr<HttpSession> session, uint64_t id, bool keep_alive)
      : session_(std::move(session)), id_(id), keep_alive_(keep_alive) {}

  void respond(int status, const std::string& content_type, std::string body) override {
    std::string head = status_line(status) + "Content-Type: " + content_type +
                       "\r\nContent-Length: " + std::to_string(body.size()) + connection_header() + "\r\n";
    send(head + body, true);
  }
  void start_stream(const std::string& content_type) override {
    send(status_line(200) + "Content-Type: " + content_type +
             "\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked" + connection_header() + "\r\n",
         false);
  }
  void write(std::string data) override {
    if (data.empty()) return;  // an empty chunk would end the stream
    send(hex(data.size()) + "\r\n" + data + "\r\n", false);
  }
  void end_stream() override { send("0\r\n\r\n", true); }
  void on_disconnect(std::function<void()> callback) override {
    asio::post(session_->strand(), [session = session_, id = id_, cb = std::move(callback)]() mutable {
      session->set_disconnect_callback(id, std::move(cb));
    });
  }

 private:
  std::string connection_header() const {
    return keep_alive_ ? "\r\nConnection: keep-alive\r\n" : "\r\nConnection: close\r\n";
  }
  void send(std::string bytes, bool ends) {
    asio::post(session_->strand(), [session = session_, id = id_, bytes = std::move(bytes), ends]() mutable {
      session->send(id, std::move(bytes), ends);
    });
  }

  std::shared_ptr<HttpSession> session_;
  uint64_t id_;
  bool keep_alive_;
};

}  // namespace

HttpSession::HttpSession(asio::ip::tcp::socket&& socket, const HttpServerConfig& config,
                         const RequestHandler& handler, std::shared_ptr<TransportCounters> counters)
    : stream_(std::move(socket)), config_(config), handler_(handler), counters_(std::move(counters)) {
  ++counters_->open_connections;
}

HttpSession::~HttpSession() { --counters_->open_connections; }

void HttpSession::run() {
  asio::dispatch(strand(), [self = shared_from_this()] { self->read_request(); });
}

void HttpSession::read_request() {
  if (closed_) return;
  parser_.emplace();
  parser_->body_limit(static_cast<uint64_t>(config_.max_body_bytes));
  parser_->header_limit(64 * 1024);
  stream_.expires_after(std::chrono::seconds(config_.keep_alive_seconds));
  http::async_read(stream_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
}

void HttpSession::on_read(beast::error_code ec) {
  if (closed_) return;
  if (ec == http::error::body_limit) {
    return reply_and_close(413, "the request body exceeds the server's limit of " +
                                    std::to_string(config_.max_body_bytes) + " bytes (--max-request-body)");
  }
  if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
      ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
    return shut();
  }
  if (ec) return reply_and_close(400, std::string("malformed HTTP request: ") + ec.message());

  http::request<http::string_body> message = parser_->release();
  keep_alive_ = message.keep_alive();
  HttpRequest request;
  request.method = std::string(message.method_string());
  const std::string target(message.target());
  const size_t q = target.find('?');
  request.path = target.substr(0, q);
  if (q != std::string::npos) request.query = target.substr(q + 1);
  request.authorization = std::string(message[http::field::authorization]);
  request.body = std::move(message.body());

  stream_.expires_never();  // a streamed response may take as long as generation takes
  const uint64_t id = ++exchange_;
  response_ended_ = false;
  on_disconnect_ = nullptr;
  watch_for_disconnect(id);
  auto responder = std::make_shared<Exchange>(shared_from_this(), id, keep_alive_);
  try {
    handler_(std::move(request), responder);
  } catch (const std::exception& e) {
    NW_LOG(Error) << "HTTP handler failed: " << e.what();
    responder->respond(500, "application/json", dump_json(server_error(e.what()).body()));
  }
}

void HttpSession::reply_and_close(int status, const std::string& message) {
  keep_alive_ = false;
  const uint64_t id = ++exchange_;
  response_ended_ = false;
  const std::string body = dump_json(ApiError(status, message, "invalid_request_error").body());
  send(id,
       status_line(status) + "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body,
       true);
}

// While a response is being produced nothing is read, so a client that hangs up would go unnoticed until the
// next write. Waiting for readability and peeking tells EOF (gone) from a pipelined request (still there).
void HttpSession::watch_for_disconnect(uint64_t exchange) {
  stream_.socket().async_wait(asio::socket_base::wait_read,
                              [self = shared_from_this(), exchange](beast::error_code ec) {
                                if (ec || self->closed_ || self->exchange_ != exchange || self->response_ended_) return;
                                char byte;
                                const ssize_t n = ::recv(self->stream_.socket().native_handle(), &byte, 1,
                                                         MSG_PEEK | MSG_DONTWAIT);
                                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) self->shut();
                              });
}

void HttpSession::set_disconnect_callback(uint64_t exchange, std::function<void()> callback) {
  if (exchange != exchange_ || response_ended_) return;
  if (closed_) {
    callback();  // the client left before the handler registered
    return;
  }
  on_disconnect_ = std::move(callback);
}

void HttpSession::send(uint64_t exchange, std::string bytes, bool ends_response) {
  if (closed_ || exchange != exchange_ || response_ended_) return;
  // What the client has not taken: our queue and the kernel's (which alone can grow to megabytes). A single
  // piece may be larger than the cap (a big non-streamed body); bytes piling up behind unsent ones may not.
  const int64_t unsent = queued_bytes_ + kernel_unsent_bytes();
  queued_bytes_ += static_cast<int64_t>(bytes.size());
  if (unsent > 0 && unsent + static_cast<int64_t>(bytes.size()) > config_.max_queued_bytes) {
    NW_LOG(Warning) << "closing a connection whose client stopped reading: " << unsent + bytes.size()
                    << " bytes unsent (--max-queued-response-bytes " << config_.max_queued_bytes << ")";
    ++counters_->slow_client_closes;
    return shut();
  }
  pending_.push_back(std::move(bytes));
  if (ends_response) {
    response_ended_ = true;
    on_disconnect_ = nullptr;
  }
  if (!write_in_flight_) flush();
}

int64_t HttpSession::kernel_unsent_bytes() {
  int bytes = 0;
  if (::ioctl(stream_.socket().native_handle(), SIOCOUTQ, &bytes) != 0) return 0;
  return bytes;
}

void HttpSession::flush() {
  writing_.clear();
  for (std::string& piece : pending_) writing_ += piece;  // one write for everything queued
  pending_.clear();
  write_in_flight_ = true;
  asio::async_write(stream_.socket(), asio::buffer(writing_),
                    [self = shared_from_this()](beast::error_code ec, size_t) { self->on_written(ec); });
}

void HttpSession::on_written(beast::error_code ec) {
  write_in_flight_ = false;
  queued_bytes_ -= static_cast<int64_t>(writing_.size());
  if (closed_) return;
  if (ec) return shut();
  if (!pending_.empty()) return flush();
  if (!response_ended_) return;
  if (!keep_alive_) return linger_close();
  read_request();
}

// A client may still be sending (a body over the limit) when its response is written: closing at once would
// reset the connection and lose the response, so stop sending and read what comes until it hangs up.
void HttpSession::linger_close() {
  beast::error_code ignored;
  stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  stream_.expires_after(std::chrono::seconds(5));
  buffer_.clear();
  stream_.async_read_some(buffer_.prepare(64 * 1024), [self = shared_from_this()](beast::error_code ec, size_t) {
    if (ec) return self->shut();
    self->linger_close();
  });
}

void HttpSession::shut() {
  if (closed_) return;
  closed_ = true;
  if (on_disconnect_ && !response_ended_) {
    auto callback = std::move(on_disconnect_);
    on_disconnect_ = nullptr;
    callback();
  }
  beast::error_code ignored;
  stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  stream_.socket().close(ignored);
}

}  // namespace narwhal::server
