// ServeProcess: fork + exec of /proc/self/exe, the listening URL read from the child's stdout.
#include "cli/bench_serve_process.h"

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>

#include "core/error.h"

namespace narwhal {

namespace {

std::string exit_text(int status) {
  if (WIFEXITED(status)) return cat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return cat("was killed by signal ", WTERMSIG(status));
  return "stopped";
}

}  // namespace

ServeProcess::ServeProcess(const std::vector<std::string>& serve_args) {
  std::vector<std::string> args = {"narwhal", "serve"};
  args.insert(args.end(), serve_args.begin(), serve_args.end());
  args.insert(args.end(), {"--port", "0"});  // the last --port wins: the server picks a free one and says which
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int pipe_fds[2];
  NW_CHECK(pipe(pipe_fds) == 0, "cannot create a pipe for narwhal serve: ", std::strerror(errno));
  const pid_t parent = getpid();
  pid_ = fork();
  NW_CHECK(pid_ >= 0, "cannot fork narwhal serve: ", std::strerror(errno));
  if (pid_ == 0) {
    // The server must not outlive the benchmark, even when the benchmark is killed.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    dup2(pipe_fds[1], STDOUT_FILENO);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    execv("/proc/self/exe", argv.data());
    std::fprintf(stderr, "cannot run narwhal serve: %s\n", std::strerror(errno));
    _exit(127);
  }
  close(pipe_fds[1]);
  FILE* out = fdopen(pipe_fds[0], "r");
  char line[4096];
  const std::string marker = "listening on ";
  while (base_url_.empty() && out != nullptr && std::fgets(line, sizeof line, out) != nullptr) {
    const std::string text = line;
    const size_t at = text.find(marker);
    if (at == std::string::npos) continue;
    const std::string rest = text.substr(at + marker.size());
    base_url_ = rest.substr(0, rest.find_first_of(" \r\n"));
  }
  // Closed from here on: the server writes nothing more to stdout, and ignores SIGPIPE if it did.
  if (out != nullptr) std::fclose(out);
  if (base_url_.empty()) {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    throw Error(cat("narwhal serve ", exit_text(status), " before listening (its messages are above)"));
  }
}

ServeProcess::~ServeProcess() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  int status = 0;
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace narwhal
