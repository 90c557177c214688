// BenchHttpClient on Boost.Beast: one Exchange per request (connect, write, read the header, then read_some in
// a loop so that every chunk is seen, and timestamped, as soon as the socket has it).
#include "cli/bench_serving_http.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <limits>
#include <thread>
#include <vector>

#include "core/error.h"

namespace narwhal {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

BaseUrl parse_base_url(const std::string& url) {
  const std::string scheme = "http://";
  NW_CHECK(url.rfind("https://", 0) != 0, "--base-url ", url, ": https is not supported (use http://)");
  NW_CHECK(url.rfind(scheme, 0) == 0, "--base-url ", url, ": expected http://HOST[:PORT][/PATH]");
  std::string rest = url.substr(scheme.size());
  BaseUrl out;
  const size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    out.prefix = rest.substr(slash);
    rest = rest.substr(0, slash);
    while (!out.prefix.empty() && out.prefix.back() == '/') out.prefix.pop_back();
  }
  // [v6-address]:port or host:port
  const size_t close = rest.rfind(']');
  const size_t colon = rest.rfind(':');
  if (colon != std::string::npos && (close == std::string::npos || colon > close)) {
    out.port = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
    NW_CHECK(!out.port.empty() && out.port.find_first_not_of("0123456789") == std::string::npos, "--base-url ", url,
             ": the port is not a number");
  }
  if (rest.size() >= 2 && rest.front() == '[' && rest.back() == ']') rest = rest.substr(1, rest.size() - 2);
  NW_CHECK(!rest.empty(), "--base-url ", url, ": no host");
  out.host = rest;
  return out;
}

std::string HttpResult::describe() const {
  if (!error.empty()) return error;
  const auto reason = http::obsolete_reason(static_cast<http::status>(status));
  return cat("HTTP ", status, " ", std::string(reason.data(), reason.size()), ": ", body);
}

namespace {

class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(asio::io_context& io, const tcp::resolver::results_type& endpoints, http::request<http::string_body> request,
           double timeout_seconds, BenchHttpClient::LineHandler on_line, BenchHttpClient::DoneHandler on_done)
      : stream_(io), endpoints_(endpoints), request_(std::move(request)), timeout_seconds_(timeout_seconds),
        on_line_(std::move(on_line)), on_done_(std::move(on_done)) {
    parser_.body_limit(std::numeric_limits<std::uint64_t>::max());
  }

  void start() {
    arm_timeout();
    stream_.async_connect(endpoints_, [self = shared_from_this()](beast::error_code ec, const tcp::endpoint&) {
      if (ec) return self->fail("cannot connect", ec);
      self->arm_timeout();
      http::async_write(self->stream_, self->request_, [self](beast::error_code ec, size_t) {
        if (ec) return self->fail("sending the request failed", ec);
        self->arm_timeout();
        http::async_read_header(self->stream_, self->buffer_, self->parser_, [self](beast::error_code ec, size_t) {
          if (ec) return self->fail("reading the response failed", ec);
          self->result_.status = static_cast<int>(self->parser_.get().result_int());
          self->read_body();
        });
      });
    });
  }

 private:
  void read_body() {
    if (parser_.is_done()) return finish();
    parser_.get().body().data = chunk_;
    parser_.get().body().size = sizeof chunk_;
    arm_timeout();
    http::async_read_some(stream_, buffer_, parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec == http::error::need_buffer) ec = {};  // chunk_ is full: not an error
      const auto arrived = BenchHttpClient::Clock::now();
      const size_t got = sizeof self->chunk_ - self->parser_.get().body().size;
      if (got > 0) self->consume(arrived, std::string_view(self->chunk_, got));
      if (ec) return self->fail("the response broke off", ec);
      self->read_body();
    });
  }

  bool streams_lines() const { return on_line_ && result_.status == 200; }

  void consume(BenchHttpClient::Clock::time_point arrived, std::string_view bytes) {
    if (!streams_lines()) {
      result_.body.append(bytes);
      return;
    }
    last_arrival_ = arrived;
    partial_line_.append(bytes);
    size_t begin = 0;
    for (size_t end; (end = partial_line_.find('\n', begin)) != std::string::npos; begin = end + 1)
      on_line_(arrived, std::string_view(partial_line_).substr(begin, end - begin));
    partial_line_.erase(0, begin);
  }

  void finish() {
    if (streams_lines() && !partial_line_.empty()) on_line_(last_arrival_, partial_line_);
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    done();
  }

  void fail(const char* what, beast::error_code ec) {
    result_.error = cat(what, ": ", ec == beast::error::timeout ? "timed out" : ec.message());
    done();
  }

  void done() {
    if (!on_done_) return;
    auto on_done = std::move(on_done_);
    on_done_ = nullptr;
    on_done(result_);
  }

  void arm_timeout() {
    if (timeout_seconds_ > 0) stream_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                  std::chrono::duration<double>(timeout_seconds_)));
  }

  beast::tcp_stream stream_;
  tcp::resolver::results_type endpoints_;
  http::request<http::string_body> request_;
  double timeout_seconds_;  // per operation; 0: none (a benchmark's streams may run for hours)
  BenchHttpClient::LineHandler on_line_;
  BenchHttpClient::DoneHandler on_done_;
  beast::flat_buffer buffer_;
  http::response_parser<http::buffer_body> parser_;
  char chunk_[16384];
  std::string partial_line_;
  BenchHttpClient::Clock::time_point last_arrival_;
  HttpResult result_;
};

}  // namespace

struct BenchHttpClient::Impl {
  asio::io_context io;
  tcp::resolver::results_type endpoints;
  std::string host_header;
  std::string api_key;

  http::request<http::string_body> make_request(http::verb verb, const std::string& target, std::string body) const {
    http::request<http::string_body> r{verb, target, 11};
    r.set(http::field::host, host_header);
    r.set(http::field::user_agent, "narwhal-bench");
    if (!api_key.empty()) r.set(http::field::authorization, "Bearer " + api_key);
    if (!body.empty()) r.set(http::field::content_type, "application/json");
    r.keep_alive(false);
    r.body() = std::move(body);
    r.prepare_payload();
    return r;
  }
};

BenchHttpClient::BenchHttpClient(BaseUrl url, std::string api_key) : url_(std::move(url)), impl_(new Impl) {
  impl_->host_header = url_.host + ":" + url_.port;
  impl_->api_key = std::move(api_key);
  beast::error_code ec;
  tcp::resolver resolver(impl_->io);
  impl_->endpoints = resolver.resolve(url_.host, url_.port, ec);
  NW_CHECK(!ec, "cannot resolve ", url_.host, " (", url_.text(), "): ", ec.message());
}

BenchHttpClient::~BenchHttpClient() = default;

HttpResult BenchHttpClient::request(const std::string& method, const std::string& path, const std::string& body,
                                    double timeout_seconds) const {
  asio::io_context io;  // its own context: a setup call must not run the benchmark's pending work
  HttpResult result;
  auto exchange = std::make_shared<Exchange>(
      io, impl_->endpoints, impl_->make_request(http::string_to_verb(method), url_.prefix + path, body),
      timeout_seconds, nullptr, [&result](const HttpResult& r) { result = r; });
  exchange->start();
  exchange.reset();
  io.run();
  return result;
}

void BenchHttpClient::post_streaming(const std::string& path, std::string body, LineHandler on_line,
                                     DoneHandler on_done) {
  std::make_shared<Exchange>(impl_->io, impl_->endpoints,
                             impl_->make_request(http::verb::post, url_.prefix + path, std::move(body)), 0,
                             std::move(on_line), std::move(on_done))
      ->start();
}

void BenchHttpClient::after(double seconds, std::function<void()> callback) {
  auto timer = std::make_shared<asio::steady_timer>(
      impl_->io, std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)));
  timer->async_wait([timer, callback = std::move(callback)](beast::error_code) { callback(); });
}

void BenchHttpClient::run(int threads) {
  impl_->io.restart();
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([this] { impl_->io.run(); });
  impl_->io.run();
  for (std::thread& t : pool) t.join();
}

}  // namespace narwhal
