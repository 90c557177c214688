// ProgressBar: "Loading weights [##########..........] 12/27 (1.4 s)".
#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

#include "core/error.h"
#include "core/logging.h"

namespace narwhal {

ProgressBar::ProgressBar(std::string label, int64_t total)
    : label_(std::move(label)), total_(total > 0 ? total : 1), tty_(isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()) {
  draw();
}

void ProgressBar::advance(int64_t steps) {
  std::lock_guard<std::mutex> lock(mutex_);
  done_ = std::min(total_, done_ + steps);
  draw();
}

void ProgressBar::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return;
  done_ = total_;
  draw();
  if (tty_) std::fputc('\n', stderr);
  finished_ = true;
}

void ProgressBar::draw() {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int width = 30, filled = static_cast<int>(width * done_ / total_);
  if (tty_) {
    std::string bar(filled, '#');
    bar.append(width - filled, '.');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld (%.1f s)", label_.c_str(), bar.c_str(), static_cast<long long>(done_),
                 static_cast<long long>(total_), seconds);
    std::fflush(stderr);
    return;
  }
  // Not a terminal (logs, CI): one line per quarter.
  int quarter = static_cast<int>(4 * done_ / total_);
  if (quarter == last_logged_quarter_) return;
  last_logged_quarter_ = quarter;
  NW_LOG(Info) << label_ << ": " << done_ << "/" << total_ << cat(" (", static_cast<int>(seconds * 10) / 10.0, " s)");
}

}  // namespace narwhal
