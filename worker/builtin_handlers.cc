#include "worker/builtin_handlers.h"

#include <cmath>
#include <cstdint>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/runtime/sleep.h"
#include "worker/exec_handler.h"

namespace taskq {
namespace {

// Quotes a payload in an error message without flooding it.
std::string Quote(absl::string_view payload) {
  constexpr size_t kMax = 64;
  std::string shown = absl::CHexEscape(payload.substr(0, kMax));
  return absl::StrCat("\"", shown, payload.size() > kMax ? "...\"" : "\"");
}

}  // namespace

absl::StatusOr<std::string> Square(absl::string_view payload) {
  absl::string_view text = absl::StripAsciiWhitespace(payload);
  int64_t n;
  // SimpleAtoi also rejects values outside int64.
  if (text.empty() || !absl::SimpleAtoi(text, &n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("square: payload ", Quote(payload), " is not a 64-bit decimal integer"));
  }
  int64_t squared;
  if (__builtin_mul_overflow(n, n, &squared)) {
    return absl::InvalidArgumentError(
        absl::StrCat("square: ", n, " * ", n, " does not fit in 64 bits"));
  }
  return absl::StrCat(n, " * ", n, " = ", squared);
}

absl::StatusOr<absl::Duration> ParseSleepSeconds(absl::string_view payload) {
  absl::string_view text = absl::StripAsciiWhitespace(payload);
  double seconds;
  if (text.empty() || !absl::SimpleAtod(text, &seconds) || !std::isfinite(seconds)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sleep: payload ", Quote(payload), " is not a number of seconds"));
  }
  if (seconds < 0) {
    return absl::InvalidArgumentError(absl::StrCat("sleep: ", text, " seconds is negative"));
  }
  absl::Duration d = absl::Seconds(seconds);
  if (d > kMaxSleep) {
    return absl::InvalidArgumentError(absl::StrCat("sleep: ", text, " seconds is longer than ",
                                                   absl::FormatDuration(kMaxSleep)));
  }
  return d;
}

absl::StatusOr<std::string> SquareHandler(const HandlerContext& context) {
  return Square(context.payload());
}

rt::Task<absl::StatusOr<std::string>> SleepHandler(HandlerContext& context) {
  absl::StatusOr<absl::Duration> duration = ParseSleepSeconds(context.payload());
  if (!duration.ok()) co_return duration.status();
  absl::Status slept = co_await rt::SleepFor(*duration, context.stop_token());
  if (!slept.ok()) {
    // Stopped (hard stop, cancelled, lease lost) or the scheduler is going.
    co_return absl::CancelledError("sleep interrupted: the task was told to stop");
  }
  co_return absl::StrCat("slept ", absl::StripAsciiWhitespace(context.payload()));
}

absl::Status RegisterBuiltinHandlers(HandlerRegistry* registry, ExecHandler exec) {
  // Squaring a number takes well under a microsecond: no thread hop for it.
  if (auto s = registry->RegisterInline("square", SquareHandler); !s.ok()) return s;
  if (auto s = registry->RegisterAsync("sleep", SleepHandler); !s.ok()) return s;
  return registry->RegisterAsync("exec", std::move(exec));
}

}  // namespace taskq
