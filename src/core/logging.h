// Leveled, timestamped logging to stderr: NW_LOG(INFO) << "loaded " << n << " tensors";
#pragma once

#include <sstream>

namespace narwhal {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
// Parses "debug", "info", "warning", "error" (SGLang's --log-level values); throws Error otherwise.
LogLevel parse_log_level(const std::string& name);

// Collects one line and writes it, with time and level, when destroyed.
class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();
  template <typename T>
  LogLine& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

}  // namespace narwhal

#define NW_LOG(level)                                                      \
  if (::narwhal::LogLevel::k##level < ::narwhal::log_level()) {            \
  } else                                                                   \
    ::narwhal::LogLine(::narwhal::LogLevel::k##level, __FILE__, __LINE__)
