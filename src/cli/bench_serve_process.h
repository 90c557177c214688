// A `narwhal serve` child process, for benchmarks that launch their own server (bench-one-batch-server).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace narwhal {

class ServeProcess {
 public:
  // Runs this binary as `narwhal serve ARGS --port 0` (a free port) and returns once it listens. Throws Error
  // when it exits first; its own messages (on the inherited stderr) say why.
  explicit ServeProcess(const std::vector<std::string>& serve_args);
  // SIGTERM, then SIGKILL if it has not exited within 30 s.
  ~ServeProcess();
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  const std::string& base_url() const { return base_url_; }

 private:
  pid_t pid_ = -1;
  std::string base_url_;
};

}  // namespace narwhal
