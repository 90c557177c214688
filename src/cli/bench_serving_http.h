// HTTP client of the serving benchmarks: blocking calls for setup, and thousands of concurrent streamed POSTs on
// a few I/O threads (Boost.Beast), each received chunk timestamped on arrival.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace narwhal {

// http://HOST[:PORT][/PREFIX], split.
struct BaseUrl {
  std::string host;
  std::string port = "80";
  std::string prefix;  // "" or "/PREFIX", put before every request path
  std::string text() const { return "http://" + host + ":" + port + prefix; }
};

// Throws Error for anything but http:// URLs (https is not supported) and for malformed ones.
BaseUrl parse_base_url(const std::string& url);

struct HttpResult {
  int status = 0;      // 0 when no response header arrived
  std::string body;    // the whole body, except for a 200 streamed line by line
  std::string error;   // non-empty when the exchange failed in transport (refused, reset, timed out)
  bool ok() const { return error.empty() && status == 200; }
  // "HTTP 404 Not Found: <body>" or the transport error, for reports.
  std::string describe() const;
};

class BenchHttpClient {
 public:
  using Clock = std::chrono::steady_clock;
  // One line of a 200 response's body (without its newline), with the time the bytes ending it arrived.
  using LineHandler = std::function<void(Clock::time_point arrived, std::string_view line)>;
  using DoneHandler = std::function<void(const HttpResult& result)>;

  // Resolves the host once (Error if it cannot be). Requests send "Authorization: Bearer KEY" when a key is set.
  BenchHttpClient(BaseUrl url, std::string api_key);
  ~BenchHttpClient();
  BenchHttpClient(const BenchHttpClient&) = delete;
  BenchHttpClient& operator=(const BenchHttpClient&) = delete;

  const BaseUrl& url() const { return url_; }

  // A blocking exchange, for setup calls (/v1/models, /get_model_info, /flush_cache). Never throws.
  HttpResult request(const std::string& method, const std::string& path, const std::string& body = "",
                     double timeout_seconds = 60) const;

  // Starts a POST whose 200 body is handed over line by line as it streams in; `on_done` runs once at the end
  // (with the status and, for other statuses, the body). Handlers run on the I/O threads of run(). Thread-safe.
  void post_streaming(const std::string& path, std::string body, LineHandler on_line, DoneHandler on_done);
  // Runs `callback` on an I/O thread `seconds` from now. Thread-safe.
  void after(double seconds, std::function<void()> callback);
  // Runs `threads` I/O threads (this one among them) until every exchange and timer started before or during
  // the run is over.
  void run(int threads);

 private:
  struct Impl;
  BaseUrl url_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace narwhal
