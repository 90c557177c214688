// HttpSession: the connection's phases (idle, head, body, handling, closing), each with its own deadline, and the
// ordered write queue with its cap on unsent bytes.
#include "server/http_session.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <limits>

#include "core/logging.h"
#include "server/api_error.h"
#include "server/http_exchange.h"

namespace narwhal::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

// A request line and headers larger than this get 431. Real ones are a few hundred bytes; 64 KiB leaves room for
// long bearer tokens and proxies' additions.
constexpr uint32_t kMaxHeadBytes = 64 << 10;
// Bytes read while a request is handled (the start of a pipelined next request), so that a client that hangs up
// is noticed; past this the connection waits, unread, for the response to end.
constexpr size_t kMaxPipelinedBytes = 64 << 10;
// Bodies up to this are handled on the I/O thread; the chat template and tokenizer take milliseconds for them,
// and much longer for larger ones, which go to the workers so that no I/O thread is held (health checks answer).
constexpr int64_t kInlineBodyBytes = 64 << 10;
// After a response that closes the connection, how long what the client still sends is read and dropped, so
// that the close does not reset the connection before the client has read the response.
constexpr double kLingerSeconds = 2;

const char* kInvalidRequest = "invalid_request_error";

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::chrono::steady_clock::time_point seconds_from_now(double seconds) {
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
}

// The client hung up, reset the connection, or we closed it.
bool gone(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == http::error::partial_message || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
         ec == asio::error::broken_pipe || ec == asio::error::bad_descriptor;
}

beast::string_view trim(beast::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

HttpSession::HttpSession(asio::ip::tcp::socket&& socket, std::shared_ptr<Transport> transport)
    : socket_(std::move(socket)),
      deadline_(socket_.get_executor()),
      transport_(std::move(transport)),
      config_(transport_->config) {
  ++transport_->counters.open_connections;
  transport_->add(this);
}

HttpSession::~HttpSession() {
  transport_->remove(this);
  --transport_->counters.open_connections;
}

void HttpSession::run() {
  asio::dispatch(strand(), [self = shared_from_this()] { self->await_request(); });
}

void HttpSession::refuse_connection() {
  asio::dispatch(strand(), [self = shared_from_this()] {
    self->refuse(503,
                 cat("The server has ", self->config_.max_connections,
                     " connections open, none idle (--limit-concurrency). Retry later."),
                 "server_error", "unavailable");
  });
}

void HttpSession::close_if_idle() {
  asio::post(strand(), [self = shared_from_this()] {
    if (!self->closed_ && self->phase_ == Phase::kIdle && self->buffer_.size() == 0) self->shut();
  });
}

void HttpSession::arm_deadline(std::chrono::steady_clock::time_point when) {
  deadline_.expires_at(when);
  deadline_.async_wait([self = shared_from_this(), generation = ++deadline_generation_](beast::error_code ec) {
    if (!ec && generation == self->deadline_generation_) self->shut();
  });
}

// Waiting for a request: a pipelined one may be buffered already; else the keep-alive timeout runs until its
// first byte.
void HttpSession::await_request() {
  phase_ = Phase::kIdle;
  arm_deadline(seconds_from_now(config_.keep_alive_seconds));
  if (buffer_.size() > 0) {
    if (read_in_flight_) {
      socket_.cancel();  // the watch read: its completion starts the head
    } else {
      read_head();
    }
    return;
  }
  idle_since_ns_ = steady_ns();
  if (read_in_flight_) return;  // the watch read goes on as the wait for the first byte
  buffer_.shrink_to_fit();       // an idle connection holds no large buffer
  read_more();
}

void HttpSession::read_more() {
  const size_t room = phase_ == Phase::kClosing ? 64 << 10 : 4 << 10;
  read_in_flight_ = true;
  socket_.async_read_some(buffer_.prepare(room), [self = shared_from_this()](beast::error_code ec, size_t n) {
    self->on_read_more(ec, n);
  });
}

void HttpSession::on_read_more(beast::error_code ec, size_t bytes) {
  read_in_flight_ = false;
  buffer_.commit(bytes);
  if (closed_) return;
  if (phase_ == Phase::kIdle && buffer_.size() > 0) return read_head();
  if (ec) return shut();  // the client is gone; while its request runs, this aborts it
  if (phase_ == Phase::kHandling && buffer_.size() < kMaxPipelinedBytes) return read_more();
  if (phase_ == Phase::kClosing) {
    buffer_.consume(buffer_.size());
    read_more();
  }
}

void HttpSession::read_head() {
  phase_ = Phase::kHead;
  idle_since_ns_ = 0;
  arm_deadline(seconds_from_now(config_.head_seconds));
  parser_.emplace();
  parser_->header_limit(kMaxHeadBytes);
  // Judged on the head, after the route and the API key (Boost 1.74 takes boost::none for a limit below any size).
  parser_->body_limit(std::numeric_limits<uint64_t>::max());
  http::async_read_header(socket_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, size_t) { self->on_head(ec); });
}

void HttpSession::on_head(beast::error_code ec) {
  if (closed_) return;
  if (ec == http::error::header_limit)
    return refuse(431, cat("The request's line and headers exceed ", kMaxHeadBytes, " bytes."), kInvalidRequest,
                  "request_header_fields_too_large");
  if (gone(ec)) return shut();
  if (ec == http::error::bad_transfer_encoding && parser_->get().count(http::field::content_length) == 0)
    return refuse(501, "Transfer-Encoding: only a single chunked coding is supported.", kInvalidRequest,
                  "not_implemented");
  if (ec == http::error::bad_transfer_encoding || ec == http::error::bad_content_length)
    return refuse(400, "Invalid framing: a malformed Content-Length, or both Content-Length and Transfer-Encoding.",
                  kInvalidRequest, "invalid_framing");
  if (ec) return refuse(400, "Malformed HTTP request: " + ec.message() + ".", kInvalidRequest, "invalid_http");

  const auto& head = parser_->get();
  http10_ = head.version() < 11;
  keep_alive_ = head.keep_alive() && !http10_;
  if (!check_framing()) return;
  const beast::string_view expect = trim(head[http::field::expect]);
  if (!expect.empty() && !beast::iequals(expect, "100-continue"))
    return refuse(417, "Expect: only 100-continue is supported.", kInvalidRequest, "expectation_failed");

  request_ = HttpRequest{};
  request_.method = std::string(head.method_string());
  const beast::string_view target = head.target();
  const size_t q = target.find('?');
  request_.path = std::string(target.substr(0, q));
  if (q != beast::string_view::npos) request_.query = std::string(target.substr(q + 1));
  request_.authorization = std::string(head[http::field::authorization]);
  const Admission admission = transport_->admit(request_);
  if (admission.status != 0)
    return refuse(admission.status, admission.error_body,
                  admission.allow.empty() ? "" : "Allow: " + admission.allow + "\r\n");

  const auto length = parser_->content_length();
  if (length && *length > static_cast<uint64_t>(config_.max_body_bytes))
    return refuse(413, cat("The request body (", *length, " bytes) exceeds the server's limit of ",
                           config_.max_body_bytes, " bytes (--max-request-body)."),
                  kInvalidRequest, "request_too_large");
  lease_ = RequestLease(transport_);
  if (!lease_.grow(static_cast<int64_t>(length.value_or(0))))
    return refuse(503, "The server is reading as many request bodies as it holds at once "
                       "(--max-request-body-in-flight). Retry later.", "server_error", "unavailable");
  parser_->body_limit(static_cast<uint64_t>(config_.max_body_bytes));
  chunked_ = parser_->chunked();
  over_budget_ = false;
  body_bytes_ = 0;
  if (admission.json_body) json_.emplace(JsonLimits::for_body(config_.max_body_bytes));
  parser_->get().body() = [this](std::string_view bytes) { return take_body_bytes(bytes); };

  const uint64_t id = ++exchange_;
  response_ended_ = false;
  on_disconnect_ = nullptr;
  if (!expect.empty() && !http10_ && !parser_->is_done()) send(id, "HTTP/1.1 100 Continue\r\n\r\n", false);
  body_started_ = std::chrono::steady_clock::now();
  read_body();
}

// RFC 9112 section 6: anything but one final chunked coding (chunked, identity; gzip) would leave the body's end
// ambiguous, and the rest of it read as a next request (request smuggling).
bool HttpSession::check_framing() {
  const auto& head = parser_->get();
  const auto codings = head.equal_range(http::field::transfer_encoding);
  if (codings.first == codings.second) return true;
  if (head.count(http::field::content_length) > 0) {
    refuse(400, "Both Content-Length and Transfer-Encoding are given.", kInvalidRequest, "invalid_framing");
    return false;
  }
  if (http10_) {
    refuse(400, "Transfer-Encoding in an HTTP/1.0 request.", kInvalidRequest, "invalid_framing");
    return false;
  }
  if (std::next(codings.first) != codings.second || !beast::iequals(trim(codings.first->value()), "chunked")) {
    refuse(501, "Transfer-Encoding: only a single chunked coding is supported.", kInvalidRequest, "not_implemented");
    return false;
  }
  return true;
}

// The body streams through the parser into take_body_bytes; it must keep arriving at the minimum rate.
void HttpSession::read_body() {
  if (parser_->is_done()) return handle_request();
  phase_ = Phase::kBody;
  if (config_.min_body_bytes_per_second > 0) {
    const double allowed = config_.head_seconds + static_cast<double>(body_bytes_) / config_.min_body_bytes_per_second;
    arm_deadline(body_started_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                     std::chrono::duration<double>(allowed)));
  } else {
    ++deadline_generation_;
    deadline_.cancel();
  }
  http::async_read_some(socket_, buffer_, *parser_,
                        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_body(ec); });
}

void HttpSession::on_body(beast::error_code ec) {
  if (closed_) return;
  if (over_budget_)
    return refuse(503, "The server is reading as many request bodies as it holds at once "
                       "(--max-request-body-in-flight). Retry later.", "server_error", "unavailable");
  if (!request_.body_error.empty()) return handle_request();  // the handler answers 400; the rest stays unread
  if (ec == http::error::body_limit)
    return refuse(413, cat("The request body exceeds the server's limit of ", config_.max_body_bytes,
                           " bytes (--max-request-body)."),
                  kInvalidRequest, "request_too_large");
  if (gone(ec)) return shut();
  if (ec) return refuse(400, "Malformed request body: " + ec.message() + ".", kInvalidRequest, "invalid_http");
  read_body();
}

bool HttpSession::take_body_bytes(std::string_view bytes) {
  body_bytes_ += static_cast<int64_t>(bytes.size());
  if (chunked_ && !lease_.grow(static_cast<int64_t>(bytes.size()))) {
    over_budget_ = true;
    return false;
  }
  if (!json_) return true;
  try {
    json_->feed(bytes);
  } catch (const JsonError& e) {
    request_.body_error = e.what();
    json_.reset();
    return false;
  }
  return true;
}

void HttpSession::handle_request() {
  if (json_) {
    try {
      request_.body = json_->finish();
    } catch (const JsonError& e) {
      request_.body_error = e.what();
    }
    json_.reset();
  }
  if (!request_.body_error.empty()) keep_alive_ = false;  // what follows the error was not read
  phase_ = Phase::kHandling;
  ++deadline_generation_;
  deadline_.cancel();  // a response may take as long as generation takes
  if (!read_in_flight_) read_more();
  // Keep-Alive's timeout tells clients with connection pools when to stop reusing this one (RFC 9112 appendix C).
  std::string connection = "Connection: close\r\n";
  if (keep_alive_) {
    connection = cat("Connection: keep-alive\r\nKeep-Alive: timeout=", static_cast<int>(config_.keep_alive_seconds),
                     "\r\n");
  }
  auto responder = std::make_shared<Exchange>(shared_from_this(), exchange_, std::move(connection), http10_);
  auto task = [transport = transport_, request = std::move(request_), lease = std::move(lease_),
               responder]() mutable {
    try {
      HttpRequest handled = std::move(request);  // freed before the lease is given back
      transport->handle(std::move(handled), responder);
    } catch (const std::exception& e) {
      NW_LOG(Error) << "HTTP handler failed: " << e.what();
      responder->respond(500, "application/json", dump_json(server_error(e.what()).body()));
    }
    lease.release();
  };
  request_ = HttpRequest{};
  if (body_bytes_ > kInlineBodyBytes) return asio::post(transport_->workers, std::move(task));
  task();
}

void HttpSession::refuse(int status, const std::string& message, const char* type, const char* code) {
  refuse(status, dump_json(ApiError(status, message, type, "", code).body()));
}

void HttpSession::refuse(int status, const std::string& error_body, const std::string& extra_headers) {
  keep_alive_ = false;
  json_.reset();
  lease_.release();
  const uint64_t id = ++exchange_;
  response_ended_ = false;
  on_disconnect_ = nullptr;
  send(id,
       status_line(status) + "Content-Type: application/json\r\nContent-Length: " +
           std::to_string(error_body.size()) + "\r\n" + extra_headers + "Connection: close\r\n\r\n" + error_body,
       true);
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
    ++transport_->counters.slow_client_closes;
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
  if (::ioctl(socket_.native_handle(), SIOCOUTQ, &bytes) != 0) return 0;
  return bytes;
}

void HttpSession::flush() {
  writing_.clear();
  for (std::string& piece : pending_) writing_ += piece;  // one write for everything queued
  pending_.clear();
  write_in_flight_ = true;
  asio::async_write(socket_, asio::buffer(writing_),
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
  await_request();
}

// A client may still be sending (a body we refused) when its response is written: closing at once would reset
// the connection and lose the response, so stop sending and drop what comes for a moment, then close.
void HttpSession::linger_close() {
  phase_ = Phase::kClosing;
  beast::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  arm_deadline(seconds_from_now(kLingerSeconds));
  if (read_in_flight_) return;  // it reads into the buffer: on_read_more drops what it got
  buffer_.consume(buffer_.size());
  read_more();
}

void HttpSession::shut() {
  if (closed_) return;
  closed_ = true;
  idle_since_ns_ = 0;
  ++deadline_generation_;
  deadline_.cancel();
  json_.reset();
  lease_.release();
  if (on_disconnect_ && !response_ended_) {
    auto callback = std::move(on_disconnect_);
    on_disconnect_ = nullptr;
    callback();
  }
  beast::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

}  // namespace narwhal::server
