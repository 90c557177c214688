// Error type for expected failures (bad checkpoint, bad config, bad input) and the NW_CHECK macro.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace narwhal {

// Concatenates any streamable values into one string: cat("tensor ", name, " has ", n, " dims").
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// An expected failure whose message is meant for the user: it names the file, field or argument at fault.
// Thrown where the failure is found, caught at the boundary (CLI command, HTTP handler) and reported there.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace narwhal

#define NW_CHECK(cond, ...)                                        \
  do {                                                             \
    if (!(cond)) throw ::narwhal::Error(::narwhal::cat(__VA_ARGS__)); \
  } while (0)
