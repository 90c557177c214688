// A progress bar on stderr for long loads: redrawn in place on a terminal, a few log lines otherwise. Thread-safe,
// so that the ranks of a tensor-parallel load, each on its own thread, advance one bar.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace narwhal {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total);
  void advance(int64_t steps = 1);
  // Prints the final state (and a newline on a terminal).
  void finish();

 private:
  void draw();
  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  int last_logged_quarter_ = -1;
  bool tty_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::mutex mutex_;
};

}  // namespace narwhal
