#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/json_quote.h"
#include "common/log_rate_limit.h"
#include "common/sync.h"

namespace taskq {
namespace {

std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> g_format{static_cast<int>(LogFormat::kText)};
// Written by InitLogging in main() before threads start.
std::string* g_program = new std::string("taskq");
// Replaced only by SetLogRateLimit (main() before threads start); never freed
// so that lines logged during exit still find it.
std::atomic<LogRateLimiter*> g_limiter{new LogRateLimiter(LogRateLimit().max_lines,
                                                          LogRateLimit().interval)};

// Level names by LogLevel: in text lines, and in JSON lines.
constexpr const char* kTextLevels[] = {"DEBUG", "INFO", "WARN", "ERROR"};
constexpr const char* kJsonLevels[] = {"debug", "info", "warn", "error"};
const char* TextLevel(int level) { return level >= 0 && level <= 3 ? kTextLevels[level] : "?"; }
const char* JsonLevel(int level) { return level >= 0 && level <= 3 ? kJsonLevels[level] : "?"; }

bool ReservedKey(absl::string_view key) {
  return key == "ts" || key == "level" || key == "component" || key == "program" ||
         key == "msg";
}

// Text lines: control characters as \xNN, so a line stays one line whatever
// a client put in a name.
void AppendEscapedText(std::string* out, absl::string_view text) {
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      absl::StrAppend(out, "\\x", absl::Hex(byte, absl::kZeroPad2));
    } else {
      out->push_back(c);
    }
  }
}

struct Field {
  absl::string_view key;
  absl::string_view value;
  bool is_number;
};

std::string FormatLine(int level, absl::string_view component, absl::string_view message,
                       const std::vector<Field>& fields) {
  const std::string ts =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  std::string line;
  if (static_cast<LogFormat>(g_format.load(std::memory_order_relaxed)) == LogFormat::kJson) {
    absl::StrAppend(&line, "{\"ts\":\"", ts, "\",\"level\":\"", JsonLevel(level),
                    "\",\"component\":", JsonQuote(component), ",\"program\":",
                    JsonQuote(*g_program), ",\"msg\":", JsonQuote(message));
    for (const Field& f : fields) {
      absl::StrAppend(&line, ",", JsonQuote(absl::StrCat(ReservedKey(f.key) ? "f_" : "", f.key)),
                      ":", f.is_number ? std::string(f.value) : JsonQuote(f.value));
    }
    line += "}\n";
    return line;
  }
  absl::StrAppend(&line, ts, " ", *g_program, " ", TextLevel(level), " ", component, ": ");
  AppendEscapedText(&line, message);
  for (const Field& f : fields) {
    absl::StrAppend(&line, " ");
    AppendEscapedText(&line, f.key);
    absl::StrAppend(&line, "=", f.is_number ? std::string(f.value) : JsonQuote(f.value));
  }
  line += "\n";
  return line;
}

void WriteLine(const std::string& line) {
  // One write() per line keeps lines from interleaving between threads.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

void WriteSummaries(const std::vector<LogRateLimiter::Summary>& due) {
  for (const LogRateLimiter::Summary& s : due) {
    const std::string component = LogComponent(s.file);
    const std::string message =
        absl::StrCat(s.suppressed, " similar lines suppressed in the last ",
                     absl::ToInt64Seconds(s.window) + 1, " s");
    const std::string count = absl::StrCat(s.suppressed);
    const std::string site = absl::StrCat(component, ":", s.line);
    WriteLine(FormatLine(s.level, component, message,
                         {{"suppressed", count, true}, {"site", site, false}}));
  }
}

void WriteEvent(LogLevel level, absl::string_view message, const std::vector<Field>& fields,
                const LogSite& where) {
  const int lvl = static_cast<int>(level);
  std::vector<LogRateLimiter::Summary> due;
  const bool admitted = g_limiter.load(std::memory_order_acquire)
                            ->Admit(where.file, where.line, lvl,
                                    absl::Now(), &due);
  WriteSummaries(due);
  if (admitted) {
    WriteLine(FormatLine(lvl, where.component ? where.component : LogComponent(where.file),
                         message, fields));
  }
}

}  // namespace

bool ParseLogLevel(absl::string_view text, LogLevel* level) {
  if (text == "debug") *level = LogLevel::kDebug;
  else if (text == "info") *level = LogLevel::kInfo;
  else if (text == "warning") *level = LogLevel::kWarning;
  else if (text == "error") *level = LogLevel::kError;
  else return false;
  return true;
}

bool ParseLogFormat(absl::string_view text, LogFormat* format) {
  if (text == "text") *format = LogFormat::kText;
  else if (text == "json") *format = LogFormat::kJson;
  else return false;
  return true;
}

void InitLogging(absl::string_view program, LogLevel min_level, LogFormat format) {
  *g_program = std::string(program);
  SetLogLevel(min_level);
  SetLogFormat(format);
  static const bool registered = [] {
    std::atexit(FlushLogSummaries);
    return true;
  }();
  (void)registered;
}

void SetLogLevel(LogLevel level) { g_min_level = static_cast<int>(level); }
void SetLogFormat(LogFormat format) { g_format = static_cast<int>(format); }
LogFormat GetLogFormat() { return static_cast<LogFormat>(g_format.load()); }

void SetLogRateLimit(LogRateLimit limit) {
  // The old limiter is kept (never freed): another thread may be using it.
  // Kept reachable, so that leak checkers do not report it.
  static Mutex retired_mu;
  static auto* retired = new std::vector<LogRateLimiter*>();
  LogRateLimiter* old = g_limiter.exchange(new LogRateLimiter(limit.max_lines, limit.interval),
                                           std::memory_order_acq_rel);
  MutexLock lock(&retired_mu);
  retired->push_back(old);
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_min_level; }

void FlushLogSummaries() { WriteSummaries(g_limiter.load(std::memory_order_acquire)->Flush()); }

void LogEvent(LogLevel level, absl::string_view message, std::initializer_list<LogField> fields,
              LogSite where) {
  if (!LogEnabled(level)) return;
  std::vector<Field> plain;
  plain.reserve(fields.size());
  for (const LogField& f : fields) plain.push_back({f.key(), f.value(), f.is_number()});
  WriteEvent(level, message, plain, where);
}

void LogLine(LogLevel level, absl::string_view message, LogSite where) {
  if (!LogEnabled(level)) return;
  WriteEvent(level, message, {}, where);
}

std::string LogComponent(absl::string_view file) {
  size_t start = absl::string_view::npos;
  for (absl::string_view top : {"master/", "worker/", "common/", "client/", "bench/", "tests/"}) {
    // The last occurrence that starts the path or follows a '/'.
    for (size_t pos = file.rfind(top); pos != absl::string_view::npos;
         pos = pos == 0 ? absl::string_view::npos : file.rfind(top, pos - 1)) {
      if (pos == 0 || file[pos - 1] == '/') {
        if (start == absl::string_view::npos || pos > start) start = pos;
        break;
      }
    }
  }
  if (start == absl::string_view::npos) {
    const size_t slash = file.rfind('/');
    start = slash == absl::string_view::npos ? 0 : slash + 1;
  }
  absl::string_view rest = file.substr(start);
  const size_t dot = rest.rfind('.');
  if (dot != absl::string_view::npos && rest.find('/', dot) == absl::string_view::npos) {
    rest = rest.substr(0, dot);
  }
  return std::string(rest);
}

}  // namespace taskq
