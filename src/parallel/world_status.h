// WorldStatus: the first failure among this process's ranks, which every wait checks, so one failure (a rank
// that threw, a peer that vanished) ends every rank's waits with its message instead of a hang.
#pragma once

#include <atomic>
#include <mutex>
#include <string>

#include "core/error.h"

namespace narwhal {

class WorldStatus {
 public:
  // Records the failure; only the first one is kept (later ones are its consequences).
  void fail(const std::string& message) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (failed_) return;
    message_ = message;
    failed_ = true;
  }
  bool failed() const { return failed_; }
  std::string message() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return message_;
  }
  // Throws "<where>: gave up because <first failure>" once the world has failed.
  void check(const std::string& where) const {
    if (failed_) throw Error(cat(where, ": gave up because ", message()));
  }

 private:
  mutable std::mutex mutex_;
  std::atomic<bool> failed_{false};
  std::string message_;
};

}  // namespace narwhal
