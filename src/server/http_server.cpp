// HttpServer: the listening socket, the accept loop with its connection cap, the I/O threads and the workers.
#include "server/http_server.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include "core/error.h"
#include "core/logging.h"
#include "server/http_session.h"

namespace narwhal::server {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct HttpServer::Impl {
  Impl(const HttpServerConfig& config, HeadCheck admit, RequestHandler handler)
      : workers(static_cast<size_t>(config.threads)),
        transport(std::make_shared<Transport>(config, std::move(admit), std::move(handler), workers.get_executor())),
        ioc(config.threads),
        acceptor(ioc),
        retry_timer(ioc) {}

  void accept() {
    acceptor.async_accept(asio::make_strand(ioc), [this](boost::system::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      if (ec) {
        // Out of file descriptors and the like: wait a little instead of spinning, then accept again.
        NW_LOG(Warning) << "accept failed: " << ec.message();
        retry_timer.expires_after(std::chrono::milliseconds(100));
        retry_timer.async_wait([this](boost::system::error_code) { accept(); });
        return;
      }
      boost::system::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);  // SSE chunks are small and latency matters
      auto session = std::make_shared<HttpSession>(std::move(socket), transport);  // counted from here
      if (transport->counters.open_connections > transport->config.max_connections) {
        // Idle keep-alive connections are the cheapest to give up (a client reconnects); silent ones would
        // otherwise hold every slot.
        if (auto idle = transport->longest_idle()) {
          idle->close_if_idle();
        } else {
          session->refuse_connection();
          return accept();
        }
      }
      session->run();
      accept();
    });
  }

  asio::thread_pool workers;
  std::shared_ptr<Transport> transport;
  asio::io_context ioc;
  tcp::acceptor acceptor;
  asio::steady_timer retry_timer;
};

HttpServer::HttpServer(const HttpServerConfig& config, HeadCheck admit, RequestHandler handler)
    : impl_(std::make_unique<Impl>(config, std::move(admit), std::move(handler))) {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(config.host, ec);
  NW_CHECK(!ec, "--host ", config.host, ": not an IP address (", ec.message(), ")");
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(config.port));
  tcp::acceptor& acceptor = impl_->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  NW_CHECK(!ec, "cannot open a socket for ", config.host, ":", config.port, ": ", ec.message());
  acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  acceptor.bind(endpoint, ec);
  NW_CHECK(!ec, "cannot listen on ", config.host, ":", config.port, ": ", ec.message());
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  NW_CHECK(!ec, "cannot listen on ", config.host, ":", config.port, ": ", ec.message());
  port_ = acceptor.local_endpoint().port();
}

HttpServer::~HttpServer() { stop(); }

const TransportCounters& HttpServer::counters() const { return impl_->transport->counters; }

void HttpServer::start() {
  impl_->accept();
  for (int i = 0; i < impl_->transport->config.threads; ++i) threads_.emplace_back([this] { impl_->ioc.run(); });
}

void HttpServer::after(double seconds, std::function<void()> callback) {
  auto timer = std::make_shared<asio::steady_timer>(impl_->ioc, std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                                    std::chrono::duration<double>(seconds)));
  timer->async_wait([timer, callback = std::move(callback)](boost::system::error_code ec) {
    if (!ec) callback();
  });
}

void HttpServer::stop_accepting() {
  asio::post(impl_->ioc, [impl = impl_.get()] {
    boost::system::error_code ignored;
    impl->acceptor.close(ignored);
    impl->retry_timer.cancel();
  });
}

void HttpServer::stop() {
  impl_->ioc.stop();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  impl_->workers.stop();  // requests still queued for a worker are dropped with their connections
  impl_->workers.join();
}

}  // namespace narwhal::server
