// TcpStore: the key-value rendezvous of a world that spans processes. Node 0 serves it at --dist-init-addr; every
// process (node 0's too) is a client. It carries the start-up join, the ncclUniqueId and the host backend's peer
// addresses, and it notices clients whose connection closes without a goodbye: processes that died.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "parallel/socket.h"

namespace narwhal {

class TcpStore {
 public:
  // Connects as client `client_id` (the node rank) to `addr` (HOST:PORT), retrying until timeout_s; with `serve`
  // (node 0) it first listens there. Every request is bounded by timeout_s too. `server_name` says who serves it
  // in errors ("rank 0", "ranks 0-7 (node 0)").
  TcpStore(const std::string& addr, int client_id, bool serve, double timeout_s, const std::string& server_name);
  // Says goodbye (so this client does not count as lost). The server then waits, at most timeout_s, until the
  // other clients have left too, so that none of them loses the store while it finishes.
  ~TcpStore();
  TcpStore(const TcpStore&) = delete;
  TcpStore& operator=(const TcpStore&) = delete;

  void set(const std::string& key, const std::string& value);
  std::optional<std::string> try_get(const std::string& key);
  // Waits, at most timeout_s, for the key; throws an Error naming it.
  std::string get(const std::string& key);
  // Adds `delta` to the integer at `key` (0 when unset) and returns the sum.
  int64_t add(const std::string& key, int64_t delta);
  // Waits until every key is set or timeout_s passes; returns the keys still missing then (empty: all set).
  std::vector<std::string> wait(const std::vector<std::string>& keys, double timeout_s);
  // Client ids whose connection closed without a goodbye, ascending.
  std::vector<int> lost_clients();

  const std::string& address() const { return address_; }
  // This process's IPv4 address on the interface that reaches the store: where other nodes can reach it too.
  std::string local_ip() const { return narwhal::local_ip(conn_); }

 private:
  class Server;
  std::vector<std::string> request(const std::vector<std::string>& message);

  std::string address_;
  std::string server_name_;
  double timeout_s_;
  std::unique_ptr<Server> server_;
  std::mutex mutex_;  // one request at a time on conn_ (the watchdog thread shares it)
  Socket conn_;
};

}  // namespace narwhal
