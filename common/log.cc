#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace taskq {
namespace {
std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};
// Written once by InitLogging before threads start.
std::string* g_program = new std::string("taskq");

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARN";
    case LogLevel::kError: return "ERROR";
  }
  return "?";
}
}  // namespace

void InitLogging(absl::string_view program, LogLevel min_level) {
  *g_program = std::string(program);
  SetLogLevel(min_level);
}

void SetLogLevel(LogLevel level) { g_min_level = static_cast<int>(level); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_min_level; }

void LogLine(LogLevel level, absl::string_view message) {
  std::string line = absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
      " ", *g_program, " ", LevelName(level), " ", message, "\n");
  // One write() per line keeps lines from interleaving between threads.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace taskq
