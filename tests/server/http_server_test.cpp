// HttpServer without a model: heads judged before bodies, JSON bodies parsed in pieces, large ones handled off the
// I/O threads, the in-flight body budget; over blocking loopback sockets.
#include "server/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

namespace narwhal::server {
namespace {

class Client {
 public:
  explicit Client(int port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval timeout{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  }
  ~Client() { ::close(fd_); }
  void send(const std::string& bytes) {
    ASSERT_EQ(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  }
  // Everything until the server closes the connection (or 5 s pass).
  std::string read_all() {
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd_, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
    return out;
  }

 private:
  int fd_;
};

std::string post(const std::string& path, const std::string& body, const std::string& headers = "") {
  return "POST " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n" + headers + "\r\n" + body;
}

// A server whose routes are: /json (a JSON body), /refused (401 on the head), anything else (body dropped). The
// handler answers with what it got and records where it ran.
struct Fixture {
  explicit Fixture(HttpServerConfig config = {}) : server(with_any_port(config), admit(), handle()) { server.start(); }

  static HttpServerConfig with_any_port(HttpServerConfig config) {
    config.port = 0;
    return config;
  }
  HeadCheck admit() {
    return [this](const HttpRequest& head) {
      std::lock_guard lock(mutex);
      admit_thread = std::this_thread::get_id();
      Admission a;
      if (head.path == "/refused") {
        a.status = 401;
        a.error_body = "{}";
      }
      a.json_body = head.path == "/json";
      return a;
    };
  }
  RequestHandler handle() {
    return [this](HttpRequest&& request, std::shared_ptr<Responder> responder) {
      {
        std::lock_guard lock(mutex);
        handle_thread = std::this_thread::get_id();
      }
      ++handled;
      if (release_handler) {
        while (!*release_handler) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      const std::string text = request.body_error.empty() ? request.body.dump() : "error: " + request.body_error;
      responder->respond(200, "text/plain", text);
    };
  }

  std::mutex mutex;
  std::thread::id admit_thread, handle_thread;
  std::atomic<int> handled{0};
  std::atomic<bool>* release_handler = nullptr;  // when set, handlers wait for it
  HttpServer server;
};

TEST(HttpServer, ParsesAChunkedJsonBodyKeepingKeyOrder) {
  Fixture f;
  Client c(f.server.port());
  c.send("POST /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
         "5\r\n{\"b\":\r\n3\r\n1,\"\r\n7\r\na\":[2]}\r\n0\r\n\r\n");
  const std::string response = c.read_all();
  EXPECT_NE(response.find("HTTP/1.1 200"), std::string::npos) << response;
  EXPECT_NE(response.find("{\"b\":1,\"a\":[2]}"), std::string::npos) << response;
}

TEST(HttpServer, RefusesOnTheHeadWithoutCallingTheHandler) {
  Fixture f;
  Client c(f.server.port());
  c.send("POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n");
  const std::string response = c.read_all();
  EXPECT_EQ(response.rfind("HTTP/1.1 401", 0), 0u) << response;
  EXPECT_EQ(f.handled, 0);
}

TEST(HttpServer, AJsonErrorReachesTheHandlerAndClosesTheConnection) {
  Fixture f;
  Client c(f.server.port());
  c.send(post("/json", "{\"a\": [1, 2,, 3]}"));
  const std::string response = c.read_all();
  EXPECT_NE(response.find("error: at byte 12"), std::string::npos) << response;
  EXPECT_NE(response.find("Connection: close"), std::string::npos) << response;
}

TEST(HttpServer, HandlesLargeBodiesOffTheIoThread) {
  HttpServerConfig config;
  config.threads = 1;  // one I/O thread: a request read on it and handled inline stays on it
  Fixture f(config);
  {
    Client small(f.server.port());
    small.send(post("/json", "{\"x\": 1}"));
    small.read_all();
  }
  {
    std::lock_guard lock(f.mutex);
    EXPECT_EQ(f.handle_thread, f.admit_thread) << "a small body is handled where it was read";
  }
  Client large(f.server.port());
  large.send(post("/json", "{\"x\": \"" + std::string(200 << 10, 'y') + "\"}"));
  EXPECT_NE(large.read_all().find("HTTP/1.1 200"), std::string::npos);
  std::lock_guard lock(f.mutex);
  EXPECT_NE(f.handle_thread, f.admit_thread) << "a large one goes to a worker";
}

TEST(HttpServer, BodiesPastTheInFlightBudgetGet503UntilOneIsHandled) {
  HttpServerConfig config;
  config.max_body_bytes = 100 << 10;
  config.max_body_bytes_in_flight = 150 << 10;
  std::atomic<bool> release{false};
  Fixture f(config);
  f.release_handler = &release;
  const std::string body = "\"" + std::string(90 << 10, 'z') + "\"";
  Client first(f.server.port());
  first.send(post("/json", body));
  while (f.handled == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // held, with its budget
  {
    Client second(f.server.port());
    second.send(post("/json", body));
    EXPECT_EQ(second.read_all().rfind("HTTP/1.1 503", 0), 0u);
  }
  release = true;
  EXPECT_NE(first.read_all().find("HTTP/1.1 200"), std::string::npos);
  // The budget is given back just after the handler returns, which may be after its response arrived.
  std::string third;
  for (int attempt = 0; attempt < 100 && third.rfind("HTTP/1.1 200", 0) != 0; ++attempt) {
    Client c(f.server.port());
    c.send(post("/json", body));
    third = c.read_all();
  }
  EXPECT_EQ(third.rfind("HTTP/1.1 200", 0), 0u) << "the budget was given back";
}

}  // namespace
}  // namespace narwhal::server
