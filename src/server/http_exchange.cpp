// Exchange: response heads, chunked (HTTP/1.1) or unframed (HTTP/1.0) streams, formatted on the calling thread.
#include "server/http_exchange.h"

#include <boost/asio/post.hpp>
#include <boost/beast/http/status.hpp>
#include <cstdio>

#include "server/http_session.h"

namespace narwhal::server {

namespace {

std::string hex(size_t n) {
  char buf[32];
  const int len = std::snprintf(buf, sizeof buf, "%zx", n);
  return std::string(buf, static_cast<size_t>(len));
}

}  // namespace

std::string status_line(int status) {
  const auto reason = boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(status));
  return "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason.data(), reason.size()) + "\r\n";
}

void Exchange::respond(int status, const std::string& content_type, std::string body) {
  std::string head = status_line(status) + "Content-Type: " + content_type +
                     "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + connection_ + "\r\n";
  send(head + body, true);
}

void Exchange::start_stream(const std::string& content_type) {
  // HTTP/1.0 has no chunked encoding: the response ends where the connection does (the session never keeps an
  // HTTP/1.0 connection alive).
  const char* framing = http10_ ? "" : "Transfer-Encoding: chunked\r\n";
  send(status_line(200) + "Content-Type: " + content_type + "\r\nCache-Control: no-cache\r\n" + framing + connection_ +
           "\r\n",
       false);
}

void Exchange::write(std::string data) {
  if (data.empty()) return;  // an empty chunk would end the stream
  send(http10_ ? std::move(data) : hex(data.size()) + "\r\n" + data + "\r\n", false);
}

void Exchange::end_stream() { send(http10_ ? "" : "0\r\n\r\n", true); }

void Exchange::on_disconnect(std::function<void()> callback) {
  boost::asio::post(session_->strand(), [session = session_, id = id_, cb = std::move(callback)]() mutable {
    session->set_disconnect_callback(id, std::move(cb));
  });
}

void Exchange::send(std::string bytes, bool ends) {
  boost::asio::post(session_->strand(), [session = session_, id = id_, bytes = std::move(bytes), ends]() mutable {
    session->send(id, std::move(bytes), ends);
  });
}

}  // namespace narwhal::server
