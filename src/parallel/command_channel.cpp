// CommandChannel: set-up through the store, length-framed messages, and receives that notice a closed, silent or
// failed world.
#include "parallel/command_channel.h"

#include <poll.h>
#include <sys/socket.h>

#include <cstdint>

#include "core/error.h"

namespace narwhal {

namespace {

constexpr const char* kAddressKey = "commands/address";
constexpr uint32_t kMagic = 0x6e77636du;  // "nwcm"

struct Hello {
  uint32_t magic = kMagic;
  int32_t node = 0;
};

}  // namespace

CommandChannel::CommandChannel(TcpStore& store, const ParallelConfig& config,
                               std::shared_ptr<const WorldStatus> status)
    : config_(config), status_(std::move(status)) {
  const Deadline deadline(config.timeout_s());
  const std::string where = "the command channel's set-up";
  if (config.node_rank() != 0) {
    const HostPort node0 = parse_host_port(store.get(kAddressKey), "node 0's command address");
    std::string why;
    Socket s = connect_tcp(node0, deadline, &why);
    NW_CHECK(s.valid(), where, ": cannot connect to ", config.describe_ranks(config.node_ranks(0)), " at ",
             node0.str(), ": ", why);
    const Hello hello{kMagic, config.node_rank()};
    NW_CHECK(send_exact(s.fd(), &hello, sizeof hello, deadline) == IoStatus::kDone, where, ": lost the connection to ",
             config.describe_ranks(config.node_ranks(0)));
    links_.push_back(std::move(s));
    return;
  }
  Socket listener = listen_tcp(0, "the command channel's port");
  store.set(kAddressKey, cat(store.local_ip(), ":", local_port(listener)));
  std::vector<Socket> by_node(config.nnodes());
  int missing = config.nnodes() - 1;
  while (missing > 0) {
    if (deadline.passed()) {
      std::vector<int> late;
      for (int node = 1; node < config.nnodes(); ++node)
        if (!by_node[node].valid())
          for (int r : config.node_ranks(node)) late.push_back(r);
      throw Error(cat(where, ": ", config.describe_ranks(late), " did not connect within ", config.timeout_s(), " s"));
    }
    pollfd p{listener.fd(), POLLIN, 0};
    if (::poll(&p, 1, deadline.slice_ms(100)) <= 0) continue;
    Socket s(::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    Hello hello;
    if (!s.valid() || recv_exact(s.fd(), &hello, sizeof hello, deadline) != IoStatus::kDone || hello.magic != kMagic)
      continue;  // not one of ours
    NW_CHECK(hello.node > 0 && hello.node < config.nnodes() && !by_node[hello.node].valid(), where,
             ": unexpected connection from node ", hello.node);
    set_no_delay(s);
    by_node[hello.node] = std::move(s);
    --missing;
  }
  for (int node = 1; node < config.nnodes(); ++node) links_.push_back(std::move(by_node[node]));
}

void CommandChannel::send(const std::string& message) {
  NW_CHECK(config_.node_rank() == 0, "only node 0 sends commands");
  const uint64_t bytes = message.size();
  const Deadline deadline(config_.timeout_s());
  for (size_t i = 0; i < links_.size(); ++i) {
    const int node = static_cast<int>(i) + 1;
    const IoStatus header = send_exact(links_[i].fd(), &bytes, sizeof bytes, deadline);
    const IoStatus body = header == IoStatus::kDone ? send_exact(links_[i].fd(), message.data(), bytes, deadline) : header;
    NW_CHECK(body != IoStatus::kClosed, "the command connection to ", config_.describe_ranks(config_.node_ranks(node)),
             " closed: its process exited or crashed");
    NW_CHECK(body == IoStatus::kDone, config_.describe_ranks(config_.node_ranks(node)), " took no command within ",
             config_.timeout_s(), " s");
  }
}

std::string CommandChannel::receive(double timeout_s) {
  NW_CHECK(config_.node_rank() != 0 && !links_.empty(), "only the nodes other than 0 receive commands");
  const int fd = links_[0].fd();
  const std::string node0 = config_.describe_ranks(config_.node_ranks(0));
  const Deadline deadline(timeout_s);
  // Short slices, so that a world failure (a lost node the watchdog saw) ends the wait promptly.
  for (;;) {
    status_->check("waiting for node 0's next command");
    NW_CHECK(!deadline.passed(), "no command from ", node0, " within ", timeout_s, " s: it is alive but silent");
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, deadline.slice_ms(100)) > 0) break;
  }
  const Deadline rest(config_.timeout_s());
  uint64_t bytes = 0;
  IoStatus got = recv_exact(fd, &bytes, sizeof bytes, rest);
  std::string message(got == IoStatus::kDone ? bytes : 0, '\0');
  if (got == IoStatus::kDone) got = recv_exact(fd, message.data(), bytes, rest);
  NW_CHECK(got != IoStatus::kClosed, "the command connection to ", node0,
           " closed: its process exited or crashed");
  NW_CHECK(got == IoStatus::kDone, "a command from ", node0, " stopped arriving for ", config_.timeout_s(), " s");
  return message;
}

}  // namespace narwhal
