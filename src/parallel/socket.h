// TCP plumbing for the TcpStore and the host backend: deadlines, HOST:PORT, listening, connecting until a
// deadline, and exact reads and writes that give up at a deadline or when the peer goes away.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace narwhal {

// The moment every wait of one operation gives up; made from the operation's bound in seconds.
class Deadline {
 public:
  using Clock = std::chrono::steady_clock;
  explicit Deadline(double seconds)
      : end_(Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds))),
        seconds_(seconds) {}
  bool passed() const { return Clock::now() >= end_; }
  // Milliseconds left, at most cap_ms: the slice a poll() waits before it checks for failures again.
  int slice_ms(int cap_ms) const;
  double seconds() const { return seconds_; }

 private:
  Clock::time_point end_;
  double seconds_;
};

struct HostPort {
  std::string host;
  int port = 0;
  std::string str() const { return host + ":" + std::to_string(port); }
};
// Parses "HOST:PORT" (IPv4 address or host name); `what` names the flag in the error.
HostPort parse_host_port(const std::string& text, const std::string& what);

// An owned socket descriptor, closed when destroyed.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& other) noexcept : fd_(other.release()) {}
  Socket& operator=(Socket&& other) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() { close(); }

  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release();
  void close();

 private:
  int fd_ = -1;
};

// A listening socket on every IPv4 interface at `port` (0: any free port); `what` names it in the error.
Socket listen_tcp(int port, const std::string& what);
int local_port(const Socket& socket);
// This end's IPv4 address of a connected socket: the interface that reaches the peer.
std::string local_ip(const Socket& socket);
// Connects to `to`, retrying while it refuses or is unreachable; an invalid Socket once the deadline passes, with
// the last failure in *last_error.
Socket connect_tcp(const HostPort& to, const Deadline& deadline, std::string* last_error);
// Low latency for the small messages of collectives and the store (no Nagle delay).
void set_no_delay(const Socket& socket);
void set_nonblocking(const Socket& socket);

enum class IoStatus { kDone, kClosed, kTimedOut };
// Writes or reads exactly `bytes` on a blocking or nonblocking socket, waiting at most until the deadline.
IoStatus send_exact(int fd, const void* data, size_t bytes, const Deadline& deadline);
IoStatus recv_exact(int fd, void* data, size_t bytes, const Deadline& deadline);

}  // namespace narwhal
