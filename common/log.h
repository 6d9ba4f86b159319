// Leveled logging to stderr: one line per event, as text or as JSON lines
// (--log-format, docs/LOGGING.md). Abseil 20220623 has no absl/log, and we
// need little.
//
//   LogInfo("queue \"%s\" created", name);            // printf-style
//   LogEvent(LogLevel::kWarning, "lease expired",    // fixed message + ids
//            {{"task", id}, {"queue", queue}, {"worker", worker}});
//
// Every line carries the time, the program, the level and the component:
// the call site's source file without its extension ("master/work_stream"),
// taken from the call site (LogSite), so call sites need not name it.
//   text: 2026-12-05T10:00:00.123Z taskq-master WARN master/work_stream: lease expired task=12 queue="q"
//   json: {"ts":"2026-12-05T10:00:00.123Z","level":"warn","component":"master/work_stream",
//          "program":"taskq-master","msg":"lease expired","task":12,"queue":"q"}
// Control characters in a text line are escaped (\x0a), so client-supplied
// text cannot start a forged line; JSON lines are valid JSON (invalid UTF-8
// becomes U+FFFD).
//
// Repeats are rate-limited per call site (common/log_rate_limit.h): beyond
// the limit a site's lines are dropped and later summarised in one line
// ("N similar lines suppressed"), so a hostile client cannot flood the log.
//
// Never pass a credential to these functions: tokens are secrets.
// Thread-safety: safe from any thread; each line is written with one
// write(). InitLogging and the setters are meant for main() before threads
// start, but are safe at any time.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace taskq {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class LogFormat { kText, kJson };

// "debug", "info", "warning", "error" / "text", "json"; false otherwise.
bool ParseLogLevel(absl::string_view text, LogLevel* level);
bool ParseLogFormat(absl::string_view text, LogFormat* format);

// At most `max_lines` lines per call site per `interval`; 0 = no limit.
struct LogRateLimit {
  int max_lines = 50;
  absl::Duration interval = absl::Seconds(10);
};

// Sets the program name shown on each line, the lowest level printed and
// the format. Also writes the summaries still owed at exit (atexit).
void InitLogging(absl::string_view program, LogLevel min_level = LogLevel::kInfo,
                 LogFormat format = LogFormat::kText);
void SetLogLevel(LogLevel level);
void SetLogFormat(LogFormat format);
LogFormat GetLogFormat();
void SetLogRateLimit(LogRateLimit limit);
bool LogEnabled(LogLevel level);
// Writes the summary lines of every call site with suppressed lines now.
void FlushLogSummaries();

// Where a log call is in the source. std::source_location would do, but
// clang 14 (the clang-tsa build) has no <source_location>; GCC's and
// clang's __builtin_FILE/__builtin_LINE as default arguments give the
// caller's place, also through a default argument of a default argument.
struct LogSite {
  const char* file;
  int line;
  // If set, the component instead of LogComponent(file) (lines of a
  // library's source, e.g. gRPC's: common/grpc_log.h).
  const char* component = nullptr;
  static constexpr LogSite Here(const char* file = __builtin_FILE(),
                                int line = __builtin_LINE()) {
    return {file, line};
  }
};

// A named value on a log line: the ids of what the line is about (task,
// queue, worker, peer, ...). Integers are JSON numbers; the rest strings.
// Keys are code constants; a key that clashes with ts, level, component,
// program or msg gets an "f_" prefix.
class LogField {
 public:
  LogField(absl::string_view key, absl::string_view value) : key_(key), value_(value) {}
  LogField(absl::string_view key, const std::string& value) : key_(key), value_(value) {}
  LogField(absl::string_view key, const char* value) : key_(key), value_(value) {}
  template <typename T,
            std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  LogField(absl::string_view key, T value)
      : key_(key), number_(absl::StrCat(value)), value_(number_), is_number_(true) {}
  LogField(const LogField&) = delete;
  LogField& operator=(const LogField&) = delete;

  absl::string_view key() const { return key_; }
  absl::string_view value() const { return value_; }
  bool is_number() const { return is_number_; }

 private:
  absl::string_view key_;
  std::string number_;  // storage for a number's digits
  absl::string_view value_;
  bool is_number_ = false;
};

// Writes one line (if `level` is enabled and the call site is not over its
// rate limit).
void LogEvent(LogLevel level, absl::string_view message,
              std::initializer_list<LogField> fields = {},
              LogSite where = LogSite::Here());
// The same without fields (kept for callers that built the text already).
void LogLine(LogLevel level, absl::string_view message,
             LogSite where = LogSite::Here());

// LogInfo(fmt, args...) and its siblings are class templates used like
// functions: a constructor can take a defaulted LogSite after
// the arguments, which a variadic function template cannot (its pack would
// not be deduced); the deduction guides below give the arguments' types.
#define TASKQ_LOG_FUNCTION(Name, level)                                                  \
  template <typename... Args>                                                            \
  struct Name {                                                                          \
    Name(const absl::FormatSpec<Args...>& fmt, const Args&... args,                      \
         LogSite where = LogSite::Here()) {                                              \
      if (LogEnabled(level)) LogEvent(level, absl::StrFormat(fmt, args...), {}, where);  \
    }                                                                                    \
  };                                                                                     \
  template <typename... Args>                                                            \
  Name(const char*, const Args&...) -> Name<Args...>;
TASKQ_LOG_FUNCTION(LogDebug, LogLevel::kDebug)
TASKQ_LOG_FUNCTION(LogInfo, LogLevel::kInfo)
TASKQ_LOG_FUNCTION(LogWarning, LogLevel::kWarning)
TASKQ_LOG_FUNCTION(LogError, LogLevel::kError)
#undef TASKQ_LOG_FUNCTION

// The component a source file's lines carry: its path from the repository's
// top directory (master/, worker/, common/, client/, bench/, tests/) without
// the extension, e.g. "/x/y/master/work_stream.cc" -> "master/work_stream";
// else the file's base name.
std::string LogComponent(absl::string_view file);

}  // namespace taskq
