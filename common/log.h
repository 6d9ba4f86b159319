// Minimal leveled logging to stderr: one line per call, timestamped, with
// the program name. Abseil 20220623 has no absl/log, and we need little.
//
// Never pass a credential to these functions: tokens are secrets.
// Thread-safety: safe from any thread; each line is written with one write().
#pragma once

#include "absl/strings/string_view.h"

#include "absl/strings/str_format.h"

namespace taskq {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Sets the program name shown on each line and the lowest level printed.
void InitLogging(absl::string_view program, LogLevel min_level = LogLevel::kInfo);
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, absl::string_view message);

template <typename... Args>
void LogInfo(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  if (LogEnabled(LogLevel::kInfo)) LogLine(LogLevel::kInfo, absl::StrFormat(fmt, args...));
}
template <typename... Args>
void LogWarning(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  if (LogEnabled(LogLevel::kWarning)) LogLine(LogLevel::kWarning, absl::StrFormat(fmt, args...));
}
template <typename... Args>
void LogError(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  if (LogEnabled(LogLevel::kError)) LogLine(LogLevel::kError, absl::StrFormat(fmt, args...));
}
template <typename... Args>
void LogDebug(const absl::FormatSpec<Args...>& fmt, const Args&... args) {
  if (LogEnabled(LogLevel::kDebug)) LogLine(LogLevel::kDebug, absl::StrFormat(fmt, args...));
}

}  // namespace taskq
