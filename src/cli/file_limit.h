// Lifts the soft open-file limit to the hard one: every streaming connection (server or benchmark client) holds one.
#pragma once

#include <sys/resource.h>

namespace narwhal {

// The soft limit is often 1024, fewer than a benchmark at --max-concurrency 1024 or a loaded server needs.
inline void raise_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace narwhal
