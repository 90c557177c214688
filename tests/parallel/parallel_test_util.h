// Helpers of the parallel tests: flags for a world, a free local port, and child processes (of this test binary, or of any program:
// the multi-node tests run each node as one), with their exit status, timing and output.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "parallel/parallel_config.h"
#include "parallel/socket.h"

extern char** environ;

namespace narwhal::testing {

// One node's flags for TP `tp`, with `dp` DP-attention groups and EP `ep`.
inline ParallelFlags parallel_flags(int tp, int dp = 1, int ep = 1, double timeout_s = 60) {
  ParallelFlags flags;
  flags.tp_size = tp;
  flags.dp_size = dp;
  flags.enable_dp_attention = dp > 1;
  flags.ep_size = ep;
  flags.dist_timeout_s = timeout_s;
  return flags;
}

// A port nothing listens on right now (the kernel's pick), for a test's rendezvous.
inline int free_port() {
  Socket s = listen_tcp(0, "a free port");
  return local_port(s);
}

// A child process: its stdout and stderr go to `log`.
struct Child {
  pid_t pid = -1;
  std::string log;  // its stdout and stderr
  int exit_code = -1;  // -1 while running or when killed
  double seconds = 0;  // from spawn to exit

  std::string output() const {
    std::ifstream in(log);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
};

// Runs `args` (args[0] the program's path) with this process's environment plus `env`.
inline Child spawn_process(std::vector<std::string> args, const std::vector<std::string>& env, const std::string& log) {
  std::vector<std::string> vars = env;
  for (char** e = environ; *e; ++e) vars.push_back(*e);
  std::vector<char*> argv, envp;
  for (std::string& a : args) argv.push_back(a.data());
  for (std::string& v : vars) envp.push_back(v.data());
  argv.push_back(nullptr);
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  Child child;
  child.log = log;
  const int rc = ::posix_spawn(&child.pid, args[0].c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  NW_CHECK(rc == 0, "posix_spawn failed: ", rc);
  return child;
}

// A child running this test binary's ParallelChild.Run with extra environment variables.
inline Child spawn_child(const std::vector<std::string>& env, const std::string& log) {
  char self[4096] = {};
  NW_CHECK(::readlink("/proc/self/exe", self, sizeof self - 1) > 0, "cannot find this test binary");
  return spawn_process({self, "--gtest_filter=ParallelChild.Run"}, env, log);
}

// Waits for every child, killing those still running after limit_s (their exit_code stays -1).
inline void wait_children(std::vector<Child>& children, double limit_s) {
  const auto start = std::chrono::steady_clock::now();
  size_t done = 0;
  while (done < children.size()) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (Child& c : children) {
      if (c.pid < 0) continue;
      int status = 0;
      if (elapsed > limit_s) {
        ::kill(c.pid, SIGKILL);
        ::waitpid(c.pid, &status, 0);
      } else if (::waitpid(c.pid, &status, WNOHANG) != c.pid) {
        continue;
      } else {
        c.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      c.seconds = elapsed;
      c.pid = -1;
      ++done;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace narwhal::testing
