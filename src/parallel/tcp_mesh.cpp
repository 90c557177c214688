// TcpMesh: set-up through the store, and the poll()-driven exchange that notices closed and silent peers.
#include "parallel/tcp_mesh.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "core/error.h"

namespace narwhal {

std::string MessageHeader::str() const {
  return cat(std::string(comm_name, strnlen(comm_name, sizeof comm_name)), " ", signature.str(), " #", seq);
}

namespace {

// The first bytes on a new link: who is calling whom.
struct Hello {
  uint32_t magic = MessageHeader::kMagic;
  int32_t from = 0;
  int32_t to = 0;
};

std::string mesh_key(int node) { return cat("mesh/node/", node); }

}  // namespace

TcpMesh::TcpMesh(TcpStore& store, const ParallelConfig& config) {
  const int node = config.node_rank();
  const std::string where = "host backend set-up";
  Socket listener = listen_tcp(0, "the host backend's peer port");
  store.set(mesh_key(node), cat(store.local_ip(), ":", local_port(listener)));
  std::vector<std::string> keys;
  for (int m = 0; m < config.nnodes(); ++m)
    if (m != node) keys.push_back(mesh_key(m));
  std::vector<int> late;
  for (const std::string& key : store.wait(keys, config.timeout_s()))
    for (int r : config.node_ranks(std::stoi(key.substr(key.rfind('/') + 1)))) late.push_back(r);
  NW_CHECK(late.empty(), where, ": ", config.describe_ranks(late), " did not post their addresses at ", store.address(),
           " within ", config.timeout_s(), " s");

  const Deadline deadline(config.timeout_s());
  std::map<int, HostPort> node_addr;
  int expected_accepts = 0;
  for (int a : config.local_ranks()) {
    for (int b = 0; b < config.world_size(); ++b) {
      const int peer_node = config.node_of(b);
      if (peer_node == node) continue;
      if (b > a) {
        ++expected_accepts;  // b calls a
        continue;
      }
      if (!node_addr.count(peer_node))
        node_addr[peer_node] = parse_host_port(store.get(mesh_key(peer_node)), "a peer address");
      std::string why;
      Socket s = connect_tcp(node_addr[peer_node], deadline, &why);
      NW_CHECK(s.valid(), where, ": rank ", a, " cannot connect to ", config.describe_ranks({b}), " at ",
               node_addr[peer_node].str(), ": ", why);
      const Hello hello{MessageHeader::kMagic, a, b};
      NW_CHECK(send_exact(s.fd(), &hello, sizeof hello, deadline) == IoStatus::kDone, where, ": rank ", a,
               " lost its new connection to ", config.describe_ranks({b}));
      links_[{a, b}] = std::move(s);
    }
  }
  while (expected_accepts > 0) {
    if (deadline.passed()) {
      std::vector<int> missing;
      for (int a : config.local_ranks())
        for (int b = a + 1; b < config.world_size(); ++b)
          if (config.node_of(b) != node && !links_.count({a, b})) missing.push_back(b);
      throw Error(cat(where, ": ", config.describe_ranks(missing), " did not connect within ", config.timeout_s(), " s"));
    }
    pollfd p{listener.fd(), POLLIN, 0};
    if (::poll(&p, 1, deadline.slice_ms(100)) <= 0) continue;
    Socket s(::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!s.valid()) continue;
    Hello hello;
    if (recv_exact(s.fd(), &hello, sizeof hello, deadline) != IoStatus::kDone || hello.magic != MessageHeader::kMagic)
      continue;  // not one of ours
    NW_CHECK(config.node_of(hello.to) == node && hello.from > hello.to && hello.from < config.world_size() &&
                 config.node_of(hello.from) != node && !links_.count({hello.to, hello.from}),
             where, ": unexpected connection from rank ", hello.from, " to rank ", hello.to);
    set_no_delay(s);
    links_[{hello.to, hello.from}] = std::move(s);
    --expected_accepts;
  }
}

int TcpMesh::fd(int rank, int peer) const {
  auto it = links_.find({rank, peer});
  NW_CHECK(it != links_.end(), "no host-backend connection from rank ", rank, " to rank ", peer);
  return it->second.fd();
}

namespace {

// Progress of one transfer: bytes of (header + payload) sent, of the peer's header and payload received.
struct Progress {
  size_t sent = 0;
  size_t header_got = 0;
  size_t body_got = 0;
  bool header_checked = false;
  MessageHeader theirs;
};

bool same_call(const MessageHeader& a, const MessageHeader& b) {
  return a.comm_id == b.comm_id && a.seq == b.seq && a.signature == b.signature;
}

}  // namespace

void exchange_remote(std::vector<RemoteTransfer>& transfers, const Deadline& deadline, const WorldStatus& status,
                     const std::string& where, const std::function<std::string(int)>& describe,
                     const std::function<std::string(int)>& why_closed) {
  constexpr size_t kHeader = sizeof(MessageHeader);
  std::vector<Progress> progress(transfers.size());
  auto send_done = [&](size_t i) { return progress[i].sent == kHeader + transfers[i].header.bytes; };
  auto recv_done = [&](size_t i) { return progress[i].header_checked && progress[i].body_got == transfers[i].recv_bytes; };
  auto closed = [&](size_t i) {
    return Error(cat(where, ": the connection to ", describe(transfers[i].peer), " closed: ", why_closed(transfers[i].peer)));
  };
  std::vector<pollfd> fds;
  std::vector<size_t> index;
  while (true) {
    fds.clear();
    index.clear();
    for (size_t i = 0; i < transfers.size(); ++i) {
      const short events = (send_done(i) ? 0 : POLLOUT) | (recv_done(i) ? 0 : POLLIN);
      if (events) {
        fds.push_back({transfers[i].fd, events, 0});
        index.push_back(i);
      }
    }
    if (fds.empty()) return;
    status.check(where);
    if (deadline.passed()) {
      std::vector<std::string> silent;
      for (size_t i : index) silent.push_back(describe(transfers[i].peer));
      std::string names;
      for (const std::string& s : silent) names += (names.empty() ? "" : ", ") + s;
      throw Error(cat(where, ": no answer from ", names, " within ", deadline.seconds(), " s"));
    }
    if (::poll(fds.data(), fds.size(), deadline.slice_ms(50)) <= 0) continue;
    for (size_t k = 0; k < fds.size(); ++k) {
      const size_t i = index[k];
      RemoteTransfer& t = transfers[i];
      Progress& p = progress[i];
      const short ev = fds[k].revents;
      if ((ev & POLLOUT) && !send_done(i)) {
        const bool in_header = p.sent < kHeader;
        const char* from = in_header ? reinterpret_cast<const char*>(&t.header) + p.sent
                                     : static_cast<const char*>(t.send) + (p.sent - kHeader);
        const size_t left = in_header ? kHeader - p.sent : kHeader + t.header.bytes - p.sent;
        const ssize_t n = ::send(t.fd, from, left, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) p.sent += static_cast<size_t>(n);
        else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) throw closed(i);
      }
      if ((ev & (POLLIN | POLLHUP | POLLERR)) && !recv_done(i)) {
        const bool in_header = p.header_got < kHeader;
        char* to = in_header ? reinterpret_cast<char*>(&p.theirs) + p.header_got
                             : static_cast<char*>(t.recv) + p.body_got;
        const size_t left = in_header ? kHeader - p.header_got : t.recv_bytes - p.body_got;
        const ssize_t n = ::recv(t.fd, to, left, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) throw closed(i);
        if (n > 0) (in_header ? p.header_got : p.body_got) += static_cast<size_t>(n);
        if (in_header && p.header_got == kHeader) {
          NW_CHECK(p.theirs.magic == MessageHeader::kMagic, where, ": ", describe(t.peer), " sent a garbled message");
          NW_CHECK(same_call(p.theirs, t.header), call_mismatch(where, describe(t.peer), p.theirs.str(), t.header.str()));
          NW_CHECK(p.theirs.bytes == t.recv_bytes, size_mismatch(where, describe(t.peer), p.theirs.bytes, t.recv_bytes));
          p.header_checked = true;
        }
      } else if ((ev & (POLLHUP | POLLERR)) && !send_done(i)) {
        throw closed(i);
      }
    }
  }
}

}  // namespace narwhal
