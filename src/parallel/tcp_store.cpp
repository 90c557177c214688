// TcpStore: a poll()-driven server thread holding the keys, and a client whose requests are framed string lists.
#include "parallel/tcp_store.h"

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "core/error.h"

namespace narwhal {

namespace {

// Wire format of requests and replies: u32 payload bytes, then u32 count and count x (u32 length, bytes).
// Requests: {"hello", id} {"set", k, v} {"get", k} {"add", k, delta} {"missing", k...} {"lost"} {"bye"};
// replies start with "ok" or "missing".
constexpr uint32_t kMaxFrameBytes = 64u << 20;

void put_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }

std::string encode(const std::vector<std::string>& parts) {
  std::string payload;
  put_u32(payload, static_cast<uint32_t>(parts.size()));
  for (const std::string& p : parts) {
    put_u32(payload, static_cast<uint32_t>(p.size()));
    payload += p;
  }
  std::string frame;
  put_u32(frame, static_cast<uint32_t>(payload.size()));
  return frame + payload;
}

// Decodes one payload; false when it is malformed.
bool decode(const std::string& payload, std::vector<std::string>* parts) {
  size_t at = 0;
  auto u32 = [&](uint32_t* v) {
    if (payload.size() - at < 4) return false;
    std::memcpy(v, payload.data() + at, 4);
    at += 4;
    return true;
  };
  uint32_t count = 0;
  if (!u32(&count)) return false;
  parts->clear();
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t len = 0;
    if (!u32(&len) || payload.size() - at < len) return false;
    parts->push_back(payload.substr(at, len));
    at += len;
  }
  return at == payload.size();
}

}  // namespace

class TcpStore::Server {
 public:
  Server(const HostPort& where, const std::string& addr) : listener_(listen_tcp(where.port, "--dist-init-addr " + addr)) {
    thread_ = std::thread([this] { loop(); });
  }
  ~Server() {
    stop_ = true;
    thread_.join();
  }
  // Waits, at most timeout_s, until every client has disconnected.
  void drain(double timeout_s) {
    const Deadline deadline(timeout_s);
    while (connected_ > 0 && !deadline.passed()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }

 private:
  struct Client {
    Socket socket;
    int id = -1;
    bool said_goodbye = false;
    bool closed = false;
    std::string inbox;
  };

  void loop() {
    while (!stop_) {
      std::vector<pollfd> fds{{listener_.fd(), POLLIN, 0}};
      for (const auto& c : clients_) fds.push_back({c->socket.fd(), POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
      for (size_t i = 1; i < fds.size(); ++i)
        if (fds[i].revents) read_from(*clients_[i - 1]);
      if (fds[0].revents & POLLIN) accept_client();
      for (auto it = clients_.begin(); it != clients_.end();) {
        if (!(*it)->closed) {
          ++it;
          continue;
        }
        if ((*it)->id >= 0 && !(*it)->said_goodbye) lost_.insert((*it)->id);
        it = clients_.erase(it);
        --connected_;
      }
    }
  }

  void accept_client() {
    Socket s(::accept4(listener_.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!s.valid()) return;
    set_no_delay(s);
    auto client = std::make_unique<Client>();
    client->socket = std::move(s);
    clients_.push_back(std::move(client));
    ++connected_;
  }

  void read_from(Client& c) {
    char buf[65536];
    const ssize_t n = ::recv(c.socket.fd(), buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) {
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) c.closed = true;
      return;
    }
    c.inbox.append(buf, static_cast<size_t>(n));
    while (c.inbox.size() >= 4 && !c.closed) {
      uint32_t len = 0;
      std::memcpy(&len, c.inbox.data(), 4);
      std::vector<std::string> request;
      if (len > kMaxFrameBytes) {
        c.closed = true;  // not a TcpStore client
        return;
      }
      if (c.inbox.size() < 4 + static_cast<size_t>(len)) return;
      const bool ok = decode(c.inbox.substr(4, len), &request) && !request.empty();
      c.inbox.erase(0, 4 + static_cast<size_t>(len));
      std::string reply;
      try {
        if (ok) reply = encode(handle(c, request));
      } catch (const std::exception&) {  // a number that does not parse
        reply = encode({"bad request"});
      }
      // Replies are small and clients read them at once, so a short bound only trips on a broken client.
      if (!ok || send_exact(c.socket.fd(), reply.data(), reply.size(), Deadline(10)) != IoStatus::kDone) c.closed = true;
    }
  }

  std::vector<std::string> handle(Client& c, const std::vector<std::string>& r) {
    const std::string& op = r[0];
    if (op == "hello" && r.size() == 2) {
      c.id = std::stoi(r[1]);
    } else if (op == "set" && r.size() == 3) {
      data_[r[1]] = r[2];
    } else if (op == "get" && r.size() == 2) {
      auto it = data_.find(r[1]);
      if (it == data_.end()) return {"missing"};
      return {"ok", it->second};
    } else if (op == "add" && r.size() == 3) {
      auto it = data_.find(r[1]);
      const int64_t sum = (it == data_.end() ? 0 : std::stoll(it->second)) + std::stoll(r[2]);
      data_[r[1]] = std::to_string(sum);
      return {"ok", data_[r[1]]};
    } else if (op == "missing") {
      std::vector<std::string> out{"ok"};
      for (size_t i = 1; i < r.size(); ++i)
        if (!data_.count(r[i])) out.push_back(r[i]);
      return out;
    } else if (op == "lost") {
      std::vector<std::string> out{"ok"};
      for (int id : lost_) out.push_back(std::to_string(id));
      return out;
    } else if (op == "bye") {
      c.said_goodbye = true;
    } else {
      return {"unknown request"};
    }
    return {"ok"};
  }

  Socket listener_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> connected_{0};
  std::vector<std::unique_ptr<Client>> clients_;
  std::map<std::string, std::string> data_;
  std::set<int> lost_;
};

TcpStore::TcpStore(const std::string& addr, int client_id, bool serve, double timeout_s,
                   const std::string& server_name)
    : address_(addr), server_name_(server_name), timeout_s_(timeout_s) {
  const HostPort where = parse_host_port(addr, "--dist-init-addr");
  if (serve) server_ = std::make_unique<Server>(where, addr);
  std::string why;
  conn_ = connect_tcp(where, Deadline(timeout_s), &why);
  NW_CHECK(conn_.valid(), "could not reach the rendezvous at ", addr, " within ", timeout_s, " s (", why, "): ",
           server_name, " serves it and has not started, or --dist-init-addr is wrong");
  request({"hello", std::to_string(client_id)});
}

TcpStore::~TcpStore() {
  try {
    request({"bye"});
  } catch (const Error&) {
    // The server is gone already; nothing is left to tell.
  }
  conn_.close();
  if (server_) server_->drain(timeout_s_);
}

std::vector<std::string> TcpStore::request(const std::vector<std::string>& message) {
  std::lock_guard<std::mutex> lock(mutex_);
  const Deadline deadline(timeout_s_);
  const std::string frame = encode(message);
  IoStatus status = send_exact(conn_.fd(), frame.data(), frame.size(), deadline);
  uint32_t len = 0;
  if (status == IoStatus::kDone) status = recv_exact(conn_.fd(), &len, 4, deadline);
  NW_CHECK(status != IoStatus::kDone || len <= kMaxFrameBytes, "the rendezvous at ", address_, " sent a malformed reply");
  std::string payload(status == IoStatus::kDone ? len : 0, '\0');
  if (status == IoStatus::kDone) status = recv_exact(conn_.fd(), payload.data(), len, deadline);
  NW_CHECK(status != IoStatus::kClosed, "lost the connection to the rendezvous at ", address_, ": ", server_name_,
           ", which serves it, exited or the network failed");
  NW_CHECK(status != IoStatus::kTimedOut, "the rendezvous at ", address_, " did not answer within ", timeout_s_, " s");
  std::vector<std::string> reply;
  NW_CHECK(decode(payload, &reply) && !reply.empty() && (reply[0] == "ok" || reply[0] == "missing"),
           "the rendezvous at ", address_, " refused '", message[0], "'");
  return reply;
}

void TcpStore::set(const std::string& key, const std::string& value) { request({"set", key, value}); }

std::optional<std::string> TcpStore::try_get(const std::string& key) {
  std::vector<std::string> reply = request({"get", key});
  if (reply[0] != "ok") return std::nullopt;
  return reply.at(1);
}

std::string TcpStore::get(const std::string& key) {
  NW_CHECK(wait({key}, timeout_s_).empty(), "'", key, "' did not appear at the rendezvous at ", address_, " within ",
           timeout_s_, " s");
  return *try_get(key);
}

int64_t TcpStore::add(const std::string& key, int64_t delta) {
  return std::stoll(request({"add", key, std::to_string(delta)}).at(1));
}

std::vector<std::string> TcpStore::wait(const std::vector<std::string>& keys, double timeout_s) {
  const Deadline deadline(timeout_s);
  std::vector<std::string> missing = keys;
  int pause_ms = 1;
  while (true) {
    std::vector<std::string> message{"missing"};
    message.insert(message.end(), missing.begin(), missing.end());
    std::vector<std::string> reply = request(message);
    missing.assign(reply.begin() + 1, reply.end());
    if (missing.empty() || deadline.passed()) return missing;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(pause_ms, deadline.slice_ms(pause_ms))));
    pause_ms = std::min(pause_ms * 2, 50);
  }
}

std::vector<int> TcpStore::lost_clients() {
  std::vector<std::string> reply = request({"lost"});
  std::vector<int> ids;
  for (size_t i = 1; i < reply.size(); ++i) ids.push_back(std::stoi(reply[i]));
  return ids;
}

}  // namespace narwhal
