// --log-level and --log-format, the same on taskq-master, taskq-worker and
// taskq (docs/LOGGING.md): AddLogFlags declares them on a CLI11 app, and
// InitLoggingFromFlags applies them once the command line is parsed.
//
// Thread-safety: main() only, before threads start.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "absl/strings/string_view.h"
#include "common/log.h"

namespace taskq {

struct LogFlags {
  std::string level = "info";
  std::string format = "text";
};

inline void AddLogFlags(CLI::App& app, LogFlags* flags) {
  app.add_option("--log-level", flags->level, "debug, info, warning or error")
      ->capture_default_str()
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}));
  app.add_option("--log-format", flags->format,
                 "text: one line per event for people; json: one JSON object per line for log "
                 "collectors (ts, level, component, msg and the event's ids; docs/LOGGING.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));
}

inline void InitLoggingFromFlags(absl::string_view program, const LogFlags& flags) {
  LogLevel level = LogLevel::kInfo;
  LogFormat format = LogFormat::kText;
  ParseLogLevel(flags.level, &level);    // checked by CLI11 already
  ParseLogFormat(flags.format, &format);
  InitLogging(program, level, format);
}

}  // namespace taskq
