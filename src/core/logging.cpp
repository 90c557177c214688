// Leveled logging: one line per message, "[2026-11-23 09:30:01 INFO] text", written atomically to stderr.
#include "core/logging.h"

#include <chrono>
#include <cstdio>
#include <ctime>

#include "core/error.h"

namespace narwhal {

namespace {
LogLevel g_level = LogLevel::kInfo;
const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARNING";
    case LogLevel::kError: return "ERROR";
  }
  return "?";
}
}  // namespace

void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

LogLevel parse_log_level(const std::string& name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warning") return LogLevel::kWarning;
  if (name == "error") return LogLevel::kError;
  throw Error(cat("unknown log level '", name, "' (expected debug, info, warning or error)"));
}

LogLine::LogLine(LogLevel level, const char* /*file*/, int /*line*/) : level_(level) {}

LogLine::~LogLine() {
  std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  localtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
  std::string line = cat("[", stamp, " ", level_name(level_), "] ", stream_.str(), "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace narwhal
