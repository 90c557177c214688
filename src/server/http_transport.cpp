// Transport: the registry of open sessions, and request leases on the body budget.
#include "server/http_transport.h"

#include "server/http_session.h"

namespace narwhal::server {

void Transport::add(HttpSession* session) {
  std::lock_guard lock(mutex_);
  sessions_.insert(session);
}

void Transport::remove(HttpSession* session) {
  std::lock_guard lock(mutex_);
  sessions_.erase(session);
}

// Sessions are looked at by pointer and only the one chosen is locked: dropping a reference under the mutex could
// destroy a session, whose destructor takes the mutex. One being destroyed (not lockable) is not chosen.
std::shared_ptr<HttpSession> Transport::longest_idle() {
  std::lock_guard lock(mutex_);
  HttpSession* oldest = nullptr;
  int64_t oldest_since = 0;
  for (HttpSession* session : sessions_) {
    const int64_t since = session->idle_since_ns();
    if (since != 0 && (!oldest || since < oldest_since)) {
      oldest = session;
      oldest_since = since;
    }
  }
  return oldest ? oldest->weak_from_this().lock() : nullptr;
}

RequestLease::RequestLease(std::shared_ptr<Transport> transport) : transport_(std::move(transport)) {
  ++transport_->counters.requests_in_progress;
}

RequestLease& RequestLease::operator=(RequestLease&& other) noexcept {
  if (this != &other) {
    release();
    transport_ = std::move(other.transport_);
    bytes_ = other.bytes_;
    other.bytes_ = 0;
  }
  return *this;
}

bool RequestLease::grow(int64_t bytes) {
  std::atomic<int64_t>& held = transport_->body_bytes;
  int64_t current = held.load();
  do {
    if (current + bytes > transport_->config.max_body_bytes_in_flight) return false;
  } while (!held.compare_exchange_weak(current, current + bytes));
  bytes_ += bytes;
  return true;
}

void RequestLease::release() {
  if (!transport_) return;
  transport_->body_bytes -= bytes_;
  bytes_ = 0;
  --transport_->counters.requests_in_progress;
  transport_.reset();
}

}  // namespace narwhal::server
