// TCP plumbing over POSIX sockets (IPv4), every blocking step bounded by poll() against a deadline.
#include "parallel/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <thread>

#include "core/error.h"

namespace narwhal {

int Deadline::slice_ms(int cap_ms) const {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end_ - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, cap_ms));
}

HostPort parse_host_port(const std::string& text, const std::string& what) {
  const size_t colon = text.rfind(':');
  HostPort out;
  if (colon != std::string::npos && colon > 0) {
    out.host = text.substr(0, colon);
    const std::string port = text.substr(colon + 1);
    const bool digits = std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); });
    if (!port.empty() && port.size() <= 5 && digits) out.port = std::stoi(port);
  }
  NW_CHECK(out.port >= 1 && out.port <= 65535, what, " '", text, "' is not HOST:PORT (e.g. 10.0.0.1:5000)");
  return out;
}

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = other.release();
  }
  return *this;
}

int Socket::release() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void Socket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Socket listen_tcp(int port, const std::string& what) {
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  NW_CHECK(s.valid(), "cannot create a socket for ", what, ": ", std::strerror(errno));
  const int one = 1;
  ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  NW_CHECK(::bind(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0, "cannot listen at ", what,
           " (port ", port, "): ", std::strerror(errno));
  NW_CHECK(::listen(s.fd(), SOMAXCONN) == 0, "cannot listen at ", what, ": ", std::strerror(errno));
  return s;
}

int local_port(const Socket& socket) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  NW_CHECK(::getsockname(socket.fd(), reinterpret_cast<sockaddr*>(&addr), &len) == 0, "getsockname: ",
           std::strerror(errno));
  return ntohs(addr.sin_port);
}

std::string local_ip(const Socket& socket) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  NW_CHECK(::getsockname(socket.fd(), reinterpret_cast<sockaddr*>(&addr), &len) == 0, "getsockname: ",
           std::strerror(errno));
  char text[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &addr.sin_addr, text, sizeof text);
  return text;
}

namespace {

// One connection attempt, bounded by the deadline; empty string on success, else why it failed.
std::string try_connect(const Socket& s, const sockaddr_in& addr, const Deadline& deadline) {
  set_nonblocking(s);
  if (::connect(s.fd(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return "";
  if (errno != EINPROGRESS) return std::strerror(errno);
  pollfd p{s.fd(), POLLOUT, 0};
  if (::poll(&p, 1, std::max(deadline.slice_ms(1000), 1)) <= 0) return "no answer";
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len);
  return err == 0 ? "" : std::strerror(err);
}

}  // namespace

Socket connect_tcp(const HostPort& to, const Deadline& deadline, std::string* last_error) {
  // Retries with a growing pause: the listener may not be up yet (its node is still starting).
  int pause_ms = 10;
  while (true) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const int rc = ::getaddrinfo(to.host.c_str(), std::to_string(to.port).c_str(), &hints, &found);
    if (rc != 0) {
      *last_error = cat("cannot resolve ", to.host, ": ", ::gai_strerror(rc));
    } else {
      sockaddr_in addr = *reinterpret_cast<sockaddr_in*>(found->ai_addr);
      ::freeaddrinfo(found);
      Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      NW_CHECK(s.valid(), "cannot create a socket: ", std::strerror(errno));
      *last_error = try_connect(s, addr, deadline);
      if (last_error->empty()) {
        set_no_delay(s);
        return s;
      }
    }
    if (deadline.passed()) return Socket();
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(pause_ms, deadline.slice_ms(pause_ms))));
    pause_ms = std::min(pause_ms * 2, 200);
  }
}

void set_no_delay(const Socket& socket) {
  const int one = 1;
  ::setsockopt(socket.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void set_nonblocking(const Socket& socket) {
  const int flags = ::fcntl(socket.fd(), F_GETFL, 0);
  ::fcntl(socket.fd(), F_SETFL, flags | O_NONBLOCK);
}

namespace {

// Moves bytes with `step` (send or recv) until all are done, the peer closes, or the deadline passes.
template <typename Step>
IoStatus transfer_exact(int fd, size_t bytes, short events, const Deadline& deadline, Step step) {
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = step(done);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return IoStatus::kClosed;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return IoStatus::kClosed;
    if (deadline.passed()) return IoStatus::kTimedOut;
    pollfd p{fd, events, 0};
    ::poll(&p, 1, deadline.slice_ms(100));
  }
  return IoStatus::kDone;
}

}  // namespace

IoStatus send_exact(int fd, const void* data, size_t bytes, const Deadline& deadline) {
  const char* p = static_cast<const char*>(data);
  return transfer_exact(fd, bytes, POLLOUT, deadline, [&](size_t done) {
    return ::send(fd, p + done, bytes - done, MSG_NOSIGNAL | MSG_DONTWAIT);
  });
}

IoStatus recv_exact(int fd, void* data, size_t bytes, const Deadline& deadline) {
  char* p = static_cast<char*>(data);
  return transfer_exact(fd, bytes, POLLIN, deadline,
                        [&](size_t done) { return ::recv(fd, p + done, bytes - done, MSG_DONTWAIT); });
}

}  // namespace narwhal
